package upstreams

import (
	"errors"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoundRobinEvenSplit(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	total := map[string]int{}
	for n := 1; n <= 101; n++ {
		c := countIDs(pickIDs(t, tb, "web", n))
		if d := c["a"] - c["b"]; d < -1 || d > 1 || c["a"]+c["b"] != n {
			t.Fatalf("%d picks split %v, want %d±1 each", n, c, n/2)
		}
		total["a"] += c["a"]
		total["b"] += c["b"]
	}
	if d := total["a"] - total["b"]; d < -1 || d > 1 {
		t.Fatalf("over all runs: %v", total)
	}
}

func TestRoundRobinEvenUnderConcurrency(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	var counts [2]atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				h, err := tb.Pick("web", nil)
				if err != nil {
					t.Error(err)
					return
				}
				counts[h.ID()[0]-'a'].Add(1)
				h.Release()
			}
		})
	}
	wg.Wait()
	if a, b := counts[0].Load(), counts[1].Load(); a != 2000 || b != 2000 {
		t.Fatalf("4000 concurrent picks split %d/%d, want 2000/2000", a, b)
	}
}

func TestRoundRobinWeightsSmooth(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 5, 1, 1)
	// nginx's documented sequence for weights 5, 1, 1: no bursts of b or c.
	got := strings.Join(pickIDs(t, tb, "web", 7), "")
	if got != "aabacaa" {
		t.Fatalf("sequence %q, want aabacaa", got)
	}
	c := countIDs(pickIDs(t, tb, "web", 700))
	if want := (map[string]int{"a": 500, "b": 100, "c": 100}); !reflect.DeepEqual(c, want) {
		t.Fatalf("700 picks: %v, want %v", c, want)
	}
}

func TestLeastConnPrefersFewestInFlight(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web", LB: LBLeastConn}, 1, 1, 1)
	held := map[string]*Handle{}
	for range 3 {
		h := mustPick(t, tb, "web", nil)
		if held[h.ID()] != nil {
			t.Fatalf("picked %s twice while others had nothing in flight", h.ID())
		}
		held[h.ID()] = h
	}
	held["b"].Release()
	for range 3 {
		// b has nothing in flight, a and c one each (and b's pick is
		// released before the next).
		h := mustPick(t, tb, "web", nil)
		if h.ID() != "b" {
			t.Fatalf("picked %s, want b (fewest in flight)", h.ID())
		}
		h.Release()
	}
}

func TestLeastConnWeighted(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web", LB: LBLeastConn}, 2, 1)
	var hs []*Handle
	for range 30 {
		hs = append(hs, mustPick(t, tb, "web", nil))
	}
	if got := tb.InFlight(); got["web/a"] != 20 || got["web/b"] != 10 {
		t.Fatalf("held in flight %v, want a:20 b:10 for weights 2:1", got)
	}
	for _, h := range hs {
		h.Release()
	}
}

func TestLeastConnTiesRoundRobin(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web", LB: LBLeastConn}, 1, 1, 1)
	c := countIDs(pickIDs(t, tb, "web", 30))
	if want := (map[string]int{"a": 10, "b": 10, "c": 10}); !reflect.DeepEqual(c, want) {
		t.Fatalf("30 picks with nothing in flight: %v, want %v", c, want)
	}
}

func TestExclude(t *testing.T) {
	for _, lb := range []string{LBRoundRobin, LBLeastConn} {
		t.Run(lb, func(t *testing.T) {
			tb, _, _ := newTestTable(t, Config{})
			addService(t, tb, Service{Name: "web", LB: lb}, 1, 1)
			first := mustPick(t, tb, "web", nil)
			first.Release()
			for range 10 {
				h := mustPick(t, tb, "web", first)
				if h.Addr() == first.Addr() {
					t.Fatalf("picked excluded %s while another was usable", h.Addr())
				}
				h.Release()
			}
			// With the other draining, the excluded one is all there is.
			other := "a"
			if first.ID() == "a" {
				other = "b"
			}
			tb.SetState("web", other, StateDraining)
			h := mustPick(t, tb, "web", first)
			if h.Addr() != first.Addr() {
				t.Fatalf("picked %s, want the excluded %s as the last resort", h.Addr(), first.Addr())
			}
			h.Release()
		})
	}
}

