package cassandra

import (
	"fmt"
	"maps"
	"testing"

	"vulcan/ratelimit"
)

func TestAddHitsReadBuckets(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const base = 1_700_000_000
	in := []ratelimit.Delta{
		{Key: "a", Bucket: base, Hits: 2},
		{Key: "a", Bucket: base, Hits: 3}, // summed with the one above
		{Key: "a", Bucket: base + 1, Hits: 1},
		{Key: "a", Bucket: base + 5, Hits: 0}, // nothing to write
		{Key: "b", Bucket: base, Hits: 7},
	}
	// More buckets of one key than fit one batch.
	for i := range 250 {
		in = append(in, ratelimit.Delta{Key: "many", Bucket: base + int64(i), Hits: int64(i + 1)})
	}
	if err := s.AddHits(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHits(ctx, []ratelimit.Delta{{Key: "a", Bucket: base + 1, Hits: 10}}); err != nil {
		t.Fatal(err)
	}

	if got := readAll(t, s, "a", 0); len(got) != 2 || got[base] != 5 || got[base+1] != 11 {
		t.Errorf("buckets of a = %v, want {%d:5 %d:11}", got, base, base+1)
	}
	if got := readAll(t, s, "a", base+1); len(got) != 1 || got[base+1] != 11 {
		t.Errorf("buckets of a since %d = %v, want only that bucket", base+1, got)
	}
	if got := readAll(t, s, "b", 0); len(got) != 1 || got[base] != 7 {
		t.Errorf("buckets of b = %v", got)
	}
	many := readAll(t, s, "many", base+100)
	if len(many) != 150 {
		t.Errorf("many: %d buckets since base+100, want 150", len(many))
	}
	for i := 100; i < 250; i++ {
		if many[base+int64(i)] != int64(i+1) {
			t.Fatalf("many: bucket %d = %d, want %d", i, many[base+int64(i)], i+1)
		}
	}
	if got := readAll(t, s, "nobody", 0); len(got) != 0 {
		t.Errorf("buckets of an unwritten key = %v", got)
	}
	if err := s.AddHits(ctx, []ratelimit.Delta{{Key: "a", Bucket: 1 << 40, Hits: 1}}); err == nil {
		t.Error("AddHits with a bucket beyond 32 bits succeeded")
	}
}

// TestPruneHitsBounded runs two simulated hours of traffic, some keys
// steady and one new key at every step, pruning after each step, and
// checks that both tables hold exactly the rows of the retained window
// (hits) or of the last slots (hit_keys), however long it runs.
func TestPruneHitsBounded(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	clock := &fakeClock{}
	s.now = clock.now

	const (
		start     = 1_700_000_000
		step      = 120 // seconds between syncs
		steps     = 60
		retention = 300 // the window the limiter still reads
	)
	written := map[string]map[int64]int64{}
	var maxKeys int
	for i := range steps {
		now := int64(start + i*step)
		clock.sec.Store(now)
		var in []ratelimit.Delta
		for _, key := range []string{"steady-a", "steady-b", fmt.Sprintf("once-%d", i)} {
			for b := now - 2; b <= now; b++ {
				in = append(in, ratelimit.Delta{Key: key, Bucket: b, Hits: 1})
				if written[key] == nil {
					written[key] = map[int64]int64{}
				}
				written[key][b]++
			}
		}
		if err := s.AddHits(ctx, in); err != nil {
			t.Fatalf("step %d: AddHits: %v", i, err)
		}
		before := now - retention
		if err := s.PruneHits(ctx, before); err != nil {
			t.Fatalf("step %d: PruneHits: %v", i, err)
		}

		wantRows := 0
		for _, buckets := range written {
			for b := range buckets {
				if b >= before {
					wantRows++
				}
			}
		}
		if got := count(t, s, "hits"); got != wantRows {
			t.Fatalf("step %d: hits has %d rows, want %d (those since %d)", i, got, wantRows, before)
		}
		// Keys are listed under the slots that may still hold buckets:
		// those ending after the cut-off, at most two or three of them.
		keys, slots := count(t, s, "hit_keys"), countSlots(t, s)
		if slots > 3 {
			t.Fatalf("step %d: hit_keys has %d slots, want at most 3", i, slots)
		}
		maxKeys = max(maxKeys, keys)
	}
	// One new key per step: the listings of 60 steps would be 62 rows
	// without pruning; the slots still kept span at most 3*600s of steps.
	if limit := 2 + 3*600/step + 2; maxKeys > limit {
		t.Fatalf("hit_keys peaked at %d rows, want at most %d", maxKeys, limit)
	}
	// The steady keys still read right inside the window.
	now := int64(start + (steps-1)*step)
	got := readAll(t, s, "steady-a", now-retention)
	want := map[int64]int64{}
	for b, n := range written["steady-a"] {
		if b >= now-retention {
			want[b] = n
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("steady-a in the last window = %v, want %v", got, want)
	}
}

func count(t testing.TB, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.sess.Query(`SELECT COUNT(*) FROM ` + table).WithContext(testCtx(t)).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func countSlots(t testing.TB, s *Store) int {
	t.Helper()
	iter := s.sess.Query(selectSlots).WithContext(testCtx(t)).Iter()
	var slot, n int
	for iter.Scan(&slot) {
		n++
	}
	if err := iter.Close(); err != nil {
		t.Fatalf("count slots: %v", err)
	}
	return n
}
