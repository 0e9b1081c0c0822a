package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ErrUnavailable is wrapped by every error that means the authorization
// server gave no usable answer: 5xx, unreachable, timeout, a body that is
// not its JSON, or an answer without auth_token. Front ends map it to 503
// (HTTP) or 454 4.7.0 (SMTP). Test with errors.Is.
var ErrUnavailable = errors.New("authorization server unavailable")

// DeniedError is the server's 4xx answer, to be passed on to the client as
// it is. A DeniedError may be shared through the cache: treat Body as
// read-only.
type DeniedError struct {
	// Status is the server's status code, 400 to 499.
	Status int
	// Body is the server's body, cut at 64 KiB.
	Body []byte
	// ContentType is the server's Content-Type header, possibly empty.
	ContentType string
}

// Error reports the status only: the body is for the client, not for logs.
func (e *DeniedError) Error() string {
	return fmt.Sprintf("authorization denied: %d %s", e.Status, http.StatusText(e.Status))
}

// unavailable builds an ErrUnavailable naming the server by its redacted
// URL, which carries neither query nor user info.
func unavailable(server, reason string) error {
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, server, reason)
}

// transportReason describes a failed round trip without the request URL:
// net/http's *url.Error quotes the URL, and the URL holds the password.
// What is left is scrubbed again in case an inner error quotes the query.
func transportReason(err error, rawQuery, password string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return "timeout"
		}
		err = ue.Err
	}
	msg := err.Error()
	if rawQuery != "" {
		msg = strings.ReplaceAll(msg, rawQuery, "[redacted]")
	}
	if password != "" {
		msg = strings.ReplaceAll(msg, url.QueryEscape(password), "[redacted]")
		msg = strings.ReplaceAll(msg, password, "[redacted]")
	}
	return msg
}
