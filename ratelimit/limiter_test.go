package ratelimit

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// epoch is a Unix second divisible by a day, so that wide buckets start at
// the beginning of a test.
var epoch = time.Unix(1_699_920_000, 0)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: epoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestLimiter(t *testing.T, cfg Config, limits ...Limit) (*Limiter, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	l := New(cfg)
	if err := l.SetLimits(limits); err != nil {
		t.Fatalf("SetLimits: %v", err)
	}
	return l, clk
}

// row is one hit of a sequence: at an offset from epoch, req is decided
// and the decision compared with the expectations. A row with set
// replaces the limits first.
type row struct {
	at        time.Duration
	set       []Limit
	req       Request
	allowed   bool
	limit     string // id of Decision.Limit; "" for nil
	remaining int64
	retry     int
	reset     int // checked when >= 0
}

func runRows(t *testing.T, l *Limiter, clk *fakeClock, rows []row) {
	t.Helper()
	for i, r := range rows {
		if r.set != nil {
			if err := l.SetLimits(r.set); err != nil {
				t.Fatalf("row %d: SetLimits: %v", i, err)
			}
		}
		clk.Set(epoch.Add(r.at))
		d := l.Allow(r.req)
		id := ""
		if d.Limit != nil {
			id = d.Limit.ID
		}
		if d.Allowed != r.allowed || id != r.limit || d.Remaining != r.remaining ||
			d.RetryAfter != r.retry || (r.reset >= 0 && d.Reset != r.reset) {
			t.Fatalf("row %d (t+%v %+v): got allowed=%v limit=%q remaining=%d retry=%d reset=%d; "+
				"want allowed=%v limit=%q remaining=%d retry=%d reset=%d",
				i, r.at, r.req, d.Allowed, id, d.Remaining, d.RetryAfter, d.Reset,
				r.allowed, r.limit, r.remaining, r.retry, r.reset)
		}
	}
}

const s = time.Second

var tok = Request{Token: "t1", Protocol: "HTTP", Method: "GET", Path: "/"}

func req(length int64) Request {
	r := tok
	r.Length = length
	return r
}

