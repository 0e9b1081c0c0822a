package gossip

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestClusterConverges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pushNodes int
	}{
		{"direct sends and gossip", 0},
		{"gossip only", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := make([]*recorder, 3)
			cs := startN(t, 3, func(i int, cfg *Config) {
				recs[i] = &recorder{}
				cfg.OnChange = recs[i].onChange
				cfg.PushNodes = tc.pushNodes
			})

			a := cs[0].Set("svc/a", []byte("from n0"))
			b := cs[1].Set("svc/b", []byte("from n1"))
			cs[2].Set("svc/c", []byte("from n2"))
			gone := cs[2].Set("svc/gone", []byte("soon deleted"))
			// Concurrent writes to one key: all nodes must pick one.
			cs[0].Set("svc/contested", []byte("n0"))
			cs[1].Set("svc/contested", []byte("n1"))
			cs[2].Set("svc/contested", []byte("n2"))
			waitFor(t, 5*time.Second, "svc/gone everywhere", func() bool {
				for _, c := range cs {
					if _, ok := c.Get("svc/gone"); !ok {
						return false
					}
				}
				return true
			})
			del := cs[0].Delete("svc/gone")
			if del.Version.Compare(gone.Version) <= 0 {
				t.Fatalf("delete version %+v not newer than the write %+v it saw", del.Version, gone.Version)
			}

			snap := waitSame(t, cs, 5*time.Second)
			if len(snap) != 5 {
				t.Fatalf("converged on %d entries, want 5: %+v", len(snap), snap)
			}
			for _, c := range cs {
				if _, ok := c.Get("svc/gone"); ok {
					t.Errorf("%s still returns the deleted key", c.LocalName())
				}
				if got := c.Entries("svc/"); len(got) != 4 || got[0].Key != "svc/a" || got[3].Key != "svc/contested" {
					t.Errorf("%s Entries(svc/) = %+v", c.LocalName(), got)
				}
				if e, ok := c.Get("svc/a"); !ok || string(e.Value) != "from n0" || e.Version != a.Version {
					t.Errorf("%s svc/a = %+v, %v", c.LocalName(), e, ok)
				}
			}
			// OnChange saw remote writes and the remote delete.
			waitFor(t, 2*time.Second, "OnChange on n2 for svc/a, svc/b and the delete", func() bool {
				return recs[2].changed("svc/a", a.Version, false) && recs[2].changed("svc/b", b.Version, false) &&
					recs[2].changed("svc/gone", del.Version, true)
			})
			// Receiving lifted the clocks: a new write anywhere beats all.
			for _, c := range cs {
				e := c.Set("svc/after", nil)
				for _, old := range snap {
					if e.Version.Clock <= old.Version.Clock {
						t.Errorf("%s wrote clock %d, not above %s at %d", c.LocalName(), e.Version.Clock, old.Key, old.Version.Clock)
					}
				}
			}
		})
	}
}

func TestOnChangeIsCalledForLocalWritesInOrder(t *testing.T) {
	rec := &recorder{}
	cfg := testConfig(t, 0)
	cfg.OnChange = rec.onChange
	c := start(t, cfg)
	s1 := c.Set("k", []byte("1"))
	s2 := c.Set("k", []byte("2"))
	d := c.Delete("k")
	rec.mu.Lock()
	got := append([]Entry(nil), rec.changes...)
	rec.mu.Unlock()
	if len(got) != 3 || got[0].Version != s1.Version || got[1].Version != s2.Version || got[2].Version != d.Version || !got[2].Deleted {
		t.Fatalf("OnChange calls = %+v", got)
	}
}

func TestCallbacksMayWriteToTheCluster(t *testing.T) {
	var c *Cluster
	var mu sync.Mutex
	var order []string
	cfg := testConfig(t, 0)
	ready := make(chan struct{})
	cfg.OnChange = func(e Entry) {
		<-ready
		mu.Lock()
		order = append(order, e.Key)
		mu.Unlock()
		if e.Key == "ping" {
			c.Set("pong", e.Value) // re-entrant write: delivered after this call
		}
	}
	c = start(t, cfg)
	close(ready)
	c.Set("ping", []byte("x"))
	waitFor(t, 2*time.Second, "pong", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 2
	})
	if order[0] != "ping" || order[1] != "pong" {
		t.Fatalf("OnChange order = %v", order)
	}
}

