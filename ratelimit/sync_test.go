package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// memStore is a CounterStore in memory, safe for concurrent use, with
// failures and a hook to hold AddHits.
type memStore struct {
	mu        sync.Mutex
	hits      map[string]map[int64]int64
	addErr    error
	readErr   error
	adds      int
	reads     int
	pruned    []int64
	beforeAdd func(ctx context.Context) // runs unlocked at the start of AddHits
}

func newMemStore() *memStore { return &memStore{hits: make(map[string]map[int64]int64)} }

func (m *memStore) AddHits(ctx context.Context, deltas []Delta) error {
	m.mu.Lock()
	hook := m.beforeAdd
	m.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adds++
	if m.addErr != nil {
		return m.addErr
	}
	for _, d := range deltas {
		if m.hits[d.Key] == nil {
			m.hits[d.Key] = make(map[int64]int64)
		}
		m.hits[d.Key][d.Bucket] += d.Hits
	}
	return nil
}

func (m *memStore) ReadBuckets(ctx context.Context, key string, since int64, fn func(bucket, hits int64)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.readErr != nil {
		return m.readErr
	}
	for b, n := range m.hits[key] { // map order: the limiter must sort
		if b >= since {
			fn(b, n)
		}
	}
	return nil
}

func (m *memStore) PruneHits(ctx context.Context, before int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruned = append(m.pruned, before)
	for _, buckets := range m.hits {
		for b := range buckets {
			if b < before {
				delete(buckets, b)
			}
		}
	}
	return nil
}

func (m *memStore) set(f func(m *memStore)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

// total is the sum of key's buckets in the store.
func (m *memStore) total(key string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, h := range m.hits[key] {
		n += h
	}
	return n
}

// windowCount is what l counts for token under limit id now, without
// counting a hit.
func windowCount(l *Limiter, token, id string) int64 {
	sh := l.shardOf(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.counters[counterRef{token, id}]
	if c == nil {
		return 0
	}
	c.advance(c.windowStart(l.cfg.Now().Unix()))
	return c.total
}

// syncWriter is a log sink safe for concurrent use.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.buf.String(), s)
}

func testLogger(w *syncWriter) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Info})
}

var limit10 = Limit{ID: "ten", Period: 60, Threshold: 10}

func hits(t *testing.T, l *Limiter, n int, wantAllowed bool) {
	t.Helper()
	for i := range n {
		if d := l.Allow(tok); d.Allowed != wantAllowed {
			t.Fatalf("hit %d: %+v; want allowed=%v", i, d, wantAllowed)
		}
	}
}

