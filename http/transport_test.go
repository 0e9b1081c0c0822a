package http

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testTransport returns an upstream transport with small timeouts whose
// fallback records the requests it is given.
func testTransport(t *testing.T, maxIdle int, idleTimeout time.Duration) (*upstreamTransport, *recordingRT) {
	t.Helper()
	fb := &recordingRT{next: &http.Transport{DisableCompression: true}}
	tr := &upstreamTransport{
		dial:                  (&net.Dialer{Timeout: time.Second}).DialContext,
		fallback:              fb,
		responseHeaderTimeout: 2 * time.Second,
		maxHeaderBytes:        maxResponseHeaderBytes,
		pool:                  newConnPool(maxIdle, idleTimeout),
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, fb
}

// recordingRT counts the requests it passes on.
type recordingRT struct {
	next  http.RoundTripper
	calls atomic.Int32
}

func (r *recordingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.calls.Add(1)
	return r.next.RoundTrip(req)
}

func (r *recordingRT) CloseIdleConnections() {
	r.next.(*http.Transport).CloseIdleConnections()
}

// connCounter is a backend that tells each connection apart: it answers
// with the remote address of the connection the request came on.
func connCounter(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (string, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Conn", r.RemoteAddr)
			if h != nil {
				h(w, r)
				return
			}
			_, _ = io.WriteString(w, "hello")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), &conns
}

// rawServer accepts connections on loopback and hands each to serve on its
// own goroutine; everything is closed when the test ends.
func rawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newReq(t *testing.T, ctx context.Context, method, addr, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends a request without a body and reads the whole response.
func roundTrip(t *testing.T, tr http.RoundTripper, method, addr string) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(newReq(t, context.Background(), method, addr, "/", nil))
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTransportReusesConnection(t *testing.T) {
	addr, conns := connCounter(t, nil)
	tr, fb := testTransport(t, 4, time.Minute)
	first, body := roundTrip(t, tr, "GET", addr)
	if body != "hello" {
		t.Fatalf("body %q", body)
	}
	if n := tr.pool.idleCount(addr); n != 1 {
		t.Fatalf("%d idle connections after a complete response, want 1", n)
	}
	for range 5 {
		resp, _ := roundTrip(t, tr, "GET", addr)
		if resp.Header.Get("X-Conn") != first.Header.Get("X-Conn") {
			t.Fatalf("request came on %s, want the pooled %s", resp.Header.Get("X-Conn"), first.Header.Get("X-Conn"))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1", n)
	}
	if fb.calls.Load() != 0 {
		t.Fatal("plain GET went to the fallback transport")
	}
}

func TestTransportConnectionCloseIsNotPooled(t *testing.T) {
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "bye")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	for range 3 {
		if _, body := roundTrip(t, tr, "GET", addr); body != "bye" {
			t.Fatalf("body %q", body)
		}
		if n := tr.pool.idleCount(addr); n != 0 {
			t.Fatalf("%d idle connections after Connection: close", n)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("backend saw %d connections, want one per request (3)", n)
	}
}

func TestTransportHTTP10WithoutKeepAliveIsNotPooled(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	if _, body := roundTrip(t, tr, "GET", addr); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections after an HTTP/1.0 response without keep-alive", n)
	}
}

func TestTransportResponsesWithoutBody(t *testing.T) {
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	})
	tr, _ := testTransport(t, 4, time.Minute)
	cases := []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/204"}, {"GET", "/304"}, {"HEAD", "/204"}}
	for _, tc := range cases {
		resp, err := tr.RoundTrip(newReq(t, context.Background(), tc.method, addr, tc.path, nil))
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		// The connection is back before the (empty) body is touched.
		if n := tr.pool.idleCount(addr); n != 1 {
			t.Fatalf("%s %s: %d idle connections once the headers are read, want 1", tc.method, tc.path, n)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) != 0 {
			t.Fatalf("%s %s: body %q %v, want none", tc.method, tc.path, b, err)
		}
		if tc.method == "HEAD" && tc.path == "/" && resp.ContentLength != 5 {
			t.Fatalf("HEAD: Content-Length %d, want 5", resp.ContentLength)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1", n)
	}
}

func TestTransportChunkedResponseWithTrailer(t *testing.T) {
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "3")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	for range 2 {
		resp, body := roundTrip(t, tr, "GET", addr)
		if body != "part0;part1;part2;" {
			t.Fatalf("body %q", body)
		}
		if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
		}
		if got := resp.Trailer.Get("X-Sum"); got != "3" {
			t.Fatalf("trailer X-Sum = %q, want 3", got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1", n)
	}
}

func TestTransportBodyClosedEarlyClosesConnection(t *testing.T) {
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, 1<<20))
	})
	tr, _ := testTransport(t, 4, time.Minute)
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp.Body.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v: it drained the body", d)
	}
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections after a body closed half read", n)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	roundTrip(t, tr, "GET", addr)
	if n := conns.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want 2", n)
	}
}

