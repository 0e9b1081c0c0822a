package cassandra

import (
	"fmt"
	"testing"

	"vulcan/ratelimit"
)

// BenchmarkAddHits measures one sync of a busy node: 16 counter keys with 4
// buckets each, as the limiter sends every 100 ms.
func BenchmarkAddHits(b *testing.B) {
	s := openStore(b)
	ctx := testCtx(b)
	const base = 1_700_000_000
	in := make([]ratelimit.Delta, 0, 64)
	for k := range 16 {
		for i := range 4 {
			in = append(in, ratelimit.Delta{Key: fmt.Sprintf("limit-%d|token", k), Bucket: base + int64(i), Hits: 1})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.AddHits(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadBuckets measures reading a 60-second window of one key.
func BenchmarkReadBuckets(b *testing.B) {
	s := openStore(b)
	ctx := testCtx(b)
	const base = 1_700_000_000
	in := make([]ratelimit.Delta, 0, 60)
	for i := range 60 {
		in = append(in, ratelimit.Delta{Key: "k", Bucket: base + int64(i), Hits: 1})
	}
	if err := s.AddHits(ctx, in); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var sum int64
		if err := s.ReadBuckets(ctx, "k", base, func(_, hits int64) { sum += hits }); err != nil {
			b.Fatal(err)
		}
		if sum != 60 {
			b.Fatalf("sum %d, want 60", sum)
		}
	}
}
