package cassandra

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"vulcan/node/store"
)

func TestState(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)

	if recs, err := s.LoadState(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("LoadState on a new keyspace = %v, %v; want none", recs, err)
	}
	var recs []store.Record
	for i := range 30 {
		recs = append(recs, store.Record{Key: fmt.Sprintf("upstream/web/%02d", i), Data: []byte(fmt.Sprintf("v%d", i))})
	}
	recs = append(recs, store.Record{Key: "empty", Data: nil})
	if err := s.SaveState(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// Replace one, delete two (one of them missing).
	if err := s.SaveState(ctx, store.Record{Key: "upstream/web/00", Data: []byte("v0-new")}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState(ctx, "upstream/web/01", "no-such-key"); err != nil {
		t.Fatal(err)
	}

	got, err := s.LoadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b store.Record) int { return strings.Compare(a.Key, b.Key) })
	want := map[string]string{"empty": "", "upstream/web/00": "v0-new"}
	for i := 2; i < 30; i++ {
		want[fmt.Sprintf("upstream/web/%02d", i)] = fmt.Sprintf("v%d", i)
	}
	if len(got) != len(want) {
		t.Fatalf("LoadState returned %d records, want %d", len(got), len(want))
	}
	for _, r := range got {
		w, ok := want[r.Key]
		if !ok || !bytes.Equal(r.Data, []byte(w)) {
			t.Errorf("record %q = %q, want %q (present %v)", r.Key, r.Data, w, ok)
		}
	}
}
