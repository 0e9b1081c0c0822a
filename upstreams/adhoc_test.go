package upstreams

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// pickAddrs picks from addrs n times, releasing each handle, and counts the
// addresses chosen.
func pickAddrs(t *testing.T, tb *Table, addrs []string, n int) map[string]int {
	t.Helper()
	c := map[string]int{}
	for range n {
		h, err := tb.PickAddrs(addrs, nil)
		if err != nil {
			t.Fatalf("pick from %v: %v", addrs, err)
		}
		c[h.Addr()]++
		h.Release()
	}
	return c
}

func TestPickAddrsRoundRobinAdHoc(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addrs := []string{"10.0.0.1:3001", " 10.0.0.2:3002 "}
	h, err := tb.PickAddrs(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Service() != "" || h.ID() != "" {
		t.Fatalf("ad-hoc handle names %s/%s", h.Service(), h.ID())
	}
	h.Release()
	c := pickAddrs(t, tb, addrs, 100)
	if want := (map[string]int{"10.0.0.1:3001": 50, "10.0.0.2:3002": 50}); !reflect.DeepEqual(c, want) {
		t.Fatalf("100 picks: %v, want %v", c, want)
	}
	if len(tb.InFlight()) != 0 {
		t.Fatalf("ad-hoc addresses in InFlight: %v", tb.InFlight())
	}
}

func TestPickAddrsRegisteredObeysDrainAndCounts(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1)         // web/a at 127.0.0.1:80
	addService(t, tb, Service{Name: "zzz"}, 1)         // the same address again, later by key
	addrs := []string{"127.0.0.1:80", "10.0.0.2:3002"} // registered, ad-hoc
	var held *Handle
	for held == nil {
		h, err := tb.PickAddrs(addrs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() == "127.0.0.1:80" {
			held = h
		} else {
			h.Release()
		}
	}
	if held.Service() != "web" || held.ID() != "a" {
		t.Fatalf("registered address picked as %s/%s, want web/a (first by key)", held.Service(), held.ID())
	}
	if got := tb.InFlight(); !reflect.DeepEqual(got, map[string]int64{"web/a": 1}) {
		t.Fatalf("InFlight = %v, want web/a counted", got)
	}
	tb.SetState("web", "a", StateDraining)
	if c := pickAddrs(t, tb, addrs, 20); c["127.0.0.1:80"] != 0 {
		t.Fatalf("picked a draining upstream's address: %v", c)
	}
	held.Release()
	if got := tb.InFlight(); len(got) != 0 {
		t.Fatalf("InFlight after release = %v", got)
	}
	tb.SetState("web", "b", StateDraining) // no such upstream: changes nothing
	tb.SetState("web", "a", StateActive)
	if c := pickAddrs(t, tb, addrs, 20); c["127.0.0.1:80"] != 10 {
		t.Fatalf("after enable: %v, want 10 of 20", c)
	}
	// Only draining upstreams named: nothing to pick.
	tb.SetState("web", "a", StateDraining)
	if _, err := tb.PickAddrs([]string{"127.0.0.1:80"}, nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v, want ErrNoUpstream", err)
	}
}

func TestPickAddrsRegisteredHealth(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1)
	h, err := tb.PickAddrs([]string{"127.0.0.1:80"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Failed(errors.New("refused"))
	h.Release()
	// The failure seen through the list is the registered upstream's.
	if ev := hl.list(); len(ev) != 1 || ev[0] != "web/a down" {
		t.Fatalf("OnHealth calls %v, want [web/a down]", ev)
	}
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("Pick after a failure through PickAddrs: err = %v", err)
	}
}

func TestPickAddrsAdHocPassiveHealth(t *testing.T) {
	tb, clk, hl := newTestTable(t, Config{DownBackoff: time.Second})
	addrs := []string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"}
	var bad *Handle
	for bad == nil {
		h, err := tb.PickAddrs(addrs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() == "10.0.0.2:2" {
			bad = h
		} else {
			h.Release()
		}
	}
	bad.Failed(errors.New("refused"))
	bad.Release()
	// Even over the usable ones: the down one's turn is not inherited by
	// its neighbour.
	c := pickAddrs(t, tb, addrs, 100)
	if want := (map[string]int{"10.0.0.1:1": 50, "10.0.0.3:3": 50}); !reflect.DeepEqual(c, want) {
		t.Fatalf("with one down: %v, want %v", c, want)
	}
	clk.advance(time.Second)
	c = pickAddrs(t, tb, addrs, 30)
	if c["10.0.0.2:2"] != 1 {
		t.Fatalf("after the backoff: %v, want one trial", c)
	}
	if ev := hl.list(); len(ev) != 0 {
		t.Fatalf("ad-hoc health reported: %v", ev)
	}
}

func TestPickAddrsInterleavedListsKeepTheirRotation(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	l1 := []string{"10.0.1.1:80", "10.0.1.2:80"}
	l2 := []string{"10.0.2.1:80", "10.0.2.2:80"}
	if hashAddrs(l1)%64 == hashAddrs(l2)%64 {
		t.Fatal("test lists share a cursor; choose other addresses")
	}
	c := map[string]int{}
	for range 50 {
		for _, l := range [][]string{l1, l2} {
			h, err := tb.PickAddrs(l, nil)
			if err != nil {
				t.Fatal(err)
			}
			c[h.Addr()]++
			h.Release()
		}
	}
	for _, a := range append(l1, l2...) {
		if c[a] != 25 {
			t.Fatalf("interleaved lists: %v, want 25 each", c)
		}
	}
}

func TestPickAddrsExcludeAndInvalid(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addrs := []string{"", "not an address", "10.0.0.1:80", "10.0.0.2:99999", "10.0.0.3:80"}
	first, err := tb.PickAddrs(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	first.Release()
	for range 10 {
		h, err := tb.PickAddrs(addrs, first)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() == first.Addr() || (h.Addr() != "10.0.0.1:80" && h.Addr() != "10.0.0.3:80") {
			t.Fatalf("picked %s (excluded %s)", h.Addr(), first.Addr())
		}
		h.Release()
	}
	h, err := tb.PickAddrs([]string{first.Addr()}, first)
	if err != nil || h.Addr() != first.Addr() {
		t.Fatalf("sole address excluded: %v, %v; want it as the last resort", h, err)
	}
	for _, bad := range [][]string{nil, {}, {" ", "nope", "host:0"}} {
		if _, err := tb.PickAddrs(bad, nil); !errors.Is(err, ErrNoUpstream) {
			t.Fatalf("PickAddrs(%q): err = %v, want ErrNoUpstream", bad, err)
		}
	}
}

func TestAdHocSetIsBounded(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{MaxAdHoc: 4})
	for i := range 20 {
		pickAddrs(t, tb, []string{fmt.Sprintf("10.0.0.%d:80", i)}, 1)
		if n := tb.adhoc.len(); n > 4 {
			t.Fatalf("%d addresses tracked, want at most 4", n)
		}
	}
	// Four busy addresses, one of them down: none may be evicted.
	var held []*Handle
	for i := range 4 {
		h, err := tb.PickAddrs([]string{fmt.Sprintf("10.1.0.%d:80", i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	held[0].Failed(errors.New("refused"))
	// A fifth is still served, untracked.
	c := pickAddrs(t, tb, []string{"10.2.0.1:80"}, 3)
	if c["10.2.0.1:80"] != 3 || tb.adhoc.len() != 4 {
		t.Fatalf("fifth address: %v, %d tracked", c, tb.adhoc.len())
	}
	if _, err := tb.PickAddrs([]string{"10.1.0.0:80"}, nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("busy down address forgotten: err = %v", err)
	}
	for _, h := range held {
		h.Release()
	}
	// Idle now: the least recently used gives way to a new address.
	pickAddrs(t, tb, []string{"10.2.0.2:80"}, 1)
	if tb.adhoc.len() != 4 {
		t.Fatalf("%d tracked after eviction, want 4", tb.adhoc.len())
	}
}

func TestAdHocIdleEntriesEvictedTogether(t *testing.T) {
	tb, clk, _ := newTestTable(t, Config{MaxAdHoc: 3})
	for i := range 3 {
		pickAddrs(t, tb, []string{fmt.Sprintf("10.0.0.%d:80", i)}, 1)
	}
	clk.advance(adhocIdle)
	pickAddrs(t, tb, []string{"10.9.9.9:80"}, 1)
	if n := tb.adhoc.len(); n != 1 {
		t.Fatalf("%d tracked, want 1: all idle entries go at once", n)
	}
}
