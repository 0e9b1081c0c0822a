package http

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"vulcan/node"
)

// startNode starts a lone, open node on loopback with an embedded store in
// a temporary directory, and registers service "web" with one upstream per
// address.
func startNode(tb testing.TB, addrs ...string) *node.Node {
	tb.Helper()
	cfg := node.DefaultConfig()
	cfg.Node = "test"
	cfg.Bind = "127.0.0.1:0"
	cfg.HTTP = "127.0.0.1:0"
	cfg.Admin = "127.0.0.1:0"
	cfg.SMTP = ""
	cfg.Data = tb.TempDir()
	n, err := node.New(cfg, nil)
	if err != nil {
		tb.Fatalf("start node: %v", err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	if err := n.PutService(node.Service{Name: "web"}); err != nil {
		tb.Fatal(err)
	}
	for i, a := range addrs {
		if err := n.PutUpstream(node.Upstream{Service: "web", ID: fmt.Sprintf("u%d", i+1), Addr: a}); err != nil {
			tb.Fatal(err)
		}
	}
	return n
}

// startBackend serves h on a loopback port and returns its address.
func startBackend(tb testing.TB, h http.Handler) string {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// startProxy serves the front end for n on a loopback port and returns its
// address; it is shut down when the test ends.
func startProxy(tb testing.TB, cfg Config, n Admitter) (*Server, string) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := New(cfg, n)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// rawClient is a lean keep-alive HTTP/1.1 client over one connection, so
// that benchmarks count little of their own.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
	req  []byte
}

func dialRaw(tb testing.TB, addr, req string) *rawClient {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{conn: c, br: bufio.NewReaderSize(c, 32<<10), req: []byte(req)}
}

// do sends the request and reads the whole response, returning its status
// and body length.
func (c *rawClient) do() (int, int64, error) {
	if err := c.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, 0, err
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, n, err
}
