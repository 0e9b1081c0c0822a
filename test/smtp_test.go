package test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// smtpAgent starts a node with SMTP, in front of an authorization server
// that knows alice (password pw, token t-alice), routes her to the service
// "mail", and fails for the user "broken".
func smtpAgent(t *testing.T, extra ...string) (*agent, *authServer) {
	t.Helper()
	as := startAuthServer(t, map[string]authReply{
		"alice":  {Token: "t-alice", Service: "mail", Password: "pw"},
		"bob":    {Token: "t-bob", Password: "pw"}, // no service: -smtp-service or the only one
		"broken": {Status: 500, Body: `{"error":"database on fire"}`},
	})
	a := startAgent(t, agentOpts{smtp: true, extra: append([]string{"-auth-url", as.url()}, extra...)})
	return a, as
}

// 1,000 messages over 20 concurrent sessions all arrive intact, with their
// envelopes, spread over two upstreams.
func TestSMTPThousandMessagesIntact(t *testing.T) {
	t.Parallel()
	a, _ := smtpAgent(t)
	m1, m2 := startMTA(t, "mta1"), startMTA(t, "mta2")
	smtpService(t, a, m1, m2)

	const sessions, perSession = 20, 50
	var mu sync.Mutex
	want := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := gosmtp.Dial(a.smtp)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Hello("client.test"); err != nil {
				errs <- err
				return
			}
			if err := c.Auth(saslPlain("alice", "pw")); err != nil {
				errs <- fmt.Errorf("session %d: AUTH: %w", s, err)
				return
			}
			for i := range perSession {
				tag := fmt.Sprintf("s%d-m%d", s, i)
				body, sum := smtpMessage(tag, 1000+(s*perSession+i)*37%20000)
				msg := mtaMessage{From: "sender-" + tag + "@test", To: []string{"r1-" + tag + "@test", "common@test"}, Sum: sum}
				mu.Lock()
				want[msg.key()] = true
				mu.Unlock()
				if err := c.SendMail(msg.From, msg.To, bytes.NewReader(body)); err != nil {
					errs <- fmt.Errorf("%s: %w", tag, err)
					return
				}
			}
			if err := c.Quit(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	got := append(m1.messages(), m2.messages()...)
	if len(got) != sessions*perSession {
		t.Fatalf("upstreams got %d messages, want %d", len(got), sessions*perSession)
	}
	for _, m := range got {
		if !want[m.key()] {
			t.Fatalf("message %s from %s arrived changed or twice", m.key(), m.From)
		}
		delete(want, m.key())
	}
	if len(m1.messages()) == 0 || len(m2.messages()) == 0 {
		t.Errorf("messages not spread: %d and %d", m1.count(), m2.count())
	}
	if v, err := scrapeMetric(a, `vulcan_smtp_events_total{event="message"}`); err != nil || v != sessions*perSession {
		t.Errorf("message metric %v (%v), want %d", v, err, sessions*perSession)
	}
}

// Every reply the proxy makes itself, through the real binary and a real
// authorization server.
func TestSMTPReplyCodes(t *testing.T) {
	t.Parallel()
	a, as := smtpAgent(t, "-smtp-max-size", "30000")
	m1 := startMTA(t, "mta1")
	smtpService(t, a, m1)
	m1.refuseRcpt("nobody@test", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user here"})
	body, sum := smtpMessage("codes", 5000)

	t.Run("EHLO", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		ehlo := c.cmd(250, "", "EHLO again.test")
		for _, ext := range []string{"SIZE 30000", "PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN"} {
			if !strings.Contains(ehlo, ext) {
				t.Errorf("EHLO lacks %s:\n%s", ext, ehlo)
			}
		}
	})
	t.Run("530 without AUTH", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		c.cmd(530, "5.7.0", "MAIL FROM:<alice@test>")
	})
	t.Run("535 bad credentials", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		c.auth("alice", "wrong", 535, "5.7.8")
		c.auth("stranger", "pw", 535, "5.7.8")
	})
	t.Run("454 auth server failure", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		c.auth("broken", "pw", 454, "4.7.0")
	})
	t.Run("550 for one recipient passed on", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		c.auth("alice", "pw", 235, "2.0.0")
		c.cmd(250, "", "MAIL FROM:<alice@test>")
		c.cmd(250, "", "RCPT TO:<bob@test>")
		if msg := c.cmd(550, "5.1.1", "RCPT TO:<nobody@test>"); !strings.Contains(msg, "No such user here") {
			t.Errorf("550 text %q is not the upstream's", msg)
		}
		c.cmd(250, "", "RCPT TO:<carol@test>")
		c.data(body, 250, "2.0.0")
		want := mtaMessage{From: "alice@test", To: []string{"bob@test", "carol@test"}, Sum: sum}
		if got := m1.messages(); len(got) != 1 || got[0].key() != want.key() {
			t.Fatalf("upstream got %+v", got)
		}
	})
	t.Run("552 over the size limit", func(t *testing.T) {
		c := dialSMTP(t, a.smtp)
		c.auth("alice", "pw", 235, "2.0.0")
		c.cmd(552, "5.3.4", "MAIL FROM:<alice@test> SIZE=30001")
		big, _ := smtpMessage("big", 60000)
		before := m1.count()
		c.cmd(250, "", "MAIL FROM:<alice@test>")
		c.cmd(250, "", "RCPT TO:<bob@test>")
		c.data(big, 552, "5.3.4")
		// The session is still usable.
		c.cmd(250, "", "MAIL FROM:<alice@test>")
		c.cmd(250, "", "RCPT TO:<bob@test>")
		c.data(body, 250, "2.0.0")
		if m1.count() != before+1 {
			t.Errorf("upstream got %d messages, want %d", m1.count(), before+1)
		}
	})
	t.Run("451 4.7.1 rate limited at MAIL", func(t *testing.T) {
		as.set("limited", authReply{Token: "t-limited", Service: "mail", Password: "pw"})
		smtpAddLimit(t, a, map[string]any{"auth_token": "t-limited", "protocol": "SMTP", "method": "MAIL", "period": 60, "threshold": 2})
		c := dialSMTP(t, a.smtp)
		c.auth("limited", "pw", 235, "2.0.0")
		before := m1.mails.Load()
		c.cmd(250, "", "MAIL FROM:<l@test>")
		c.cmd(250, "", "RSET")
		c.cmd(250, "", "MAIL FROM:<l@test>")
		c.cmd(250, "", "RSET")
		c.cmd(451, "4.7.1", "MAIL FROM:<l@test>")
		if got := m1.mails.Load() - before; got != 2 {
			t.Errorf("upstream saw %d MAIL, want 2", got)
		}
	})
	t.Run("451 4.7.1 real size over a data_size limit", func(t *testing.T) {
		as.set("sized", authReply{Token: "t-sized", Service: "mail", Password: "pw"})
		smtpAddLimit(t, a, map[string]any{"auth_token": "t-sized", "protocol": "SMTP", "method": "MAIL", "data_size": 10000, "period": 60, "threshold": 0})
		c := dialSMTP(t, a.smtp)
		c.auth("sized", "pw", 235, "2.0.0")
		mid, _ := smtpMessage("mid", 20000)
		c.cmd(451, "4.7.1", "MAIL FROM:<s@test> SIZE=%d", len(mid))
		before, aborted := m1.count(), m1.aborted.Load()
		c.cmd(250, "", "MAIL FROM:<s@test> SIZE=100") // understated
		c.cmd(250, "", "RCPT TO:<bob@test>")
		c.data(mid, 451, "4.7.1")
		eventually(t, 5*time.Second, func() error {
			if m1.aborted.Load() != aborted+1 {
				return errors.New("upstream transaction not aborted")
			}
			return nil
		})
		if m1.count() != before {
			t.Error("a message over its limit was delivered")
		}
	})
}

