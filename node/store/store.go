// Package store declares what a node keeps durably, and provides the
// embedded implementation (a bbolt file) used by a lone node.
//
// The Cassandra implementation lives in node/store/cassandra.
package store

import (
	"context"
	"errors"

	"vulcan/ratelimit"
)

// ErrNotFound is returned when a record asked for by id does not exist.
var ErrNotFound = errors.New("not found")

// Kinds of store, as reported by /v1/status.
const (
	KindEmbedded  = "embedded"
	KindCassandra = "cassandra"
)

// Record is one entry of the replicated state, opaque to the store: Data
// carries the entry's own version, so stores need no ordering of their own.
type Record struct {
	Key  string
	Data []byte
}

// Limits is the durable list of rate limits.
type Limits interface {
	ListLimits(ctx context.Context) ([]ratelimit.Limit, error)
	// PutLimit creates or replaces the limit with l.ID.
	PutLimit(ctx context.Context, l ratelimit.Limit) error
	// DeleteLimit removes a limit; ErrNotFound when there is none.
	DeleteLimit(ctx context.Context, id string) error
}

// State persists the replicated state a node holds, so that a restart of
// the node or of the whole cluster loses nothing.
type State interface {
	LoadState(ctx context.Context) ([]Record, error)
	// SaveState writes records, replacing any with the same key.
	SaveState(ctx context.Context, recs ...Record) error
	DeleteState(ctx context.Context, keys ...string) error
}

// Store is everything a node keeps durably. Implementations are safe for
// concurrent use, and every method honours ctx's deadline.
type Store interface {
	Limits
	State
	ratelimit.CounterStore
	// Kind is KindEmbedded or KindCassandra.
	Kind() string
	// Close releases the store; it is safe to call once.
	Close() error
}
