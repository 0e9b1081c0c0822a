package auth

import (
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults applied by New to the zero fields of a Config.
const (
	DefaultTimeout    = time.Second
	DefaultSuccessTTL = 60 * time.Second
	DefaultDenyTTL    = 5 * time.Second
	DefaultMaxEntries = 100000
)

// maxBody bounds what is read of an answer: a well-behaved server answers
// with a few hundred bytes, and a misbehaving one must not exhaust memory.
const maxBody = 64 << 10

// Config configures a Client. Zero fields take the defaults above.
type Config struct {
	// URLs are the authorization servers. One is picked per call, round
	// robin; the next one is tried when the picked one cannot be reached.
	// A query already in a URL is kept, minus the parameters the client
	// sets itself.
	URLs []string
	// Timeout bounds each HTTP call (connect, request and answer);
	// default 1s. A failover attempt gets a fresh Timeout.
	Timeout time.Duration
	// SuccessTTL is how long a 200 answer is cached; default 60s,
	// negative disables caching of successes.
	SuccessTTL time.Duration
	// DenyTTL is how long a 4xx answer is cached; default 5s, negative
	// disables caching of denials. Failures are never cached.
	DenyTTL time.Duration
	// MaxEntries bounds the cache; the least recently used entries are
	// evicted first. Default 100000.
	MaxEntries int
	// Logger receives failures and denials; never a password.
	// Default: a null logger.
	Logger hclog.Logger
	// HTTPClient makes the calls; default: a client with its own pooled
	// transport that ignores proxy environment variables.
	HTTPClient *http.Client
	// Now is the clock of the cache; default time.Now. Tests inject one.
	Now func() time.Time
}
