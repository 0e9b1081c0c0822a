package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"vulcan/ratelimit"
)

func openTemp(t testing.TB, dir string) *Embedded {
	t.Helper()
	s, err := OpenEmbedded(dir, nil)
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// readAll returns the buckets of key at or after since, as bucket → hits.
func readAll(t testing.TB, s *Embedded, key string, since int64) map[int64]int64 {
	t.Helper()
	got := map[int64]int64{}
	last := int64(-1 << 63)
	err := s.ReadBuckets(context.Background(), key, since, func(bucket, hits int64) {
		if bucket < last {
			t.Errorf("bucket %d after %d: not in time order", bucket, last)
		}
		last = bucket
		got[bucket] = hits
	})
	if err != nil {
		t.Fatalf("ReadBuckets(%q, %d): %v", key, since, err)
	}
	return got
}

// entries counts the keys of a bucket of the file.
func entries(t testing.TB, s *Embedded, bucket []byte) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEmbeddedKind(t *testing.T) {
	s := openTemp(t, t.TempDir())
	if s.Kind() != KindEmbedded {
		t.Fatalf("Kind = %q", s.Kind())
	}
}

func TestEmbeddedLimits(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	if ls, err := s.ListLimits(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("empty store: %v, %v", ls, err)
	}
	a := ratelimit.Limit{ID: "b-id", AuthToken: "tok.*", Protocol: "HTTP", Method: "POST", Path: "/up", DataSize: 1024, Period: 60, Threshold: 10}
	b := ratelimit.Limit{ID: "a-id", Period: 1, Threshold: 5}
	for _, l := range []ratelimit.Limit{a, b} {
		if err := s.PutLimit(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []ratelimit.Limit{b, a}; !reflect.DeepEqual(got, want) {
		t.Fatalf("limits = %+v, want %+v (by id)", got, want)
	}
	a.Threshold = 99
	if err := s.PutLimit(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLimit(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	got, err = s.ListLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []ratelimit.Limit{a}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after replace and delete: %+v, want %+v", got, want)
	}
	for _, id := range []string{b.ID, "never-there", ""} {
		if err := s.DeleteLimit(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("DeleteLimit(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if err := s.PutLimit(ctx, ratelimit.Limit{Period: 1}); err == nil {
		t.Fatal("PutLimit accepted an empty id")
	}
}

func TestEmbeddedState(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	recs := []Record{
		{Key: "svc/a", Data: []byte(`{"v":1}`)},
		{Key: "svc/b", Data: []byte(`{"v":2}`)},
		{Key: "up/a/1", Data: []byte{}},
	}
	if err := s.SaveState(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveState(ctx, Record{Key: "svc/a", Data: []byte(`{"v":3}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState(ctx, "svc/b", "no-such-key"); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Key: "svc/a", Data: []byte(`{"v":3}`)}, {Key: "up/a/1", Data: []byte{}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state = %q, want %q", got, want)
	}
	if err := s.SaveState(ctx, Record{Key: "ok", Data: []byte("x")}, Record{Key: ""}); err == nil {
		t.Fatal("SaveState accepted an empty key")
	}
	// The failed call applied nothing.
	if got, _ := s.LoadState(ctx); len(got) != 2 {
		t.Fatalf("a failed SaveState left %d records, want 2", len(got))
	}
}

func TestEmbeddedHits(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	// "k" is a prefix of "k|x" and of "k\x00": their buckets must not mix.
	deltas := []ratelimit.Delta{
		{Key: "k", Bucket: 100, Hits: 1},
		{Key: "k", Bucket: 100, Hits: 2}, // same bucket twice in a call
		{Key: "k", Bucket: 101, Hits: 5},
		{Key: "k", Bucket: -3, Hits: 7}, // negative seconds order before positive ones
		{Key: "k", Bucket: 102, Hits: 0},
		{Key: "k|x", Bucket: 100, Hits: 10},
		{Key: "k\x00", Bucket: 101, Hits: 20},
		{Key: "", Bucket: 100, Hits: 30},
	}
	if err := s.AddHits(ctx, deltas); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHits(ctx, []ratelimit.Delta{{Key: "k", Bucket: 101, Hits: 4}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key   string
		since int64
		want  map[int64]int64
	}{
		{"k", -10, map[int64]int64{-3: 7, 100: 3, 101: 9}},
		{"k", 100, map[int64]int64{100: 3, 101: 9}},
		{"k", 101, map[int64]int64{101: 9}},
		{"k", 102, map[int64]int64{}},
		{"k|x", 0, map[int64]int64{100: 10}},
		{"k\x00", 0, map[int64]int64{101: 20}},
		{"", 0, map[int64]int64{100: 30}},
		{"unknown", 0, map[int64]int64{}},
	}
	for _, tt := range tests {
		if got := readAll(t, s, tt.key, tt.since); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ReadBuckets(%q, %d) = %v, want %v", tt.key, tt.since, got, tt.want)
		}
	}
	// A zero delta creates nothing; the index holds one entry per bucket.
	if h, i := entries(t, s, bucketHits), entries(t, s, bucketHitsByTime); h != 6 || i != 6 {
		t.Fatalf("hits %d, index %d entries; want 6 and 6", h, i)
	}
}

func TestEmbeddedPrune(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	keys := []string{"l1|alice", "l1|bob", "l2|alice"}
	// More buckets than one prune chunk, to cross chunk boundaries.
	const first, last = 1000, 1000 + pruneChunk
	var deltas []ratelimit.Delta
	for sec := int64(first); sec <= last; sec++ {
		for _, k := range keys {
			deltas = append(deltas, ratelimit.Delta{Key: k, Bucket: sec, Hits: 1})
		}
	}
	if err := s.AddHits(ctx, deltas); err != nil {
		t.Fatal(err)
	}
	cut := int64(last - 10)
	if err := s.PruneHits(ctx, cut); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		got := readAll(t, s, k, 0)
		if len(got) != 11 {
			t.Fatalf("%s: %d buckets after prune, want 11", k, len(got))
		}
		for b := range got {
			if b < cut {
				t.Fatalf("%s: bucket %d survived a prune before %d", k, b, cut)
			}
		}
	}
	if h, i := entries(t, s, bucketHits), entries(t, s, bucketHitsByTime); h != 33 || i != 33 {
		t.Fatalf("hits %d, index %d entries after prune; want 33 and 33", h, i)
	}
	// Pruning again is a no-op; pruning everything leaves nothing behind.
	if err := s.PruneHits(ctx, cut); err != nil {
		t.Fatal(err)
	}
	if err := s.PruneHits(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	if h, i := entries(t, s, bucketHits), entries(t, s, bucketHitsByTime); h != 0 || i != 0 {
		t.Fatalf("hits %d, index %d entries after a full prune; want none", h, i)
	}
	// A bucket written again after its prune is indexed again.
	if err := s.AddHits(ctx, []ratelimit.Delta{{Key: keys[0], Bucket: first, Hits: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PruneHits(ctx, first+1); err != nil {
		t.Fatal(err)
	}
	if h := entries(t, s, bucketHits); h != 0 {
		t.Fatalf("re-added bucket not pruned: %d entries", h)
	}
}

// TestEmbeddedPruneBounded runs the limiter's cycle for a while: counters
// written every second, pruned behind a window. The file keeps only the
// window, however long it runs.
func TestEmbeddedPruneBounded(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	const window = 30
	for sec := int64(0); sec < 300; sec++ {
		var deltas []ratelimit.Delta
		for k := range 5 {
			deltas = append(deltas, ratelimit.Delta{Key: fmt.Sprint("limit|token", k), Bucket: sec, Hits: 1})
		}
		if err := s.AddHits(ctx, deltas); err != nil {
			t.Fatal(err)
		}
		if sec%10 != 9 {
			continue
		}
		if err := s.PruneHits(ctx, sec-window); err != nil {
			t.Fatal(err)
		}
		// Seconds sec-window through sec remain, 5 counters each.
		if h, want := entries(t, s, bucketHits), 5*int(min(sec+1, window+1)); h != want {
			t.Fatalf("second %d: %d buckets kept, want %d", sec, h, want)
		}
	}
	if i := entries(t, s, bucketHitsByTime); i != entries(t, s, bucketHits) {
		t.Fatalf("index has %d entries, hits %d", i, entries(t, s, bucketHits))
	}
}

func TestEmbeddedReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "nested", "data")
	s, err := OpenEmbedded(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := ratelimit.Limit{ID: "id1", AuthToken: "t", Period: 10, Threshold: 3}
	if err := s.PutLimit(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveState(ctx, Record{Key: "svc/a", Data: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHits(ctx, []ratelimit.Delta{{Key: "id1|t", Bucket: 50, Hits: 4}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, EmbeddedFile)); err != nil {
		t.Fatalf("data file: %v", err)
	}

	s2 := openTemp(t, dir)
	if ls, err := s2.ListLimits(ctx); err != nil || !reflect.DeepEqual(ls, []ratelimit.Limit{l}) {
		t.Fatalf("limits after reopen: %+v, %v", ls, err)
	}
	if rs, err := s2.LoadState(ctx); err != nil || len(rs) != 1 || rs[0].Key != "svc/a" || string(rs[0].Data) != "v1" {
		t.Fatalf("state after reopen: %q, %v", rs, err)
	}
	if got := readAll(t, s2, "id1|t", 0); !reflect.DeepEqual(got, map[int64]int64{50: 4}) {
		t.Fatalf("hits after reopen: %v", got)
	}
	// The index survived too: the bucket can still be pruned.
	if err := s2.PruneHits(ctx, 51); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s2, "id1|t", 0); len(got) != 0 {
		t.Fatalf("hits after prune: %v", got)
	}
}

func TestEmbeddedSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenEmbedded(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s2, err := OpenEmbedded(dir, nil)
	if err == nil {
		_ = s2.Close()
		t.Fatal("a second open of the same data dir succeeded")
	}
	if !strings.Contains(err.Error(), "data dir is in use by another process") {
		t.Fatalf("err = %v, want it to say the data dir is in use", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %s to fail", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Once the holder is gone, the dir opens.
	openTemp(t, dir)
}

func TestEmbeddedOpenErrors(t *testing.T) {
	if _, err := OpenEmbedded("", nil); err == nil {
		t.Fatal("empty dir accepted")
	}
	// A file where the dir should be.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEmbedded(f, nil); err == nil {
		t.Fatal("a file accepted as data dir")
	}
	// A data file that is not bbolt's.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, EmbeddedFile), []byte(strings.Repeat("not a db ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEmbedded(dir, nil); err == nil {
		t.Fatal("a corrupt data file accepted")
	}
}

func TestEmbeddedHonoursCancelledContext(t *testing.T) {
	s := openTemp(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]error{
		"ListLimits":  func() error { _, err := s.ListLimits(ctx); return err }(),
		"PutLimit":    s.PutLimit(ctx, ratelimit.Limit{ID: "x"}),
		"DeleteLimit": s.DeleteLimit(ctx, "x"),
		"LoadState":   func() error { _, err := s.LoadState(ctx); return err }(),
		"SaveState":   s.SaveState(ctx, Record{Key: "k", Data: []byte("v")}),
		"DeleteState": s.DeleteState(ctx, "k"),
		"AddHits":     s.AddHits(ctx, []ratelimit.Delta{{Key: "k", Bucket: 1, Hits: 1}}),
		"ReadBuckets": s.ReadBuckets(ctx, "k", 0, func(int64, int64) {}),
		"PruneHits":   s.PruneHits(ctx, 10),
	}
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", name, err)
		}
	}
	if entries(t, s, bucketHits) != 0 || entries(t, s, bucketState) != 0 || entries(t, s, bucketLimits) != 0 {
		t.Fatal("a call with a cancelled context wrote")
	}
}

func TestEmbeddedClosed(t *testing.T) {
	s, err := OpenEmbedded(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHits(context.Background(), []ratelimit.Delta{{Key: "k", Bucket: 1, Hits: 1}}); err == nil {
		t.Fatal("AddHits on a closed store succeeded")
	}
	if _, err := s.ListLimits(context.Background()); err == nil {
		t.Fatal("ListLimits on a closed store succeeded")
	}
}

// TestEmbeddedConcurrent mixes every kind of call from many goroutines;
// under -race it checks the store's own synchronisation, and the sums
// check that no add was lost.
func TestEmbeddedConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, t.TempDir())
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*5)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				key := fmt.Sprint("limit|", w%2)
				errs <- s.AddHits(ctx, []ratelimit.Delta{
					{Key: key, Bucket: 1000 + int64(r%5), Hits: 1},
					{Key: "old", Bucket: int64(r), Hits: 1},
				})
				errs <- s.ReadBuckets(ctx, key, 0, func(int64, int64) {})
				errs <- s.PutLimit(ctx, ratelimit.Limit{ID: fmt.Sprint("id", w), Period: 1, Threshold: int64(r)})
				errs <- s.SaveState(ctx, Record{Key: fmt.Sprint("rec", w, r%3), Data: []byte{byte(r)}})
				errs <- s.PruneHits(ctx, 500)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for k := range 2 {
		total := int64(0)
		for _, h := range readAll(t, s, fmt.Sprint("limit|", k), 0) {
			total += h
		}
		if want := int64(workers / 2 * rounds); total != want {
			t.Fatalf("limit|%d: %d hits, want %d", k, total, want)
		}
	}
	if got := readAll(t, s, "old", 0); len(got) != 0 {
		t.Fatalf("old buckets survived the final prunes: %v", got)
	}
	if ls, _ := s.ListLimits(ctx); len(ls) != workers {
		t.Fatalf("%d limits, want %d", len(ls), workers)
	}
	if rs, _ := s.LoadState(ctx); len(rs) != workers*3 {
		t.Fatalf("%d records, want %d", len(rs), workers*3)
	}
}

// BenchmarkEmbeddedAddHits is one limiter sync: 100 counters, one bucket
// each, in one transaction (with its fsync).
func BenchmarkEmbeddedAddHits(b *testing.B) {
	s := openTemp(b, b.TempDir())
	deltas := make([]ratelimit.Delta, 100)
	b.ReportAllocs()
	sec := int64(0)
	for b.Loop() {
		for i := range deltas {
			deltas[i] = ratelimit.Delta{Key: fmt.Sprint("limit|token", i), Bucket: sec / 10, Hits: 1}
		}
		if err := s.AddHits(context.Background(), deltas); err != nil {
			b.Fatal(err)
		}
		sec++
	}
}

// BenchmarkEmbeddedReadBuckets reads a 60-second window of one counter.
func BenchmarkEmbeddedReadBuckets(b *testing.B) {
	s := openTemp(b, b.TempDir())
	var deltas []ratelimit.Delta
	for k := range 100 {
		for sec := range int64(120) {
			deltas = append(deltas, ratelimit.Delta{Key: fmt.Sprint("limit|token", k), Bucket: sec, Hits: 1})
		}
	}
	if err := s.AddHits(context.Background(), deltas); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var sum int64
		if err := s.ReadBuckets(context.Background(), "limit|token42", 60, func(_, h int64) { sum += h }); err != nil {
			b.Fatal(err)
		}
		if sum != 60 {
			b.Fatalf("sum %d, want 60", sum)
		}
	}
}
