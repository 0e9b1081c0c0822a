package gossip

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// randomEntry draws from a small space so that equal versions, equal keys
// and identical entries all turn up.
func randomEntry(r *rand.Rand) Entry {
	e := Entry{
		Key:     fmt.Sprintf("k%d", r.IntN(4)),
		Version: Version{Clock: uint64(r.IntN(5)), Node: fmt.Sprintf("n%d", r.IntN(3))},
	}
	if r.IntN(3) == 0 {
		e.Deleted = true
		e.DeletedAt = int64(r.IntN(3))
	} else if v := r.IntN(4); v > 0 {
		e.Value = []byte(strings.Repeat("v", v))
	}
	return e
}

func TestMergeIsCommutativeAssociativeIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		a, b, c := randomEntry(r), randomEntry(r), randomEntry(r)
		if got, want := Merge(a, b), Merge(b, a); compareEntries(got, want) != 0 {
			t.Fatalf("case %d: Merge(a,b)=%+v, Merge(b,a)=%+v", i, got, want)
		}
		if got, want := Merge(Merge(a, b), c), Merge(a, Merge(b, c)); compareEntries(got, want) != 0 {
			t.Fatalf("case %d: not associative: %+v vs %+v", i, got, want)
		}
		if got := Merge(a, a); compareEntries(got, a) != 0 {
			t.Fatalf("case %d: Merge(a,a)=%+v, want %+v", i, got, a)
		}
	}
}

func TestMergeNewerVersionWins(t *testing.T) {
	old := Entry{Key: "k", Value: []byte("zzz"), Version: Version{Clock: 3, Node: "b"}}
	tests := []struct {
		name  string
		newer Entry
	}{
		{"higher clock", Entry{Key: "k", Value: []byte("a"), Version: Version{Clock: 4, Node: "a"}}},
		{"same clock, node breaks tie", Entry{Key: "k", Value: []byte("a"), Version: Version{Clock: 3, Node: "c"}}},
		{"tombstone with higher clock", Entry{Key: "k", Version: Version{Clock: 4, Node: "a"}, Deleted: true, DeletedAt: 1}},
		{"tombstone beats write of the same version", Entry{Key: "k", Version: Version{Clock: 3, Node: "b"}, Deleted: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Merge(old, tt.newer); compareEntries(got, tt.newer) != 0 {
				t.Errorf("Merge(old, newer) = %+v, want %+v", got, tt.newer)
			}
			if got := Merge(tt.newer, old); compareEntries(got, tt.newer) != 0 {
				t.Errorf("Merge(newer, old) = %+v, want %+v", got, tt.newer)
			}
		})
	}
}

func TestEncodeDecodeEntry(t *testing.T) {
	tests := []Entry{
		{Key: "svc/web", Value: []byte(`{"name":"web"}`), Version: Version{Clock: 1, Node: "n1"}},
		{Key: "", Version: Version{Clock: 0, Node: ""}},
		{Key: "gone", Version: Version{Clock: maxClock, Node: "n2"}, Deleted: true, DeletedAt: 1700000000123},
		{Key: "neg", Version: Version{Clock: 7, Node: "n"}, Deleted: true, DeletedAt: -5},
		{Key: strings.Repeat("k", 300), Value: bytes.Repeat([]byte{0, 0xff}, 5000), Version: Version{Clock: 1 << 40, Node: "ü"}},
	}
	for _, e := range tests {
		b := EncodeEntry(e)
		got, err := DecodeEntry(b)
		if err != nil {
			t.Fatalf("DecodeEntry(EncodeEntry(%+v)): %v", e, err)
		}
		if compareEntries(got, e) != 0 {
			t.Errorf("round trip: got %+v, want %+v", got, e)
		}
		if len(b) > entrySize(e) {
			t.Errorf("encoded %d bytes, over the bound %d", len(b), entrySize(e))
		}
		// The decoded value must not alias the input.
		if len(got.Value) > 0 {
			b[len(b)-1] ^= 0xff
			if got.Value[len(got.Value)-1] == b[len(b)-1] {
				t.Errorf("decoded value aliases the input")
			}
		}
	}
}

func TestEncodeEntryIsCanonical(t *testing.T) {
	// A tombstone's value and a live entry's delete time are dropped.
	tomb := Entry{Key: "k", Value: []byte("x"), Version: Version{Clock: 1, Node: "n"}, Deleted: true, DeletedAt: 9}
	got, err := DecodeEntry(EncodeEntry(tomb))
	if err != nil || got.Value != nil || got.DeletedAt != 9 {
		t.Errorf("tombstone decoded as %+v, %v", got, err)
	}
	live := Entry{Key: "k", Value: []byte("x"), Version: Version{Clock: 1, Node: "n"}, DeletedAt: 9}
	got, err = DecodeEntry(EncodeEntry(live))
	if err != nil || got.DeletedAt != 0 || string(got.Value) != "x" {
		t.Errorf("live entry decoded as %+v, %v", got, err)
	}
}

