package ratelimit

import "context"

// CounterStore is the cluster-wide store of hit counters that a Limiter
// syncs with. Implementations must be safe for concurrent use; every call
// must honour ctx's deadline.
type CounterStore interface {
	// AddHits adds each delta to its bucket. It is not idempotent: a call
	// that fails may have applied some deltas, and the limiter does not
	// retry it (see the package doc for what it does instead).
	AddHits(ctx context.Context, deltas []Delta) error
	// ReadBuckets calls fn for every non-empty bucket of key whose start is
	// at or after since (Unix seconds). fn must not retain anything.
	ReadBuckets(ctx context.Context, key string, since int64, fn func(bucket, hits int64)) error
	// PruneHits removes every bucket that starts before the given Unix
	// second, so counters do not grow without bound.
	PruneHits(ctx context.Context, before int64) error
}
