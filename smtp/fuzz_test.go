package smtp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

// FuzzSplitEnhanced feeds upstream reply texts to the enhanced-code parser:
// it must never panic, and a code it accepts is well formed and came from
// the text.
func FuzzSplitEnhanced(f *testing.F) {
	for _, s := range []string{"2.0.0 Ok: queued as X", "Ok", "2.0.0", "5.1.1 a\n5.1.1 b", "9.9.9 x", "2.00.000 y", "2.1000.0 z", "+2.0.0 x", "2..0 x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ec, msg := splitEnhanced(text)
		if ec == gosmtp.EnhancedCodeNotSet {
			if msg != text {
				t.Fatalf("text changed without a code: %q -> %q", text, msg)
			}
			return
		}
		if ec[0] != 2 && ec[0] != 4 && ec[0] != 5 || ec[1] < 0 || ec[1] > 999 || ec[2] < 0 || ec[2] > 999 {
			t.Fatalf("bad code %v from %q", ec, text)
		}
		if !strings.HasPrefix(text, fmt.Sprintf("%d.", ec[0])) || len(msg) >= len(text) {
			t.Fatalf("code %v, message %q not taken from %q", ec, msg, text)
		}
	})
}

// FuzzPlain feeds PLAIN responses to the server side: no panic; it either
// refuses or passes exactly the user and password that were encoded.
func FuzzPlain(f *testing.F) {
	for _, s := range [][]byte{[]byte("\x00alice\x00pw"), []byte("alice\x00alice\x00pw"), []byte("x"), {}, []byte("\x00\x00"), []byte("a\x00b\x00c\x00d")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, resp []byte) {
		var user, pass string
		called := false
		p := &plainServer{check: func(u, pw string) error { user, pass, called = u, pw, true; return nil }}
		_, done, err := p.Next(resp)
		parts := bytes.Split(resp, []byte{0})
		valid := len(parts) == 3 && len(parts[1]) > 0 && (len(parts[0]) == 0 || bytes.Equal(parts[0], parts[1]))
		if valid != (err == nil) || done != valid || called != valid {
			t.Fatalf("resp %q: valid %v, err %v, done %v, called %v", resp, valid, err, done, called)
		}
		if valid && (user != string(parts[1]) || pass != string(parts[2])) {
			t.Fatalf("resp %q: got %q/%q", resp, user, pass)
		}
		if err != nil && !errors.Is(err, errAuthMalformed) && !errors.Is(err, errAuthIdentity) {
			t.Fatalf("unexpected error %v", err)
		}
		// A second response after the exchange is refused.
		if _, _, err := p.Next(resp); err == nil {
			t.Fatal("second response accepted")
		}
	})
}

// FuzzLogin runs LOGIN exchanges with arbitrary steps: no panic, at most one
// check, and only after both a user name and a password.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("alice"), []byte("pw"), true, 3)
	f.Add([]byte{}, []byte{}, false, 5)
	f.Fuzz(func(t *testing.T, a, b []byte, initial bool, steps int) {
		checks := 0
		l := &loginServer{check: func(u, p string) error {
			checks++
			if u == "" {
				t.Fatal("checked an empty user name")
			}
			return nil
		}}
		var resp []byte
		if initial {
			resp = a
		}
		for i := range min(max(steps, 0), 8) {
			_, done, err := l.Next(resp)
			if done && err != nil {
				t.Fatal("done with an error")
			}
			if done || err != nil {
				break
			}
			if i%2 == 0 {
				resp = a
			} else {
				resp = b
			}
		}
		if checks > 1 {
			t.Fatalf("%d checks", checks)
		}
	})
}
