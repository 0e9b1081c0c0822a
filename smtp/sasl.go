package smtp

import (
	"bytes"

	"github.com/emersion/go-sasl"
)

// Mechanisms offered in EHLO.
const (
	mechPlain = "PLAIN"
	mechLogin = "LOGIN"
)

// checkFunc verifies a user name and password and returns the reply error.
type checkFunc func(user, pass string) error

// plainServer is the server side of SASL PLAIN (RFC 4616). It is written
// here rather than taken from go-sasl so that a malformed response gets a
// 501 and an authorization identity other than the user is refused.
type plainServer struct {
	check checkFunc
	done  bool
}

// Next implements sasl.Server.
func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, errAuthMalformed
	}
	if resp == nil {
		// No initial response: an empty challenge asks for it.
		return []byte{}, false, nil
	}
	p.done = true
	authzid, user, pass, err := decodePlain(resp)
	if err != nil {
		return nil, false, err
	}
	if authzid != "" && authzid != user {
		return nil, false, errAuthIdentity
	}
	if err := p.check(user, pass); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

// decodePlain splits a PLAIN response: authzid NUL authcid NUL passwd.
func decodePlain(resp []byte) (authzid, user, pass string, err error) {
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return "", "", "", errAuthMalformed
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// loginServer is the server side of the obsolete but common LOGIN
// mechanism: the user name and the password, each asked for in turn
// (draft-murchison-sasl-login). go-sasl no longer provides it.
type loginServer struct {
	check checkFunc
	state int
	user  string
}

const (
	loginStart = iota
	loginWantUser
	loginWantPass
	loginDone
)

// Next implements sasl.Server.
func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.state {
	case loginStart:
		if resp == nil {
			l.state = loginWantUser
			return []byte("Username:"), false, nil
		}
		// The user name came as the initial response.
		l.user = string(resp)
		l.state = loginWantPass
		return []byte("Password:"), false, nil
	case loginWantUser:
		l.user = string(resp)
		l.state = loginWantPass
		return []byte("Password:"), false, nil
	case loginWantPass:
		l.state = loginDone
		if l.user == "" {
			return nil, false, errAuthMalformed
		}
		if err := l.check(l.user, string(resp)); err != nil {
			return nil, false, err
		}
		return nil, true, nil
	}
	return nil, false, errAuthMalformed
}

var (
	_ sasl.Server = (*plainServer)(nil)
	_ sasl.Server = (*loginServer)(nil)
)
