package ratelimit

import (
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Limiter. The zero value counts locally only.
type Config struct {
	// Store is the cluster-wide counter store; nil counts locally only.
	Store CounterStore
	// SyncInterval is how often local deltas are written and the touched
	// keys re-read. Default 100ms. It bounds over-admission: each node can
	// admit what it admits in one interval before it sees the others.
	SyncInterval time.Duration
	// PruneInterval is how often Store.PruneHits removes buckets older than
	// the longest period plus a minute of slack. Default 1m.
	PruneInterval time.Duration
	// RefreshInterval is how often the keys not touched since the last sync
	// are re-read too, as long as their window holds hits. Touched keys are
	// re-read every sync; the others only matter at their next hit, so they
	// are refreshed less often to spare the store. It is rounded up to a
	// whole number of sync rounds. Default 1s.
	RefreshInterval time.Duration
	// StoreTimeout bounds every store call. Default 1s.
	StoreTimeout time.Duration
	// ReadConcurrency is how many keys are re-read from the store at once
	// during a sync. Default 8.
	ReadConcurrency int
	// MatchCacheSize bounds the number of (token, protocol, method, path)
	// tuples whose matching limits are remembered. Default 65536.
	MatchCacheSize int
	// FailClosed denies requests that some limit applies to while the store
	// is unreachable, instead of deciding on local counts.
	FailClosed bool
	// Now is the clock; default time.Now. Tests inject a fake one.
	Now func() time.Time
	// Logger receives store outages and recoveries; default a null logger.
	Logger hclog.Logger
}

// withDefaults returns c with every unset field given its default.
func (c Config) withDefaults() Config {
	if c.SyncInterval <= 0 {
		c.SyncInterval = 100 * time.Millisecond
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = time.Minute
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = time.Second
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = time.Second
	}
	if c.ReadConcurrency <= 0 {
		c.ReadConcurrency = 8
	}
	if c.MatchCacheSize <= 0 {
		c.MatchCacheSize = 65536
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Intervals of the housekeeping that Config does not expose.
const (
	// pruneSlack keeps buckets a minute past the longest period, for clock
	// skew between nodes and for limits another node has not reloaded yet.
	pruneSlack = 60
	// sweepInterval is how often counters whose window has passed are
	// dropped; it only delays freeing memory.
	sweepInterval = 5 * time.Second
	// maxBuckets is the most buckets a window spans before buckets widen.
	maxBuckets = 3600
)