// TestTransportUpstreamClosesIdleConnection: a pooled connection the
// upstream has closed is found dead before use; the request goes on a new
// one and succeeds.
func TestTransportUpstreamClosesIdleConnection(t *testing.T) {
	closeIdle := make(chan struct{})
	var accepted atomic.Int32
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		accepted.Add(1)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-closeIdle
	})
	tr, _ := testTransport(t, 4, time.Minute)
	roundTrip(t, tr, "GET", addr)
	close(closeIdle)
	// Wait until the pooled connection is seen closed by the kernel.
	eventually(t, 5*time.Second, func() error {
		c := tr.pool.get(addr)
		if c == nil {
			return nil
		}
		tr.pool.put(c)
		return errors.New("closed connection still looks usable")
	})
	// The upstream now closes each connection after one answer; every
	// request still succeeds, none sent on a dead connection.
	for range 3 {
		if _, body := roundTrip(t, tr, "GET", addr); body != "ok" {
			t.Fatalf("body %q", body)
		}
	}
	if n := accepted.Load(); n != 4 {
		t.Fatalf("upstream accepted %d connections, want 4", n)
	}
}

// TestTransportStaleConnectionRetried: a reused connection that the
// upstream drops on receipt of the request, without a byte of answer, is
// retried once on a new connection when the request can be replayed; a
// POST is not.
func TestTransportStaleConnectionRetried(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if i == 1 {
				return // the second request on a connection: hang up
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := testTransport(t, 4, time.Minute)
	for _, method := range []string{"GET", "HEAD", "PUT", "DELETE"} {
		roundTrip(t, tr, "GET", addr)
		resp, err := tr.RoundTrip(newReq(t, context.Background(), method, addr, "/", nil))
		if err != nil {
			t.Fatalf("%s on a stale connection: %v", method, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", method, resp.StatusCode)
		}
	}
	roundTrip(t, tr, "GET", addr)
	_, err := tr.RoundTrip(newReq(t, context.Background(), "POST", addr, "/", nil))
	if err == nil {
		t.Fatal("POST on a stale connection succeeded: it was sent twice")
	}
	if !isConnFailure(err) || isDialError(err) {
		t.Fatalf("POST error %v: want a connection failure that is not a dial error", err)
	}
}

// TestTransportIgnoresUnsolicitedBytes: bytes an upstream sends on an idle
// connection are never read as the answer to the next request.
func TestTransportIgnoresUnsolicitedBytes(t *testing.T) {
	sent := make(chan struct{})
	var first atomic.Bool
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%d%d", i, i)
			if i == 0 && first.CompareAndSwap(false, true) {
				time.Sleep(20 * time.Millisecond)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX")
				close(sent)
			}
		}
	})
	tr, _ := testTransport(t, 4, time.Minute)
	if _, body := roundTrip(t, tr, "GET", addr); body != "00" {
		t.Fatalf("first body %q", body)
	}
	<-sent
	eventually(t, 5*time.Second, func() error {
		_, body := roundTrip(t, tr, "GET", addr)
		if body == "XX" {
			t.Fatal("an unsolicited response was taken for the answer")
		}
		if body != "00" {
			return fmt.Errorf("body %q, want 00 from a new connection", body)
		}
		return nil
	})
}

func TestTransportResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr, _ := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	tr, _ := testTransport(t, 4, time.Minute)
	tr.responseHeaderTimeout = 100 * time.Millisecond
	start := time.Now()
	_, err := tr.RoundTrip(newReq(t, context.Background(), "GET", addr, "/", nil))
	if err == nil {
		t.Fatal("no error from an upstream that never answers")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("timed out after %v, want about 100ms", d)
	}
	if !isTimeout(err) || isDialError(err) || isConnFailure(err) {
		t.Fatalf("error %v: want a timeout (504) that is not a connection failure", err)
	}
}

// TestTransportTimeoutClearedAfterHeaders: a body slower than the
// response-header timeout is not cut.
func TestTransportTimeoutClearedAfterHeaders(t *testing.T) {
	addr, _ := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "b")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	tr.responseHeaderTimeout = 100 * time.Millisecond
	if _, body := roundTrip(t, tr, "GET", addr); body != "ab" {
		t.Fatalf("body %q", body)
	}
}

