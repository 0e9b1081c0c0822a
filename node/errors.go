package node

import (
	"errors"
	"fmt"

	"vulcan/ratelimit"
)

// Errors of the admission pipeline. The front ends turn them into a status
// or an SMTP reply, each in one place.
var (
	// ErrNoCredentials: an authorization server is configured and the
	// caller sent no credentials.
	ErrNoCredentials = errors.New("credentials required")
	// ErrAuthUnavailable: the authorization server failed, timed out or
	// answered something that is not its protocol.
	ErrAuthUnavailable = errors.New("authorization server unavailable")
	// ErrNoService: no service matches the request.
	ErrNoService = errors.New("no service matches")
	// ErrNoUpstream: the service has no usable upstream (all down or draining).
	ErrNoUpstream = errors.New("no usable upstream")
	// ErrStoreUnavailable: the counter store is unreachable and limits fail closed.
	ErrStoreUnavailable = errors.New("rate limit store unavailable")
	// ErrNotFound: an admin call named an unknown service, upstream or limit.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: an admin call's input is malformed; wrapped with the reason.
	ErrInvalid = errors.New("invalid")
)

// AuthDeniedError is the authorization server's 4xx answer, passed on to the
// client as it is.
type AuthDeniedError struct {
	Status      int
	Body        []byte
	ContentType string
}

func (e *AuthDeniedError) Error() string {
	return fmt.Sprintf("authorization denied with status %d", e.Status)
}

// RateLimitedError: a limit was hit.
type RateLimitedError struct {
	Decision ratelimit.Decision
}

func (e *RateLimitedError) Error() string {
	id := ""
	if e.Decision.Limit != nil {
		id = e.Decision.Limit.ID
	}
	return fmt.Sprintf("rate limit %s exceeded, retry in %ds", id, e.Decision.RetryAfter)
}
