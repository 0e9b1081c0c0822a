// Package cassandra gives tests the real Apache Cassandra node that
// cassandra.sh runs on loopback.
//
// `make test` starts one shared node with `cassandra.sh start` and exports
// its address as VULCAN_TEST_CASSANDRA; Hosts hands it to a test and skips
// the test when the variable is unset, except under CI, where a missing
// Cassandra is a failure rather than a silent skip. Tests keep apart by
// using a fresh keyspace each (Keyspace). A test that needs an outage runs
// a node of its own with StartPrivate, so that it disturbs nobody else, and
// stops (Node.Stop, Node.Kill) and restarts (Node.Start) it; Stop and Start
// do the same to the shared node, for a test that nothing runs beside.
package cassandra

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// EnvHosts names the variable holding the shared node's host:port.
const EnvHosts = "VULCAN_TEST_CASSANDRA"

// Hosts returns the shared node's address (host:port) from
// VULCAN_TEST_CASSANDRA. Without it the test is skipped, or fails when the
// CI variable is set, so that CI never passes by skipping.
func Hosts(t testing.TB) string {
	t.Helper()
	if h := strings.TrimSpace(os.Getenv(EnvHosts)); h != "" {
		return h
	}
	const msg = EnvHosts + " is not set: run `make test`, or `test/cassandra/cassandra.sh start` and export " +
		EnvHosts + "=127.0.0.1:19042"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// maxKeyspaceLen is Cassandra's limit on the length of a keyspace name.
const maxKeyspaceLen = 48

// Keyspace returns a keyspace name no other test uses: "t_", the test's
// name cut to letters, digits and underscores, and a random suffix. The
// keyspace is not created; dropping it is left to the test, since the
// data directory of the shared node is fresh at every `make test`.
func Keyspace(t testing.TB) string {
	t.Helper()
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("keyspace suffix: %v", err)
	}
	suffix := "_" + hex.EncodeToString(b[:])
	var name strings.Builder
	name.WriteString("t_")
	for _, r := range strings.ToLower(t.Name()) {
		if name.Len()+len(suffix) >= maxKeyspaceLen {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			name.WriteRune(r)
		default:
			name.WriteByte('_')
		}
	}
	name.WriteString(suffix)
	return name.String()
}
