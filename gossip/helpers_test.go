package gossip

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// logWriter sends log lines to t.Log until the test's cleanups are done;
// memberlist goroutines may still log after Shutdown returns.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger logs warnings and errors to t.Log. Call it before starting a
// cluster, so that its cleanup runs after the cluster's.
func testLogger(t testing.TB) hclog.Logger {
	t.Helper()
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: w, Level: hclog.Warn})
}

// testConfig is a fast configuration for node number i on its own loopback
// address.
func testConfig(t testing.TB, i int) Config {
	t.Helper()
	return Config{
		NodeName:          fmt.Sprintf("n%d", i),
		BindAddr:          fmt.Sprintf("127.0.0.%d:0", 10+i),
		Logger:            testLogger(t),
		JoinRetryInterval: 50 * time.Millisecond,
		GossipInterval:    20 * time.Millisecond,
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		PushPullInterval:  time.Hour, // tests that want anti-entropy ask for it
		TCPTimeout:        2 * time.Second,
	}
}

// start starts a cluster node that is shut down when the test ends.
func start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	t.Cleanup(func() {
		if err := c.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.NodeName, err)
		}
	})
	return c
}

// startN starts n nodes, each but the first joining the first, and waits
// until every node sees all of them alive. edit adjusts each configuration.
func startN(t testing.TB, n int, edit func(i int, cfg *Config)) []*Cluster {
	t.Helper()
	var cs []*Cluster
	for i := range n {
		cfg := testConfig(t, i)
		if i > 0 {
			cfg.Join = []string{cs[0].LocalAddr()}
		}
		if edit != nil {
			edit(i, &cfg)
		}
		cs = append(cs, start(t, cfg))
	}
	waitAlive(t, cs, n)
	return cs
}

// waitAlive waits until every node of cs sees want alive members.
func waitAlive(t testing.TB, cs []*Cluster, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d alive members everywhere", want), func() bool {
		for _, c := range cs {
			if c.NumAlive() != want {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSame waits until every node holds the same state, tombstones
// included, and returns it.
func waitSame(t testing.TB, cs []*Cluster, timeout time.Duration) []Entry {
	t.Helper()
	var snap []Entry
	waitFor(t, timeout, "identical state on every node", func() bool {
		snap = cs[0].Snapshot()
		for _, c := range cs[1:] {
			if !sameEntries(snap, c.Snapshot()) {
				return false
			}
		}
		return true
	})
	return snap
}

func sameEntries(a, b []Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if compareEntries(a[i], b[i]) != 0 {
			return false
		}
	}
	return true
}

// recorder collects OnChange and OnMember calls.
type recorder struct {
	mu      sync.Mutex
	changes []Entry
	members []Member
}

func (r *recorder) onChange(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, e)
}

func (r *recorder) onMember(m Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = append(r.members, m)
}

// changed reports whether OnChange saw key at version v.
func (r *recorder) changed(key string, v Version, deleted bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.changes {
		if e.Key == key && e.Version == v && e.Deleted == deleted {
			return true
		}
	}
	return false
}

// sawMember reports whether OnMember saw name with status.
func (r *recorder) sawMember(name, status string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.members {
		if m.Name == name && m.Status == status {
			return true
		}
	}
	return false
}

// memberStatus returns the status c reports for name, or "".
func memberStatus(c *Cluster, name string) string {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// offlineCluster is a Cluster with no memberlist behind it, enough to drive
// the delegate and the state by hand.
func offlineCluster(t testing.TB) *Cluster {
	t.Helper()
	cfg, err := Config{NodeName: "offline", Logger: hclog.NewNullLogger()}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger,
		members: newMemberView(),
		notify:  &notifier{},
		tab:     newTable(cfg.TombstoneGrace),
		pushCh:  make(chan []byte, pushQueue),
		kickCh:  make(chan struct{}, 1),
	}
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 1 }, RetransmitMult: 1}
	return c
}

// addrOf is the memberlist address of c, for raw sends.
func addrOf(c *Cluster) memberlist.Address {
	return memberlist.Address{Addr: c.LocalAddr(), Name: c.LocalName()}
}
