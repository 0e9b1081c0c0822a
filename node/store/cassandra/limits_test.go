package cassandra

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"vulcan/node/store"
	"vulcan/ratelimit"
)

type ratelimitDelta = ratelimit.Delta

func testLimit(id string) ratelimit.Limit {
	return ratelimit.Limit{
		ID: id, AuthToken: "tok.*", Protocol: "HTTP", Method: "GET|POST", Path: "/api/",
		DataSize: 1024, Period: 60, Threshold: 100,
	}
}

func TestLimitsCRUD(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)

	if got, err := s.ListLimits(ctx); err != nil || len(got) != 0 {
		t.Fatalf("ListLimits on a new keyspace = %v, %v; want none", got, err)
	}
	a := testLimit("6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b")
	b := ratelimit.Limit{ID: "1a2b3c4d-0000-4000-8000-000000000001", Period: 1, Threshold: 0}
	for _, l := range []ratelimit.Limit{a, b} {
		if err := s.PutLimit(ctx, l); err != nil {
			t.Fatalf("PutLimit(%v): %v", l, err)
		}
	}
	a.Threshold, a.Path = 5, "/other"
	if err := s.PutLimit(ctx, a); err != nil {
		t.Fatalf("PutLimit replacing: %v", err)
	}
	got, err := s.ListLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(x, y ratelimit.Limit) int { return strings.Compare(x.ID, y.ID) })
	if want := []ratelimit.Limit{b, a}; !slices.Equal(got, want) {
		t.Fatalf("ListLimits = %+v\nwant %+v", got, want)
	}

	if err := s.DeleteLimit(ctx, a.ID); err != nil {
		t.Fatalf("DeleteLimit: %v", err)
	}
	if err := s.DeleteLimit(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteLimit = %v, want ErrNotFound", err)
	}
	if err := s.DeleteLimit(ctx, "not-a-uuid"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteLimit(not-a-uuid) = %v, want ErrNotFound", err)
	}
	if got, err := s.ListLimits(ctx); err != nil || len(got) != 1 || got[0] != b {
		t.Fatalf("ListLimits after delete = %v, %v; want [%v]", got, err, b)
	}
}

func TestPutLimitRejects(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	for name, l := range map[string]ratelimit.Limit{
		"non-uuid id":    {ID: "limit-1", Period: 1},
		"empty id":       {Period: 1},
		"huge threshold": {ID: "6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b", Period: 1, Threshold: math.MaxInt32 + 1},
		"huge data size": {ID: "6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b", Period: 1, DataSize: 1 << 40},
	} {
		if err := s.PutLimit(ctx, l); err == nil {
			t.Errorf("%s: PutLimit(%+v) = nil, want an error", name, l)
		}
	}
	if got, err := s.ListLimits(ctx); err != nil || len(got) != 0 {
		t.Fatalf("ListLimits after rejected puts = %v, %v; want none", got, err)
	}
}
