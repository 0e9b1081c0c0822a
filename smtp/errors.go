package smtp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	gosmtp "github.com/emersion/go-smtp"

	"vulcan/node"
)

// Errors the session raises itself; reply turns them into SMTP replies.
var (
	// errAuthRequired: an authorization server is configured and the
	// client sent MAIL without AUTH.
	errAuthRequired = errors.New("authentication required")
	// errAuthMalformed: the SASL exchange could not be decoded.
	errAuthMalformed = errors.New("malformed authentication exchange")
	// errAuthIdentity: PLAIN asked to act as another identity.
	errAuthIdentity = errors.New("authorization identity differs from the user name")
	// errAuthTooMany: the session failed AUTH too often and is closed.
	errAuthTooMany = errors.New("too many authentication failures")
	// errAuthInTransaction: AUTH inside a mail transaction (RFC 4954 §4).
	errAuthInTransaction = errors.New("AUTH not permitted during a mail transaction")
	// errClientTimeout: the client stalled mid-DATA.
	errClientTimeout = errors.New("timed out waiting for message data")
	// errShuttingDown: the server is stopping.
	errShuttingDown = errors.New("server shutting down")
)

// upstreamLostError is an I/O failure talking to an upstream after its
// connection was established; the transaction is lost.
type upstreamLostError struct {
	addr string
	op   string
	err  error
}

func (e *upstreamLostError) Error() string {
	return fmt.Sprintf("upstream %s: %s: %v", e.addr, e.op, e.err)
}

func (e *upstreamLostError) Unwrap() error { return e.err }

// connectError is a failure to open a connection to an upstream: dial,
// greeting, EHLO or STARTTLS. It marks the upstream down and the next one
// is tried.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string {
	return fmt.Sprintf("connect to upstream %s: %v", e.addr, e.err)
}

func (e *connectError) Unwrap() error { return e.err }

// unavailableError: every upstream tried failed to connect.
type unavailableError struct{ last error }

func (e *unavailableError) Error() string { return "no upstream could be reached: " + e.last.Error() }

func (e *unavailableError) Unwrap() error { return e.last }

// reply is the one place where an error becomes the SMTP reply the client
// sees. Replies from an upstream (*gosmtp.SMTPError) pass through as they
// are; nil stays nil.
func reply(err error) error {
	if err == nil {
		return nil
	}
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	var limited *node.RateLimitedError
	switch {
	case errors.Is(err, errAuthRequired), errors.Is(err, node.ErrNoCredentials):
		return smtpErr(530, 5, 7, 0, "Authentication required")
	case errors.As(err, new(*node.AuthDeniedError)), errors.Is(err, errAuthIdentity):
		return smtpErr(535, 5, 7, 8, "Authentication credentials invalid")
	case errors.Is(err, node.ErrAuthUnavailable):
		return smtpErr(454, 4, 7, 0, "Temporary authentication failure, try again later")
	case errors.Is(err, errAuthMalformed):
		return smtpErr(501, 5, 5, 2, "Malformed authentication response")
	case errors.Is(err, errAuthTooMany):
		return smtpErr(421, 4, 7, 0, "Too many authentication failures, closing connection")
	case errors.Is(err, errAuthInTransaction):
		return smtpErr(503, 5, 5, 1, "AUTH not permitted during a mail transaction")
	case errors.As(err, &limited):
		retry := max(limited.Decision.RetryAfter, 1)
		return smtpErr(451, 4, 7, 1, "Rate limit exceeded, try again in "+strconv.Itoa(retry)+" seconds")
	case errors.Is(err, node.ErrStoreUnavailable):
		return smtpErr(451, 4, 3, 0, "Rate limits unavailable, try again later")
	case errors.Is(err, node.ErrNoService):
		return smtpErr(451, 4, 3, 5, "No mail service is configured for this session")
	case errors.Is(err, node.ErrNoUpstream), errors.As(err, new(*unavailableError)):
		return smtpErr(451, 4, 4, 1, "No upstream available, try again later")
	case errors.As(err, new(*upstreamLostError)):
		return smtpErr(451, 4, 4, 2, "Connection to upstream lost, try again later")
	case errors.Is(err, gosmtp.ErrTooLongLine):
		// As go-smtp answers a command line that is too long.
		return smtpErr(500, 5, 4, 0, "Line too long, closing connection")
	case errors.Is(err, errClientTimeout):
		return smtpErr(421, 4, 4, 2, "Timeout waiting for data, closing connection")
	case errors.Is(err, errShuttingDown):
		return smtpErr(421, 4, 3, 2, "Service shutting down")
	}
	return smtpErr(451, 4, 3, 0, "Internal error, try again later")
}

func smtpErr(code, class, subject, detail int, msg string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{class, subject, detail}, Message: msg}
}

// upstreamSuccess turns an upstream's success reply to the final dot into
// the reply for the client, so that the upstream's text (often a queue id)
// reaches it. go-smtp writes a returned *SMTPError whatever its code.
func upstreamSuccess(code int, text string) *gosmtp.SMTPError {
	ec, msg := splitEnhanced(text)
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// splitEnhanced separates an RFC 3463 enhanced status code from the text
// of a reply (textproto gives the lines joined by "\n", codes removed); the
// code repeated on later lines is dropped too. Without a well-formed code it
// returns EnhancedCodeNotSet and the text unchanged, and go-smtp then adds
// the generic X.0.0.
func splitEnhanced(text string) (gosmtp.EnhancedCode, string) {
	first, rest, ok := strings.Cut(text, " ")
	if !ok {
		return gosmtp.EnhancedCodeNotSet, text
	}
	var ec gosmtp.EnhancedCode
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return gosmtp.EnhancedCodeNotSet, text
	}
	for i, p := range parts {
		// RFC 3463: class is one digit, subject and detail 1 to 3.
		if p == "" || len(p) > 3 || (i == 0 && len(p) != 1) {
			return gosmtp.EnhancedCodeNotSet, text
		}
		n := 0
		for _, c := range []byte(p) {
			if c < '0' || c > '9' {
				return gosmtp.EnhancedCodeNotSet, text
			}
			n = n*10 + int(c-'0')
		}
		ec[i] = n
	}
	if ec[0] != 2 && ec[0] != 4 && ec[0] != 5 {
		return gosmtp.EnhancedCodeNotSet, text
	}
	return ec, strings.ReplaceAll(rest, "\n"+first+" ", "\n")
}
