package smtp

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// trackingListener registers every accepted connection with the server, so
// that Shutdown can close idle sessions and, past its deadline, all of them.
type trackingListener struct {
	net.Listener
	srv *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, srv: l.srv}
	l.srv.track(tc)
	return tc, nil
}

// trackedConn is a client connection as the server sees it.
type trackedConn struct {
	net.Conn
	srv *Server

	// dataTimeout, when set, gives each read its own deadline: go-smtp
	// sets one per command line, which would bound a whole DATA transfer.
	dataTimeout atomic.Int64

	// mu orders busy against pokes from Shutdown: a session in a
	// transaction is never interrupted.
	mu   sync.Mutex
	busy bool

	closeOnce sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if d := c.dataTimeout.Load(); d > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(time.Duration(d))); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() { c.srv.untrack(c) })
	return c.Conn.Close()
}

// setBusy marks the session as in a transaction or not.
func (c *trackedConn) setBusy(b bool) {
	c.mu.Lock()
	c.busy = b
	c.mu.Unlock()
}

// pokeIfIdle ends a blocked read of a session that is not in a transaction:
// go-smtp answers a read timeout with 421 and closes. A session busy with a
// command sets a fresh deadline before its next read and is poked again.
func (c *trackedConn) pokeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
}

// underlying finds the trackedConn under go-smtp's connection, which is
// a *tls.Conn after STARTTLS.
func underlying(c net.Conn) *trackedConn {
	for {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}