// smtpAddLimit creates a limit through the admin API and waits until it is
// in force.
func smtpAddLimit(t testing.TB, a *agent, l map[string]any) {
	t.Helper()
	var got struct {
		ID string `json:"id"`
	}
	code, err := a.api("POST", "/v1/limits", l, &got)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("add limit %v: %d %v", l, code, err)
	}
	eventually(t, 5*time.Second, func() error {
		var ls []struct {
			ID string `json:"id"`
		}
		if _, err := a.api("GET", "/v1/limits", nil, &ls); err != nil {
			return err
		}
		for _, x := range ls {
			if x.ID == got.ID {
				return nil
			}
		}
		return errors.New("limit not listed yet")
	})
}

// An upstream that is down is skipped: the messages go to the other, and
// the routing falls back to -smtp-service for a user without a service.
func TestSMTPUpstreamDown(t *testing.T) {
	t.Parallel()
	a, _ := smtpAgent(t, "-smtp-service", "mail")
	good := startMTA(t, "good")
	a.mustAPI("PUT", "/v1/services/mail", map[string]any{"name": "mail", "protocol": "smtp"}, nil)
	a.mustAPI("PUT", "/v1/services/mail/upstreams/dead", map[string]any{"addr": deadAddr(t)}, nil)
	a.mustAPI("PUT", "/v1/services/mail/upstreams/good", map[string]any{"addr": good.addr}, nil)
	for _, user := range []string{"alice", "bob"} {
		c := smtpClient(t, a.smtp, user, "pw")
		for i := range 5 {
			body, _ := smtpMessage(fmt.Sprintf("%s-%d", user, i), 3000)
			if err := c.SendMail(user+"@test", []string{"x@test"}, bytes.NewReader(body)); err != nil {
				t.Fatalf("%s message %d: %v", user, i, err)
			}
		}
	}
	if good.count() != 10 {
		t.Fatalf("good upstream got %d messages, want 10", good.count())
	}
	eventually(t, 5*time.Second, func() error {
		ss, err := services(a)
		if err != nil {
			return err
		}
		if u, ok := findUpstream(ss, "mail", "dead"); !ok || u.Health != "down" {
			return fmt.Errorf("dead upstream: %+v", u)
		}
		return nil
	})
}

