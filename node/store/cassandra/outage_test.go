package cassandra

import (
	"context"
	"testing"
	"time"

	"vulcan/ratelimit"
	testcassandra "vulcan/test/cassandra"
)

// TestOutageRecovery stops Cassandra under an open Store and starts it
// again: calls fail during the outage and succeed afterwards on the same
// Store, and the data written before the outage is still there. It runs on
// a node of its own, so that the outage disturbs no other test. The node is
// stopped, not killed: a killed node loses the writes of its last commit
// log sync period (10s), as any single replica does in a crash.
func TestOutageRecovery(t *testing.T) {
	node := testcassandra.StartPrivate(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{
		Hosts:             []string{node.Addr()},
		Keyspace:          testcassandra.Keyspace(t),
		Timeout:           time.Second,
		ConnectTimeout:    time.Second,
		ReconnectInterval: 500 * time.Millisecond,
		Logger:            testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	const bucket = 1_700_000_000
	add := func(ctx context.Context, b int64) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return s.AddHits(ctx, []ratelimit.Delta{{Key: "k", Bucket: b, Hits: 1}})
	}
	if err := add(ctx, bucket); err != nil {
		t.Fatalf("AddHits before the outage: %v", err)
	}
	if err := s.PutLimit(ctx, testLimit("6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b")); err != nil {
		t.Fatal(err)
	}

	node.Stop(t)
	start := time.Now()
	if err := add(ctx, bucket+1); err == nil {
		t.Fatal("AddHits succeeded while Cassandra was down")
	}
	t.Logf("AddHits failed in %v during the outage", time.Since(start).Round(time.Millisecond))

	node.Start(t)
	// Poll with a fresh bucket each try: a try that failed may still have
	// counted (counter updates are not retried, but a timeout is no proof
	// they were not applied).
	start = time.Now()
	deadline := start.Add(60 * time.Second)
	var (
		recovered int64
		lastErr   error
	)
	for try := int64(2); time.Now().Before(deadline); try++ {
		if lastErr = add(context.Background(), bucket+try); lastErr == nil {
			recovered = bucket + try
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if recovered == 0 {
		t.Fatalf("AddHits still failing 60s after Cassandra came back: %v", lastErr)
	}
	t.Logf("AddHits works again %v after Cassandra answered", time.Since(start).Round(time.Millisecond))

	got := readAll(t, s, "k", bucket)
	if got[bucket] != 1 || got[recovered] != 1 {
		t.Fatalf("buckets after recovery = %v: want 1 hit in %d (before the outage) and in %d (after)", got, bucket, recovered)
	}
	if limits, err := s.ListLimits(ctx); err != nil || len(limits) != 1 {
		t.Fatalf("ListLimits after recovery = %v, %v; want the limit written before", limits, err)
	}
}
