// Package test holds the end-to-end tests: real `vulcan agent` processes of
// the built binary on distinct 127.0.0.x addresses, in front of real
// upstream servers on loopback.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binary is the vulcan binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vulcan-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "vulcan")
	args := []string{"build", "-o", binary}
	if os.Getenv("VULCAN_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "vulcan/cmd/vulcan")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build vulcan:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ipSeq hands out loopback addresses 127.0.x.y so that nodes of one test, and
// tests running side by side, never share an address.
var ipSeq atomic.Uint32

func init() { ipSeq.Store(uint32(rand.IntN(200)) * 250) }

// nextIP returns a fresh 127.0.x.y address (y in 2..251).
func nextIP() string {
	n := ipSeq.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 10+(n/250)%200, 2+n%250)
}

// freePort returns a TCP port free on ip (and its UDP twin, for gossip).
func freePort(t testing.TB, ip string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if uc, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, port)); err == nil {
			uc.Close()
			return port
		}
	}
	t.Fatalf("no free port on %s", ip)
	return 0
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agent is one `vulcan agent` process.
type agent struct {
	t       testing.TB
	name    string
	ip      string
	args    []string
	data    string
	http    string // host:port of the HTTP proxy
	admin   string // host:port of the admin API
	smtp    string
	bind    string
	cmd     *exec.Cmd
	log     *lockedBuffer
	done    chan struct{}
	exitErr error
}

// agentOpts tunes an agent; zero values get fresh addresses.
type agentOpts struct {
	name  string
	join  []string
	extra []string
	data  string
	smtp  bool
}

// startAgent starts a node and waits until its admin API answers.
func startAgent(t testing.TB, o agentOpts) *agent {
	t.Helper()
	ip := nextIP()
	a := &agent{t: t, ip: ip, name: o.name, data: o.data}
	if a.name == "" {
		a.name = "n-" + strings.ReplaceAll(ip, ".", "-")
	}
	if a.data == "" {
		a.data = t.TempDir()
	}
	a.http = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	a.admin = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	a.bind = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	if o.smtp {
		a.smtp = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	}
	a.args = []string{"agent", "-node", a.name, "-http", a.http, "-admin", a.admin, "-bind", a.bind,
		"-smtp", a.smtp, "-data", a.data, "-log-level", "debug"}
	if len(o.join) > 0 {
		a.args = append(a.args, "-join", strings.Join(o.join, ","))
	}
	a.args = append(a.args, o.extra...)
	a.log = &lockedBuffer{}
	a.start()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("log of %s:\n%s", a.name, a.log.String())
		}
	})
	return a
}

func (a *agent) start() {
	a.t.Helper()
	a.cmd = exec.Command(binary, a.args...)
	a.cmd.Stdout = a.log
	a.cmd.Stderr = a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start %s: %v", a.name, err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		a.exitErr = cmd.Wait()
		close(done)
	}(a.cmd, a.done)
	eventually(a.t, 20*time.Second, func() error {
		select {
		case <-a.done:
			return fmt.Errorf("%s exited: %v\n%s", a.name, a.exitErr, a.log.String())
		default:
		}
		// Any answer, even a 401 from a node with an admin token, means up.
		_, err := a.api("GET", "/v1/status", nil, nil)
		var se *statusError
		if errors.As(err, &se) {
			return nil
		}
		return err
	})
}

// running reports whether the process is still alive.
func (a *agent) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// terminate sends SIGTERM and waits for the exit; it returns the exit error.
func (a *agent) terminate(timeout time.Duration) error {
	a.t.Helper()
	if !a.running() {
		return a.exitErr
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return a.exitErr
	case <-time.After(timeout):
		_ = a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", a.name, timeout)
	}
}

// kill9 kills the process without warning.
func (a *agent) kill9() {
	if a.running() {
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *agent) stop() {
	if a.running() {
		if err := a.terminate(15 * time.Second); err != nil {
			a.t.Logf("stop %s: %v", a.name, err)
		}
	}
}

// restart starts the process again with the same addresses and data.
func (a *agent) restart() {
	a.t.Helper()
	a.stop()
	a.start()
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// api calls the admin API; a non-2xx answer is returned as *statusError.
func (a *agent) api(method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		if s, ok := in.(string); ok {
			body = strings.NewReader(s)
		} else {
			b, err := json.Marshal(in)
			if err != nil {
				return 0, err
			}
			body = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, "http://"+a.admin+path, body)
	if err != nil {
		return 0, err
	}
	resp, err := apiClient.Do(req)
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

// mustAPI calls the admin API and fails the test on an error.
func (a *agent) mustAPI(method, path string, in, out any) {
	a.t.Helper()
	if _, err := a.api(method, path, in, out); err != nil {
		a.t.Fatalf("%s %s on %s: %v", method, path, a.name, err)
	}
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.code, e.body) }

// cli runs the vulcan binary as an admin client against this node.
func (a *agent) cli(args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "VULCAN_ADDR=http://"+a.admin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("vulcan %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// backend is a real HTTP upstream on loopback that names itself in every
// answer and counts what it served.
type backend struct {
	name    string
	addr    string
	srv     *http.Server
	ln      net.Listener
	hits    atomic.Int64
	handler http.Handler
	mu      sync.Mutex
	lastReq *http.Request
}

// startBackend serves h (or an echo of the request line) on a fresh
// loopback address, answering with the header X-Upstream: name.
func startBackend(t testing.TB, name string, h http.Handler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", nextIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln, handler: h}
	b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *backend) serve() {
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.lastReq = r.Clone(context.Background())
		b.mu.Unlock()
		w.Header().Set("X-Upstream", b.name)
		if b.handler != nil {
			b.handler.ServeHTTP(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s\n", b.name, r.Method, r.URL.RequestURI())
	}), ReadHeaderTimeout: 10 * time.Second}
	go func(srv *http.Server, ln net.Listener) { _ = srv.Serve(ln) }(b.srv, b.ln)
}

// close stops the backend and closes its connections.
func (b *backend) close() {
	_ = b.srv.Close()
}

// reopen serves again on the same address after close.
func (b *backend) reopen(t testing.TB) {
	t.Helper()
	var err error
	eventually(t, 5*time.Second, func() error {
		b.ln, err = net.Listen("tcp", b.addr)
		return err
	})
	b.serve()
}

func (b *backend) last() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastReq
}

// proxyClient sends requests through vulcan; no connection reuse across
// tests, short timeouts.
func proxyClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

// get sends a GET through the proxy and returns the status, upstream name and body.
func get(c *http.Client, a *agent, host, path string) (int, string, string, error) {
	req, err := http.NewRequest("GET", "http://"+a.http+path, nil)
	if err != nil {
		return 0, "", "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Upstream"), string(b), err
}

// register creates an HTTP service with the given upstreams on node a.
func register(t testing.TB, a *agent, svc map[string]any, ups ...*backend) {
	t.Helper()
	name := svc["name"].(string)
	a.mustAPI("PUT", "/v1/services/"+name, svc, nil)
	for _, b := range ups {
		a.mustAPI("PUT", "/v1/services/"+name+"/upstreams/"+b.name, map[string]any{"addr": b.addr}, nil)
	}
}

var errNotYet = errors.New("not yet")

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
