package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync/atomic"
	"time"
)

// reuseWait is how long a connection whose response is complete waits for
// its request body to finish being written before it is given up.
const reuseWait = 50 * time.Millisecond

// upstreamTransport is an HTTP/1.1 client for the proxy's upstreams, built
// for the hot path. A request is written, and its response headers read, on
// the calling goroutine over a connection from a keep-alive pool per
// upstream address: no reader and writer goroutines per connection, no
// channel handoffs. A request body is written from a goroutine of its own,
// so that an upstream may answer (and the client read the answer) while the
// body is still being sent. Requests it does not handle (protocol upgrades,
// Expect, schemes other than http, CONNECT) go to fallback.
//
// Errors keep the shapes the retry logic relies on: a failed dial is a
// *net.OpError with Op "dial"; a response-header timeout is a net.Error
// whose Timeout is true; a lost connection wraps a *net.OpError, io.EOF or
// io.ErrUnexpectedEOF; a cancelled request returns the context's error.
// It is safe for concurrent use.
type upstreamTransport struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback http.RoundTripper
	// responseHeaderTimeout bounds the wait for response headers once the
	// request is sent; 0 means no bound.
	responseHeaderTimeout time.Duration
	// maxHeaderBytes bounds the bytes read for a response's headers.
	maxHeaderBytes int64
	pool           *connPool
}

// RoundTrip sends req to req.URL.Host and returns its response.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !handled(req) {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	addr := req.URL.Host
	fresh := false
	for {
		if err := ctx.Err(); err != nil {
			closeBody(req)
			return nil, err
		}
		c, err := t.conn(ctx, addr, fresh)
		if err != nil {
			closeBody(req)
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, c, req, hasBody)
		if err == nil {
			return resp, nil
		}
		if !retry || fresh {
			return nil, err
		}
		// The pooled connection was dead before the upstream saw the
		// request: once more on a new one.
		fresh = true
	}
}

// handled reports whether the request is one upstreamTransport sends itself.
func handled(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.Method == http.MethodConnect {
		return false
	}
	h := req.Header
	return len(h["Upgrade"]) == 0 && len(h["Connection"]) == 0 && len(h["Expect"]) == 0
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// conn returns an idle connection to addr, or a new one when there is none
// or fresh is set.
func (t *upstreamTransport) conn(ctx context.Context, addr string, fresh bool) (*upConn, error) {
	if !fresh {
		if c := t.pool.get(addr); c != nil {
			return c, nil
		}
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newUpConn(nc, addr, t.responseHeaderTimeout), nil
}

// exchange sends req over c and reads the response headers. retry reports
// that the request failed in a way that proves the upstream did not act
// on it (a reused connection that was already dead) and may be sent again.
// On success c belongs to the response's body; on failure c is closed.
func (t *upstreamTransport) exchange(ctx context.Context, c *upConn, req *http.Request, hasBody bool) (resp *http.Response, retry bool, err error) {
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.interrupt)
	}
	fail := func(err error) error {
		if stop != nil {
			stop()
		}
		c.close()
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return err
	}
	written := c.written
	var wrote chan error
	if hasBody {
		// The body may be long, or the upstream may answer before it has
		// all of it: write it from its own goroutine, which ends when the
		// body is sent or the connection fails (fail closes it).
		wrote = make(chan error, 1)
		go c.send(req, wrote)
	} else if err := c.writeRequest(req); err != nil {
		// A request without a body of which nothing reached the upstream
		// can be sent again.
		stale := c.reused && c.written == written
		return nil, stale && ctx.Err() == nil, fail(fmt.Errorf("send request to %s: %w", c.addr, err))
	}
	read := c.read
	mark := c.awaitHeaders()
	resp, err = t.readResponse(c, req)
	if !c.headersIn(mark) {
		// Whatever was read, the timeout came first and interrupted the
		// connection.
		resp, err = nil, &headerTimeoutError{}
	}
	if err != nil {
		stale := !hasBody && c.reused && c.read == read && !isTimeout(err) && replayable(req)
		err = fmt.Errorf("read response from %s: %w", c.addr, err)
		if hasBody {
			select {
			case werr := <-wrote:
				// The writer failed first and closed the connection: its
				// error is the cause.
				if werr != nil {
					err = werr
				}
			default:
			}
		}
		return nil, stale && ctx.Err() == nil, fail(err)
	}
	reuse := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.Body == nil || resp.Body == http.NoBody {
		t.release(c, stop, wrote, reuse)
		return resp, false, nil
	}
	resp.Body = &upBody{rc: resp.Body, t: t, c: c, ctx: ctx, stop: stop, wrote: wrote, reuse: reuse}
	return resp, false, nil
}

