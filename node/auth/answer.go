package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Answer is what the authorization server grants to a caller.
//
// An Answer returned by Authorize may be shared with other callers through
// the cache: treat Upstreams as read-only.
type Answer struct {
	// Token identifies the caller for rate limiting.
	Token string
	// Service names the service to route to; empty when the server did
	// not name one.
	Service string
	// Upstreams are explicit upstream addresses (host:port) to route to;
	// nil when the server did not list any. When both Service and
	// Upstreams are empty, routing falls back to the services' host and
	// path rules.
	Upstreams []string
}

// wireAnswer is the server's JSON. AuthToken is a pointer so that a
// missing token is told apart from the zero value.
type wireAnswer struct {
	AuthToken *string `json:"auth_token"`
	Service   string  `json:"service"`
	Upstream  string  `json:"upstream"`
}

// errNoToken: without a token the caller cannot be rate limited on its own,
// so an answer lacking one is not an authorization.
var errNoToken = errors.New("answer has no auth_token")

// DecodeAnswer decodes the JSON body of a 200 answer:
// {"auth_token": "t", "upstream": "a:1,b:2"} or {"auth_token": "t",
// "service": "name"}. Unknown fields are ignored. A missing, null or empty
// auth_token is an error (an empty token would make every such caller share
// one set of rate-limit counters). The upstream list is split on commas,
// each item trimmed, empty items dropped.
func DecodeAnswer(b []byte) (Answer, error) {
	var w wireAnswer
	if err := json.Unmarshal(b, &w); err != nil {
		return Answer{}, fmt.Errorf("decode auth answer: %w", err)
	}
	if w.AuthToken == nil || *w.AuthToken == "" {
		return Answer{}, errNoToken
	}
	return Answer{
		Token:     *w.AuthToken,
		Service:   strings.TrimSpace(w.Service),
		Upstreams: splitUpstreams(w.Upstream),
	}, nil
}

func splitUpstreams(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}