func TestAllowSequences(t *testing.T) {
	lim := func(id string, period int, threshold int64) Limit {
		return Limit{ID: id, Period: period, Threshold: threshold}
	}
	cases := []struct {
		name   string
		limits []Limit
		rows   []row
	}{
		{
			name:   "threshold reached",
			limits: []Limit{lim("a", 10, 3)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "a", remaining: 2, reset: 10},
				{at: 0, req: tok, allowed: true, limit: "a", remaining: 1, reset: 10},
				{at: 500 * time.Millisecond, req: tok, allowed: true, limit: "a", remaining: 0, reset: 10},
				{at: 900 * time.Millisecond, req: tok, allowed: false, limit: "a", retry: 10, reset: 10},
				{at: 5 * s, req: tok, allowed: false, limit: "a", retry: 5, reset: 5},
				{at: 9*s + 999*time.Millisecond, req: tok, allowed: false, limit: "a", retry: 1, reset: 1},
				{at: 10 * s, req: tok, allowed: true, limit: "a", remaining: 2, reset: 10},
			},
		},
		{
			name:   "window slides second by second",
			limits: []Limit{lim("a", 3, 2)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "a", remaining: 1, reset: 3},
				{at: 1 * s, req: tok, allowed: true, limit: "a", remaining: 0, reset: 2},
				{at: 2 * s, req: tok, allowed: false, limit: "a", retry: 1, reset: 1},
				{at: 3 * s, req: tok, allowed: true, limit: "a", remaining: 0, reset: 1},
				{at: 3 * s, req: tok, allowed: false, limit: "a", retry: 1, reset: 1},
				{at: 4 * s, req: tok, allowed: true, limit: "a", remaining: 0, reset: 2},
				{at: 5 * s, req: tok, allowed: false, limit: "a", retry: 1, reset: 1},
				{at: 6 * s, req: tok, allowed: true, limit: "a", remaining: 0, reset: 1},
				{at: 20 * s, req: tok, allowed: true, limit: "a", remaining: 1, reset: 3},
			},
		},
		{
			// Ties go to the limit listed first.
			name:   "several limits, the tightest reported",
			limits: []Limit{lim("long", 60, 8), lim("short", 10, 4)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 3, reset: 10},
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 2, reset: 10},
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 1, reset: 10},
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 0, reset: 10},
				{at: 0, req: tok, limit: "short", retry: 10, reset: 10},
				{at: 10 * s, req: tok, allowed: true, limit: "long", remaining: 3, reset: 50},
				{at: 10 * s, req: tok, allowed: true, limit: "long", remaining: 2, reset: 50},
				{at: 10 * s, req: tok, allowed: true, limit: "long", remaining: 1, reset: 50},
				{at: 20 * s, req: tok, allowed: true, limit: "long", remaining: 0, reset: 40},
				// long is exhausted (short is not): the 4 hits at 0 free it.
				{at: 21 * s, req: tok, limit: "long", retry: 39, reset: 39},
				{at: 60 * s, req: tok, allowed: true, limit: "long", remaining: 3, reset: 10},
			},
		},
		{
			name:   "both exhausted: the one that frees last",
			limits: []Limit{lim("a", 5, 1), lim("b", 50, 1)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "a", remaining: 0, reset: 5},
				{at: 1 * s, req: tok, allowed: false, limit: "b", retry: 49, reset: 49},
				{at: 49 * s, req: tok, allowed: false, limit: "b", retry: 1, reset: 1},
				{at: 50 * s, req: tok, allowed: true, limit: "a", remaining: 0, reset: 5},
			},
		},
		{
			name:   "data_size",
			limits: []Limit{{ID: "big", DataSize: 100, Period: 10, Threshold: 1}},
			rows: []row{
				{at: 0, req: req(50), allowed: true, reset: -1},
				{at: 0, req: req(100), allowed: true, limit: "big", remaining: 0, reset: 10},
				{at: 0, req: req(200), allowed: false, limit: "big", retry: 10, reset: 10},
				{at: 0, req: req(99), allowed: true, reset: -1},
				{at: 0, req: req(0), allowed: true, reset: -1},
			},
		},
		{
			name: "anchored at the start",
			limits: []Limit{{ID: "x", AuthToken: "ab", Method: "GET|POST", Path: "/api",
				Period: 10, Threshold: 0}},
			rows: []row{
				{req: Request{Token: "ab", Method: "GET", Path: "/api/v1"}, limit: "x", retry: 10, reset: 10},
				{req: Request{Token: "abc", Method: "POST", Path: "/api"}, limit: "x", retry: 10, reset: 10},
				{req: Request{Token: "ab", Method: "POSTX", Path: "/apix"}, limit: "x", retry: 10, reset: 10},
				{req: Request{Token: "xab", Method: "GET", Path: "/api"}, allowed: true, reset: 0},
				{req: Request{Token: "ab", Method: "GET", Path: "/v1/api"}, allowed: true, reset: 0},
				{req: Request{Token: "ab", Method: "XPOST", Path: "/api"}, allowed: true, reset: 0},
				{req: Request{Token: "ab", Method: "get", Path: "/api"}, allowed: true, reset: 0},
			},
		},
		{
			name:   "threshold 0 denies all",
			limits: []Limit{lim("zero", 30, 0)},
			rows: []row{
				{at: 0, req: tok, limit: "zero", retry: 30, reset: 30},
				{at: 100 * s, req: tok, limit: "zero", retry: 30, reset: 30},
			},
		},
		{
			name:   "no limits",
			limits: nil,
			rows:   []row{{req: tok, allowed: true, reset: 0}},
		},
		{
			name:   "denied hits not counted",
			limits: []Limit{lim("short", 10, 2), lim("long", 100, 3)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 1, reset: 10},
				{at: 0, req: tok, allowed: true, limit: "short", remaining: 0, reset: 10},
				{at: 1 * s, req: tok, limit: "short", retry: 9, reset: 9},
				{at: 2 * s, req: tok, limit: "short", retry: 8, reset: 8},
				{at: 3 * s, req: tok, limit: "short", retry: 7, reset: 7},
				// Had the denials counted under long, it would be exhausted.
				{at: 10 * s, req: tok, allowed: true, limit: "long", remaining: 0, reset: 90},
				{at: 10 * s, req: tok, limit: "long", retry: 90, reset: 90},
			},
		},
		{
			name:   "removal of a limit",
			limits: []Limit{lim("strict", 10, 1), lim("loose", 10, 5)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "strict", remaining: 0, reset: 10},
				{at: 0, req: tok, limit: "strict", retry: 10, reset: 10},
				{at: 1 * s, set: []Limit{lim("loose", 10, 5)}, req: tok, allowed: true, limit: "loose", remaining: 3, reset: 9},
				// Back again: its counter survived, keyed by id.
				{at: 2 * s, set: []Limit{lim("strict", 10, 1), lim("loose", 10, 5)}, req: tok, limit: "strict", retry: 8, reset: 8},
				{at: 3 * s, set: []Limit{}, req: tok, allowed: true, reset: 0},
			},
		},
		{
			name:   "an hour keeps 1-second buckets",
			limits: []Limit{lim("hour", 3600, 1)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "hour", remaining: 0, reset: 3600},
				{at: 3599 * s, req: tok, limit: "hour", retry: 1, reset: 1},
				{at: 3600 * s, req: tok, allowed: true, limit: "hour", remaining: 0, reset: 3600},
			},
		},
		{
			// A day has 24-second buckets: a bucket partly in the window
			// counts whole, so hits stay up to 23 s longer, never less.
			name:   "a day has 24-second buckets",
			limits: []Limit{lim("day", 86400, 2)},
			rows: []row{
				{at: 0, req: tok, allowed: true, limit: "day", remaining: 1, reset: 86423},
				{at: 30 * s, req: tok, allowed: true, limit: "day", remaining: 0, reset: 86393},
				{at: 31 * s, req: tok, limit: "day", retry: 86392, reset: 86392},
				{at: 86400 * s, req: tok, limit: "day", retry: 23, reset: 23},
				{at: 86423 * s, req: tok, allowed: true, limit: "day", remaining: 0, reset: 24},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, clk := newTestLimiter(t, Config{}, tc.limits...)
			runRows(t, l, clk, tc.rows)
		})
	}
}