// A drained upstream gets no new session from any node, while the message
// in flight to it finishes and holds the drain until it does.
func TestSMTPDrainedUpstreamAcrossNodes(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{"alice": {Token: "t-alice", Service: "mail", Password: "pw"}})
	n1 := startAgent(t, agentOpts{smtp: true, extra: []string{"-auth-url", as.url()}})
	n2 := startAgent(t, agentOpts{smtp: true, join: []string{n1.bind}, extra: []string{"-auth-url", as.url()}})
	waitAlive(t, 30*time.Second, []*agent{n1, n2}, n1, n2)
	ma, mb := startMTA(t, "a"), startMTA(t, "b")
	smtpService(t, n1, ma, mb)
	converged(t, 10*time.Second, n1, n2)

	// Hold a message open on a through n2.
	held := dialSMTP(t, n2.smtp)
	held.auth("alice", "pw", 235, "2.0.0")
	for {
		before := ma.mails.Load()
		held.cmd(250, "", "MAIL FROM:<held@test>")
		if ma.mails.Load() > before {
			break
		}
		held.cmd(250, "", "RSET")
	}
	held.cmd(250, "", "RCPT TO:<x@test>")

	code, res, err := drain(n1, "mail", "a", "1s")
	if err != nil || code != http.StatusRequestTimeout {
		t.Fatalf("drain with a message in flight: %d %+v %v, want 408", code, res, err)
	}
	eventually(t, 10*time.Second, func() error {
		for _, n := range []*agent{n1, n2} {
			ss, err := services(n)
			if err != nil {
				return err
			}
			if u, _ := findUpstream(ss, "mail", "a"); u.State != "draining" {
				return fmt.Errorf("%s sees a %s", n.name, u.State)
			}
		}
		return nil
	})
	mailsA := ma.mails.Load()
	for _, n := range []*agent{n1, n2} {
		c := smtpClient(t, n.smtp, "alice", "pw")
		for i := range 10 {
			body, _ := smtpMessage(fmt.Sprintf("%s-%d", n.name, i), 2000)
			if err := c.SendMail("alice@test", []string{"x@test"}, bytes.NewReader(body)); err != nil {
				t.Fatalf("through %s: %v", n.name, err)
			}
		}
	}
	if got := ma.mails.Load(); got != mailsA {
		t.Fatalf("drained upstream got %d new sessions", got-mailsA)
	}
	if mb.count() != 20 {
		t.Fatalf("other upstream got %d messages, want 20", mb.count())
	}

	body, sum := smtpMessage("held", 4000)
	held.data(body, 250, "2.0.0")
	if got := ma.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("held message on the drained upstream: %+v", got)
	}
	code, res, err = drain(n1, "mail", "a", "10s")
	if err != nil || code != http.StatusOK {
		t.Fatalf("drain after the message: %d %+v %v, want 200", code, res, err)
	}
}

