package node

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	)
	return m
}

// tableCollector exports per-upstream in-flight counts and health at scrape time.
type tableCollector struct {
	n        *Node
	inFlight *prometheus.Desc
	up       *prometheus.Desc
}

func newTableCollector(n *Node) *tableCollector {
	return &tableCollector{
		n:        n,
		inFlight: prometheus.NewDesc("vulcan_upstream_in_flight", "Requests and sessions in flight to an upstream through this node.", []string{"service", "upstream"}, nil),
		up:       prometheus.NewDesc("vulcan_upstream_up", "1 when the upstream is healthy, 0 when down.", []string{"service", "upstream", "state"}, nil),
	}
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.up
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	local := c.n.table.InFlight()
	for _, s := range c.n.Services() {
		for _, u := range s.Upstreams {
			key := s.Name + "/" + u.ID
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(local[key]), s.Name, u.ID)
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
