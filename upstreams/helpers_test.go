package upstreams

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeClock is a table clock that moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// healthLog records OnHealth calls as "service/id health".
type healthLog struct {
	mu     sync.Mutex
	events []string
}

func (h *healthLog) record(service, id string, v Health) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf("%s/%s %s", service, id, v))
}

func (h *healthLog) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) hclog.Logger {
	t.Helper()
	return hclog.New(&hclog.LoggerOptions{Name: "upstreams", Output: testWriter{t}, Level: hclog.Debug})
}

// newTestTable returns a table on a fake clock whose OnHealth calls are
// recorded.
func newTestTable(t testing.TB, cfg Config) (*Table, *fakeClock, *healthLog) {
	t.Helper()
	hl := &healthLog{}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.OnHealth == nil {
		cfg.OnHealth = hl.record
	}
	tb := NewTable(cfg)
	clk := &fakeClock{}
	clk.ns.Store(int64(time.Hour)) // far from zero, like a real monotonic reading
	tb.clock = clk.now
	return tb, clk, hl
}

// addService puts an HTTP service with upstreams named "a", "b", ... at
// distinct loopback addresses, with the given weights.
func addService(t testing.TB, tb *Table, s Service, weights ...int) {
	t.Helper()
	if s.Protocol == "" {
		s.Protocol = ProtoHTTP
	}
	if err := s.Normalize(); err != nil {
		t.Fatalf("normalize %s: %v", s.Name, err)
	}
	tb.PutService(s)
	for i, w := range weights {
		tb.PutUpstream(Upstream{Service: s.Name, ID: string(rune('a' + i)), Addr: fmt.Sprintf("127.0.0.%d:80", i+1), Weight: w})
	}
}

// mustPick picks and fails the test on an error.
func mustPick(t testing.TB, tb *Table, service string, exclude *Handle) *Handle {
	t.Helper()
	h, err := tb.Pick(service, exclude)
	if err != nil {
		t.Fatalf("pick %s: %v", service, err)
	}
	return h
}

// pickIDs picks n times, releasing each handle, and returns the ids chosen.
func pickIDs(t testing.TB, tb *Table, service string, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for range n {
		h := mustPick(t, tb, service, nil)
		ids = append(ids, h.ID())
		h.Release()
	}
	return ids
}

func countIDs(ids []string) map[string]int {
	c := map[string]int{}
	for _, id := range ids {
		c[id]++
	}
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func boolp(b bool) *bool { return &b }