func TestDrainExcludesAtOnceAndEnableRestores(t *testing.T) {
	for _, lb := range []string{LBRoundRobin, LBLeastConn} {
		t.Run(lb, func(t *testing.T) {
			tb, _, _ := newTestTable(t, Config{})
			addService(t, tb, Service{Name: "web", LB: lb}, 1, 1)
			held := mustPick(t, tb, "web", nil) // in flight across the drain
			tb.SetState("web", held.ID(), StateDraining)
			for _, id := range pickIDs(t, tb, "web", 20) {
				if id == held.ID() {
					t.Fatalf("picked draining %s", id)
				}
			}
			if n := tb.InFlight()[Key("web", held.ID())]; n != 1 {
				t.Fatalf("in flight to the draining upstream = %d, want 1 (requests in flight finish)", n)
			}
			held.Release()
			if n, ok := tb.InFlight()[Key("web", held.ID())]; ok {
				t.Fatalf("in flight after release = %d, want none", n)
			}
			tb.SetState("web", "a", StateDraining)
			tb.SetState("web", "b", StateDraining)
			if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
				t.Fatalf("all draining: err = %v, want ErrNoUpstream", err)
			}
			tb.SetState("web", held.ID(), StateActive)
			if h := mustPick(t, tb, "web", nil); h.ID() != held.ID() {
				t.Fatalf("picked %s after enabling %s", h.ID(), held.ID())
			}
		})
	}
}

// TestDrainBetweenChoiceAndCount drains an upstream at the worst moment: after
// a pick has chosen it, before the pick counts it. If the drainer then sees
// zero in flight, the pick must not go ahead with it.
func TestDrainBetweenChoiceAndCount(t *testing.T) {
	pickers := map[string]func(*Table) (*Handle, error){
		LBRoundRobin: func(tb *Table) (*Handle, error) { return tb.Pick("web", nil) },
		LBLeastConn:  func(tb *Table) (*Handle, error) { return tb.Pick("web", nil) },
		"addrs": func(tb *Table) (*Handle, error) {
			return tb.PickAddrs([]string{"127.0.0.1:80", "127.0.0.2:80"}, nil)
		},
	}
	for name, pick := range pickers {
		t.Run(name, func(t *testing.T) {
			tb, _, _ := newTestTable(t, Config{})
			lb := name
			if lb == "addrs" {
				lb = LBRoundRobin
			}
			addService(t, tb, Service{Name: "web", LB: lb}, 1, 1)
			for _, victim := range []string{"a", "b"} {
				tb.SetState("web", "a", StateActive)
				tb.SetState("web", "b", StateActive)
				fired, sawZero := false, false
				tb.chosenHook = func(m *member) {
					if fired || m.id != victim {
						return
					}
					fired = true
					tb.SetState("web", victim, StateDraining)
					_, busy := tb.InFlight()[Key("web", victim)]
					sawZero = !busy
				}
				for i := 0; !fired; i++ {
					if i == 10 {
						t.Fatalf("%s was never chosen", victim)
					}
					h, err := pick(tb)
					if err != nil {
						t.Fatal(err)
					}
					if fired && sawZero && h.ID() == victim {
						t.Fatalf("pick returned %s after the drainer saw it draining with nothing in flight", victim)
					}
					if fired && h.ID() == victim {
						t.Fatalf("pick returned %s, drained before it was counted", victim)
					}
					h.Release()
				}
				if !sawZero {
					t.Fatal("the drainer saw the chosen pick in flight: it was counted before it was chosen?")
				}
				tb.chosenHook = nil
			}
		})
	}
}