func TestTransportClientCancel(t *testing.T) {
	gotReq := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr, _ := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
		}
		gotReq <- struct{}{}
		<-release
	})
	tr, _ := testTransport(t, 4, time.Minute)
	tr.responseHeaderTimeout = 0

	// Cancelled while waiting for the headers.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(newReq(t, ctx, "GET", addr, "/", nil))
		errc <- err
	}()
	<-gotReq
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip did not return after the cancel")
	}

	// Cancelled while reading the body.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	resp, err := tr.RoundTrip(newReq(t, ctx, "GET", addr, "/body", nil))
	if err != nil {
		t.Fatal(err)
	}
	<-gotReq
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("body read error %v, want context.Canceled", err)
	}
	resp.Body.Close()
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections after cancelled requests", n)
	}
	// Already cancelled: nothing is sent.
	if _, err := tr.RoundTrip(newReq(t, ctx, "GET", addr, "/", nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v for a cancelled request, want context.Canceled", err)
	}
}

// TestTransportCancelAfterResponseKeepsPool: a context cancelled after its
// response was read whole leaves a healthy connection in the pool.
func TestTransportCancelAfterResponseKeepsPool(t *testing.T) {
	addr, conns := connCounter(t, nil)
	tr, _ := testTransport(t, 4, time.Minute)
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := tr.RoundTrip(newReq(t, ctx, "GET", addr, "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1", n)
	}
}

func TestTransportPoolBounds(t *testing.T) {
	const inFlight, maxIdle = 5, 2
	var started sync.WaitGroup
	started.Add(inFlight)
	release := make(chan struct{})
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-release
		_, _ = io.WriteString(w, "ok")
	})
	tr, _ := testTransport(t, maxIdle, time.Minute)
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", addr, "/", nil))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	started.Wait()
	close(release)
	wg.Wait()
	if n := conns.Load(); n != inFlight {
		t.Fatalf("backend saw %d connections for %d concurrent requests", n, inFlight)
	}
	if n := tr.pool.idleCount(addr); n != maxIdle {
		t.Fatalf("%d idle connections, want the bound %d", n, maxIdle)
	}
}

func TestTransportIdleTimeout(t *testing.T) {
	addr, conns := connCounter(t, nil)
	tr, _ := testTransport(t, 4, 100*time.Millisecond)
	roundTrip(t, tr, "GET", addr)
	if n := tr.pool.idleCount(addr); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
	eventually(t, 5*time.Second, func() error {
		if n := tr.pool.idleCount(addr); n != 0 {
			return fmt.Errorf("%d idle connections past the idle timeout", n)
		}
		return nil
	})
	// The sweep runs again for connections pooled later.
	roundTrip(t, tr, "GET", addr)
	eventually(t, 5*time.Second, func() error {
		if n := tr.pool.idleCount(addr); n != 0 {
			return fmt.Errorf("%d idle connections past the idle timeout", n)
		}
		return nil
	})
	if n := conns.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want 2", n)
	}
}

func TestTransportCloseIdleConnections(t *testing.T) {
	addr, conns := connCounter(t, nil)
	tr, _ := testTransport(t, 4, time.Minute)
	roundTrip(t, tr, "GET", addr)
	tr.CloseIdleConnections()
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections after CloseIdleConnections", n)
	}
	// Still usable, without pooling.
	roundTrip(t, tr, "GET", addr)
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections after close", n)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want 2", n)
	}
}

func TestTransportDialFailureIsDialOpError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr, _ := testTransport(t, 4, time.Minute)
	body := &readTracker{ReadCloser: io.NopCloser(strings.NewReader("data"))}
	_, err = tr.RoundTrip(newReq(t, context.Background(), "POST", addr, "/", body))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %#v, want a *net.OpError with Op dial", err)
	}
	if body.read.Load() {
		t.Fatal("the body was read although no connection was made")
	}
}

