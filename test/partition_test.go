//go:build linux

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPartitionHealsAndConverges cuts a four-node cluster in two with
// network namespaces, makes changes on both sides (some of them to the same
// keys), holds the cut well after each side has declared the other dead,
// heals it and expects every node to hold the same state within 10 s, and
// every member alive again.
func TestPartitionHealsAndConverges(t *testing.T) {
	t.Parallel()
	p := newNetnsPair(t)
	left := []*nsAgent{p.agent(t, p.a, 1), p.agent(t, p.a, 3)}
	right := []*nsAgent{p.agent(t, p.b, 2), p.agent(t, p.b, 4)}
	// A ring of joins that crosses the link twice, started in any order.
	ring := []*nsAgent{left[0], right[0], left[1], right[1]}
	for _, i := range mrand.Perm(len(ring)) {
		ring[i].start(ring[(i+1)%len(ring)].bind)
	}
	all := []adminer{left[0], left[1], right[0], right[1]}
	waitStatus(t, 30*time.Second, statusOf("alive", ring...), all...)

	left[0].cli(t, "service", "put", "base", "-host", "base.example")
	left[0].cli(t, "upstream", "put", "base", "u1", p.ip(101)+":80")
	right[0].cli(t, "upstream", "put", "base", "u2", p.ip(102)+":80")
	converged(t, 10*time.Second, all...)

	p.cut(t)
	waitStatus(t, 30*time.Second, statusOf("dead", right...), left[0], left[1])
	waitStatus(t, 30*time.Second, statusOf("dead", left...), right[0], right[1])

	left[0].cli(t, "service", "put", "lefty", "-host", "lefty.example")
	left[1].cli(t, "upstream", "drain", "base", "u1")
	left[1].cli(t, "service", "put", "shared", "-path-prefix", "/left/")
	right[0].cli(t, "service", "put", "righty", "-host", "righty.example")
	right[1].cli(t, "upstream", "put", "base", "u3", p.ip(103)+":80")
	right[0].cli(t, "upstream", "rm", "base", "u2")
	right[1].cli(t, "service", "put", "shared", "-path-prefix", "/right/", "-lb", "least_conn")
	ls := converged(t, 10*time.Second, left[0], left[1])
	rs := converged(t, 10*time.Second, right[0], right[1])
	if hasService(ls, "righty") || hasService(rs, "lefty") {
		t.Fatalf("changes crossed the cut:\nleft  %s\nright %s", canonical(ls), canonical(rs))
	}

	// Held past memberlist's 30 s of gossip to the dead: from then on only
	// the nodes' own attempts to reach dead members can heal the cluster.
	holdUntil := time.Now().Add(31 * time.Second)
	for time.Now().Before(holdUntil) {
		for _, side := range [][]*nsAgent{left, right} {
			ss, err := services(side[0])
			if err != nil {
				t.Fatal(err)
			}
			if hasService(ss, "lefty") == hasService(ss, "righty") {
				t.Fatalf("the cut leaked: %s holds %s", side[0].name, canonical(ss))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	p.heal(t)
	healed := time.Now()
	ss := converged(t, 10*time.Second, all...)
	t.Logf("all four nodes equal %s after the heal", time.Since(healed).Round(time.Millisecond))
	for _, name := range []string{"base", "lefty", "righty", "shared"} {
		if !hasService(ss, name) {
			t.Errorf("converged without %s: %s", name, canonical(ss))
		}
	}
	if u, _ := findUpstream(ss, "base", "u1"); u.State != "draining" {
		t.Errorf("u1 drained on the left is %+v after the heal", u)
	}
	if _, ok := findUpstream(ss, "base", "u2"); ok {
		t.Errorf("u2 removed on the right is back after the heal")
	}
	if _, ok := findUpstream(ss, "base", "u3"); !ok {
		t.Errorf("u3 added on the right is missing after the heal")
	}
	waitStatus(t, 30*time.Second, statusOf("alive", ring...), all...)
}

// statusOf maps each node's name to status.
func statusOf(status string, nodes ...*nsAgent) map[string]string {
	m := map[string]string{}
	for _, a := range nodes {
		m[a.name] = status
	}
	return m
}

// netnsPair is two network namespaces joined by a veth pair, with the
// private subnet 10.213.7.0/24 that exists only inside them.
type netnsPair struct {
	a, b string // namespace names
}

// newNetnsPair creates the namespaces and the link, and removes them when
// the test ends. It skips the test without root or iproute2, unless CI is
// set, in which case it fails.
func newNetnsPair(t testing.TB) *netnsPair {
	t.Helper()
	need := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but: "+format, args...)
		}
		t.Skipf("partition tests need root and ip netns: "+format, args...)
	}
	if os.Geteuid() != 0 {
		need("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		need("no ip command: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		need("ip netns list: %v: %s", err, out)
	}
	id := fmt.Sprintf("vulc-%d-%06x", os.Getpid(), mrand.Uint32N(1<<24))
	p := &netnsPair{a: id + "-a", b: id + "-b"}
	for _, ns := range []string{p.a, p.b} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			need("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Logf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	// Created inside the namespaces: the names never meet the host's.
	ipCmd(t, "link", "add", "va", "netns", p.a, "type", "veth", "peer", "name", "vb", "netns", p.b)
	ipCmd(t, "-n", p.a, "link", "set", "va", "up")
	ipCmd(t, "-n", p.b, "link", "set", "vb", "up")
	return p
}

// ip returns the address host of the pair's subnet.
func (p *netnsPair) ip(host int) string { return fmt.Sprintf("10.213.7.%d", host) }

// cut takes the link down; both namespaces lose it.
func (p *netnsPair) cut(t testing.TB) {
	t.Helper()
	ipCmd(t, "-n", p.a, "link", "set", "va", "down")
}

// heal brings the link back.
func (p *netnsPair) heal(t testing.TB) {
	t.Helper()
	ipCmd(t, "-n", p.a, "link", "set", "va", "up")
}

// ipCmd runs ip with args and fails the test on an error.
func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// nsAgent is a `vulcan agent` inside a network namespace: gossip on its own
// address of the pair's subnet, HTTP and admin on the namespace's loopback,
// reached through a dialer that enters the namespace.
type nsAgent struct {
	t       testing.TB
	ns      string
	name    string
	bind    string
	admin   string
	args    []string
	client  *http.Client
	log     *lockedBuffer
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

// agent plans node number host in namespace ns; start runs it.
func (p *netnsPair) agent(t testing.TB, ns string, host int) *nsAgent {
	t.Helper()
	link := "va"
	if ns == p.b {
		link = "vb"
	}
	ipCmd(t, "-n", ns, "addr", "add", p.ip(host)+"/24", "dev", link)
	a := &nsAgent{
		t:      t,
		ns:     ns,
		name:   fmt.Sprintf("ns%d", host),
		bind:   p.ip(host) + ":7946",
		admin:  fmt.Sprintf("127.0.0.1:%d", 9100+host),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: netnsDialer(ns)}},
		log:    &lockedBuffer{},
	}
	a.args = []string{"agent", "-node", a.name, "-bind", a.bind, "-admin", a.admin,
		"-http", fmt.Sprintf("127.0.0.1:%d", 8100+host), "-smtp", "", "-data", t.TempDir(), "-log-level", "debug"}
	return a
}

// start runs the node with join addresses and waits for its admin API; the
// node is stopped when the test ends.
func (a *nsAgent) start(join ...string) {
	a.t.Helper()
	args := append([]string{"netns", "exec", a.ns, binary}, a.args...)
	if len(join) > 0 {
		args = append(args, "-join", strings.Join(join, ","))
	}
	// ip netns exec executes the binary in its own process: signals reach
	// vulcan itself.
	a.cmd = exec.Command("ip", args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start %s: %v", a.name, err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		a.exitErr = cmd.Wait()
		close(done)
	}(a.cmd, a.done)
	a.t.Cleanup(func() {
		a.stop()
		if a.t.Failed() {
			a.t.Logf("log of %s:\n%s", a.name, a.log.String())
		}
	})
	eventually(a.t, 20*time.Second, func() error {
		select {
		case <-a.done:
			return fmt.Errorf("%s exited: %v\n%s", a.name, a.exitErr, a.log.String())
		default:
		}
		_, err := a.api("GET", "/v1/status", nil, nil)
		return err
	})
}

// stop sends SIGTERM and, after a grace, SIGKILL.
func (a *nsAgent) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// api calls the node's admin API from inside its namespace.
func (a *nsAgent) api(method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+a.admin+path, body)
	if err != nil {
		return 0, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, &statusError{code: resp.StatusCode, body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w: %s", path, err, b)
		}
	}
	return resp.StatusCode, nil
}

// cli runs the vulcan admin client inside the node's namespace, as an
// operator on that side of a partition would.
func (a *nsAgent) cli(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", a.ns, binary}, args...)...)
	cmd.Env = append(os.Environ(), "VULCAN_ADDR=http://"+a.admin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("in %s: vulcan %s: %v: %s", a.ns, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// netnsDialer dials from inside namespace ns: the socket is made on a
// thread that has entered the namespace, and a socket stays in the
// namespace it was made in.
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// Never unlocked: the thread, now in the namespace, ends with
			// this goroutine instead of going back to the scheduler.
			runtime.LockOSThread()
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				ch <- result{nil, fmt.Errorf("open namespace %s: %w", ns, err)}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("enter namespace %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		select {
		case r := <-ch:
			return r.c, r.err
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
}
