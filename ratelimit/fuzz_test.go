package ratelimit

import (
	"regexp"
	"testing"
)

// FuzzAnchoredMatch checks, for limit expressions as typed by an operator,
// that Validate never panics and that a limit matches exactly when the
// expression matches at the start of the value.
func FuzzAnchoredMatch(f *testing.F) {
	f.Add("/api", "/api/v1")
	f.Add("a)|(b", "xb")
	f.Add(`\Q`, ")")
	f.Add(`\Qa.b`, "a.bc")
	f.Add("GET|POST", "XPOST")
	f.Add("(?m)^b", "a\nb")
	f.Add("", "anything")
	f.Add(`\`, "x")
	f.Fuzz(func(t *testing.T, expr, value string) {
		err := Validate(Limit{Path: expr, Period: 1})
		plain, perr := regexp.Compile(expr)
		if (err == nil) != (perr == nil) {
			t.Fatalf("Validate(%q) = %v, but regexp.Compile says %v", expr, err, perr)
		}
		if err != nil {
			return
		}
		re, _ := compileAnchored(expr)
		got := matches(re, value)
		loc := plain.FindStringIndex(value)
		if want := loc != nil && loc[0] == 0; got != want {
			t.Fatalf("%q on %q: matched=%v, want %v (leftmost match %v)", expr, value, got, want, loc)
		}
	})
}