// Malformed commands, a client stalled mid-DATA and one that disconnects
// mid-DATA leave the node serving and the upstream without a partial
// message.
func TestSMTPBadClients(t *testing.T) {
	t.Parallel()
	a, _ := smtpAgent(t)
	m := startMTA(t, "mta")
	smtpService(t, a, m)

	junk := dialSMTP(t, a.smtp)
	_, _ = junk.conn.Write([]byte("\x00\x01\x02\xff garbage\r\nMAIL\r\nRCPT TO\r\nDATA now\r\n" + strings.Repeat("B", 3000) + "\r\n"))
	if err := junk.closedByPeer(); err != nil {
		t.Errorf("junk session: %v", err)
	}

	body, _ := smtpMessage("partial", 200_000)
	stalled := dialSMTP(t, a.smtp)
	stalled.auth("alice", "pw", 235, "2.0.0")
	stalled.cmd(250, "", "MAIL FROM:<stall@test>")
	stalled.cmd(250, "", "RCPT TO:<x@test>")
	stalled.partial(body[:100_000])

	gone := dialSMTP(t, a.smtp)
	gone.auth("alice", "pw", 235, "2.0.0")
	gone.cmd(250, "", "MAIL FROM:<gone@test>")
	gone.cmd(250, "", "RCPT TO:<x@test>")
	gone.partial(body[:100_000])
	eventually(t, 5*time.Second, func() error {
		if m.inData.Load() == 0 {
			return errors.New("upstream has no data yet")
		}
		return nil
	})
	gone.conn.Close()
	eventually(t, 5*time.Second, func() error {
		if m.aborted.Load() != 1 {
			return fmt.Errorf("%d aborted upstream transactions, want 1", m.aborted.Load())
		}
		return nil
	})

	// With one client stalled mid-DATA the node still serves others.
	ok, sum := smtpMessage("ok", 5000)
	c := smtpClient(t, a.smtp, "alice", "pw")
	if err := c.SendMail("ok@test", []string{"x@test"}, bytes.NewReader(ok)); err != nil {
		t.Fatalf("node not serving: %v", err)
	}
	stalled.conn.Close()
	eventually(t, 5*time.Second, func() error {
		if m.aborted.Load() != 2 {
			return fmt.Errorf("%d aborted upstream transactions, want 2", m.aborted.Load())
		}
		return nil
	})
	if got := m.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v, want only the complete message", got)
	}
	if !a.running() {
		t.Fatal("node exited")
	}
}

// Open mode with STARTTLS: no credentials needed, the client's IP is its
// token, TLS is offered.
func TestSMTPOpenModeWithSTARTTLS(t *testing.T) {
	t.Parallel()
	cert, key := smtpCertFiles(t)
	a := startAgent(t, agentOpts{smtp: true, extra: []string{"-smtp-tls-cert", cert, "-smtp-tls-key", key}})
	m := startMTA(t, "mta")
	smtpService(t, a, m)
	smtpAddLimit(t, a, map[string]any{"auth_token": `127\.0\.0\.1`, "protocol": "SMTP", "method": "MAIL", "period": 60, "threshold": 3})

	c, err := gosmtp.DialStartTLS(a.smtp, smtpTLSClientConfig())
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	// SIZE declared: a message no larger than declared is counted once.
	for i := range 3 {
		body, _ := smtpMessage(fmt.Sprintf("open-%d", i), 2000)
		if err := smtpSendSized(c, "open@test", []string{"x@test"}, body); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	err = c.Mail("open@test", nil)
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (gosmtp.EnhancedCode{4, 7, 1}) {
		t.Fatalf("fourth MAIL = %v, want 451 4.7.1 (the token is the client IP)", err)
	}
	if m.count() != 3 {
		t.Fatalf("upstream got %d messages, want 3", m.count())
	}
}
