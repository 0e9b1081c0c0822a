package ratelimit

import (
	"fmt"
	"regexp"
	"regexp/syntax"
)

// Limit is one rate limit, in the original vulcan's schema.
type Limit struct {
	ID        string `json:"id"`
	AuthToken string `json:"auth_token"`
	Protocol  string `json:"protocol"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	// DataSize makes the limit apply only to requests of at least this
	// many bytes; 0 applies it to all.
	DataSize int64 `json:"data_size"`
	// Period is the window in seconds.
	Period int `json:"period"`
	// Threshold is the most requests allowed in any Period.
	Threshold int64 `json:"threshold"`
}

// Delta is a number of hits to add to one bucket of one counter.
type Delta struct {
	// Key is the counter: auth token and limit id, as built by CounterKey.
	Key string
	// Bucket is the bucket's start, in Unix seconds.
	Bucket int64
	Hits   int64
}

// CounterKey names the hit counter of a token under a limit.
func CounterKey(token, limitID string) string { return limitID + "|" + token }

// FieldError says which field of a limit is invalid, named as in JSON.
type FieldError struct {
	Field string
	Msg   string
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate checks l's fields; the error is a *FieldError naming the first
// bad one. It does not check ID, which the caller may assign later.
func Validate(l Limit) error {
	for _, f := range []struct{ name, re string }{
		{"auth_token", l.AuthToken},
		{"protocol", l.Protocol},
		{"method", l.Method},
		{"path", l.Path},
	} {
		if _, err := compileAnchored(f.re); err != nil {
			return &FieldError{Field: f.name, Msg: fmt.Sprintf("invalid regular expression %q: %v", f.re, err)}
		}
	}
	switch {
	case l.DataSize < 0:
		return &FieldError{Field: "data_size", Msg: fmt.Sprintf("must be >= 0, got %d", l.DataSize)}
	case l.Period <= 0:
		return &FieldError{Field: "period", Msg: fmt.Sprintf("must be > 0 seconds, got %d", l.Period)}
	case l.Threshold < 0:
		return &FieldError{Field: "threshold", Msg: fmt.Sprintf("must be >= 0, got %d", l.Threshold)}
	}
	return nil
}

// compileAnchored compiles re anchored at the start; an empty re gives nil,
// which matches everything.
func compileAnchored(re string) (*regexp.Regexp, error) {
	if re == "" {
		return nil, nil
	}
	// The anchor is added to the parsed tree, not to the source text: text
	// such as "a)|(b" or "\\Q" would otherwise escape or swallow a wrapping
	// group.
	p, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil, err
	}
	anchored := &syntax.Regexp{Op: syntax.OpConcat, Flags: syntax.Perl, Sub: []*syntax.Regexp{{Op: syntax.OpBeginText}, p}}
	return regexp.Compile(anchored.String())
}
