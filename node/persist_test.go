package node

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/gossip"
	"vulcan/node/store"
)

// TestPersisterKeepsTombstonesUntilTheGrace: a delete is written to the
// store like any entry, the newest entry of a key wins, and only tombstones
// past the grace are swept.
func TestPersisterKeepsTombstonesUntilTheGrace(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	p := newPersister(st, time.Hour, hclog.NewNullLogger())
	v := func(c uint64) gossip.Version { return gossip.Version{Clock: c, Node: "n1"} }
	now := time.Now()

	p.mark(gossip.Entry{Key: "svc/a", Value: []byte(`{}`), Version: v(1)})
	p.mark(gossip.Entry{Key: "svc/a", Version: v(2), Deleted: true, DeletedAt: now.UnixMilli()})
	p.mark(gossip.Entry{Key: "svc/old", Version: v(3), Deleted: true, DeletedAt: now.Add(-2 * time.Hour).UnixMilli()})
	p.mark(gossip.Entry{Key: "svc/b", Value: []byte(`{}`), Version: v(4)})
	p.flush(ctx)

	load := func() map[string]gossip.Entry {
		t.Helper()
		recs, err := st.LoadState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]gossip.Entry{}
		for _, r := range recs {
			e, err := gossip.DecodeEntry(r.Data)
			if err != nil {
				t.Fatalf("record %s: %v", r.Key, err)
			}
			out[r.Key] = e
		}
		return out
	}
	got := load()
	if e, ok := got["svc/a"]; !ok || !e.Deleted || e.Version != v(2) {
		t.Fatalf("svc/a stored as %+v (present %v), want the tombstone", e, ok)
	}
	if len(got) != 3 {
		t.Fatalf("stored %d records, want 3: %v", len(got), got)
	}

	p.sweep(ctx)
	got = load()
	if _, ok := got["svc/old"]; ok {
		t.Error("tombstone past the grace not swept")
	}
	if _, ok := got["svc/a"]; !ok {
		t.Error("fresh tombstone swept")
	}
	if _, ok := got["svc/b"]; !ok {
		t.Error("live entry swept")
	}
}
