package node

import (
	"context"
	"errors"
	"fmt"

	"vulcan/node/auth"
	"vulcan/ratelimit"
	"vulcan/upstreams"
)

// Protocols as the authorization server and the limits name them.
const (
	ProtoHTTP = "HTTP"
	ProtoSMTP = "SMTP"
)

// Handle is a picked upstream; Release it when the request or session ends.
type Handle = upstreams.Handle

// Service is a registered service.
type Service = upstreams.Service

// Facts are what a front end extracts from a request or session.
type Facts struct {
	Protocol string // ProtoHTTP or ProtoSMTP
	// HasCredentials tells an empty password from no credentials at all.
	HasCredentials     bool
	Username, Password string
	Method             string
	URI                string // as the client sent it (path and query)
	Host               string // HTTP Host, for routing
	Path               string // URI path, for routing and limits
	Length             int64
	ClientIP           string
	// Recheck marks a second limit check of the same message once its
	// real size is known; only limits whose data_size is above Declared
	// (the size checked first) apply, so none counts the message twice.
	Recheck  bool
	Declared int64
}

// Identity is who the caller is, and where the authorization server says its
// traffic goes.
type Identity struct {
	Token     string
	Service   string
	Upstreams []string
}

// Authenticate asks the authorization server (through its cache) who the
// caller is. Without an authorization server the node is open and the
// token is the client's IP.
func (n *Node) Authenticate(ctx context.Context, f Facts) (Identity, error) {
	if n.auth == nil {
		return Identity{Token: f.ClientIP}, nil
	}
	if !f.HasCredentials {
		n.metrics.authDenied.Inc()
		return Identity{}, ErrNoCredentials
	}
	a, err := n.auth.Authorize(ctx, auth.Request{
		Username: f.Username, Password: f.Password, Protocol: f.Protocol,
		Method: f.Method, URI: f.URI, Length: f.Length, IP: f.ClientIP,
	})
	if err != nil {
		var d *auth.DeniedError
		if errors.As(err, &d) {
			n.metrics.authDenied.Inc()
			return Identity{}, &AuthDeniedError{Status: d.Status, Body: d.Body, ContentType: d.ContentType}
		}
		if cerr := ctx.Err(); cerr != nil {
			// The caller went away while waiting: the server did not fail,
			// and the call goes on to fill the cache for the next request.
			n.log.Debug("caller gone during authorization", "protocol", f.Protocol, "user", f.Username, "ip", f.ClientIP)
			return Identity{}, fmt.Errorf("%w: %w", ErrAuthUnavailable, cerr)
		}
		n.metrics.authFailed.Inc()
		n.log.Warn("authorization failed", "protocol", f.Protocol, "user", f.Username, "ip", f.ClientIP, "error", err)
		return Identity{}, fmt.Errorf("%w: %v", ErrAuthUnavailable, err)
	}
	return Identity{Token: a.Token, Service: a.Service, Upstreams: a.Upstreams}, nil
}

// Route is where a request goes: a registered service, or the explicit
// upstream list the authorization server gave.
type Route struct {
	// Service is set unless the route is an explicit list with no service.
	// It is shared with the upstream table and must not be modified.
	Service   *Service
	Upstreams []string
}

// RouteHTTP resolves the service for an HTTP request: the one the
// authorization server named, else its explicit upstream list, else the
// services' host and path rules.
func (n *Node) RouteHTTP(id Identity, host, path string) (Route, error) {
	switch {
	case id.Service != "":
		svc := n.table.ServiceRef(id.Service)
		if svc == nil || svc.Protocol != upstreams.ProtoHTTP {
			return Route{}, fmt.Errorf("%w: service %q named by the authorization server", ErrNoService, id.Service)
		}
		return Route{Service: svc}, nil
	case len(id.Upstreams) > 0:
		return Route{Upstreams: id.Upstreams}, nil
	}
	svc := n.table.RouteRef(host, path)
	if svc == nil {
		return Route{}, ErrNoService
	}
	return Route{Service: svc}, nil
}

// RouteSMTP resolves the service for an SMTP session: the one the
// authorization server named or its explicit list, else -smtp-service,
// else the only smtp service.
func (n *Node) RouteSMTP(id Identity) (Route, error) {
	if id.Service == "" && len(id.Upstreams) > 0 {
		return Route{Upstreams: id.Upstreams}, nil
	}
	name := id.Service
	if name == "" {
		name = n.cfg.SMTPService
	}
	if name == "" {
		var only *Service
		for _, s := range n.table.Services() {
			if s.Protocol == upstreams.ProtoSMTP {
				if only != nil {
					return Route{}, fmt.Errorf("%w: several smtp services and no -smtp-service", ErrNoService)
				}
				s := s
				only = &s
			}
		}
		if only == nil {
			return Route{}, fmt.Errorf("%w: no smtp service is registered", ErrNoService)
		}
		return Route{Service: only}, nil
	}
	svc, ok := n.table.Service(name)
	if !ok || svc.Protocol != upstreams.ProtoSMTP {
		return Route{}, fmt.Errorf("%w: smtp service %q", ErrNoService, name)
	}
	return Route{Service: &svc}, nil
}

// CheckLimits counts the request against the caller's limits. It returns a
// *RateLimitedError when a limit is hit, and ErrStoreUnavailable when
// limits fail closed during a store outage.
func (n *Node) CheckLimits(token string, f Facts) (ratelimit.Decision, error) {
	d := n.limiter.Allow(ratelimit.Request{Token: token, Protocol: f.Protocol, Method: f.Method, Path: f.Path, Length: f.Length,
		Recheck: f.Recheck, Declared: f.Declared})
	if d.Allowed {
		return d, nil
	}
	if d.StoreDown {
		return d, ErrStoreUnavailable
	}
	return d, &RateLimitedError{Decision: d}
}

// Pick chooses an upstream for the route, skipping exclude when another is
// usable. The handle counts the request in flight until released.
func (n *Node) Pick(r Route, exclude *Handle) (*Handle, error) {
	var h *Handle
	var err error
	if r.Service != nil {
		h, err = n.table.Pick(r.Service.Name, exclude)
	} else {
		h, err = n.table.PickAddrs(r.Upstreams, exclude)
	}
	if err != nil {
		if errors.Is(err, upstreams.ErrNoService) {
			return nil, fmt.Errorf("%w: %v", ErrNoService, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrNoUpstream, err)
	}
	return h, nil
}

// Admission is the outcome of admitting an HTTP request.
type Admission struct {
	Identity Identity
	Route    Route
	Decision ratelimit.Decision
}

// AdmitHTTP runs the pipeline for an HTTP request: authorize, route, limit.
func (n *Node) AdmitHTTP(ctx context.Context, f Facts) (Admission, error) {
	id, err := n.Authenticate(ctx, f)
	if err != nil {
		return Admission{}, err
	}
	r, err := n.RouteHTTP(id, f.Host, f.Path)
	if err != nil {
		return Admission{}, err
	}
	d, err := n.CheckLimits(id.Token, f)
	if err != nil {
		return Admission{Identity: id, Route: r, Decision: d}, err
	}
	return Admission{Identity: id, Route: r, Decision: d}, nil
}

// Upstream is a registered upstream.
type Upstream = upstreams.Upstream

// Limit is a rate limit.
type Limit = ratelimit.Limit

// Decision is a rate-limit decision.
type Decision = ratelimit.Decision

// AuthEnabled reports whether an authorization server is configured; when
// it is not, the node runs open.
func (n *Node) AuthEnabled() bool { return n.auth != nil }
