package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"vulcan/node"
)

// maxPicks bounds how many upstreams a MAIL tries when connections fail.
const maxPicks = 3

// methodAuth and methodMail are the methods the authorization server and
// the limits see for SMTP.
const (
	methodAuth = "AUTH"
	methodMail = "MAIL"
)

// session is one client connection, from EHLO to QUIT. go-smtp calls its
// methods from the connection's goroutine, except Data for BDAT, which
// runs beside it; mu guards the fields below it.
type session struct {
	srv    *Server
	conn   *gosmtp.Conn
	tc     *trackedConn
	log    hclog.Logger
	ip     string
	ctx    context.Context
	cancel context.CancelFunc

	mu           sync.Mutex
	id           *node.Identity // set by a successful AUTH
	authFailures int
	tx           *transaction // nil outside a message, and while Data has it
	inData       bool
}

// transaction is one message, from MAIL to its final reply.
type transaction struct {
	h        *node.Handle
	up       *upConn // nil once the upstream connection is lost or aborted
	token    string
	declared int64
}

func (s *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	tc := underlying(c.Conn())
	if tc == nil {
		return nil, errors.New("connection not accepted by this server")
	}
	ip := ""
	if host, _, err := net.SplitHostPort(c.Conn().RemoteAddr().String()); err == nil {
		ip = host
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.n.ObserveSMTP(eventSession)
	sess := &session{srv: s, conn: c, tc: tc, ip: ip, ctx: ctx, cancel: cancel, log: s.log.With("client", ip)}
	if sess.log.IsDebug() {
		sess.log.Debug("session started", "helo", c.Hostname())
	}
	return sess, nil
}

// AuthMechanisms implements gosmtp.AuthSession.
func (s *session) AuthMechanisms() []string { return []string{mechPlain, mechLogin} }

// Auth implements gosmtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx != nil || s.inData {
		return nil, reply(errAuthInTransaction)
	}
	switch strings.ToUpper(mech) {
	case mechPlain:
		return &authExchange{s: s, inner: &plainServer{check: s.authenticate}}, nil
	case mechLogin:
		return &authExchange{s: s, inner: &loginServer{check: s.authenticate}}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// authExchange maps the errors of a SASL exchange to replies and ends the
// session after too many failures.
type authExchange struct {
	s     *session
	inner sasl.Server
}

// Next implements sasl.Server.
func (a *authExchange) Next(resp []byte) ([]byte, bool, error) {
	challenge, done, err := a.inner.Next(resp)
	if err == nil {
		return challenge, done, nil
	}
	s := a.s
	if errors.Is(err, node.ErrAuthUnavailable) {
		// Not the client's fault: it may try again.
		return nil, false, reply(err)
	}
	s.srv.n.ObserveSMTP(eventAuthFailed)
	s.log.Info("authentication failed", "error", err)
	s.mu.Lock()
	s.authFailures++
	tooMany := s.authFailures >= s.srv.cfg.MaxAuthFailures
	s.mu.Unlock()
	if tooMany {
		s.hangUp(errAuthTooMany)
		return nil, false, reply(errAuthTooMany)
	}
	return nil, false, reply(err)
}

// authenticate asks the authorization server about the credentials; the
// password goes nowhere else.
func (s *session) authenticate(user, pass string) error {
	id, err := s.srv.n.Authenticate(s.ctx, node.Facts{
		Protocol: node.ProtoSMTP, HasCredentials: true, Username: user, Password: pass,
		Method: methodAuth, ClientIP: s.ip,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.id = &id
	s.mu.Unlock()
	if s.log.IsDebug() {
		s.log.Debug("authenticated", "user", user)
	}
	return nil
}

// Mail implements gosmtp.Session: admission, pick, connect, MAIL upstream.
func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A new MAIL ends the message before it, if any.
	s.endTx()
	s.tc.setBusy(true)
	var size int64
	if opts != nil {
		size = opts.Size
	}
	err := s.startTx(from, size)
	if err != nil {
		s.endTx()
		s.observeRejection(err)
	}
	return reply(err)
}

// startTx admits the message and opens it on an upstream; on success s.tx
// holds the pick and the connection.
func (s *session) startTx(from string, size int64) error {
	if s.srv.isClosing() {
		return errShuttingDown
	}
	var id node.Identity
	switch {
	case s.id != nil:
		id = *s.id
	case s.srv.n.AuthEnabled():
		return errAuthRequired
	default:
		// Open mode: the node answers with the client's IP as token.
		var err error
		id, err = s.srv.n.Authenticate(s.ctx, node.Facts{Protocol: node.ProtoSMTP, Method: methodMail, Length: size, ClientIP: s.ip})
		if err != nil {
			return err
		}
	}
	route, err := s.srv.n.RouteSMTP(id)
	if err != nil {
		return err
	}
	if _, err := s.srv.n.CheckLimits(id.Token, s.facts(size)); err != nil {
		return err
	}
	tx := &transaction{token: id.Token, declared: size}
	s.tx = tx
	var exclude *node.Handle
	var lastErr error
	for range maxPicks {
		h, err := s.srv.n.Pick(route, exclude)
		if err != nil {
			if lastErr != nil && errors.Is(err, node.ErrNoUpstream) {
				return &unavailableError{last: lastErr}
			}
			return err
		}
		tx.h = h
		up, err := s.openOn(h.Addr(), from, size)
		var ce *connectError
		if errors.As(err, &ce) {
			// The upstream is down: mark it and try another.
			s.srv.n.ObserveSMTP(eventUpstreamFailed)
			s.log.Warn("upstream connection failed", "upstream", h.Addr(), "error", err)
			h.Failed(err)
			h.Release()
			tx.h, exclude, lastErr = nil, h, err
			continue
		}
		h.Succeeded()
		tx.up = up
		if err != nil {
			// The upstream's own answer to MAIL, or a failure after it.
			return err
		}
		if s.log.IsDebug() {
			s.log.Debug("message started", "upstream", h.Addr(), "tls", up.tls, "size", size)
		}
		return nil
	}
	return &unavailableError{last: lastErr}
}

// openOn sends MAIL to addr on an idle pooled connection, or on a new one.
// A pooled connection the upstream has dropped meanwhile is discarded and
// the next tried. It returns the connection with the upstream's refusal
// (an *SMTPError) when MAIL is refused, a *connectError when no connection
// could be opened, and nil with an *upstreamLostError when the new
// connection fails at MAIL.
func (s *session) openOn(addr, from string, size int64) (*upConn, error) {
	for {
		up := s.srv.pool.get(addr)
		if up == nil {
			break
		}
		if up.dirty {
			if err := up.reset(); err != nil {
				up.close()
				continue
			}
		}
		err := up.mail(from, size)
		if isStale(err) {
			// Dropped while idle, or 421 on its way out.
			up.close()
			continue
		}
		return up, err
	}
	up, err := s.srv.dialer.open(s.ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := up.mail(from, size); err != nil {
		if isReply(err) {
			return up, err
		}
		up.close()
		return nil, &upstreamLostError{addr: addr, op: "MAIL", err: err}
	}
	return up, nil
}

// isReply reports whether err is an upstream's reply rather than an I/O
// failure.
func isReply(err error) bool {
	var se *gosmtp.SMTPError
	return errors.As(err, &se)
}

// Rcpt implements gosmtp.Session: the upstream's reply is passed on.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.tx
	if tx == nil || tx.up == nil {
		return reply(&upstreamLostError{addr: "", op: "RCPT", err: errors.New("no upstream connection")})
	}
	err := tx.up.c.Rcpt(to, opts)
	if err != nil && !isReply(err) {
		err = s.lose(tx, "RCPT", err)
	}
	return reply(err)
}

// Data implements gosmtp.Session: the message is streamed to the upstream,
// and the upstream's final reply passed on. A message that cannot be
// completed is aborted: the upstream connection is closed without the
// final dot.
//
// Data takes the transaction out of the session and works without mu: for
// BDAT it runs beside the connection's goroutine, which may meanwhile call
// Auth, Reset or Logout, and must not wait for a Data that waits for the
// next chunk. Data ends its transaction itself.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	tx := s.tx
	s.tx = nil
	s.inData = tx != nil
	s.mu.Unlock()
	if tx == nil || tx.up == nil {
		if tx != nil {
			s.finish(tx)
		}
		return reply(&upstreamLostError{op: "DATA", err: errors.New("no upstream connection")})
	}
	s.tc.dataTimeout.Store(int64(s.srv.cfg.ReadTimeout))
	err := s.relayData(tx, r)
	s.tc.dataTimeout.Store(0)
	if err != nil {
		s.observeRejection(err)
	}
	// The message is over whatever its outcome.
	s.finish(tx)
	return reply(err)
}

// relayData does the work of Data; the error it returns is the reply.
func (s *session) relayData(tx *transaction, r io.Reader) error {
	up := tx.up
	w, err := up.c.Data()
	if err != nil {
		if isReply(err) {
			return err
		}
		return s.lose(tx, "DATA", err)
	}
	bp := s.srv.bufs.Get().(*[]byte)
	n, rerr, werr := copyData(w, r, *bp)
	s.srv.bufs.Put(bp)
	switch {
	case rerr != nil:
		s.abort(tx)
		var ne net.Error
		switch {
		case errors.Is(rerr, gosmtp.ErrDataTooLarge):
			// go-smtp reads the rest of the message and replies 552.
			return rerr
		case errors.As(rerr, &ne) && ne.Timeout():
			// The rest of the message would be read as commands:
			// hang up, as for an idle timeout.
			s.hangUp(errClientTimeout)
			return errClientTimeout
		}
		s.log.Debug("client failed during DATA", "error", rerr)
		return fmt.Errorf("read message from client: %w", rerr)
	case werr != nil:
		// go-smtp reads the rest of the message, then replies.
		return s.lose(tx, "DATA", werr)
	}
	if n > tx.declared {
		// Limits with a data_size between the declared and the real
		// size did not apply at MAIL: check them now, before the
		// message is committed.
		f := s.facts(n)
		f.Recheck, f.Declared = true, tx.declared
		if _, err := s.srv.n.CheckLimits(tx.token, f); err != nil {
			s.abort(tx)
			return err
		}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		if isReply(err) {
			// The upstream's verdict; the transaction is over.
			up.dirty = false
			return err
		}
		return s.lose(tx, "end of DATA", err)
	}
	up.dirty = false
	s.srv.n.ObserveSMTP(eventMessage)
	if s.log.IsDebug() {
		s.log.Debug("message relayed", "upstream", up.addr, "size", n)
	}
	return upstreamSuccess(250, resp.StatusText)
}

// copyData copies the message from r to w through buf, telling a failure
// to read from the client (rerr) from one to write to the upstream (werr).
func copyData(w io.Writer, r io.Reader, buf []byte) (n int64, rerr, werr error) {
	for {
		nr, err := r.Read(buf)
		if nr > 0 {
			nw, err := w.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				return n, nil, err
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// Reset implements gosmtp.Session (RSET, and after each message).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTx()
}

// Logout implements gosmtp.Session.
func (s *session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTx()
	s.cancel()
	if s.log.IsDebug() {
		s.log.Debug("session ended")
	}
	return nil
}

// endTx ends the message, if any. Called with mu held.
func (s *session) endTx() {
	tx := s.tx
	s.tx = nil
	if tx != nil {
		s.release(tx)
	}
	s.tc.setBusy(false)
}

// finish ends a message that Data took out of the session.
func (s *session) finish(tx *transaction) {
	s.release(tx)
	s.mu.Lock()
	s.inData = false
	s.mu.Unlock()
	s.tc.setBusy(false)
}

// release gives back what a message held: the pick is released and the
// upstream connection kept for reuse (RSET first if the transaction was
// left open).
func (s *session) release(tx *transaction) {
	if tx.up != nil {
		s.srv.pool.put(tx.up)
		tx.up = nil
	}
	if tx.h != nil {
		tx.h.Release()
		tx.h = nil
	}
}

// abort drops the upstream connection mid-message, so that the upstream
// discards what it received.
func (s *session) abort(tx *transaction) {
	s.srv.n.ObserveSMTP(eventAborted)
	if tx.up != nil {
		tx.up.close()
		tx.up = nil
	}
}

// lose handles an I/O failure with the upstream after it was connected.
func (s *session) lose(tx *transaction, op string, err error) error {
	addr := ""
	if tx.up != nil {
		addr = tx.up.addr
	}
	s.log.Warn("upstream connection lost", "upstream", addr, "during", op, "error", err)
	s.abort(tx)
	return &upstreamLostError{addr: addr, op: op, err: err}
}

// hangUp writes the reply for err and closes the client connection. It is
// for the cases where the protocol state is lost (a stall mid-DATA, after
// which data would be read as commands) or the session must end; go-smtp's
// own reply to the returned error then goes nowhere. Called from the
// connection's goroutine only, so it does not race go-smtp's writes.
func (s *session) hangUp(err error) {
	se, _ := reply(err).(*gosmtp.SMTPError)
	c := s.conn.Conn()
	_ = c.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
	_, _ = fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	_ = c.Close()
}

// facts describes a message for the limits.
func (s *session) facts(length int64) node.Facts {
	return node.Facts{Protocol: node.ProtoSMTP, Method: methodMail, Length: length, ClientIP: s.ip}
}

// observeRejection counts a refused MAIL or message.
func (s *session) observeRejection(err error) {
	var limited *node.RateLimitedError
	if errors.As(err, &limited) {
		s.srv.n.ObserveSMTP(eventRateLimited)
	}
	s.srv.n.ObserveSMTP(eventRejected)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.AuthSession = (*session)(nil)
)