// TestDrainSafetyUnderConcurrentPicks checks the contract the node
// publishes: once draining is applied and the in-flight count then reads
// zero, no pick can still hand out that upstream.
func TestDrainSafetyUnderConcurrentPicks(t *testing.T) {
	for _, lb := range []string{LBRoundRobin, LBLeastConn} {
		t.Run(lb, func(t *testing.T) {
			tb, _, _ := newTestTable(t, Config{})
			addService(t, tb, Service{Name: "web", LB: lb}, 1, 1)
			var drained atomic.Bool
			var violations, picks, picksOfA atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						h, err := tb.Pick("web", nil)
						if err != nil {
							t.Error(err)
							return
						}
						if h.ID() == "a" {
							picksOfA.Add(1)
							// Still counted in flight here: if the drainer
							// saw zero, it saw it before our pick counted.
							if drained.Load() {
								violations.Add(1)
							}
						}
						picks.Add(1)
						h.Release()
						// Lock-free pickers are only preempted every few
						// milliseconds; yield so the drainer interleaves.
						runtime.Gosched()
					}
				})
			}
			t.Cleanup(func() {
				close(stop)
				wg.Wait()
			})
			// waitFor spins until cond holds; the pickers must make
			// progress for it to.
			waitFor := func(what string, cond func() bool) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for !cond() {
					if time.Now().After(deadline) {
						t.Fatalf("timed out waiting for %s", what)
					}
					runtime.Gosched()
				}
			}
			for range 1000 {
				a := picksOfA.Load()
				waitFor("a pick of a while active", func() bool { return picksOfA.Load() > a })
				tb.SetState("web", "a", StateDraining)
				waitFor("zero in flight", func() bool { return tb.InFlight()["web/a"] == 0 })
				drained.Store(true)
				n := picks.Load()
				waitFor("picks while drained", func() bool { return picks.Load() > n+4 })
				drained.Store(false)
				tb.SetState("web", "a", StateActive)
			}
			if v := violations.Load(); v != 0 {
				t.Fatalf("%d picks of a draining upstream after zero in flight was observed", v)
			}
		})
	}
}

func TestPassiveDownBackoffAndTrial(t *testing.T) {
	tb, clk, hl := newTestTable(t, Config{DownBackoff: time.Second, MaxDownBackoff: 4 * time.Second})
	addService(t, tb, Service{Name: "web"}, 1)
	noPick := func(when string) {
		t.Helper()
		if h, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
			t.Fatalf("%s: picked %v (err %v), want ErrNoUpstream", when, h, err)
		}
	}

	h := mustPick(t, tb, "web", nil)
	h.Failed(errors.New("connection refused"))
	h.Failed(errors.New("again")) // only the first outcome counts
	h.Release()
	if ev := hl.list(); !slices.Equal(ev, []string{"web/a down"}) {
		t.Fatalf("OnHealth calls %v, want [web/a down]", ev)
	}
	noPick("right after the failure")
	clk.advance(time.Second - 1)
	noPick("just before the backoff expires")

	// Each failed trial doubles the backoff: 1s, 2s, 4s, then the 4s cap.
	for _, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if backoff > time.Second {
			clk.advance(backoff - 1)
			noPick("before the doubled backoff expires")
		}
		clk.advance(1)
		trial := mustPick(t, tb, "web", nil)
		noPick("while a trial is out") // one trial per period
		trial.Failed(errors.New("still refused"))
		trial.Release()
		noPick("after a failed trial")
	}
	clk.advance(4 * time.Second)
	trial := mustPick(t, tb, "web", nil)
	trial.Succeeded()
	trial.Release()
	if ev := hl.list(); !slices.Equal(ev, []string{"web/a down", "web/a up"}) {
		t.Fatalf("OnHealth calls %v, want [web/a down web/a up]", ev)
	}
	for range 3 {
		mustPick(t, tb, "web", nil).Release() // up: no clock needed
	}
}

func TestDownUpstreamIsSkippedAndTriedInTurn(t *testing.T) {
	tb, clk, _ := newTestTable(t, Config{DownBackoff: time.Second})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	var a *Handle
	for a == nil {
		if h := mustPick(t, tb, "web", nil); h.ID() == "a" {
			a = h
		} else {
			h.Release()
		}
	}
	a.Failed(errors.New("reset"))
	a.Release()
	for _, id := range pickIDs(t, tb, "web", 10) {
		if id != "b" {
			t.Fatalf("picked down upstream %s", id)
		}
	}
	clk.advance(time.Second)
	c := countIDs(pickIDs(t, tb, "web", 10))
	if c["a"] != 1 {
		t.Fatalf("after the backoff: %v, want exactly one trial of a", c)
	}
	// A request that was sent while a was up and succeeds later is no
	// trial: it does not bring a back.
	if v := viewOf(t, tb, "web", "a"); v.Health != HealthDown {
		t.Fatalf("a is %s after an unreported trial, want down", v.Health)
	}
}

