package cassandra

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// EnvScript names a variable that overrides where cassandra.sh is, for a
// test binary built away from its sources (go test -trimpath, a copied
// binary).
const EnvScript = "VULCAN_TEST_CASSANDRA_SCRIPT"

// Time limits of the script's commands: start waits for CQL for up to
// 180 s by itself; stop drains the node, which takes a few seconds.
const (
	startTimeout = 240 * time.Second
	stopTimeout  = 90 * time.Second
	// privateHeap is the heap of a node of one test's own: it holds one
	// keyspace, and runs beside the shared node on a 2-core machine.
	privateHeap = "512M"
)

// Node is a Cassandra node run by cassandra.sh: the shared one (Shared) or
// one of a test's own (StartPrivate). Its methods must not be called from
// several goroutines at once.
type Node struct {
	addr string
	// env tells cassandra.sh which node this is: port, run directory.
	env []string
	// shared makes Stop restart the node when the test ends, so that a
	// test failing between Stop and Start does not leave it down for the
	// tests that follow.
	shared bool
}

// Addr returns the node's CQL address, host:port.
func (n *Node) Addr() string { return n.addr }

// Shared returns the node named by VULCAN_TEST_CASSANDRA (see Hosts for
// when it skips). It must have been started by cassandra.sh on this
// machine, with the same CASSANDRA_RUN_DIR if one was set.
func Shared(t testing.TB) *Node {
	t.Helper()
	addr := Hosts(t)
	_, port, err := net.SplitHostPort(strings.Split(addr, ",")[0])
	if err != nil {
		t.Fatalf("%s=%q: want host:port: %v", EnvHosts, addr, err)
	}
	return &Node{addr: addr, env: []string{"CASSANDRA_CQL_PORT=" + port}, shared: true}
}

// Stop stops the shared node, keeping its data; Start brings it back.
// Every test using the shared node at that moment sees the outage: call it
// only from a test that nothing runs beside (no t.Parallel, and a package
// run alone), or use StartPrivate.
func Stop(t testing.TB) { t.Helper(); Shared(t).Stop(t) }

// Start restarts the shared node on the data Stop kept and waits until CQL
// answers; it returns at once when the node is up.
func Start(t testing.TB) { t.Helper(); Shared(t).Start(t) }

// StartPrivate starts a node for this test alone, on free loopback ports
// and a data directory under t.TempDir, and stops it when the test ends.
// It takes 10-20 s and about 1 GiB of memory: keep it for tests that stop
// and restart Cassandra. Like Hosts, it skips unless VULCAN_TEST_CASSANDRA
// is set (or CI is).
func StartPrivate(t testing.TB) *Node {
	t.Helper()
	Hosts(t)
	ports := freePorts(t, 2)
	cqlPort, storagePort := ports[0], ports[1]
	n := &Node{env: []string{
		"CASSANDRA_CQL_PORT=" + cqlPort,
		"CASSANDRA_STORAGE_PORT=" + storagePort,
		"CASSANDRA_RUN_DIR=" + t.TempDir(),
		"CASSANDRA_HEAP=" + privateHeap,
		// A node of its own is for outages: let a killed one keep its
		// schema, as a real one does.
		"CASSANDRA_DURABLE_SCHEMA=1",
	}}
	t.Cleanup(func() {
		// Killed, not drained: its data is thrown away.
		if out, err := n.run(stopTimeout, "kill"); err != nil {
			t.Errorf("stop private cassandra: %v\n%s", err, out)
		}
	})
	n.addr = strings.TrimSpace(n.mustRun(t, startTimeout, "start"))
	return n
}

// Stop stops the node gracefully (SIGTERM: it drains, which takes
// seconds) and waits until it is gone, keeping its data.
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	n.halt(t, "stop")
}

// Kill kills the node (SIGKILL, as in a crash) and waits until it is gone.
// Start replays its commit log, but, as after a real crash, the writes of
// the last sync period (10s) may be lost; on the shared node, whose schema
// changes are not made durable (for speed), so are the keyspaces created
// since it started.
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	n.halt(t, "kill")
}

func (n *Node) halt(t testing.TB, cmd string) {
	t.Helper()
	n.mustRun(t, stopTimeout, cmd)
	if n.shared {
		t.Cleanup(func() {
			if _, err := n.run(10*time.Second, "status"); err == nil {
				return
			}
			if out, err := n.run(startTimeout, "start"); err != nil {
				t.Errorf("restart shared cassandra after the test: %v\n%s", err, out)
			}
		})
	}
}

// Start starts the node again on the data Stop kept, and waits until CQL
// answers.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	n.mustRun(t, startTimeout, "start")
}

func (n *Node) mustRun(t testing.TB, timeout time.Duration, cmd string) string {
	t.Helper()
	out, err := n.run(timeout, cmd)
	if err != nil {
		t.Fatalf("cassandra.sh %s: %v\n%s", cmd, err, out)
	}
	return out
}

// run runs cassandra.sh; the output is stdout alone on success (the
// address, for start and status), stdout and stderr on failure.
func (n *Node) run(timeout time.Duration, cmd string) (string, error) {
	script, err := scriptPath()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", script, cmd)
	// Keep data across stop and start: only `make test`'s first start
	// begins afresh.
	c.Env = append(append(os.Environ(), n.env...), "CASSANDRA_KEEP_DATA=1")
	c.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func scriptPath() (string, error) {
	if p := os.Getenv(EnvScript); p != "" {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cassandra.sh not found: set %s", EnvScript)
	}
	p := filepath.Join(filepath.Dir(file), "cassandra.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("cassandra.sh not found (set %s): %w", EnvScript, err)
	}
	return p, nil
}

// freePorts returns n distinct loopback ports nothing listens on now.
// Another process may take one before Cassandra binds it; on a test
// machine that is rare.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	ports := make([]string, 0, n)
	for range n {
		// Held open until all are chosen, so the kernel cannot hand out
		// the same port twice.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		defer l.Close()
		_, port, err := net.SplitHostPort(l.Addr().String())
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ports = append(ports, port)
	}
	return ports
}
