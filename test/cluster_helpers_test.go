package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// adminer is anything whose admin API can be called: a node on loopback or
// one inside a network namespace.
type adminer interface {
	api(method, path string, in, out any) (int, error)
}

// planAgent picks a node's addresses and arguments without starting it, so
// that the join addresses of a whole cluster are known before any node runs.
func planAgent(t testing.TB, o agentOpts) *agent {
	t.Helper()
	ip := nextIP()
	a := &agent{t: t, ip: ip, name: o.name, data: o.data}
	if a.name == "" {
		a.name = "n-" + strings.ReplaceAll(ip, ".", "-")
	}
	if a.data == "" {
		a.data = t.TempDir()
	}
	a.http = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	a.admin = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	a.bind = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	a.args = []string{"agent", "-node", a.name, "-http", a.http, "-admin", a.admin, "-bind", a.bind,
		"-smtp", "", "-data", a.data, "-log-level", "debug"}
	a.args = append(a.args, o.extra...)
	a.log = &lockedBuffer{}
	return a
}

// launch starts a planned agent, with join addresses, and stops it when the
// test ends.
func launch(t testing.TB, a *agent, join ...string) {
	t.Helper()
	if len(join) > 0 {
		a.args = append(a.args, "-join", strings.Join(join, ","))
	}
	a.start()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("log of %s:\n%s", a.name, a.log.String())
		}
	})
}

// startCluster starts n nodes in a random order. Each is given one join
// address only, the next node's in a ring, which is usually not running
// yet: the cluster forms only if joins are retried in the background. It
// waits until every node sees all n alive.
func startCluster(t testing.TB, n int, extra ...string) []*agent {
	t.Helper()
	nodes := make([]*agent, n)
	for i := range nodes {
		nodes[i] = planAgent(t, agentOpts{name: fmt.Sprintf("node%d", i+1), extra: extra})
	}
	order := rand.Perm(n)
	for _, i := range order {
		launch(t, nodes[i], nodes[(i+1)%n].bind)
	}
	t.Logf("started %d nodes in the order %v", n, order)
	waitAlive(t, 30*time.Second, nodes, nodes...)
	return nodes
}

// member is an entry of GET /v1/members, decoded strictly by the
// documented lowercase names.
type member struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"`
}

// members reads a node's member list.
func members(a adminer) (map[string]member, error) {
	var raw []map[string]string
	if _, err := a.api("GET", "/v1/members", nil, &raw); err != nil {
		return nil, err
	}
	out := map[string]member{}
	for _, m := range raw {
		out[m["name"]] = member{Name: m["name"], Addr: m["addr"], Status: m["status"]}
	}
	return out, nil
}

// waitStatus polls until every observer reports each named member with the
// given status.
func waitStatus(t testing.TB, timeout time.Duration, want map[string]string, observers ...adminer) {
	t.Helper()
	eventually(t, timeout, func() error {
		for _, o := range observers {
			ms, err := members(o)
			if err != nil {
				return err
			}
			for name, st := range want {
				if ms[name].Status != st {
					return fmt.Errorf("%v: %s is %q, want %q", ms, name, ms[name].Status, st)
				}
			}
		}
		return nil
	})
}

// waitAlive polls until every observer sees every node of nodes alive.
func waitAlive(t testing.TB, timeout time.Duration, observers []*agent, nodes ...*agent) {
	t.Helper()
	want := map[string]string{}
	for _, a := range nodes {
		want[a.name] = "alive"
	}
	obs := make([]adminer, len(observers))
	for i, o := range observers {
		obs[i] = o
	}
	waitStatus(t, timeout, want, obs...)
}

// serviceState is GET /v1/services reduced to what must be equal on every
// node once the cluster has converged.
type serviceState struct {
	Name       string          `json:"name"`
	Protocol   string          `json:"protocol"`
	Hosts      []string        `json:"hosts"`
	PathPrefix string          `json:"path_prefix"`
	LB         string          `json:"lb"`
	Upstreams  []upstreamState `json:"upstreams"`
}

type upstreamState struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Weight   int    `json:"weight"`
	State    string `json:"state"`
	Health   string `json:"health"`
	InFlight int64  `json:"in_flight"`
}

// services reads a node's services, sorted by name and upstream id.
func services(a adminer) ([]serviceState, error) {
	var ss []serviceState
	if _, err := a.api("GET", "/v1/services", nil, &ss); err != nil {
		return nil, err
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name })
	for _, s := range ss {
		sort.Slice(s.Upstreams, func(i, j int) bool { return s.Upstreams[i].ID < s.Upstreams[j].ID })
	}
	return ss, nil
}