func mustSync(t *testing.T, l *Limiter) {
	t.Helper()
	if err := l.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func TestTwoLimitersConverge(t *testing.T) {
	st := newMemStore()
	clk := newFakeClock()
	mk := func() *Limiter {
		l := New(Config{Store: st, Now: clk.Now, RefreshInterval: time.Nanosecond})
		if err := l.SetLimits([]Limit{limit10}); err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := mk(), mk()
	key := CounterKey(tok.Token, limit10.ID)

	hits(t, a, 4, true)
	clk.Advance(s)
	hits(t, b, 3, true)
	if got := windowCount(b, tok.Token, "ten"); got != 3 {
		t.Fatalf("b counts %d before any sync; want its own 3", got)
	}
	mustSync(t, a)
	mustSync(t, b)
	mustSync(t, a)
	for name, l := range map[string]*Limiter{"a": a, "b": b} {
		if got := windowCount(l, tok.Token, "ten"); got != 7 {
			t.Fatalf("%s counts %d after syncs; want 7", name, got)
		}
	}
	// More syncs change nothing: every hit counts once.
	mustSync(t, a)
	mustSync(t, b)
	if got := windowCount(a, tok.Token, "ten"); got != 7 || st.total(key) != 7 {
		t.Fatalf("a counts %d, store %d after idle syncs; want 7 and 7", got, st.total(key))
	}
	if d := a.Allow(tok); !d.Allowed || d.Remaining != 2 {
		t.Fatalf("a: %+v; want allowed with 2 remaining", d)
	}
	hits(t, b, 2, true) // b has not seen a's 8th hit yet: 10 in all
	mustSync(t, a)
	mustSync(t, b)
	mustSync(t, a)
	// At t+1s; a's 4 hits at t+0 leave the window at t+60s.
	if d := a.Allow(tok); d.Allowed || d.RetryAfter != 59 {
		t.Fatalf("a: %+v; want denied by the cluster total, retry 59", d)
	}
	if d := b.Allow(tok); d.Allowed || d.RetryAfter != 59 {
		t.Fatalf("b: %+v; want denied by the cluster total, retry 59", d)
	}
	if st.total(key) != 10 {
		t.Fatalf("store holds %d hits; want 10", st.total(key))
	}
	// The window slides over the cluster buckets: 6 hits left at t+60s.
	clk.Set(epoch.Add(60 * s))
	if d := b.Allow(tok); !d.Allowed || d.Remaining != 3 {
		t.Fatalf("b at 60s: %+v; want allowed, 3 remaining", d)
	}
}

func TestHitsDuringAWriteCountOnce(t *testing.T) {
	st := newMemStore()
	entered, release := make(chan struct{}), make(chan struct{})
	st.beforeAdd = func(context.Context) {
		entered <- struct{}{}
		<-release
	}
	l, _ := newTestLimiter(t, Config{Store: st}, limit10)
	key := CounterKey(tok.Token, limit10.ID)

	hits(t, l, 3, true)
	done := make(chan error)
	go func() { done <- l.Sync(context.Background()) }()
	<-entered
	if got := windowCount(l, tok.Token, "ten"); got != 3 {
		t.Fatalf("during the write: %d counted; want 3", got)
	}
	hits(t, l, 2, true)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := windowCount(l, tok.Token, "ten"); got != 5 || st.total(key) != 3 {
		t.Fatalf("after the sync: %d counted, %d stored; want 5 and 3", got, st.total(key))
	}
	st.set(func(m *memStore) { m.beforeAdd = nil })
	mustSync(t, l)
	if got := windowCount(l, tok.Token, "ten"); got != 5 || st.total(key) != 5 {
		t.Fatalf("after the next sync: %d counted, %d stored; want 5 and 5", got, st.total(key))
	}
}

func TestWrittenButNotReadCountsOnce(t *testing.T) {
	st := newMemStore()
	l, _ := newTestLimiter(t, Config{Store: st}, limit10)
	key := CounterKey(tok.Token, limit10.ID)
	mustSync(t, l) // spends the first round's refresh of every key

	hits(t, l, 2, true)
	st.set(func(m *memStore) { m.readErr = errors.New("read refused") })
	if err := l.Sync(context.Background()); err == nil {
		t.Fatal("Sync succeeded with every read failing")
	}
	if got := windowCount(l, tok.Token, "ten"); got != 2 || st.total(key) != 2 {
		t.Fatalf("written, not re-read: %d counted, %d stored; want 2 and 2", got, st.total(key))
	}
	// Another node adds 3; the failed key is re-read though not touched.
	st.set(func(m *memStore) {
		m.readErr = nil
		m.hits[key][epoch.Unix()] += 3
	})
	mustSync(t, l)
	if got := windowCount(l, tok.Token, "ten"); got != 5 {
		t.Fatalf("after the re-read: %d counted; want 5", got)
	}
}

func TestStoreOutageFailOpen(t *testing.T) {
	st := newMemStore()
	logs := &syncWriter{}
	l, clk := newTestLimiter(t, Config{Store: st, Logger: testLogger(logs)},
		Limit{ID: "five", Period: 60, Threshold: 5})
	key := CounterKey(tok.Token, "five")
	down := errors.New("connection refused")
	st.set(func(m *memStore) { m.addErr, m.readErr = down, down })

	hits(t, l, 3, true)
	for range 5 {
		if err := l.Sync(context.Background()); !errors.Is(err, down) {
			t.Fatalf("Sync during the outage = %v; want %v", err, down)
		}
		if l.StoreHealthy() {
			t.Fatal("StoreHealthy during the outage")
		}
	}
	hits(t, l, 2, true) // decided on local counts
	hits(t, l, 1, false)
	if err := l.Sync(context.Background()); err == nil {
		t.Fatal("Sync succeeded during the outage")
	}
	if n := logs.count("counter store unreachable"); n != 1 {
		t.Fatalf("outage logged %d times; want once", n)
	}
	if got := l.Stats(); got.HitsUnsynced != 5 || got.SyncErrors < 6 {
		t.Fatalf("stats %+v; want 5 hits unsynced and an error per failed round", got)
	}

	st.set(func(m *memStore) { m.addErr, m.readErr = nil, nil })
	mustSync(t, l)
	if !l.StoreHealthy() || logs.count("counter store reachable again") != 1 {
		t.Fatalf("healthy=%v, recovery logged %d times; want true and once",
			l.StoreHealthy(), logs.count("counter store reachable again"))
	}
	// The failed hits were not retried but still count here.
	if got := windowCount(l, tok.Token, "five"); got != 5 || st.total(key) != 0 {
		t.Fatalf("%d counted, %d stored; want 5 local, none stored", got, st.total(key))
	}
	clk.Set(epoch.Add(60 * s))
	hits(t, l, 2, true)
	mustSync(t, l)
	if got := st.total(key); got != 2 {
		t.Fatalf("store holds %d after recovery; want the 2 new hits", got)
	}
	// A second outage logs again, once.
	st.set(func(m *memStore) { m.addErr = down })
	hits(t, l, 1, true)
	_ = l.Sync(context.Background())
	if n := logs.count("counter store unreachable"); n != 2 {
		t.Fatalf("two outages logged %d times; want 2", n)
	}
}

func TestStoreOutageFailClosed(t *testing.T) {
	st := newMemStore()
	l, _ := newTestLimiter(t, Config{Store: st, FailClosed: true},
		Limit{ID: "api", Path: "/api", Period: 60, Threshold: 100})
	api := Request{Token: "t", Path: "/api/x"}
	if d := l.Allow(api); !d.Allowed {
		t.Fatalf("before the outage: %+v", d)
	}
	down := errors.New("timeout")
	st.set(func(m *memStore) { m.addErr, m.readErr = down, down })
	if err := l.Sync(context.Background()); err == nil {
		t.Fatal("Sync succeeded against a failing store")
	}
	d := l.Allow(api)
	if d.Allowed || !d.StoreDown || d.Limit == nil || d.Limit.ID != "api" || d.RetryAfter < 1 {
		t.Fatalf("fail-closed during the outage: %+v; want denied by api", d)
	}
	if d := l.Allow(Request{Token: "t", Path: "/www"}); !d.Allowed {
		t.Fatalf("a request no limit applies to: %+v; want allowed", d)
	}
	st.set(func(m *memStore) { m.addErr, m.readErr = nil, nil })
	mustSync(t, l)
	if d := l.Allow(api); !d.Allowed || d.Remaining != 98 {
		t.Fatalf("after recovery: %+v; want allowed with 98 remaining", d)
	}
}

func TestIdleRecoveryByProbe(t *testing.T) {
	st := newMemStore()
	l, _ := newTestLimiter(t, Config{Store: st}, limit10)
	st.set(func(m *memStore) { m.readErr = errors.New("down") })
	l.syncMu.Lock()
	l.setHealth(errors.New("down"))
	l.syncMu.Unlock()
	if err := l.Sync(context.Background()); err == nil || l.StoreHealthy() {
		t.Fatalf("Sync = %v, healthy %v; want the probe to fail", err, l.StoreHealthy())
	}
	st.set(func(m *memStore) { m.readErr = nil })
	mustSync(t, l)
	if !l.StoreHealthy() {
		t.Fatal("an idle limiter did not notice the store came back")
	}
}

func TestRefreshRereadsIdleKeys(t *testing.T) {
	st := newMemStore()
	l, _ := newTestLimiter(t, Config{Store: st}, limit10)
	key := CounterKey(tok.Token, limit10.ID)
	hits(t, l, 1, true)
	mustSync(t, l)
	st.set(func(m *memStore) { m.hits[key][epoch.Unix()] += 4 })
	// Not touched: re-read only on the 10th round (1s of 100ms rounds).
	for i := 1; i < 10; i++ {
		mustSync(t, l)
		if got := windowCount(l, tok.Token, "ten"); got != 1 {
			t.Fatalf("round %d: %d counted; want 1 until the refresh", i, got)
		}
	}
	mustSync(t, l)
	if got := windowCount(l, tok.Token, "ten"); got != 5 {
		t.Fatalf("%d counted after the refresh; want 5", got)
	}
}

func TestRunSyncsPrunesAndFlushes(t *testing.T) {
	st := newMemStore()
	clk := newFakeClock()
	start := func() (*Limiter, context.CancelFunc, chan struct{}) {
		l := New(Config{Store: st, Now: clk.Now, SyncInterval: 5 * time.Millisecond,
			PruneInterval: 5 * time.Millisecond, RefreshInterval: time.Nanosecond})
		if err := l.SetLimits([]Limit{{ID: "h", Period: 100, Threshold: 1000}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); l.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return l, cancel, done
	}
	a, stopA, doneA := start()
	b, _, _ := start()
	key := CounterKey(tok.Token, "h")

	b.Allow(tok)
	for range 5 {
		a.Allow(tok)
	}
	waitFor(t, "b to see a's hits", func() bool { return windowCount(b, tok.Token, "h") == 6 })
	waitFor(t, "a prune", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.pruned) > 0
	})
	st.mu.Lock()
	before := st.pruned[0]
	st.mu.Unlock()
	if want := epoch.Unix() - 101 - pruneSlack; before != want {
		t.Fatalf("pruned before %d; want now-longest-slack = %d", before, want)
	}

	for range 7 {
		a.Allow(tok)
	}
	stopA()
	<-doneA
	if got := st.total(key); got != 13 {
		t.Fatalf("store holds %d after a stopped; want 13 (final flush)", got)
	}
	if n := a.Stats().Syncs; n == 0 {
		t.Fatal("no sync counted")
	}
}

func TestConcurrentClusterCountsExactly(t *testing.T) {
	st := newMemStore()
	clk := newFakeClock()
	const threshold = 100000 // high: the test is about counting, not denying
	var ls []*Limiter
	for range 2 {
		l := New(Config{Store: st, Now: clk.Now, RefreshInterval: time.Nanosecond})
		if err := l.SetLimits([]Limit{{ID: "c", Period: 60, Threshold: threshold}}); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					_ = l.Sync(context.Background())
				}
			}
		}()
	}
	var hitters sync.WaitGroup
	for i := range 4 {
		hitters.Add(1)
		go func() {
			defer hitters.Done()
			for j := range 2000 {
				if j%500 == 0 {
					clk.Advance(time.Second)
				}
				ls[i%2].Allow(Request{Token: fmt.Sprintf("t%d", j%3)})
			}
		}()
	}
	hitters.Wait()
	close(stop)
	wg.Wait()
	for range 2 {
		for _, l := range ls {
			mustSync(t, l)
		}
	}
	for tk := range 3 {
		token := fmt.Sprintf("t%d", tk)
		stored := st.total(CounterKey(token, "c"))
		for i, l := range ls {
			if got := windowCount(l, token, "c"); got != stored {
				t.Errorf("limiter %d counts %d for %s; store holds %d", i, got, token, stored)
			}
		}
	}
	var allowed uint64
	for _, l := range ls {
		allowed += l.Stats().Allowed
	}
	if allowed != 8000 {
		t.Fatalf("%d allowed; want 8000", allowed)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRunRecoversByItself(t *testing.T) {
	st := newMemStore()
	down := errors.New("connection refused")
	st.set(func(m *memStore) { m.addErr, m.readErr = down, down })
	l, _ := newTestLimiter(t, Config{Store: st, SyncInterval: 5 * time.Millisecond}, limit10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	l.Allow(tok)
	waitFor(t, "the outage to be noticed", func() bool { return !l.StoreHealthy() })
	st.set(func(m *memStore) { m.addErr, m.readErr = nil, nil })
	waitFor(t, "the store to be healthy again", l.StoreHealthy)
	l.Allow(tok)
	key := CounterKey(tok.Token, limit10.ID)
	waitFor(t, "the new hit to be synced", func() bool { return st.total(key) == 1 })
}

// TestOverAdmissionBounded measures how far past a threshold a cluster
// goes when every node admits a burst between two syncs: at most what the
// other nodes admit in the round where the total crosses the threshold.
func TestOverAdmissionBounded(t *testing.T) {
	const (
		nodes, threshold, perRound = 3, 100, 7
	)
	st := newMemStore()
	clk := newFakeClock()
	var ls []*Limiter
	for range nodes {
		l := New(Config{Store: st, Now: clk.Now})
		if err := l.SetLimits([]Limit{{ID: "c", Period: 60, Threshold: threshold}}); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	admitted := 0
	for round := 0; round < 100; round++ {
		for _, l := range ls {
			for range perRound {
				if l.Allow(tok).Allowed {
					admitted++
				}
			}
		}
		for _, l := range ls {
			mustSync(t, l)
		}
	}
	over := admitted - threshold
	t.Logf("%d nodes, %d hits each between syncs: %d admitted for a threshold of %d (%d over)",
		nodes, perRound, admitted, threshold, over)
	if over < 0 || over > (nodes-1)*perRound {
		t.Fatalf("%d admitted; want between %d and %d", admitted, threshold, threshold+(nodes-1)*perRound)
	}
	if got := st.total(CounterKey(tok.Token, "c")); got != int64(admitted) {
		t.Fatalf("store holds %d; want the %d admitted", got, admitted)
	}
}