func TestLateJoinerGetsEverythingByPushPull(t *testing.T) {
	cs := startN(t, 2, func(i int, cfg *Config) { cfg.PushNodes = -1 })
	for i := range 40 {
		cs[i%2].Set(fmt.Sprintf("k/%02d", i), []byte(strings.Repeat("v", i)))
	}
	for i := range 5 {
		cs[1].Delete(fmt.Sprintf("k/%02d", i))
	}
	want := waitSame(t, cs, 5*time.Second)
	// Let gossip fall silent, so that only the join's push/pull can carry
	// the state to the newcomer.
	waitFor(t, 5*time.Second, "empty gossip queues", func() bool {
		return cs[0].queue.NumQueued() == 0 && cs[1].queue.NumQueued() == 0
	})

	rec := &recorder{}
	cfg := testConfig(t, 2)
	cfg.Join = []string{cs[0].LocalAddr()}
	cfg.OnChange = rec.onChange
	late := start(t, cfg)
	waitAlive(t, append(cs, late), 3)
	// memberlist merges members before state: allow the join's push/pull
	// to finish.
	waitFor(t, 2*time.Second, "the late joiner to hold the state", func() bool {
		return sameEntries(late.Snapshot(), want)
	})
	got := late.Snapshot()
	tombstones := 0
	for _, e := range got {
		if e.Deleted {
			tombstones++
		}
		if !rec.changed(e.Key, e.Version, e.Deleted) {
			t.Errorf("no OnChange on the late joiner for %s", e.Key)
		}
	}
	if tombstones != 5 {
		t.Errorf("late joiner has %d tombstones, want 5", tombstones)
	}
}

func TestPushPullRepairsWhatGossipMissed(t *testing.T) {
	cs := startN(t, 3, func(i int, cfg *Config) { cfg.PushPullInterval = 200 * time.Millisecond })
	// Load neither gossips nor pushes: only anti-entropy can spread these.
	cs[1].Load([]Entry{
		{Key: "loaded/1", Value: []byte("a"), Version: Version{Clock: 50, Node: "old"}},
		{Key: "loaded/2", Version: Version{Clock: 60, Node: "old"}, Deleted: true, DeletedAt: time.Now().UnixMilli()},
	})
	snap := waitSame(t, cs, 10*time.Second)
	if len(snap) != 2 {
		t.Fatalf("converged on %+v", snap)
	}
	// The push/pull also carried the clock.
	if e := cs[2].Set("after", nil); e.Version.Clock <= 60 {
		t.Errorf("n2 wrote clock %d after learning clock 60", e.Version.Clock)
	}
}

func TestLoadSeedsWithoutCallbacks(t *testing.T) {
	rec := &recorder{}
	cfg := testConfig(t, 0)
	cfg.OnChange = rec.onChange
	c := start(t, cfg)
	c.Load([]Entry{
		{Key: "a", Value: []byte("1"), Version: Version{Clock: 1 << 60, Node: "x"}},
		{Key: "a", Value: []byte("0"), Version: Version{Clock: 3, Node: "x"}},
	})
	if e, ok := c.Get("a"); !ok || string(e.Value) != "1" {
		t.Fatalf("Get after Load = %+v, %v", e, ok)
	}
	if e := c.Set("b", nil); e.Version.Clock != 1<<60+1 {
		t.Errorf("first write after Load has clock %d, want %d", e.Version.Clock, uint64(1<<60+1))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.changes) != 1 || rec.changes[0].Key != "b" {
		t.Errorf("OnChange calls = %+v, want only the write of b", rec.changes)
	}
}

func TestBigEntriesTravelByTCP(t *testing.T) {
	cs := startN(t, 3, nil)
	big := bytes.Repeat([]byte("0123456789"), 1000) // far beyond a packet
	e := cs[0].Set("big", big)
	waitFor(t, 5*time.Second, "the big entry everywhere", func() bool {
		for _, c := range cs {
			got, ok := c.Get("big")
			if !ok || got.Version != e.Version || !bytes.Equal(got.Value, big) {
				return false
			}
		}
		return true
	})
	if n := cs[0].queue.NumQueued(); n != 0 {
		t.Errorf("%d messages queued for gossip; a big entry must not wait in the queue", n)
	}
}

// captureLogger counts log lines containing a substring.
type captureLogger struct {
	mu    sync.Mutex
	lines []string
}

func (w *captureLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, string(p))
	return len(p), nil
}

