package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vulcan/test/cassandra"
)

// rlReply is one answer of the proxy, with what the rate-limit checks read.
type rlReply struct {
	code   int
	header http.Header
	body   string
}

// rlClient is a proxy client whose connections leave from ip: in open mode
// the client IP is the auth token, so each client is counted apart.
func rlClient(ip string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, MaxIdleConnsPerHost: 512, MaxIdleConns: 2048,
	}}
}

// rlGet sends a GET for path through a's proxy.
func rlGet(c *http.Client, a *agent, path string) (rlReply, error) {
	resp, err := c.Get("http://" + a.http + path)
	if err != nil {
		return rlReply{}, fmt.Errorf("GET %s through %s: %w", path, a.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rlReply{}, fmt.Errorf("read answer of %s through %s: %w", path, a.name, err)
	}
	return rlReply{code: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// rlMustGet is rlGet failing the test on a transport error.
func rlMustGet(t testing.TB, c *http.Client, a *agent, path string) rlReply {
	t.Helper()
	r, err := rlGet(c, a, path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rlCassandra returns the agent flags that put a node on the shared
// Cassandra, in a keyspace of this test's own.
func rlCassandra(t testing.TB) []string {
	t.Helper()
	return []string{"-cassandra", cassandra.Hosts(t), "-keyspace", cassandra.Keyspace(t)}
}

// rlStart starts n nodes, the first alone and the others joining it (one
// after the other, so that only the first creates a Cassandra schema), and
// waits until every node counts n alive members.
func rlStart(t testing.TB, n int, extra ...string) []*agent {
	t.Helper()
	nodes := []*agent{startAgent(t, agentOpts{extra: extra})}
	for range n - 1 {
		nodes = append(nodes, startAgent(t, agentOpts{join: []string{nodes[0].bind}, extra: extra}))
	}
	rlWaitMembers(t, nodes, n)
	return nodes
}

// rlWaitMembers polls until every node of nodes counts n alive members.
func rlWaitMembers(t testing.TB, nodes []*agent, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		for _, a := range nodes {
			var st struct {
				Members int `json:"members"`
			}
			if _, err := a.api("GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			if st.Members != n {
				return fmt.Errorf("%s counts %d alive members, want %d", a.name, st.Members, n)
			}
		}
		return nil
	})
}

// rlServe registers, on the first node, a service "web" for every host and
// path with one backend, and waits until every node routes to it.
func rlServe(t testing.TB, nodes []*agent) *backend {
	t.Helper()
	b := startBackend(t, "web", nil)
	register(t, nodes[0], map[string]any{"name": "web"}, b)
	c := proxyClient()
	eventually(t, 10*time.Second, func() error {
		for _, a := range nodes {
			r, err := rlGet(c, a, "/")
			if err != nil {
				return err
			}
			if r.code != http.StatusOK {
				return fmt.Errorf("through %s: %d %s", a.name, r.code, r.body)
			}
		}
		return nil
	})
	return b
}

// rlAddLimit creates a limit through a's admin API and returns its id.
func rlAddLimit(t testing.TB, a *agent, l map[string]any) string {
	t.Helper()
	var got struct {
		ID string `json:"id"`
	}
	code, err := a.api("POST", "/v1/limits", l, &got)
	if err != nil || code != http.StatusCreated || got.ID == "" {
		t.Fatalf("POST /v1/limits %v on %s: %d %v, id %q", l, a.name, code, err, got.ID)
	}
	return got.ID
}

// rlLimitIDs returns the ids of the limits a node has in force.
func rlLimitIDs(a *agent) ([]string, error) {
	var ls []struct {
		ID string `json:"id"`
	}
	if _, err := a.api("GET", "/v1/limits", nil, &ls); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ls))
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids, nil
}

// rlWaitLimit polls until every node lists the limit id (present) or no
// longer lists it, failing the test past within.
func rlWaitLimit(t testing.TB, within time.Duration, id string, present bool, nodes ...*agent) {
	t.Helper()
	eventually(t, within, func() error {
		for _, a := range nodes {
			ids, err := rlLimitIDs(a)
			if err != nil {
				return err
			}
			if slices.Contains(ids, id) != present {
				return fmt.Errorf("%s lists %v; want %s present=%v", a.name, ids, id, present)
			}
		}
		return nil
	})
}

// rlTally counts the answers of a run of requests.
type rlTally struct {
	admitted, denied int
	perNode          map[string]int // admitted, by node
}

func (r rlTally) String() string {
	return fmt.Sprintf("admitted %d, denied %d, admitted per node %v", r.admitted, r.denied, r.perNode)
}

// rlPaced sends n GETs for path from c, round robin over nodes, one every
// gap, and counts 200s and 429s; any other answer fails the test.
func rlPaced(t testing.TB, c *http.Client, nodes []*agent, path string, n int, gap time.Duration) rlTally {
	t.Helper()
	tally := rlTally{perNode: map[string]int{}}
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for i := range n {
		a := nodes[i%len(nodes)]
		r := rlMustGet(t, c, a, path)
		switch r.code {
		case http.StatusOK:
			tally.admitted++
			tally.perNode[a.name]++
		case http.StatusTooManyRequests:
			tally.denied++
		default:
			t.Fatalf("request %d through %s: %d %s", i+1, a.name, r.code, r.body)
		}
		<-tick.C
	}
	return tally
}

// rlBurst sends n GETs for path at once, round robin over nodes, from
// connections opened beforehand so that they all start together, and counts
// the answers; any answer but 200 or 429 fails the test.
func rlBurst(t testing.TB, ip string, nodes []*agent, path string, n int) rlTally {
	t.Helper()
	c := rlClient(ip)
	defer c.CloseIdleConnections()
	// Warm one keep-alive connection per request, on a path no limit
	// matches, so that the burst itself pays no connection set-up.
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, _ = rlGet(c, nodes[i%len(nodes)], "/warm") })
	}
	wg.Wait()
	var (
		mu    sync.Mutex
		tally = rlTally{perNode: map[string]int{}}
		bad   []string
		start = make(chan struct{})
	)
	for i := range n {
		a := nodes[i%len(nodes)]
		wg.Go(func() {
			<-start
			r, err := rlGet(c, a, path)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case r.code == http.StatusOK:
				tally.admitted++
				tally.perNode[a.name]++
			case r.code == http.StatusTooManyRequests:
				tally.denied++
			default:
				bad = append(bad, fmt.Sprintf("through %s: %d %s", a.name, r.code, r.body))
			}
		})
	}
	close(start)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d burst requests failed, first: %s", len(bad), n, bad[0])
	}
	return tally
}