func TestDecodeEntryRejectsGarbage(t *testing.T) {
	good := EncodeEntry(Entry{Key: "k", Value: []byte("value"), Version: Version{Clock: 5, Node: "n"}})
	tests := map[string][]byte{
		"empty":          nil,
		"unknown format": append([]byte{9}, good[1:]...),
		"unknown flag":   append([]byte{entryFormat, 0x80}, good[2:]...),
		"trailing":       append(append([]byte(nil), good...), 0),
		"clock too big":  EncodeEntry(Entry{Key: "k", Version: Version{Clock: maxClock + 1}}),
	}
	for i := 1; i < len(good); i++ {
		tests[fmt.Sprintf("truncated at %d", i)] = good[:i]
	}
	for name, b := range tests {
		if e, err := DecodeEntry(b); err == nil {
			t.Errorf("%s: DecodeEntry(%x) = %+v, want an error", name, b, e)
		}
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	e := Entry{Key: "k", Value: []byte("v"), Version: Version{Clock: 3, Node: "n"}}
	got, err := decodeEntryMsg(encodeEntryMsg(e))
	if err != nil || compareEntries(got, e) != 0 {
		t.Errorf("entry message: %+v, %v", got, err)
	}

	lm := leaveMsg{Node: "n7", Instance: 1<<63 + 5}
	gotLeave, err := decodeLeaveMsg(encodeLeaveMsg(lm))
	if err != nil || gotLeave != lm {
		t.Errorf("leave message: %+v, %v", gotLeave, err)
	}

	sm := stateMsg{Clock: 99, Entries: []Entry{e, {Key: "d", Version: Version{Clock: 4, Node: "m"}, Deleted: true, DeletedAt: 77}}}
	gotState, err := decodeStateMsg(encodeStateMsg(sm))
	if err != nil || gotState.Clock != 99 || !sameEntries(gotState.Entries, sm.Entries) {
		t.Errorf("state message: %+v, %v", gotState, err)
	}
	if empty, err := decodeStateMsg(encodeStateMsg(stateMsg{})); err != nil || len(empty.Entries) != 0 {
		t.Errorf("empty state: %+v, %v", empty, err)
	}

	inst, err := decodeMeta(encodeMeta(42))
	if err != nil || inst != 42 {
		t.Errorf("meta: %d, %v", inst, err)
	}

	// Each decoder refuses the others' messages.
	if _, err := decodeEntryMsg(encodeLeaveMsg(lm)); err == nil {
		t.Error("decodeEntryMsg accepted a leave message")
	}
	if _, err := decodeStateMsg(encodeEntryMsg(e)); err == nil {
		t.Error("decodeStateMsg accepted an entry message")
	}
	if _, err := decodeLeaveMsg(encodeStateMsg(sm)); err == nil {
		t.Error("decodeLeaveMsg accepted a state message")
	}
}

func TestDecodeStateRejectsHugeCount(t *testing.T) {
	// A count far beyond what the bytes can hold must fail before any
	// allocation of that size.
	b := []byte{byte(msgState), 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, err := decodeStateMsg(b); err == nil {
		t.Fatal("decodeStateMsg accepted 2^63 entries in 11 bytes")
	}
}

// TestReplicasConverge applies one set of random updates (sets, deletes,
// equal versions, duplicates) to several replicas in different orders; they
// must end in one state, equal to folding Merge over the updates.
func TestReplicasConverge(t *testing.T) {
	now := time.UnixMilli(10)
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		var updates []Entry
		for range 1 + r.IntN(40) {
			e := randomEntry(r)
			updates = append(updates, e)
			if r.IntN(4) == 0 { // a duplicate, delivered twice
				updates = append(updates, e)
			}
		}
		want := map[string]Entry{}
		for _, e := range updates {
			if old, ok := want[e.Key]; ok {
				want[e.Key] = Merge(old, normalize(e))
			} else {
				want[e.Key] = normalize(e)
			}
		}
		var first []Entry
		for replica := range 5 {
			tab := newTable(time.Hour)
			order := r.Perm(len(updates))
			for _, i := range order {
				tab.apply(updates[i], now)
			}
			// Replay a random prefix: late duplicates change nothing.
			for _, i := range order[:r.IntN(len(order))] {
				if _, changed := tab.apply(updates[i], now); changed {
					t.Fatalf("seed %d replica %d: re-applying %+v changed the state", seed, replica, updates[i])
				}
			}
			checkIndex(t, tab)
			got := tab.all()
			if replica == 0 {
				first = got
			} else if !sameEntries(first, got) {
				t.Fatalf("seed %d: replica %d differs:\n%+v\nvs\n%+v", seed, replica, got, first)
			}
			if len(got) != len(want) {
				t.Fatalf("seed %d: %d keys, want %d", seed, len(got), len(want))
			}
			for _, e := range got {
				if compareEntries(e, want[e.Key]) != 0 {
					t.Fatalf("seed %d: %s = %+v, want %+v", seed, e.Key, e, want[e.Key])
				}
			}
			var maxClock uint64
			for _, e := range updates {
				maxClock = max(maxClock, e.Version.Clock)
			}
			if tab.clock != maxClock {
				t.Fatalf("seed %d: clock %d, want %d (the highest seen)", seed, tab.clock, maxClock)
			}
		}
	}
}

func TestTableLocalWritesWin(t *testing.T) {
	tab := newTable(time.Hour)
	// A witnessed clock ahead of the wall clock: the next write goes past it.
	const seen = 1<<60 + 41
	tab.apply(Entry{Key: "k", Value: []byte("remote"), Version: Version{Clock: seen, Node: "zz"}}, time.Now())
	e := tab.set("k", []byte("local"), "aa", time.Now())
	if e.Version.Clock != seen+1 {
		t.Fatalf("local write got clock %d, want %d (above the witnessed one)", e.Version.Clock, uint64(seen+1))
	}
	if got, ok := tab.get("k"); !ok || string(got.Value) != "local" {
		t.Fatalf("get after set = %+v, %v", got, ok)
	}
	d := tab.del("k", "aa", time.Now())
	if d.Version.Clock != seen+2 || !d.Deleted {
		t.Fatalf("delete = %+v", d)
	}
	if _, ok := tab.get("k"); ok {
		t.Fatal("get returned a deleted key")
	}
	if live := tab.live(""); len(live) != 0 {
		t.Fatalf("live entries after delete: %+v", live)
	}
}

func TestTableCollectsTombstonesAfterGrace(t *testing.T) {
	clock := newFakeClock()
	tab := newTable(time.Hour)
	tab.set("live", []byte("x"), "n", clock.Now())
	tab.del("dead", "n", clock.Now())

	clock.Advance(59 * time.Minute)
	if n := tab.collect(clock.Now()); n != 0 {
		t.Fatalf("collected %d tombstones before the grace ended", n)
	}
	clock.Advance(2 * time.Minute)
	if n := tab.collect(clock.Now()); n != 1 {
		t.Fatalf("collected %d tombstones after the grace, want 1", n)
	}
	if all := tab.all(); len(all) != 1 || all[0].Key != "live" {
		t.Fatalf("state after collection: %+v", all)
	}
	checkIndex(t, tab)

	// The collected tombstone, coming back from a peer, is not re-adopted,
	// but it still deletes an older write a peer may hold.
	old := Entry{Key: "dead", Version: Version{Clock: 2, Node: "n"}, Deleted: true, DeletedAt: clock.Now().Add(-2 * time.Hour).UnixMilli()}
	if _, changed := tab.apply(old, clock.Now()); changed {
		t.Fatal("an expired tombstone for an unknown key was adopted")
	}
	tab.apply(Entry{Key: "live2", Value: []byte("x"), Version: Version{Clock: 1, Node: "m"}}, clock.Now())
	old.Key = "live2"
	if _, changed := tab.apply(old, clock.Now()); !changed {
		t.Fatal("an expired but newer tombstone did not delete an older write")
	}
}

// checkIndex verifies that the key index matches the entries.
func checkIndex(t *testing.T, tab *table) {
	t.Helper()
	if !slices.IsSorted(tab.keys) || len(tab.keys) != len(tab.entries) {
		t.Fatalf("key index %q does not match %d entries", tab.keys, len(tab.entries))
	}
	for _, k := range tab.keys {
		if _, ok := tab.entries[k]; !ok {
			t.Fatalf("indexed key %q has no entry", k)
		}
	}
}

func TestTableLiveByPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tab := newTable(time.Hour)
	now := time.Now()
	for range 2000 {
		k := fmt.Sprintf("%c/%c/%d", 'a'+r.IntN(3), 'a'+r.IntN(3), r.IntN(20))
		if r.IntN(4) == 0 {
			tab.del(k, "n", now)
		} else {
			tab.set(k, []byte("v"), "n", now)
		}
	}
	checkIndex(t, tab)
	for _, prefix := range []string{"", "a", "a/", "b/c/", "c/c/1", "c/c/19", "d", "a/b/7x"} {
		var want []string
		for k, e := range tab.entries {
			if !e.Deleted && strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		var got []string
		for _, e := range tab.live(prefix) {
			got = append(got, e.Key)
		}
		if !slices.Equal(got, want) {
			t.Errorf("live(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// TestLaterWriteWinsAcrossNodes: two nodes that have not heard from each
// other write the same key 5 ms apart; the later write wins the merge, as an
// operator who enabled on one node and then drained on another expects,
// even when the first node had made many more writes before.
func TestLaterWriteWinsAcrossNodes(t *testing.T) {
	start := time.UnixMilli(1_800_000_000_000)
	busy, quiet := newTable(time.Hour), newTable(time.Hour)
	for i := range 1000 {
		busy.set(fmt.Sprintf("other%d", i), []byte("x"), "busy", start)
	}
	first := busy.set("state/web/u1", []byte("active"), "busy", start)
	later := quiet.set("state/web/u1", []byte("draining"), "quiet", start.Add(5*time.Millisecond))
	if got := Merge(first, later); string(got.Value) != "draining" {
		t.Fatalf("merge kept %q (clock %d) over %q (clock %d)", got.Value, first.Version.Clock, later.Value, later.Version.Clock)
	}
}
