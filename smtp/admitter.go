package smtp

import (
	"context"

	"vulcan/node"
)

// Admitter is the part of a node the SMTP front end uses. *node.Node
// implements it. All methods are safe for concurrent use and are called from
// the goroutines serving sessions; they must return promptly (Authenticate
// is bounded by the authorization client's timeout and by ctx).
type Admitter interface {
	// AuthEnabled reports whether an authorization server is configured.
	AuthEnabled() bool
	// Authenticate asks who the caller is. Errors: node.ErrNoCredentials,
	// *node.AuthDeniedError, node.ErrAuthUnavailable.
	Authenticate(ctx context.Context, f node.Facts) (node.Identity, error)
	// RouteSMTP resolves the service of a session; node.ErrNoService when
	// there is none.
	RouteSMTP(id node.Identity) (node.Route, error)
	// CheckLimits counts a message against the caller's limits. Errors:
	// *node.RateLimitedError, node.ErrStoreUnavailable.
	CheckLimits(token string, f node.Facts) (node.Decision, error)
	// Pick chooses an upstream of the route, avoiding exclude when another
	// is usable. Errors: node.ErrNoService, node.ErrNoUpstream. The handle
	// must be released.
	Pick(r node.Route, exclude *node.Handle) (*node.Handle, error)
	// ObserveSMTP counts an event for the metrics.
	ObserveSMTP(event string)
}

// Events passed to ObserveSMTP.
const (
	eventSession        = "session"
	eventMessage        = "message"
	eventRejected       = "rejected"
	eventAuthFailed     = "auth_failed"
	eventRateLimited    = "rate_limited"
	eventUpstreamFailed = "upstream_failed"
	eventAborted        = "aborted"
)

var _ Admitter = (*node.Node)(nil)
