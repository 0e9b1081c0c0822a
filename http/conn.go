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
	// interrupted is set when the request's context ended: no deadline
	// set afterwards may undo the expired one.
	interrupted atomic.Bool
	closed      atomic.Bool
}

func newUpConn(nc net.Conn, addr string) *upConn {
	c := &upConn{nc: nc, addr: addr, limit: math.MaxInt64}
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

// interrupt aborts whatever the connection is doing: the request's context
// ended.
func (c *upConn) interrupt() {
	c.interrupted.Store(true)
	_ = c.nc.SetDeadline(time.Unix(1, 0))
}

// setReadDeadline sets the read deadline unless the connection was
// interrupted, whose expired deadline must stay.
func (c *upConn) setReadDeadline(t time.Time) {
	_ = c.nc.SetReadDeadline(t)
	if c.interrupted.Load() {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
}

func (c *upConn) close() {
	if c.closed.CompareAndSwap(false, true) {
		_ = c.nc.Close()
	}
}