// TestTransportStreamsBothWays: the upstream answers, and its first bytes
// reach the caller, while the request body is still being sent.
func TestTransportStreamsBothWays(t *testing.T) {
	addr, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return
		}
		_, _ = w.Write(buf)
		w.(http.Flusher).Flush()
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, " +%d", n)
	})
	tr, _ := testTransport(t, 4, time.Minute)
	for range 2 {
		pr, pw := io.Pipe()
		req := newReq(t, context.Background(), "POST", addr, "/", pr)
		req.ContentLength = -1
		go func() { _, _ = io.WriteString(pw, "head") }()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "head" {
			t.Fatalf("first bytes %q %v", buf, err)
		}
		go func() {
			_, _ = io.WriteString(pw, strings.Repeat("x", 100000))
			pw.Close()
		}()
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(rest) != " +100000" {
			t.Fatalf("rest %q %v", rest, err)
		}
		// The body was sent whole, so the connection goes back to the
		// pool; when the writer reports after the response's end, that
		// happens just after, off the caller's goroutine.
		eventually(t, 5*time.Second, func() error {
			if n := tr.pool.idleCount(addr); n != 1 {
				return fmt.Errorf("%d idle connections, want 1", n)
			}
			return nil
		})
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1", n)
	}
}

// TestTransportEarlyAnswerStopsUpload: an upstream that answers without
// reading the body gets its answer through, and the connection, whose
// request was not sent whole, is not reused.
func TestTransportEarlyAnswerStopsUpload(t *testing.T) {
	addr, _ := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})
	tr, _ := testTransport(t, 4, time.Minute)
	pr, pw := io.Pipe()
	defer pw.Close()
	req := newReq(t, context.Background(), "POST", addr, "/", pr)
	req.ContentLength = 10 << 20
	go func() { _, _ = pw.Write(make([]byte, 64<<10)) }()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := tr.pool.idleCount(addr); n != 0 {
		t.Fatalf("%d idle connections, want 0", n)
	}
}

// failingBody fails after some bytes, like a client that hangs up halfway.
type failingBody struct{ n int }

func (f *failingBody) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("client went away")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// TestTransportBodyReadFailure: a request body that fails (the client's
// fault) ends the exchange at once, and is not taken for a failure of the
// upstream's connection.
func TestTransportBodyReadFailure(t *testing.T) {
	addr, _ := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	tr, _ := testTransport(t, 4, time.Minute)
	tr.responseHeaderTimeout = 0
	req := newReq(t, context.Background(), "POST", addr, "/", io.NopCloser(&failingBody{n: 1000}))
	req.ContentLength = 5000
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil || isConnFailure(err) {
			t.Fatalf("error %v: want a failure that does not blame the upstream", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip hung after the request body failed")
	}
}

func TestTransportInformationalResponses(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	resp, err := tr.RoundTrip(newReq(t, ctx, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("final response %d %q", resp.StatusCode, b)
	}
	if len(got) != 1 || got[0] != "103 </a.css>; rel=preload" {
		t.Fatalf("informational responses %q", got)
	}
}

func TestTransportHeaderLimit(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 4096)+"\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _ := testTransport(t, 4, time.Minute)
	tr.maxHeaderBytes = 1024
	if _, err := tr.RoundTrip(newReq(t, context.Background(), "GET", addr, "/", nil)); err == nil {
		t.Fatal("response headers over the limit were accepted")
	}
	tr.maxHeaderBytes = 8192
	if _, body := roundTrip(t, tr, "GET", addr); body != "ok" {
		t.Fatalf("body %q", body)
	}
}

func TestTransportFallback(t *testing.T) {
	addr, _ := connCounter(t, nil)
	tr, fb := testTransport(t, 4, time.Minute)
	cases := []func(r *http.Request){
		func(r *http.Request) { r.Header.Set("Connection", "Upgrade"); r.Header.Set("Upgrade", "websocket") },
		func(r *http.Request) { r.Header.Set("Expect", "100-continue") },
	}
	for i, set := range cases {
		req := newReq(t, context.Background(), "GET", addr, "/", nil)
		set(req)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := fb.calls.Load(); n != int32(i+1) {
			t.Fatalf("case %d: fallback called %d times", i, n)
		}
	}
}

// TestHeaderTimerLateFiring: a firing of the header timer left over from an
// earlier wait does not cut a younger one; a real one does.
func TestHeaderTimerLateFiring(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newUpConn(a, "pipe", 50*time.Millisecond)
	t.Cleanup(c.close)
	mark := c.awaitHeaders()
	c.headerTimedOut() // as if left over: the wait has just begun
	if !c.headersIn(mark) {
		t.Fatal("a late firing cut a wait that had just begun")
	}
	mark = c.awaitHeaders()
	_, err := c.br.ReadByte()
	if !isTimeout(err) {
		t.Fatalf("read error %v, want a timeout", err)
	}
	if c.headersIn(mark) {
		t.Fatal("headersIn reports a wait that timed out as in time")
	}
}