// canonical renders a node's services as one comparable string.
func canonical(ss []serviceState) string {
	b, _ := json.Marshal(ss)
	return string(b)
}

// converged polls until every node answers the same services, and returns
// them.
func converged(t testing.TB, timeout time.Duration, nodes ...adminer) []serviceState {
	t.Helper()
	var first []serviceState
	eventually(t, timeout, func() error {
		var want string
		for i, a := range nodes {
			ss, err := services(a)
			if err != nil {
				return err
			}
			got := canonical(ss)
			if i == 0 {
				want, first = got, ss
			} else if got != want {
				return fmt.Errorf("node %d differs:\n%s\nnode 0:\n%s", i, got, want)
			}
		}
		return nil
	})
	return first
}

// findUpstream returns the named upstream of a service in ss.
func findUpstream(ss []serviceState, svc, id string) (upstreamState, bool) {
	for _, s := range ss {
		if s.Name != svc {
			continue
		}
		for _, u := range s.Upstreams {
			if u.ID == id {
				return u, true
			}
		}
	}
	return upstreamState{}, false
}

// hasService reports whether ss holds the named service.
func hasService(ss []serviceState, name string) bool {
	return slices.ContainsFunc(ss, func(s serviceState) bool { return s.Name == name })
}

// routes polls until a request for host through every node reaches one of
// the named backends.
func routes(t testing.TB, timeout time.Duration, host string, want []string, nodes ...*agent) {
	t.Helper()
	c := proxyClient()
	eventually(t, timeout, func() error {
		for _, a := range nodes {
			code, up, body, err := get(c, a, host, "/")
			if err != nil {
				return fmt.Errorf("through %s: %w", a.name, err)
			}
			if code != 200 || !slices.Contains(want, up) {
				return fmt.Errorf("through %s: %d from %q: %s", a.name, code, up, body)
			}
		}
		return nil
	})
}

// load sends GETs for one host through a set of nodes from several workers
// until stopped, or until its count or time runs out, and records every
// answer that is not a 200.
type load struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	sent    atomic.Int64
	ok      atomic.Int64
	mu      sync.Mutex
	failure []string
}

// maxFailuresKept bounds the failures a load keeps for the report.
const maxFailuresKept = 20

// startLoad starts workers that cycle over nodes; it is bounded by max
// requests and by limit in time.
func startLoad(t testing.TB, host string, workers int, max int64, limit time.Duration, nodes ...*agent) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(limit)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := proxyClient()
			defer c.CloseIdleConnections()
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if l.sent.Add(1) > max || time.Now().After(deadline) {
					return
				}
				a := nodes[i%len(nodes)]
				code, up, body, err := get(c, a, host, "/")
				if err == nil && code == 200 {
					l.ok.Add(1)
					continue
				}
				l.mu.Lock()
				if len(l.failure) < maxFailuresKept {
					l.failure = append(l.failure, fmt.Sprintf("through %s: %d from %q: %q %v", a.name, code, up, body, err))
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the workers and waits for them; it is idempotent.
func (l *load) halt() {
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// failures returns what went wrong, after halt.
func (l *load) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failure)
}

// waitHits polls until each backend has served at least n more requests
// than it had at the call.
func waitHits(t testing.TB, timeout time.Duration, n int64, bs ...*backend) {
	t.Helper()
	base := make([]int64, len(bs))
	for i, b := range bs {
		base[i] = b.hits.Load()
	}
	eventually(t, timeout, func() error {
		for i, b := range bs {
			if got := b.hits.Load() - base[i]; got < n {
				return fmt.Errorf("backend %s served %d requests, want %d", b.name, got, n)
			}
		}
		return nil
	})
}

// drainResult is the body of a drain call.
type drainResult struct {
	Done  bool `json:"done"`
	Nodes []struct {
		Node     string `json:"node"`
		Applied  bool   `json:"applied"`
		InFlight int64  `json:"in_flight"`
	} `json:"nodes"`
}

// drain calls the drain endpoint with wait and returns the status and body.
func drain(a *agent, svc, id, wait string) (int, drainResult, error) {
	req, err := http.NewRequest("POST", "http://"+a.admin+"/v1/services/"+svc+"/upstreams/"+id+"/drain?wait="+wait, nil)
	if err != nil {
		return 0, drainResult{}, err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, drainResult{}, err
	}
	defer resp.Body.Close()
	var r drainResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("decode drain answer (%d): %w", resp.StatusCode, err)
	}
	return resp.StatusCode, r, nil
}
