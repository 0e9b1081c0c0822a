package auth

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAuthorizeCached is the hot path: an identity whose answer is
// cached, as for every request but the first of a caller.
func BenchmarkAuthorizeCached(b *testing.B) {
	srv := newAuthServer(b, jsonAnswer(200, `{"auth_token":"tok","upstream":"10.0.0.1:3001,10.0.0.2:3002"}`))
	c, err := New(Config{URLs: []string{srv.URL}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Authorize(ctx, alice); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Authorize(ctx, alice); err != nil {
			b.Fatal(err)
		}
	}
	if srv.calls.Load() != 1 {
		b.Fatalf("server calls = %d, want 1", srv.calls.Load())
	}
}

// BenchmarkAuthorizeCachedParallel spreads 1000 cached identities over
// goroutines, to show the sharded cache under contention.
func BenchmarkAuthorizeCachedParallel(b *testing.B) {
	srv := newAuthServer(b, jsonAnswer(200, `{"auth_token":"tok","service":"s"}`))
	c, err := New(Config{URLs: []string{srv.URL}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	reqs := make([]Request, 1000)
	for i := range reqs {
		reqs[i] = alice
		reqs[i].Username = fmt.Sprint("user", i)
		if _, err := c.Authorize(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Authorize(ctx, reqs[i%len(reqs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
