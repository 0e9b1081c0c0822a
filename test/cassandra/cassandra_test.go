package cassandra

import (
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// recorder stands in for a testing.TB to see whether Hosts skips or fails;
// both end the goroutine in a real test, so here they panic to unwind.
type recorder struct {
	testing.TB
	skipped, failed bool
}

type stop struct{}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true; panic(stop{}) }
func (r *recorder) Fatal(...any)          { r.failed = true; panic(stop{}) }
func (r *recorder) Fatalf(string, ...any) { r.failed = true; panic(stop{}) }

func callHosts(r *recorder) (addr string) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(stop); !ok {
				panic(v)
			}
		}
	}()
	return Hosts(r)
}

func TestHosts(t *testing.T) {
	t.Run("set", func(t *testing.T) {
		t.Setenv(EnvHosts, " 127.0.0.1:19042 ")
		r := &recorder{TB: t}
		if got := callHosts(r); got != "127.0.0.1:19042" || r.skipped || r.failed {
			t.Fatalf("Hosts = %q (skipped %v, failed %v), want the variable's address", got, r.skipped, r.failed)
		}
	})
	t.Run("unset skips", func(t *testing.T) {
		t.Setenv(EnvHosts, "")
		t.Setenv("CI", "")
		r := &recorder{TB: t}
		callHosts(r)
		if !r.skipped || r.failed {
			t.Fatalf("skipped %v, failed %v; want a skip outside CI", r.skipped, r.failed)
		}
	})
	t.Run("unset under CI fails", func(t *testing.T) {
		t.Setenv(EnvHosts, "")
		t.Setenv("CI", "true")
		r := &recorder{TB: t}
		callHosts(r)
		if r.skipped || !r.failed {
			t.Fatalf("skipped %v, failed %v; want a failure under CI", r.skipped, r.failed)
		}
	})
}

func TestKeyspace(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)
	seen := map[string]bool{}
	for range 100 {
		k := Keyspace(t)
		if !valid.MatchString(k) {
			t.Fatalf("Keyspace = %q: not a valid keyspace name of at most 48 characters", k)
		}
		if seen[k] {
			t.Fatalf("Keyspace returned %q twice", k)
		}
		seen[k] = true
	}
	t.Run(strings.Repeat("Very-Long Name/", 10), func(t *testing.T) {
		if k := Keyspace(t); !valid.MatchString(k) || !strings.HasPrefix(k, "t_testkeyspace_very_long") {
			t.Fatalf("Keyspace = %q: want a valid name carrying the start of the test's name", k)
		}
	})
}

// TestSharedNodeAnswers checks that the address handed out is a CQL server:
// an OPTIONS frame (protocol v4) is answered with SUPPORTED.
func TestSharedNodeAnswers(t *testing.T) {
	addr := Hosts(t)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// version 4, flags 0, stream 0, opcode OPTIONS (5), body length 0.
	if _, err := conn.Write([]byte{0x04, 0, 0, 0, 0x05, 0, 0, 0, 0}); err != nil {
		t.Fatalf("write OPTIONS: %v", err)
	}
	var hdr [9]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if hdr[0] != 0x84 || hdr[4] != 0x06 {
		t.Fatalf("reply header % x: want a v4 response (0x84) with opcode SUPPORTED (0x06)", hdr)
	}
}
