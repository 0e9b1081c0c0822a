package cassandra

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gocql/gocql"

	"vulcan/node/store"
	"vulcan/ratelimit"
)

// Statements on limits; gocql prepares each once per connection and
// caches it by its text.
const (
	selectLimits = `SELECT id, auth_token, protocol, method, path, data_size, period, threshold FROM limits`
	insertLimit  = `INSERT INTO limits (id, auth_token, protocol, method, path, data_size, period, threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	selectLimit  = `SELECT id FROM limits WHERE id = ?`
	deleteLimit  = `DELETE FROM limits WHERE id = ?`
)

// ListLimits returns every limit, in no particular order.
func (s *Store) ListLimits(ctx context.Context) ([]ratelimit.Limit, error) {
	iter := s.query(ctx, selectLimits).Iter()
	var (
		out                   []ratelimit.Limit
		id                    gocql.UUID
		l                     ratelimit.Limit
		dataSize, period, thr int
	)
	for iter.Scan(&id, &l.AuthToken, &l.Protocol, &l.Method, &l.Path, &dataSize, &period, &thr) {
		l.ID, l.DataSize, l.Period, l.Threshold = id.String(), int64(dataSize), period, int64(thr)
		out = append(out, l)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	return out, nil
}

// PutLimit creates or replaces the limit with l.ID, which must be a UUID.
// DataSize, Period and Threshold must fit the schema's 32-bit int.
func (s *Store) PutLimit(ctx context.Context, l ratelimit.Limit) error {
	id, err := gocql.ParseUUID(l.ID)
	if err != nil {
		return fmt.Errorf("put limit %q: id is not a uuid: %w", l.ID, err)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"data_size", l.DataSize}, {"period", int64(l.Period)}, {"threshold", l.Threshold}} {
		if f.v < math.MinInt32 || f.v > math.MaxInt32 {
			return fmt.Errorf("put limit %s: %s %d does not fit a 32-bit int", l.ID, f.name, f.v)
		}
	}
	err = s.query(ctx, insertLimit, id, l.AuthToken, l.Protocol, l.Method, l.Path,
		int32(l.DataSize), int32(l.Period), int32(l.Threshold)).Exec()
	if err != nil {
		return fmt.Errorf("put limit %s: %w", l.ID, err)
	}
	return nil
}

// DeleteLimit removes the limit with id; store.ErrNotFound when there is
// none, or when id is not a UUID (no limit can have it). The check and the
// delete are two statements: of two concurrent deletes of one limit, both
// may succeed.
func (s *Store) DeleteLimit(ctx context.Context, id string) error {
	uid, err := gocql.ParseUUID(id)
	if err != nil {
		return fmt.Errorf("delete limit %q: %w", id, store.ErrNotFound)
	}
	var found gocql.UUID
	switch err := s.query(ctx, selectLimit, uid).Scan(&found); {
	case errors.Is(err, gocql.ErrNotFound):
		return fmt.Errorf("delete limit %s: %w", id, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("delete limit %s: %w", id, err)
	}
	if err := s.query(ctx, deleteLimit, uid).Exec(); err != nil {
		return fmt.Errorf("delete limit %s: %w", id, err)
	}
	return nil
}
