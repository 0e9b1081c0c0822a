package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// deadlineConn gives every Read and Write on an upstream connection its own
// deadline. go-smtp's client bounds whole commands only, and not the writes
// of message data at all.
type deadlineConn struct {
	net.Conn
	// read and write are time.Durations; atomics because a pooled
	// connection changes hands between session goroutines.
	read, write atomic.Int64
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(time.Duration(c.read.Load()))); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(time.Duration(c.write.Load()))); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *deadlineConn) setTimeouts(read, write time.Duration) {
	c.read.Store(int64(read))
	c.write.Store(int64(write))
}

// upConn is one SMTP client connection to an upstream. It is used by one
// session at a time; the pool hands it from one to the next.
type upConn struct {
	addr string
	raw  *deadlineConn
	c    *gosmtp.Client
	tls  bool
	// dirty means a transaction may be open upstream: RSET before reuse.
	dirty bool
	// uses counts the messages started on the connection.
	uses      int
	idleSince time.Time
}

// dialer opens upstream connections.
type dialer struct {
	domain            string
	dial, read, write time.Duration
	tlsConfig         *tls.Config
}

// open connects to addr, reads the greeting, says EHLO and, when the
// upstream offers it, switches to TLS. Every failure is a *connectError.
func (d *dialer) open(ctx context.Context, addr string) (*upConn, error) {
	nd := net.Dialer{Timeout: d.dial}
	conn, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &connectError{addr: addr, err: err}
	}
	raw := &deadlineConn{Conn: conn}
	// Opening is bounded by the dial timeout step by step, so that an
	// upstream that accepts but never greets is given up quickly.
	raw.setTimeouts(d.dial, d.dial)
	c := gosmtp.NewClient(raw)
	d.tune(c)
	if err := c.Hello(d.domain); err != nil {
		_ = c.Close()
		return nil, &connectError{addr: addr, err: fmt.Errorf("EHLO: %w", err)}
	}
	u := &upConn{addr: addr, raw: raw, c: c}
	if ok, _ := c.Extension("STARTTLS"); ok {
		tc, err := d.startTLS(raw, addr)
		if err != nil {
			_ = c.Close()
			return nil, &connectError{addr: addr, err: fmt.Errorf("STARTTLS: %w", err)}
		}
		// go-smtp's client has no STARTTLS of its own outside of its
		// constructors; a fresh client runs over the TLS connection, told
		// that it was greeted, and says EHLO again as RFC 3207 requires.
		c = gosmtp.NewClient(&greetedConn{Conn: tc, r: io.MultiReader(strings.NewReader("220 TLS\r\n"), tc)})
		d.tune(c)
		if err := c.Hello(d.domain); err != nil {
			_ = c.Close()
			return nil, &connectError{addr: addr, err: fmt.Errorf("EHLO after STARTTLS: %w", err)}
		}
		u.c, u.tls = c, true
	}
	raw.setTimeouts(d.read, d.write)
	return u, nil
}

// tune sets the client's own command timeouts; deadlineConn bounds each
// read and write more tightly still.
func (d *dialer) tune(c *gosmtp.Client) {
	c.CommandTimeout = d.read
	c.SubmissionTimeout = d.read
}

// startTLS sends STARTTLS on raw and completes the handshake.
func (d *dialer) startTLS(raw *deadlineConn, addr string) (*tls.Conn, error) {
	if _, err := io.WriteString(raw, "STARTTLS\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReader(raw)
	if _, _, err := textproto.NewReader(br).ReadResponse(220); err != nil {
		return nil, err
	}
	// Anything sent before the handshake would be taken as protected
	// later (the STARTTLS injection flaw): refuse it.
	if br.Buffered() > 0 {
		return nil, errors.New("data after the STARTTLS reply")
	}
	cfg := d.tlsConfig.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// greetedConn replays a greeting before the connection's own data.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (c *greetedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// mail starts a transaction; the connection is dirty from then on.
func (u *upConn) mail(from string, size int64) error {
	u.uses++
	var opts *gosmtp.MailOptions
	if size > 0 {
		opts = &gosmtp.MailOptions{Size: size}
	}
	err := u.c.Mail(from, opts)
	if err == nil {
		u.dirty = true
	}
	return err
}

// reset aborts an open transaction so the connection can be reused.
func (u *upConn) reset() error {
	if err := u.c.Reset(); err != nil {
		return err
	}
	u.dirty = false
	return nil
}

// quit says goodbye within a short time and closes the connection.
func (u *upConn) quit() {
	u.raw.setTimeouts(time.Second, time.Second)
	if err := u.c.Quit(); err != nil {
		_ = u.c.Close()
	}
}

// close drops the connection at once. During DATA this is how a message is
// aborted: the upstream never sees the final dot.
func (u *upConn) close() { _ = u.c.Close() }

// isStale tells an error from a reused connection that the upstream had
// already dropped (it closed it, or says 421 on its way out) from a real
// answer to the command.
func isStale(err error) bool {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code == 421
	}
	return err != nil
}