func TestValidate(t *testing.T) {
	good := Limit{ID: "g", AuthToken: "tok.*", Protocol: "HTTP|SMTP", Method: "GET", Path: "/a", Period: 1}
	if err := Validate(good); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	cases := []struct {
		field string
		mod   func(*Limit)
	}{
		{"auth_token", func(l *Limit) { l.AuthToken = "(" }},
		{"protocol", func(l *Limit) { l.Protocol = "[" }},
		{"method", func(l *Limit) { l.Method = "*" }},
		{"path", func(l *Limit) { l.Path = "a)|(b" }}, // would unanchor the group
		{"data_size", func(l *Limit) { l.DataSize = -1 }},
		{"period", func(l *Limit) { l.Period = 0 }},
		{"period", func(l *Limit) { l.Period = -5 }},
		{"threshold", func(l *Limit) { l.Threshold = -1 }},
	}
	for _, tc := range cases {
		l := good
		tc.mod(&l)
		err := Validate(l)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v; want a FieldError on %s", l, err, tc.field)
		}
	}
}

func TestSetLimitsKeepsTheSetOnError(t *testing.T) {
	first := []Limit{{ID: "a", Period: 10, Threshold: 1}}
	l, _ := newTestLimiter(t, Config{}, first...)
	for name, bad := range map[string][]Limit{
		"duplicate id": {{ID: "a", Period: 1}, {ID: "a", Period: 2}},
		"empty id":     {{Period: 1}},
		"bad period":   {{ID: "b", Period: 0}},
		"bad regexp":   {{ID: "b", Period: 1, Path: "("}},
	} {
		if err := l.SetLimits(bad); err == nil {
			t.Errorf("%s: SetLimits accepted %+v", name, bad)
		}
		if got := l.Limits(); len(got) != 1 || got[0] != first[0] {
			t.Errorf("%s: limits now %+v; want the first set kept", name, got)
		}
	}
	got := l.Limits()
	got[0].Threshold = 99
	if l.Limits()[0].Threshold != 1 {
		t.Error("Limits returned the internal slice")
	}
}

