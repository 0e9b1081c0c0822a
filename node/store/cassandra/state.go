package cassandra

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"vulcan/node/store"
)

// Statements on the replicated state.
const (
	selectState = `SELECT key, data FROM state`
	insertState = `INSERT INTO state (key, data) VALUES (?, ?)`
	deleteState = `DELETE FROM state WHERE key = ?`
)

// parallelism bounds the statements one call has in flight: enough to hide
// the round trips, few enough not to crowd out other callers.
const parallelism = 8

// LoadState returns every record, in no particular order.
func (s *Store) LoadState(ctx context.Context) ([]store.Record, error) {
	iter := s.query(ctx, selectState).Iter()
	var (
		out  []store.Record
		key  string
		data []byte
	)
	// Scan appends a blob into data's array: reset it after each row so
	// that the records do not share one.
	for iter.Scan(&key, &data) {
		out = append(out, store.Record{Key: key, Data: data})
		data = nil
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	return out, nil
}

// SaveState writes recs, replacing any with the same key. Records go in
// parallel statements, not a batch: each key is its own partition, and a
// failed call may have written some of them (each is whole, and SaveState
// may be called again).
func (s *Store) SaveState(ctx context.Context, recs ...store.Record) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for _, r := range recs {
		g.Go(func() error {
			data := r.Data
			if data == nil {
				// A nil blob goes as null, which writes a tombstone; an
				// empty one is a plain value.
				data = []byte{}
			}
			if err := s.query(gctx, insertState, r.Key, data).Exec(); err != nil {
				return fmt.Errorf("save state %q: %w", r.Key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// DeleteState removes the records with the given keys; keys that have
// none are no error.
func (s *Store) DeleteState(ctx context.Context, keys ...string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for _, k := range keys {
		g.Go(func() error {
			if err := s.query(gctx, deleteState, k).Exec(); err != nil {
				return fmt.Errorf("delete state %q: %w", k, err)
			}
			return nil
		})
	}
	return g.Wait()
}
