package cassandra

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/node/store"
	testcassandra "vulcan/test/cassandra"
)

// openStore opens a Store on a fresh keyspace of the shared test node,
// closed when the test ends.
func openStore(t testing.TB) *Store {
	t.Helper()
	return openKeyspace(t, testcassandra.Hosts(t), testcassandra.Keyspace(t))
}

func openKeyspace(t testing.TB, hosts, keyspace string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{
		Hosts:    strings.Split(hosts, ","),
		Keyspace: keyspace,
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatalf("Open(%s): %v", keyspace, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testLogger sends logs to t.Log.
func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeClock is a settable clock for the hit-key slots.
type fakeClock struct{ sec atomic.Int64 }

func (c *fakeClock) now() time.Time { return time.Unix(c.sec.Load(), 0) }

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{Hosts: []string{"127.0.0.1"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keyspace != DefaultKeyspace || cfg.ReplicationFactor != 1 || cfg.Timeout != DefaultTimeout ||
		cfg.ConnectTimeout != DefaultConnectTimeout || cfg.SchemaTimeout != DefaultSchemaTimeout ||
		cfg.ReconnectInterval != DefaultReconnectInterval || cfg.Logger == nil {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	for _, bad := range []Config{
		{},
		{Hosts: []string{"h"}, Keyspace: "Upper"},
		{Hosts: []string{"h"}, Keyspace: "1starts_with_digit"},
		{Hosts: []string{"h"}, Keyspace: "has-dash"},
		{Hosts: []string{"h"}, Keyspace: strings.Repeat("k", 49)},
		{Hosts: []string{"h"}, ReplicationFactor: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) = nil error, want one", bad)
		}
	}
}

func TestSlotOf(t *testing.T) {
	for _, c := range []struct {
		sec  int64
		want int32
	}{{0, 0}, {599, 0}, {600, 1}, {1_700_000_000, 2_833_333}, {-1, -1}, {-600, -1}, {-601, -2}} {
		if got := slotOf(c.sec); got != c.want {
			t.Errorf("slotOf(%d) = %d, want %d", c.sec, got, c.want)
		}
	}
}

// TestOpenUnreachable checks that Open fails, and in bounded time, when
// nothing listens on the contact point.
func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Open(ctx, Config{Hosts: []string{addr}, ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the host", err)
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("Open took %v to fail", d)
	}
}

func TestOpenCreatesSchemaIdempotently(t *testing.T) {
	hosts, ks := testcassandra.Hosts(t), testcassandra.Keyspace(t)
	s1 := openKeyspace(t, hosts, ks)
	if s1.Kind() != store.KindCassandra {
		t.Fatalf("Kind() = %q", s1.Kind())
	}
	// A second Open finds everything in place and changes nothing.
	s2 := openKeyspace(t, hosts, ks)
	ctx := testCtx(t)
	iter := s2.sess.Query(`SELECT table_name, gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ?`, ks).
		WithContext(ctx).Iter()
	got := map[string]int{}
	var name string
	var gc int
	for iter.Scan(&name, &gc) {
		got[name] = gc
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables() {
		g, ok := got[tb.name]
		if !ok {
			t.Errorf("table %s missing; have %v", tb.name, got)
			continue
		}
		if tb.pruned && g != gcGraceSeconds {
			t.Errorf("table %s: gc_grace_seconds %d, want %d", tb.name, g, gcGraceSeconds)
		}
	}
	if len(got) != len(tables()) {
		t.Errorf("tables %v, want exactly %d", got, len(tables()))
	}
}

// TestOpenMigratesGCGrace checks that Open sets gc_grace_seconds on a hits
// table created without it, as an older schema would have been.
func TestOpenMigratesGCGrace(t *testing.T) {
	hosts, ks := testcassandra.Hosts(t), testcassandra.Keyspace(t)
	s := openKeyspace(t, hosts, ks)
	ctx := testCtx(t)
	if err := s.sess.Query(`ALTER TABLE hits WITH gc_grace_seconds = 864000`).WithContext(ctx).Exec(); err != nil {
		t.Fatal(err)
	}
	openKeyspace(t, hosts, ks)
	var gc int
	if err := s.sess.Query(`SELECT gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'hits'`, ks).
		WithContext(ctx).Scan(&gc); err != nil {
		t.Fatal(err)
	}
	if gc != gcGraceSeconds {
		t.Fatalf("gc_grace_seconds of hits after Open = %d, want %d", gc, gcGraceSeconds)
	}
}

func TestSecondStoreSeesData(t *testing.T) {
	hosts, ks := testcassandra.Hosts(t), testcassandra.Keyspace(t)
	a, b := openKeyspace(t, hosts, ks), openKeyspace(t, hosts, ks)
	ctx := testCtx(t)
	l := testLimit("0b9f2f44-5d1c-4b39-9a43-8c2f6e6f3a10")
	if err := a.PutLimit(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveState(ctx, store.Record{Key: "svc/web", Data: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddHits(ctx, deltas("k", 100, 3)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddHits(ctx, deltas("k", 100, 4)); err != nil {
		t.Fatal(err)
	}

	limits, err := b.ListLimits(ctx)
	if err != nil || len(limits) != 1 || limits[0] != l {
		t.Errorf("second store's ListLimits = %v, %v; want [%v]", limits, err, l)
	}
	recs, err := b.LoadState(ctx)
	if err != nil || len(recs) != 1 || recs[0].Key != "svc/web" || string(recs[0].Data) != "v1" {
		t.Errorf("second store's LoadState = %v, %v", recs, err)
	}
	if got := readAll(t, a, "k", 0); got[100] != 7 {
		t.Errorf("first store reads bucket 100 = %d after 3 + 4 hits from two stores, want 7", got[100])
	}
}

func deltas(key string, bucket, hits int64) []ratelimitDelta {
	return []ratelimitDelta{{Key: key, Bucket: bucket, Hits: hits}}
}

func readAll(t testing.TB, s *Store, key string, since int64) map[int64]int64 {
	t.Helper()
	got := map[int64]int64{}
	last := int64(-1 << 62)
	err := s.ReadBuckets(testCtx(t), key, since, func(bucket, hits int64) {
		if bucket <= last {
			t.Errorf("ReadBuckets gave bucket %d after %d: want increasing order", bucket, last)
		}
		last = bucket
		got[bucket] = hits
	})
	if err != nil {
		t.Fatalf("ReadBuckets(%q, %d): %v", key, since, err)
	}
	return got
}