func TestMatchCacheIsBounded(t *testing.T) {
	l, _ := newTestLimiter(t, Config{MatchCacheSize: numShards * 2},
		Limit{ID: "api", Path: "/api", Period: 60, Threshold: 1000})
	for i := range 5000 {
		p := fmt.Sprintf("/api/%d", i)
		if i%2 == 1 {
			p = fmt.Sprintf("/www/%d", i)
		}
		d := l.Allow(Request{Token: fmt.Sprintf("t%d", i%7), Path: p})
		if wantLimited := i%2 == 0; (d.Limit != nil) != wantLimited {
			t.Fatalf("request %d (%s): limit %v; want limited=%v", i, p, d.Limit, wantLimited)
		}
	}
	entries := 0
	for i := range l.shards {
		entries += len(l.shards[i].cache)
	}
	if entries > numShards*2 {
		t.Fatalf("match cache holds %d entries; bound is %d", entries, numShards*2)
	}
	// All api hits of a token are counted in one counter, whatever the path.
	d := l.Allow(Request{Token: "t0", Path: "/api/x"})
	if want := int64(1000 - 5000/2/7 - 1 - 1); d.Remaining > want+1 || d.Remaining < want-1 {
		t.Fatalf("remaining %d; want about %d", d.Remaining, want)
	}
}

// TestMatchCacheCollisionIsAMiss: an entry found under a request's hash but
// made for another tuple (a hash collision, forced here) is not used.
func TestMatchCacheCollisionIsAMiss(t *testing.T) {
	l, _ := newTestLimiter(t, Config{}, Limit{ID: "a", Path: "/a", Period: 60, Threshold: 1})
	a := Request{Token: "t", Path: "/a"}
	b := Request{Token: "t", Path: "/b"}
	if d := l.Allow(a); !d.Allowed || d.Limit == nil {
		t.Fatalf("first /a: %+v", d)
	}
	th := l.tokenHash("t")
	sh := l.shardFor(th)
	sh.cache[l.tupleHash(th, &b)] = sh.cache[l.tupleHash(th, &a)]
	for i := range 3 {
		if d := l.Allow(b); !d.Allowed || d.Limit != nil {
			t.Fatalf("/b %d under /a's entry: %+v, want allowed by no limit", i, d)
		}
	}
	if d := l.Allow(a); d.Allowed {
		t.Fatalf("second /a: %+v, want denied", d)
	}
}

func TestIdleCountersDropped(t *testing.T) {
	l, clk := newTestLimiter(t, Config{}, Limit{ID: "a", Period: 10, Threshold: 1})
	for i := range 100 {
		l.Allow(Request{Token: fmt.Sprintf("t%d", i)})
	}
	if n := l.Stats().Counters; n != 100 {
		t.Fatalf("%d counters; want 100", n)
	}
	clk.Advance(9 * s)
	l.sweep()
	if n := l.Stats().Counters; n != 100 {
		t.Fatalf("after 9s: %d counters; want 100 (their window has not passed)", n)
	}
	if d := l.Allow(Request{Token: "t7"}); d.Allowed {
		t.Fatal("t7 allowed within its window")
	}
	clk.Advance(1 * s)
	l.sweep()
	if n := l.Stats().Counters; n != 0 {
		t.Fatalf("after the window: %d counters; want 0", n)
	}
	entries := 0
	for i := range l.shards {
		entries += len(l.shards[i].cache)
	}
	if entries != 0 {
		t.Fatalf("%d cached matches left pointing at dropped counters", entries)
	}
	if d := l.Allow(Request{Token: "t7"}); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("t7 after the sweep: %+v; want allowed with 0 remaining", d)
	}
	if d := l.Allow(Request{Token: "t7"}); d.Allowed {
		t.Fatal("t7's new counter did not count")
	}
}