// readResponse reads the final response to req, passing informational
// responses to the request's trace (ReverseProxy forwards them).
func (t *upstreamTransport) readResponse(c *upConn, req *http.Request) (*http.Response, error) {
	trace := httptrace.ContextClientTrace(req.Context())
	c.limit = t.maxHeaderBytes
	defer func() { c.limit = math.MaxInt64 }()
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
			// Delivered, the receiver bounds them: the header limit
			// starts over. Otherwise it bounds them all together.
			c.limit = t.maxHeaderBytes
		}
	}
}

// replayable reports whether a request may be sent again after its
// connection failed without an answer: one without a body whose method is
// idempotent (the same set the proxy retries on another upstream), or that
// carries an idempotency key.
func replayable(req *http.Request) bool {
	if idempotent(req.Method) {
		return true
	}
	return len(req.Header["Idempotency-Key"]) > 0 || len(req.Header["X-Idempotency-Key"]) > 0
}

// release ends an exchange whose response was read: c goes back to the pool
// when the response allows it, the request was written whole and nothing
// else arrived; otherwise it is closed.
func (t *upstreamTransport) release(c *upConn, stop func() bool, wrote chan error, reuse bool) {
	if stop != nil && !stop() {
		// The request was cancelled: the connection's deadline is spent.
		reuse = false
	}
	if reuse && wrote != nil {
		select {
		case err := <-wrote:
			reuse = err == nil
		default:
			// The upstream answered before the body was all sent; give
			// the writer a moment without holding up the caller.
			go t.releaseAfterWrite(c, wrote)
			return
		}
	}
	if reuse && c.br.Buffered() == 0 {
		t.pool.put(c)
		return
	}
	c.close()
}

// releaseAfterWrite pools c once its request body is written, or closes it
// if that takes longer than reuseWait.
func (t *upstreamTransport) releaseAfterWrite(c *upConn, wrote chan error) {
	timer := time.NewTimer(reuseWait)
	defer timer.Stop()
	select {
	case err := <-wrote:
		if err == nil && c.br.Buffered() == 0 {
			t.pool.put(c)
			return
		}
	case <-timer.C:
	}
	c.close()
}

// CloseIdleConnections closes the pooled connections, and refuses new ones.
func (t *upstreamTransport) CloseIdleConnections() {
	t.pool.close()
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// Body states.
const (
	bodyOpen int32 = iota
	bodyEOF
	bodyClosed
)

// upBody is a response body over a pooled connection: at its end the
// connection goes back to the pool (when the response allows it); closed
// early, the connection is closed, never drained.
type upBody struct {
	rc    io.ReadCloser
	t     *upstreamTransport
	c     *upConn
	ctx   context.Context
	stop  func() bool
	wrote chan error
	reuse bool
	state atomic.Int32
}

var errBodyClosed = errors.New("read on closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEOF:
		return 0, io.EOF
	case bodyClosed:
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(bodyEOF)
	case err != nil:
		b.finish(bodyClosed)
		if cerr := b.ctx.Err(); cerr != nil {
			return n, cerr
		}
		err = fmt.Errorf("read response body from %s: %w", b.c.addr, err)
	}
	return n, err
}

// Close may be called concurrently with Read, to abandon the body.
func (b *upBody) Close() error {
	b.finish(bodyClosed)
	return nil
}

func (b *upBody) finish(state int32) {
	if !b.state.CompareAndSwap(bodyOpen, state) {
		return
	}
	if state == bodyEOF {
		b.t.release(b.c, b.stop, b.wrote, b.reuse)
		return
	}
	if b.stop != nil {
		b.stop()
	}
	b.c.close()
}

var _ http.RoundTripper = (*upstreamTransport)(nil)
