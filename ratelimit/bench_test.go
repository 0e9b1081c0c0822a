package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// tenLimits all match the benchmark requests, with thresholds out of reach.
func tenLimits() []Limit {
	var ls []Limit
	for i := range 10 {
		ls = append(ls, Limit{
			ID:        fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i),
			AuthToken: "tok",
			Protocol:  "HTTP",
			Method:    "GET|POST",
			Path:      fmt.Sprintf("/(api|v%d)", i),
			Period:    60 * (i + 1),
			Threshold: 1 << 40,
		})
	}
	for i := range ls {
		ls[i].Path = "/api" // all ten apply
	}
	return ls
}

func benchLimiter(b *testing.B, limits []Limit) *Limiter {
	b.Helper()
	// A store that is never synced: the steady state between two syncs.
	l := New(Config{Store: newMemStore()})
	if err := l.SetLimits(limits); err != nil {
		b.Fatal(err)
	}
	// The clock as Run keeps it.
	b.Cleanup(l.clock.tick())
	return l
}

func BenchmarkAllow(b *testing.B) {
	r := Request{Token: "tok-1234567890", Protocol: "HTTP", Method: "GET", Path: "/api/users/42", Length: 512}
	b.Run("serial", func(b *testing.B) {
		l := benchLimiter(b, tenLimits())
		l.Allow(r)
		b.ReportAllocs()
		for b.Loop() {
			if !l.Allow(r).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		// One token per goroutine, as callers are spread over tokens.
		l := benchLimiter(b, tenLimits())
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			rr := r
			rr.Token = fmt.Sprintf("tok-%d", next.Add(1))
			l.Allow(rr)
			for pb.Next() {
				if !l.Allow(rr).Allowed {
					b.Fatal("denied")
				}
			}
		})
	})
	b.Run("parallel-one-token", func(b *testing.B) {
		l := benchLimiter(b, tenLimits())
		l.Allow(r)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow(r)
			}
		})
	})
	b.Run("denied", func(b *testing.B) {
		ls := tenLimits()
		ls[9].Threshold = 0
		l := benchLimiter(b, ls)
		b.ReportAllocs()
		for b.Loop() {
			if l.Allow(r).Allowed {
				b.Fatal("allowed")
			}
		}
	})
}

// BenchmarkSync measures one sync round: 1000 keys with new hits, one
// AddHits of 1000 deltas, 1000 re-reads, against a store in memory.
func BenchmarkSync(b *testing.B) {
	st := newMemStore()
	l := New(Config{Store: st})
	if err := l.SetLimits([]Limit{{ID: "l", Period: 60, Threshold: 1 << 40}}); err != nil {
		b.Fatal(err)
	}
	reqs := make([]Request, 1000)
	for i := range reqs {
		reqs[i] = Request{Token: fmt.Sprintf("tok-%d", i)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range reqs {
			l.Allow(r)
		}
		if err := l.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(reqs)), "deltas/op")
}