func (w *captureLogger) count(sub string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func TestWrongOrMissingKeyCannotJoinNorInject(t *testing.T) {
	key := []byte("0123456789abcdef")
	logs := &captureLogger{}
	cs := startN(t, 2, func(i int, cfg *Config) {
		cfg.SecretKey = key
		if i == 0 {
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})
		}
	})
	cs[0].Set("cluster/secret", []byte("x"))

	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"wrong key", []byte("fedcba9876543210")},
		{"no key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, 5)
			cfg.NodeName = "intruder-" + strings.ReplaceAll(tc.name, " ", "-")
			cfg.SecretKey = tc.key
			x := start(t, cfg)
			x.Set("evil/join", []byte("taken on join?"))

			if n, err := x.Join([]string{cs[0].LocalAddr()}); err == nil {
				t.Fatalf("join with %s succeeded, contacting %d", tc.name, n)
			}

			// A delta sent straight at a member, as a peer's would be.
			before := logs.count("Decrypt packet failed")
			msg := encodeEntryMsg(Entry{Key: "evil/inject", Value: []byte("x"), Version: Version{Clock: 1 << 30, Node: "intruder"}})
			if err := x.ml.SendToAddress(addrOf(cs[0]), msg); err != nil {
				t.Fatalf("send: %v", err)
			}
			waitFor(t, 5*time.Second, "the member to refuse the packet", func() bool {
				return logs.count("Decrypt packet failed") > before
			})

			for _, c := range cs {
				if evil := c.Entries("evil/"); len(evil) != 0 {
					t.Errorf("%s took the intruder's state: %+v", c.LocalName(), evil)
				}
				if c.NumAlive() != 2 || memberStatus(c, x.LocalName()) != "" {
					t.Errorf("%s lists the intruder: %+v", c.LocalName(), c.Members())
				}
			}
			if _, ok := x.Get("cluster/secret"); ok || x.NumAlive() != 1 {
				t.Errorf("the intruder got the cluster's state or members: %+v", x.Members())
			}
		})
	}
}

func TestLeaveIsReportedLeft(t *testing.T) {
	recs := make([]*recorder, 3)
	cs := startN(t, 3, func(i int, cfg *Config) {
		recs[i] = &recorder{}
		cfg.OnMember = recs[i].onMember
	})
	if err := cs[2].Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if err := cs[2].Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	waitFor(t, 5*time.Second, "n2 left on n0 and n1", func() bool {
		return memberStatus(cs[0], "n2") == StatusLeft && memberStatus(cs[1], "n2") == StatusLeft
	})
	if got := memberStatus(cs[2], "n2"); got != StatusLeft {
		t.Errorf("n2 sees itself %q", got)
	}
	for i, r := range recs {
		if !r.sawMember("n2", StatusLeft) {
			t.Errorf("OnMember of n%d never saw n2 left", i)
		}
		if r.sawMember("n2", StatusDead) {
			t.Errorf("OnMember of n%d saw n2 dead", i)
		}
	}
	if cs[0].NumAlive() != 2 {
		t.Errorf("n0 counts %d alive", cs[0].NumAlive())
	}
	if err := cs[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].Leave(time.Second); err == nil {
		t.Error("Leave after Shutdown succeeded")
	}
}