// rlMetric reads one unlabelled metric from a node's /metrics.
func rlMetric(a *agent, name string) (float64, error) {
	resp, err := apiClient.Get("http://" + a.admin + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", a.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape %s: %w", a.name, err)
	}
	return 0, fmt.Errorf("%s has no metric %s", a.name, name)
}

// rlMustMetric is rlMetric failing the test on an error.
func rlMustMetric(t testing.TB, a *agent, name string) float64 {
	t.Helper()
	v, err := rlMetric(a, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// rlSum adds up a metric over nodes.
func rlSum(t testing.TB, nodes []*agent, name string) float64 {
	t.Helper()
	var sum float64
	for _, a := range nodes {
		sum += rlMustMetric(t, a, name)
	}
	return sum
}

// rlWaitMetric polls until metric name on every node satisfies ok.
func rlWaitMetric(t testing.TB, within time.Duration, name string, ok func(float64) bool, nodes ...*agent) {
	t.Helper()
	eventually(t, within, func() error {
		for _, a := range nodes {
			v, err := rlMetric(a, name)
			if err != nil {
				return err
			}
			if !ok(v) {
				return fmt.Errorf("%s: %s = %v", a.name, name, v)
			}
		}
		return nil
	})
}

// rlLoad sends GETs through a set of nodes from a few workers, each
// pausing between requests, until halted, and keeps every answer that is
// not a 200.
type rlLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	sent, ok int
	failed   []string
}

// rlStartLoad starts workers that cycle over nodes with GETs for path, each
// sending one request every gap; the test's end halts them.
func rlStartLoad(t testing.TB, path string, workers int, gap time.Duration, nodes ...*agent) *rlLoad {
	t.Helper()
	l := &rlLoad{stop: make(chan struct{})}
	for w := range workers {
		c := rlClient(nextIP())
		l.wg.Go(func() {
			defer c.CloseIdleConnections()
			tick := time.NewTicker(gap)
			defer tick.Stop()
			for i := w; ; i++ {
				a := nodes[i%len(nodes)]
				r, err := rlGet(c, a, path)
				l.mu.Lock()
				l.sent++
				switch {
				case err != nil:
					l.failed = append(l.failed, err.Error())
				case r.code != http.StatusOK:
					l.failed = append(l.failed, fmt.Sprintf("through %s: %d %s", a.name, r.code, r.body))
				default:
					l.ok++
				}
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

// counts returns the requests sent and answered 200 so far.
func (l *rlLoad) counts() (sent, ok int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, l.ok
}

// failures returns the answers that were not a 200.
func (l *rlLoad) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failed)
}

// halt stops the workers and waits for them; it is idempotent.
func (l *rlLoad) halt() {
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
}
