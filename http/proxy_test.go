package http

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"vulcan/node"
)

// observer is a node that also hands each observed status to the test.
type observer struct {
	*node.Node
	statuses chan int
}

func (o *observer) ObserveHTTP(status int) {
	o.Node.ObserveHTTP(status)
	o.statuses <- status
}

func observe(n *node.Node) *observer {
	return &observer{Node: n, statuses: make(chan int, 100)}
}

func (o *observer) next(t *testing.T) int {
	t.Helper()
	select {
	case s := <-o.statuses:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no status observed")
		return 0
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func proxyGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// inFlight is the in-flight count over every upstream of "web", as the
// node last reported it.
func inFlight(t *testing.T, n *node.Node) int64 {
	t.Helper()
	v, err := n.Service("web")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, u := range v.Upstreams {
		sum += u.InFlight
	}
	return sum
}

func health(t *testing.T, n *node.Node, addr string) string {
	t.Helper()
	v, err := n.Service("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range v.Upstreams {
		if u.Addr == addr {
			return string(u.Health)
		}
	}
	t.Fatalf("no upstream %s", addr)
	return ""
}

func TestProxyUpstreamTimeoutIs504(t *testing.T) {
	release := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	n := startNode(t, backend)
	o := observe(n)
	_, addr := startProxy(t, Config{ResponseHeaderTimeout: 100 * time.Millisecond}, o)
	if code, body := proxyGet(t, addr, "/"); code != http.StatusGatewayTimeout || !strings.Contains(body, "timed out") {
		t.Fatalf("got %d %q, want 504", code, body)
	}
	if s := o.next(t); s != http.StatusGatewayTimeout {
		t.Fatalf("observed %d", s)
	}
	if h := health(t, n, backend); h != "up" {
		t.Fatalf("a slow upstream was marked %s", h)
	}
	eventually(t, 5*time.Second, func() error {
		if f := inFlight(t, n); f != 0 {
			return fmt.Errorf("%d in flight after the answer", f)
		}
		return nil
	})
}

func TestProxyConnectionFailureIs502(t *testing.T) {
	hangUp := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br) // and hang up without an answer
	})
	for _, up := range []string{hangUp, deadAddr(t)} {
		n := startNode(t, up)
		o := observe(n)
		_, addr := startProxy(t, Config{}, o)
		if code, body := proxyGet(t, addr, "/"); code != http.StatusBadGateway || !strings.Contains(body, "upstream failed") {
			t.Fatalf("upstream %s: got %d %q, want 502", up, code, body)
		}
		if s := o.next(t); s != http.StatusBadGateway {
			t.Fatalf("observed %d", s)
		}
		if h := health(t, n, up); h != "down" {
			t.Fatalf("upstream %s is %s after a connection failure, want down", up, h)
		}
	}
}

// TestProxyRetriesOnAnotherUpstream: with one of two upstreams refusing
// connections, every request, a POST with a body included, is answered by
// the other.
func TestProxyRetriesOnAnotherUpstream(t *testing.T) {
	live := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, n)
	}))
	dead := deadAddr(t)
	n := startNode(t, dead, live)
	_, addr := startProxy(t, Config{}, n)
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range 6 {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", strings.Repeat("b", 1000+i)
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/", strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := method + " " + strconv.Itoa(len(body)); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("%s: %d %q, want 200 %q", method, resp.StatusCode, got, want)
		}
	}
	if h := health(t, n, dead); h != "down" {
		t.Fatalf("dead upstream is %s", h)
	}
}

// TestProxyClientGoneIs499: a client that hangs up while the upstream
// thinks is counted as 499, and the upstream's handle is released.
func TestProxyClientGoneIs499(t *testing.T) {
	got := make(chan struct{}, 1)
	release := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	n := startNode(t, backend)
	o := observe(n)
	_, addr := startProxy(t, Config{}, o)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-got
	eventually(t, 5*time.Second, func() error {
		if f := inFlight(t, n); f != 1 {
			return fmt.Errorf("%d in flight during the request, want 1", f)
		}
		return nil
	})
	c.Close()
	if s := o.next(t); s != 499 {
		t.Fatalf("observed %d, want 499", s)
	}
	eventually(t, 5*time.Second, func() error {
		if f := inFlight(t, n); f != 0 {
			return fmt.Errorf("%d in flight after the client left", f)
		}
		return nil
	})
	if h := health(t, n, backend); h != "up" {
		t.Fatalf("upstream is %s after a client left", h)
	}
}

// TestProxyForwardsHeadersAndTrailers checks what the upstream receives and
// what the client gets back through the proxy.
func TestProxyForwardsHeadersAndTrailers(t *testing.T) {
	seen := make(chan *http.Request, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "dropped")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	}))
	n := startNode(t, backend)
	_, addr := startProxy(t, Config{}, n)
	req, _ := http.NewRequest("GET", "http://"+addr+"/p?q=1", nil)
	req.Host = "shop.example.com"
	req.Header.Set("Connection", "X-Client-Hop")
	req.Header.Set("X-Client-Hop", "dropped")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.SetBasicAuth("u", "p")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := <-seen
	checks := []struct{ what, got, want string }{
		{"upstream Host", r.Host, "shop.example.com"},
		{"upstream URI", r.RequestURI, "/p?q=1"},
		{"X-Forwarded-For", r.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", r.Header.Get("X-Forwarded-Host"), "shop.example.com"},
		{"X-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"), "http"},
		{"Authorization", r.Header.Get("Authorization"), ""},
		{"request hop-by-hop header", r.Header.Get("X-Client-Hop"), ""},
		{"User-Agent", r.Header.Get("User-Agent"), "Go-http-client/1.1"},
		{"response body", string(b), "body"},
		{"response header", resp.Header.Get("X-Upstream"), "yes"},
		{"response hop-by-hop header", resp.Header.Get("X-Hop"), ""},
		{"trailer", resp.Trailer.Get("X-Checksum"), "abc"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

func TestBufferPool(t *testing.T) {
	p := newBufferPool()
	b := p.Get()
	if len(b) != copyBufferSize {
		t.Fatalf("buffer of %d bytes, want %d", len(b), copyBufferSize)
	}
	p.Put(b)
	p.Put(make([]byte, 10)) // not ours: dropped, not a panic
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get()) }); n != 0 {
		t.Fatalf("%v allocations per Get and Put, want 0", n)
	}
}