func TestFailedMemberIsReportedDead(t *testing.T) {
	rec := &recorder{}
	cs := startN(t, 3, func(i int, cfg *Config) {
		if i == 0 {
			cfg.OnMember = rec.onMember
		}
	})
	if err := cs[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 dead on n0", func() bool { return memberStatus(cs[0], "n2") == StatusDead })
	if !rec.sawMember("n1", StatusAlive) || !rec.sawMember("n2", StatusDead) {
		t.Errorf("OnMember calls = %+v", rec.members)
	}
	if got := memberStatus(cs[0], "n0"); got != StatusAlive {
		t.Errorf("n0 sees itself %q", got)
	}
}

func TestTombstonesAreCollectedAfterGrace(t *testing.T) {
	clock := newFakeClock()
	cs := startN(t, 2, func(i int, cfg *Config) {
		cfg.Now = clock.Now
		cfg.TombstoneGrace = time.Hour
	})
	cs[0].Set("k", []byte("v"))
	cs[0].Set("keep", []byte("v"))
	d := cs[0].Delete("k")
	if d.DeletedAt != clock.Now().UnixMilli() {
		t.Errorf("DeletedAt = %d, want the injected clock %d", d.DeletedAt, clock.Now().UnixMilli())
	}
	waitSame(t, cs, 5*time.Second)

	clock.Advance(30 * time.Minute)
	for _, c := range cs {
		c.collect()
		if len(c.Snapshot()) != 2 {
			t.Fatalf("%s collected a tombstone within its grace: %+v", c.LocalName(), c.Snapshot())
		}
	}
	clock.Advance(31 * time.Minute)
	cs[0].collect()
	if snap := cs[0].Snapshot(); len(snap) != 1 || snap[0].Key != "keep" {
		t.Fatalf("n0 after collection: %+v", snap)
	}
	// n1 has not collected yet; a push/pull must not bring the tombstone
	// back to n0.
	if _, err := cs[0].Join([]string{cs[1].LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	if snap := cs[0].Snapshot(); len(snap) != 1 {
		t.Fatalf("n0 after push/pull: %+v", snap)
	}
	cs[1].collect()
	if snap := cs[1].Snapshot(); len(snap) != 1 || snap[0].Key != "keep" {
		t.Fatalf("n1 after collection: %+v", snap)
	}
}

func TestMembersAreReaped(t *testing.T) {
	clock := newFakeClock()
	cs := startN(t, 2, func(i int, cfg *Config) {
		cfg.Now = clock.Now
		cfg.MemberReap = time.Hour
	})
	if err := cs[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n1 left", func() bool { return memberStatus(cs[0], "n1") == StatusLeft })
	cs[0].collect()
	if memberStatus(cs[0], "n1") != StatusLeft {
		t.Fatal("reaped before MemberReap")
	}
	clock.Advance(2 * time.Hour)
	cs[0].collect()
	if got := cs[0].Members(); len(got) != 1 || got[0].Name != "n0" {
		t.Fatalf("members after reaping: %+v", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := map[string]Config{
		"short key":       {NodeName: "x", BindAddr: "127.0.0.1:0", SecretKey: []byte("short")},
		"host name bind":  {NodeName: "x", BindAddr: "localhost:0"},
		"no port":         {NodeName: "x", BindAddr: "127.0.0.1"},
		"bad advertise":   {NodeName: "x", BindAddr: "127.0.0.1:0", AdvertiseAddr: "nowhere:1"},
		"negative timing": {NodeName: "x", BindAddr: "127.0.0.1:0", GossipInterval: -time.Second},
	}
	for name, cfg := range tests {
		if c, err := New(cfg); err == nil {
			_ = c.Shutdown()
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestShutdownIsIdempotent(t *testing.T) {
	c, err := New(testConfig(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.LocalName() != "n0" || !strings.HasPrefix(c.LocalAddr(), "127.0.0.10:") || strings.HasSuffix(c.LocalAddr(), ":0") {
		t.Errorf("LocalName %q, LocalAddr %q", c.LocalName(), c.LocalAddr())
	}
	for range 2 {
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOnChangeOrderUnderConcurrentWrites(t *testing.T) {
	c := offlineCluster(t)
	var mu sync.Mutex
	var seen []Version
	c.notify.onChange = func(e Entry) {
		mu.Lock()
		seen = append(seen, e.Version)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				c.Set("k", nil)
			}
		})
	}
	wg.Wait()
	if len(seen) != 4000 {
		t.Fatalf("%d OnChange calls, want 4000", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Compare(seen[i-1]) <= 0 {
			t.Fatalf("call %d delivered %+v after %+v", i, seen[i], seen[i-1])
		}
	}
}

func TestGossipQueueIsBounded(t *testing.T) {
	c := offlineCluster(t)
	for i := range maxQueued + 500 {
		c.Set(fmt.Sprintf("k%d", i), []byte("v"))
	}
	if n := c.queue.NumQueued(); n > maxQueued {
		t.Fatalf("%d deltas queued, bound is %d", n, maxQueued)
	}
	// Rewriting one key replaces its queued delta instead of adding one.
	before := c.queue.NumQueued()
	c.Set("k0", []byte("again"))
	c.Set("k0", []byte("and again"))
	if n := c.queue.NumQueued(); n > before+1 {
		t.Fatalf("rewrites of one key grew the queue from %d to %d", before, n)
	}
}

func TestJoinIsRetriedUntilAPeerAnswers(t *testing.T) {
	// Reserve an address for a node that is not up yet.
	l, err := net.Listen("tcp", "127.0.0.30:0")
	if err != nil {
		t.Fatal(err)
	}
	later := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	logs := &captureLogger{}
	cfg := testConfig(t, 1)
	cfg.Join = []string{later}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})
	early := start(t, cfg)
	waitFor(t, 5*time.Second, "a failed join attempt", func() bool { return logs.count("join failed") > 0 })

	cfg = testConfig(t, 0)
	cfg.BindAddr = later
	peer := start(t, cfg)
	waitAlive(t, []*Cluster{early, peer}, 2)
}
