package smtp

import (
	"crypto/tls"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for Config.
const (
	// DefaultMaxSize is the largest message accepted: 25 MiB, as the
	// command line's -smtp-max-size.
	DefaultMaxSize = 25 << 20
	// DefaultReadTimeout bounds each read from a client or an upstream:
	// RFC 5321 §4.5.3.2 asks servers to wait 5 minutes for a command.
	DefaultReadTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds each write to a client or an upstream.
	DefaultWriteTimeout = time.Minute
	// DefaultDialTimeout bounds each step of opening an upstream
	// connection: the TCP connect, the greeting, EHLO and STARTTLS.
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxIdlePerUpstream is how many idle upstream connections are
	// kept for reuse per upstream address.
	DefaultMaxIdlePerUpstream = 16
	// DefaultIdleTimeout is how long an idle upstream connection is kept;
	// well under the 5 minutes an upstream waits for a command.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxMessagesPerConn is how many messages one upstream
	// connection carries before it is closed (Postfix's
	// smtp_connection_reuse_count_limit is similar).
	DefaultMaxMessagesPerConn = 100
	// DefaultMaxAuthFailures is how many failed AUTH attempts a session
	// may make before it is closed with 421.
	DefaultMaxAuthFailures = 3
)

// Config configures a Server. Zero values take the defaults above.
type Config struct {
	// Addr is the address ListenAndServe listens on.
	Addr string
	// Domain is the name in the greeting and in EHLO to upstreams.
	// Default: the host name, else "localhost".
	Domain string
	// MaxSize is the largest message accepted, advertised in EHLO SIZE
	// and enforced with 552 5.3.4. Default DefaultMaxSize.
	MaxSize int64
	// TLSCert and TLSKey are PEM files; when both are set STARTTLS is
	// offered, and AUTH is offered only after it so that passwords never
	// cross the network in clear.
	TLSCert, TLSKey string
	// ReadTimeout bounds every read from a client (each command, each
	// read of message data) and from an upstream. Default 5 minutes.
	ReadTimeout time.Duration
	// WriteTimeout bounds every write to a client or an upstream.
	// Default 1 minute.
	WriteTimeout time.Duration
	// DialTimeout bounds each step of opening an upstream connection.
	// Default 10 seconds.
	DialTimeout time.Duration
	// Logger receives session and upstream events; credentials are never
	// logged. Default: a null logger.
	Logger hclog.Logger

	// UpstreamTLS is the TLS configuration for STARTTLS to upstreams.
	// Default: opportunistic TLS without certificate verification, as
	// MTAs do (RFC 7435): it defeats passive listening only.
	UpstreamTLS *tls.Config
	// MaxIdlePerUpstream is how many idle upstream connections are kept
	// per address; negative disables reuse. Default 16.
	MaxIdlePerUpstream int
	// IdleTimeout is how long an idle upstream connection is kept.
	// Default 30 seconds.
	IdleTimeout time.Duration
	// MaxMessagesPerConn is how many messages an upstream connection
	// carries before it is closed. Default 100.
	MaxMessagesPerConn int
	// MaxAuthFailures is how many failed AUTH attempts end a session.
	// Default 3.
	MaxAuthFailures int
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Domain == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Domain = h
		} else {
			c.Domain = "localhost"
		}
	}
	if c.MaxSize <= 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.MaxIdlePerUpstream == 0 {
		c.MaxIdlePerUpstream = DefaultMaxIdlePerUpstream
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxMessagesPerConn <= 0 {
		c.MaxMessagesPerConn = DefaultMaxMessagesPerConn
	}
	if c.MaxAuthFailures <= 0 {
		c.MaxAuthFailures = DefaultMaxAuthFailures
	}
	return c
}