func TestSucceededWithoutTrialDoesNotRecover(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1)
	h1 := mustPick(t, tb, "web", nil)
	h2 := mustPick(t, tb, "web", nil)
	h1.Failed(errors.New("refused"))
	h2.Succeeded() // picked while up: says nothing about the failure since
	if v := viewOf(t, tb, "web", "a"); v.Health != HealthDown {
		t.Fatalf("health %s, want down", v.Health)
	}
	if ev := hl.list(); !slices.Equal(ev, []string{"web/a down"}) {
		t.Fatalf("OnHealth calls %v", ev)
	}
}

func TestCheckedServiceHasNoTrials(t *testing.T) {
	tb, clk, hl := newTestTable(t, Config{DownBackoff: time.Second})
	addService(t, tb, Service{Name: "web", HealthCheck: &HealthCheck{}}, 1)
	h := mustPick(t, tb, "web", nil)
	h.Failed(errors.New("refused"))
	h.Release()
	clk.advance(time.Hour)
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v: a checked upstream must come back only through a check", err)
	}
	// Another node's passing check is as good as ours.
	tb.SetHealth("web", "a", HealthUp)
	mustPick(t, tb, "web", nil).Release()
	if ev := hl.list(); !slices.Equal(ev, []string{"web/a down"}) {
		t.Fatalf("OnHealth calls %v, want only the local observation", ev)
	}
}

func TestRemoteDownUsesBaseBackoff(t *testing.T) {
	tb, clk, hl := newTestTable(t, Config{DownBackoff: time.Second, MaxDownBackoff: 8 * time.Second})
	addService(t, tb, Service{Name: "web"}, 1)
	tb.SetHealth("web", "a", HealthDown)
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v after a remote down", err)
	}
	clk.advance(time.Second)
	trial := mustPick(t, tb, "web", nil)
	trial.Failed(errors.New("refused")) // backoff now 2s
	trial.Release()
	// A remote down for an upstream already down here keeps the local
	// backoff.
	tb.SetHealth("web", "a", HealthDown)
	clk.advance(time.Second)
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v: the doubled backoff was reset", err)
	}
	tb.SetHealth("web", "a", HealthUp)
	mustPick(t, tb, "web", nil).Release()
	if ev := hl.list(); len(ev) != 0 {
		t.Fatalf("remote verdicts reported: %v", ev)
	}
}

func TestRemovedUpstreamFailureNotReported(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1)
	h := mustPick(t, tb, "web", nil)
	tb.RemoveUpstream("web", "a")
	h.Failed(errors.New("refused"))
	h.Release()
	if ev := hl.list(); len(ev) != 0 {
		t.Fatalf("reported health of a removed upstream: %v", ev)
	}
}

func TestPickAllocations(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "rr"}, 1, 1)
	addService(t, tb, Service{Name: "lc", LB: LBLeastConn}, 1, 1)
	for _, name := range []string{"rr", "lc"} {
		allocs := testing.AllocsPerRun(1000, func() {
			h, _ := tb.Pick(name, nil)
			h.Release()
		})
		// The handle itself: it outlives Release (as exclude), so it cannot
		// be recycled.
		if allocs > 1 {
			t.Errorf("%s: %.1f allocations per pick, want at most 1 (the handle)", name, allocs)
		}
	}
	_ = boolp
}

// TestCountsPicksAndFailures: Counts has every pick of an upstream and the
// failures reported for them, once per handle; a drained upstream's count
// stops.
func TestCountsPicksAndFailures(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	c := countIDs(pickIDs(t, tb, "web", 10))
	var a *Handle
	for a == nil {
		h := mustPick(t, tb, "web", nil)
		c[h.ID()]++
		if h.ID() == "a" {
			a = h
		} else {
			h.Release()
		}
	}
	a.Failed(errors.New("refused"))
	a.Failed(errors.New("reported twice"))
	a.Release()
	tb.SetState("web", "b", StateDraining)
	if _, err := tb.Pick("web", nil); err == nil {
		t.Fatal("picked with a down and b draining")
	}
	got := tb.Counts()
	want := map[string]Counts{
		Key("web", "a"): {Picks: uint64(c["a"]), Failures: 1},
		Key("web", "b"): {Picks: uint64(c["b"])},
	}
	if !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}
