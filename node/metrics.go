package node

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"vulcan/upstreams"
)

// metrics is the node's Prometheus registry. It is the node's own (no
// global registry), and most values are read from the parts' counters at
// scrape time so the request path pays nothing for them.
type metrics struct {
	reg        *prometheus.Registry
	authDenied prometheus.Counter
	authFailed prometheus.Counter
	// responses counts HTTP responses by status class, 1xx to 5xx.
	responses [6]prometheus.Counter
	smtp      *prometheus.CounterVec
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.authDenied = prometheus.NewCounter(prometheus.CounterOpts{Name: "vulcan_auth_denied_total", Help: "Requests refused for missing or rejected credentials."})
	m.authFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "vulcan_auth_failures_total", Help: "Requests refused because the authorization server failed."})
	m.reg.MustRegister(m.authDenied, m.authFailed)
	codes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vulcan_http_responses_total", Help: "HTTP responses sent to clients, by status class."}, []string{"code"})
	for i := 1; i <= 5; i++ {
		m.responses[i] = codes.WithLabelValues(strconv.Itoa(i) + "xx")
	}
	m.smtp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vulcan_smtp_events_total", Help: "SMTP sessions and messages, by event."}, []string{"event"})
	m.reg.MustRegister(codes, m.smtp)
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vulcan_cluster_members_alive", Help: "Alive members of the cluster, this node included."},
			func() float64 { return float64(n.cluster.Load().NumAlive()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vulcan_ratelimit_store_healthy", Help: "1 while the counter store answers, 0 during an outage."},
			func() float64 {
				if n.limiter.StoreHealthy() {
					return 1
				}
				return 0
			}),
		newTableCollector(n),
		newStatsCollector(n),
	)
	return m
}

// tableCollector exports per-upstream in-flight counts and health at scrape time.
type tableCollector struct {
	n        *Node
	inFlight *prometheus.Desc
	up       *prometheus.Desc
	picks    *prometheus.Desc
	failures *prometheus.Desc
}

func newTableCollector(n *Node) *tableCollector {
	return &tableCollector{
		n:        n,
		inFlight: prometheus.NewDesc("vulcan_upstream_in_flight", "Requests and sessions in flight to an upstream through this node.", []string{"service", "upstream"}, nil),
		up:       prometheus.NewDesc("vulcan_upstream_up", "1 when the upstream is healthy, 0 when down.", []string{"service", "upstream", "state"}, nil),
		picks:    prometheus.NewDesc("vulcan_upstream_requests_total", "Requests and SMTP sessions sent to an upstream by this node.", []string{"service", "upstream"}, nil),
		failures: prometheus.NewDesc("vulcan_upstream_connect_failures_total", "Requests and SMTP sessions of this node whose connection to the upstream failed.", []string{"service", "upstream"}, nil),
	}
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.up
	ch <- c.picks
	ch <- c.failures
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	local := c.n.table.InFlight()
	counts := c.n.table.Counts()
	for _, s := range c.n.Services() {
		for _, u := range s.Upstreams {
			key := upstreams.Key(s.Name, u.ID)
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(local[key]), s.Name, u.ID)
			ch <- prometheus.MustNewConstMetric(c.picks, prometheus.CounterValue, float64(counts[key].Picks), s.Name, u.ID)
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(counts[key].Failures), s.Name, u.ID)
			v := 0.0
			if u.Health == "up" {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, s.Name, u.ID, string(u.State))
		}
	}
}

// MetricsHandler serves the node's metrics in Prometheus text format.
func (n *Node) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})
}

// ObserveHTTP counts a response sent to a client.
func (n *Node) ObserveHTTP(status int) {
	if c := status / 100; c >= 1 && c <= 5 {
		n.metrics.responses[c].Inc()
	}
}

// ObserveSMTP counts an SMTP event ("session", "message", "rejected", ...).
func (n *Node) ObserveSMTP(event string) {
	n.metrics.smtp.WithLabelValues(event).Inc()
}

// statsCollector exports the limiter's and the auth client's own counters
// at scrape time.
type statsCollector struct {
	n    *Node
	desc map[string]*prometheus.Desc
}

func newStatsCollector(n *Node) *statsCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &statsCollector{n: n, desc: map[string]*prometheus.Desc{
		"rl_allowed":    d("vulcan_ratelimit_allowed_total", "Requests within their limits."),
		"rl_denied":     d("vulcan_ratelimit_denied_total", "Requests denied by a limit or by a closed store."),
		"rl_syncs":      d("vulcan_ratelimit_syncs_total", "Sync rounds with the counter store."),
		"rl_sync_err":   d("vulcan_ratelimit_sync_errors_total", "Counter store calls that failed."),
		"rl_deltas":     d("vulcan_ratelimit_deltas_written_total", "Counter deltas written to the store."),
		"rl_unsynced":   d("vulcan_ratelimit_hits_unsynced_total", "Hits whose write failed and are counted by this node only."),
		"rl_counters":   d("vulcan_ratelimit_counters", "Windows of (token, limit) held in memory."),
		"auth_hits":     d("vulcan_auth_cache_hits_total", "Authorizations answered from the cache."),
		"auth_misses":   d("vulcan_auth_cache_misses_total", "Authorizations not in the cache."),
		"auth_calls":    d("vulcan_auth_calls_total", "Calls sent to authorization servers."),
		"auth_failures": d("vulcan_auth_call_failures_total", "Authorization calls without a usable answer."),
		"auth_entries":  d("vulcan_auth_cache_entries", "Answers held in the authorization cache."),
	}}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.desc {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(key string, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(c.desc[key], t, v)
	}
	rl := c.n.limiter.Stats()
	emit("rl_allowed", prometheus.CounterValue, float64(rl.Allowed))
	emit("rl_denied", prometheus.CounterValue, float64(rl.Denied))
	emit("rl_syncs", prometheus.CounterValue, float64(rl.Syncs))
	emit("rl_sync_err", prometheus.CounterValue, float64(rl.SyncErrors))
	emit("rl_deltas", prometheus.CounterValue, float64(rl.DeltasWritten))
	emit("rl_unsynced", prometheus.CounterValue, float64(rl.HitsUnsynced))
	emit("rl_counters", prometheus.GaugeValue, float64(rl.Counters))
	if c.n.auth == nil {
		return
	}
	as := c.n.auth.Stats()
	emit("auth_hits", prometheus.CounterValue, float64(as.Hits))
	emit("auth_misses", prometheus.CounterValue, float64(as.Misses))
	emit("auth_calls", prometheus.CounterValue, float64(as.Calls))
	emit("auth_failures", prometheus.CounterValue, float64(as.Failures))
	emit("auth_entries", prometheus.GaugeValue, float64(as.Entries))
}
