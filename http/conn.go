package http

import (
	"bufio"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// connBufferSize sizes each upstream connection's read and write buffers.
const connBufferSize = 32 << 10

// upConn is one keep-alive connection to an upstream. One exchange uses it
// at a time; between exchanges it sits in the pool.
type upConn struct {
	nc   net.Conn
	br   *bufio.Reader // reads through the upConn, which counts and limits
	bw   *bufio.Writer // writes through the upConn, which counts
	addr string
	// idleCheck lets the pool check an idle connection without blocking.
	idleCheck idleCheck

	idleSince time.Time
	// reused is set once the connection has been taken from the pool.
	reused bool
	// limit is the number of bytes that may still be read (the header
	// limit while headers are read).
	limit int64
	// read and written count the bytes that went through.
	read, written int64
	// A connection's deadlines only ever move to the past, to interrupt
	// it for good: the wait for response headers is bounded by a timer
	// of its own, cheaper to rearm than a deadline.
	headerTimeout time.Duration
	headerTimer   *time.Timer // nil without a timeout
	// headerWait is headersIdle, headersTimedOut, or the mark of the
	// wait in progress (its start, in nanoseconds since born, plus one).
	headerWait atomic.Int64
	born       time.Time
	closed     atomic.Bool
}

// Header wait states besides the mark of a wait in progress.
const (
	headersIdle     int64 = 0
	headersTimedOut int64 = -1
)

func newUpConn(nc net.Conn, addr string, headerTimeout time.Duration) *upConn {
	c := &upConn{nc: nc, addr: addr, limit: math.MaxInt64, headerTimeout: headerTimeout, born: time.Now()}
	if headerTimeout > 0 {
		c.headerTimer = time.AfterFunc(time.Hour, c.headerTimedOut)
		c.headerTimer.Stop()
	}
	c.br = bufio.NewReaderSize(c, connBufferSize)
	c.bw = bufio.NewWriterSize(countingWriter{c}, connBufferSize)
	c.idleCheck.init(nc)
	return c
}

// Read reads from the connection within the limit.
func (c *upConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, fmt.Errorf("response headers from %s exceed the limit", c.addr)
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	c.read += int64(n)
	return n, err
}

// countingWriter writes to the connection and counts, without making
// upConn itself an io.Writer next to its Read.
type countingWriter struct{ c *upConn }

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.c.nc.Write(p)
	w.c.written += int64(n)
	return n, err
}

// writeRequest writes req (headers and body, as net/http's Transport does)
// and flushes it.
func (c *upConn) writeRequest(req *http.Request) error {
	if err := req.Write(c.bw); err != nil {
		return err
	}
	return c.bw.Flush()
}

// send writes req from its own goroutine and reports the result on wrote.
// On failure the connection is closed after the report, so that a reader
// waiting on the response wakes up and finds the cause waiting.
func (c *upConn) send(req *http.Request, wrote chan<- error) {
	err := c.writeRequest(req)
	if err != nil {
		err = fmt.Errorf("send request to %s: %w", c.addr, err)
	}
	wrote <- err
	if err != nil {
		c.close()
	}
}

// interrupt aborts whatever the connection is doing, for good: the
// request's context ended.
func (c *upConn) interrupt() {
	_ = c.nc.SetDeadline(time.Unix(1, 0))
}

// awaitHeaders starts the response-header timeout and returns the mark
// that headersIn takes; 0 when there is no timeout.
func (c *upConn) awaitHeaders() int64 {
	if c.headerTimer == nil {
		return headersIdle
	}
	mark := int64(time.Since(c.born)) + 1
	c.headerWait.Store(mark)
	c.headerTimer.Reset(c.headerTimeout)
	return mark
}

// headersIn ends the wait started with mark. It reports false when the
// timeout came first: the connection was interrupted and is spent.
func (c *upConn) headersIn(mark int64) bool {
	if mark == headersIdle {
		return true
	}
	c.headerTimer.Stop()
	return c.headerWait.CompareAndSwap(mark, headersIdle)
}

// headerTimedOut runs when the header timer fires: if a wait is on and has
// lasted the timeout, the connection is interrupted. A firing left over
// from an earlier wait (its run raced with Stop) finds either no wait or a
// younger one, rearmed, and does nothing.
func (c *upConn) headerTimedOut() {
	mark := c.headerWait.Load()
	if mark <= 0 || time.Since(c.born)-time.Duration(mark-1) < c.headerTimeout {
		return
	}
	if c.headerWait.CompareAndSwap(mark, headersTimedOut) {
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *upConn) close() {
	if c.closed.CompareAndSwap(false, true) {
		if c.headerTimer != nil {
			c.headerTimer.Stop()
		}
		_ = c.nc.Close()
	}
}

// headerTimeoutError is the error of an upstream that did not answer in
// time; it is a net.Error whose Timeout is true, like a deadline's.
type headerTimeoutError struct{}

func (e *headerTimeoutError) Error() string { return "timeout awaiting response headers" }

func (e *headerTimeoutError) Timeout() bool   { return true }
func (e *headerTimeoutError) Temporary() bool { return true }

var _ net.Error = (*headerTimeoutError)(nil)