func TestConcurrentAllowAdmitsExactlyThreshold(t *testing.T) {
	const threshold = 500
	l, _ := newTestLimiter(t, Config{}, Limit{ID: "a", Period: 60, Threshold: threshold})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := range 200 {
				// Half the goroutines share one path, so cache misses race too.
				if l.Allow(Request{Token: "shared", Path: fmt.Sprintf("/%d", (g%2)*i)}).Allowed {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if allowed != threshold {
		t.Fatalf("%d allowed; want exactly %d", allowed, threshold)
	}
	st := l.Stats()
	if st.Allowed != threshold || st.Denied != 8*200-threshold {
		t.Fatalf("stats %+v; want %d allowed, %d denied", st, threshold, 8*200-threshold)
	}
}

func TestClockRaceInsertsInOrder(t *testing.T) {
	l, clk := newTestLimiter(t, Config{}, Limit{ID: "a", Period: 10, Threshold: 3})
	clk.Set(epoch.Add(5 * s))
	l.Allow(tok)
	// A caller that read the clock a second earlier but took the lock later.
	clk.Set(epoch.Add(4 * s))
	l.Allow(tok)
	clk.Set(epoch.Add(13 * s))
	// Window [4,13]: both earlier hits inside.
	if d := l.Allow(tok); !d.Allowed || d.Remaining != 0 || d.Reset != 1 {
		t.Fatalf("got %+v; want allowed, 0 remaining, reset 1", d)
	}
	if d := l.Allow(tok); d.Allowed || d.RetryAfter != 1 {
		t.Fatalf("got %+v; want denied until the hit at 4 leaves", d)
	}
	clk.Set(epoch.Add(14 * s))
	// Window [5,14]: the hit at 4 left.
	if d := l.Allow(tok); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("got %+v; want allowed, 0 remaining", d)
	}
}

func TestSetLimitsSameSetKeepsCachedMatches(t *testing.T) {
	limits := []Limit{{ID: "a", Path: "/api", Period: 10, Threshold: 5}}
	l, _ := newTestLimiter(t, Config{}, limits...)
	l.Allow(Request{Token: "t", Path: "/api"})
	before := l.set.Load()
	if err := l.SetLimits(append([]Limit(nil), limits...)); err != nil {
		t.Fatal(err)
	}
	if l.set.Load() != before {
		t.Fatal("setting identical limits replaced the set, dropping every cached match")
	}
	changed := []Limit{{ID: "a", Path: "/api", Period: 10, Threshold: 2}}
	if err := l.SetLimits(changed); err != nil {
		t.Fatal(err)
	}
	if d := l.Allow(Request{Token: "t", Path: "/api"}); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after lowering the threshold: %+v; want allowed, 0 remaining", d)
	}
}

// TestRecheckCountsOnlyLimitsAboveDeclaredSize: a second decision on the
// same request with its real size checks and counts only the limits its
// declared size did not reach, so no limit counts the request twice.
func TestRecheckCountsOnlyLimitsAboveDeclaredSize(t *testing.T) {
	l := New(Config{Now: func() time.Time { return time.Unix(1000, 0) }})
	if err := l.SetLimits([]Limit{
		{ID: "all", Period: 60, Threshold: 2},
		{ID: "big", DataSize: 1000, Period: 60, Threshold: 1},
	}); err != nil {
		t.Fatal(err)
	}
	small := Request{Token: "t", Protocol: "SMTP", Method: "MAIL", Length: 10}
	if d := l.Allow(small); !d.Allowed || d.Limit.ID != "all" || d.Remaining != 1 {
		t.Fatalf("first message at MAIL: %+v", d)
	}
	grown := small
	grown.Length, grown.Recheck, grown.Declared = 5000, true, 10
	if d := l.Allow(grown); !d.Allowed || d.Limit == nil || d.Limit.ID != "big" {
		t.Fatalf("re-check with the real size: %+v; want allowed under big", d)
	}
	// "all" was counted once for this message: one more message fits.
	if d := l.Allow(small); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("second message: %+v; want allowed with 0 remaining under all", d)
	}
	// "big" is spent: another large message is denied at its re-check.
	if d := l.Allow(grown); d.Allowed || d.Limit.ID != "big" {
		t.Fatalf("second large re-check: %+v; want denied by big", d)
	}
	// A re-check that reaches no new limit allows without counting.
	same := small
	same.Recheck, same.Declared = true, 10
	if d := l.Allow(same); !d.Allowed || d.Limit != nil {
		t.Fatalf("re-check with no larger limit: %+v", d)
	}
}

// TestSyncSlotsAlignToWallClock: every node computes the same sync instants,
// multiples of the interval, whatever moment it started at.
func TestSyncSlotsAlignToWallClock(t *testing.T) {
	iv := 100 * time.Millisecond
	for range 20 {
		d := untilNextSlot(iv)
		at := time.Now().Add(d)
		if d <= 0 || d > iv {
			t.Fatalf("untilNextSlot = %s, want in (0, %s]", d, iv)
		}
		// Within a few ms of a multiple (the clock moved between calls).
		if off := at.Sub(at.Truncate(iv)); off > 5*time.Millisecond && iv-off > 5*time.Millisecond {
			t.Fatalf("next slot %s is %s off a multiple of %s", at.Format(time.StampMicro), off, iv)
		}
		time.Sleep(7 * time.Millisecond)
	}
}
