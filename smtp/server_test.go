package smtp

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"vulcan/node"
	"vulcan/ratelimit"
	"vulcan/upstreams"
)

// setup is a proxy in front of one recording upstream, in open mode.
func setup(t *testing.T, cfg Config) (*fakeAdmitter, *mailServer, string) {
	t.Helper()
	n := newFakeAdmitter(t)
	up := startMailServer(t, mailServerOpts{})
	n.addUpstream(t, "u1", up.addr)
	_, addr := startProxy(t, cfg, n)
	return n, up, addr
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestEHLOAdvertisesExtensions(t *testing.T) {
	_, _, addr := setup(t, Config{MaxSize: 1 << 20})
	c := dialRaw(t, addr)
	msg := c.cmd(250, "", "EHLO client.test")
	for _, ext := range []string{"SIZE 1048576", "PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN"} {
		if !strings.Contains(msg, "\n"+ext+"\n") && !strings.HasSuffix(msg, "\n"+ext) {
			t.Errorf("EHLO lacks %q:\n%s", ext, msg)
		}
	}
	if strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered without a certificate:\n%s", msg)
	}
}

func TestSTARTTLSThenAUTH(t *testing.T) {
	cert, key := certFiles(t)
	n := newFakeAdmitter(t)
	n.setAuth(true)
	n.addUser("alice", "s3cret")
	up := startMailServer(t, mailServerOpts{})
	n.addUpstream(t, "u1", up.addr)
	_, addr := startProxy(t, Config{TLSCert: cert, TLSKey: key}, n)

	c := dialRaw(t, addr)
	msg := c.cmd(250, "", "EHLO client.test")
	if !strings.Contains(msg, "STARTTLS") || strings.Contains(msg, "AUTH") {
		t.Fatalf("before TLS want STARTTLS and no AUTH:\n%s", msg)
	}
	// Passwords do not cross in clear when TLS is available.
	c.cmd(523, "5.7.10", "AUTH PLAIN %s", b64("\x00alice\x00s3cret"))

	cl, err := gosmtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if ok, mechs := cl.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Fatalf("after TLS, AUTH = %v %q", ok, mechs)
	}
	if err := cl.Auth(sasl.NewPlainClient("", "alice", "s3cret")); err != nil {
		t.Fatalf("auth over TLS: %v", err)
	}
	body, sum := message(1, 2000)
	if err := cl.SendMail("alice@test", []string{"bob@test"}, bytes.NewReader(body)); err != nil {
		t.Fatalf("send over TLS: %v", err)
	}
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v", got)
	}
}

func TestBadTLSConfig(t *testing.T) {
	n := newFakeAdmitter(t)
	if _, err := New(Config{TLSCert: "/nonexistent/cert.pem", TLSKey: "/nonexistent/key.pem"}, n); err == nil {
		t.Error("New accepted a missing certificate")
	}
	cert, _ := certFiles(t)
	if _, err := New(Config{TLSCert: cert}, n); err == nil {
		t.Error("New accepted a certificate without a key")
	}
}

func TestRelayKeepsEnvelopeAndBody(t *testing.T) {
	n, up, addr := setup(t, Config{})
	body, sum := message(7, 50_000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test> SIZE=%d", len(body))
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<carol@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The upstream's own final reply, queue id included, reaches the client.
	if msg := c.expect(250, "2.0.0"); msg != "2.0.0 Ok: queued as Q1" {
		t.Errorf("final reply %q, want the upstream's", msg)
	}
	c.cmd(221, "", "QUIT")

	got := up.messages()
	if len(got) != 1 {
		t.Fatalf("upstream got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.Sum != sum || m.Size != int64(len(body)) {
		t.Errorf("body changed: %d bytes, want %d", m.Size, len(body))
	}
	if m.From != "alice@test" || strings.Join(m.To, ",") != "bob@test,carol@test" {
		t.Errorf("envelope %q -> %v", m.From, m.To)
	}
	// Open mode: the token is the client's IP; SIZE is the length.
	calls := n.limitCalls()
	if len(calls) != 1 || calls[0].token != "127.0.0.1" || calls[0].facts.Protocol != "SMTP" ||
		calls[0].facts.Method != "MAIL" || calls[0].facts.Length != int64(len(body)) {
		t.Errorf("limit calls %+v", calls)
	}
	if n.event(eventMessage) != 1 {
		t.Errorf("message event not counted")
	}
	eventually(t, 2*time.Second, func() error {
		if f := n.inFlight("u1"); f != 0 {
			return fmt.Errorf("in flight %d after the message", f)
		}
		return nil
	})
}

func TestAuthRequired530(t *testing.T) {
	n, up, addr := setup(t, Config{})
	n.setAuth(true)
	c := greeted(t, addr)
	c.cmd(530, "5.7.0", "MAIL FROM:<alice@test>")
	c.cmd(502, "5.5.1", "RCPT TO:<bob@test>")
	if up.sessions.Load() != 0 {
		t.Error("upstream contacted without authentication")
	}
}

func TestAuthReplies(t *testing.T) {
	n, _, addr := setup(t, Config{})
	n.setAuth(true)
	n.addUser("alice", "s3cret")

	t.Run("plain bad credentials 535", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(535, "5.7.8", "AUTH PLAIN %s", b64("\x00alice\x00wrong"))
		c.cmd(530, "5.7.0", "MAIL FROM:<alice@test>")
	})
	t.Run("login bad credentials 535", func(t *testing.T) {
		c := greeted(t, addr)
		if got := c.cmd(334, "", "AUTH LOGIN"); got != b64("Username:") {
			t.Errorf("challenge %q", got)
		}
		c.cmd(334, "", "%s", b64("alice"))
		c.cmd(535, "5.7.8", "%s", b64("wrong"))
	})
	t.Run("plain good", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(235, "2.0.0", "AUTH PLAIN %s", b64("\x00alice\x00s3cret"))
		c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
		c.cmd(250, "", "RSET")
	})
	t.Run("login with initial response", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(334, "", "AUTH LOGIN %s", b64("alice"))
		c.cmd(235, "2.0.0", "%s", b64("s3cret"))
		c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	})
	t.Run("plain in two steps", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(334, "", "AUTH PLAIN")
		c.cmd(235, "2.0.0", "%s", b64("alice\x00alice\x00s3cret"))
	})
	t.Run("other identity refused", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(535, "5.7.8", "AUTH PLAIN %s", b64("bob\x00alice\x00s3cret"))
	})
	t.Run("malformed 501", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(501, "5.5.2", "AUTH PLAIN %s", b64("no separators"))
		c.cmd(454, "4.7.0", "AUTH PLAIN not-base64!")
		c.cmd(504, "5.7.4", "AUTH CRAM-MD5")
	})
	t.Run("auth server failure 454", func(t *testing.T) {
		n.setAuthErr(fmt.Errorf("%w: connection refused", node.ErrAuthUnavailable))
		defer n.setAuthErr(nil)
		c := greeted(t, addr)
		for range 4 { // not counted as failures: the client may retry
			c.cmd(454, "4.7.0", "AUTH PLAIN %s", b64("\x00alice\x00s3cret"))
		}
	})
	t.Run("too many failures 421", func(t *testing.T) {
		c := greeted(t, addr)
		c.cmd(535, "5.7.8", "AUTH PLAIN %s", b64("\x00alice\x00x"))
		c.cmd(535, "5.7.8", "AUTH PLAIN %s", b64("\x00alice\x00y"))
		c.cmd(421, "4.7.0", "AUTH PLAIN %s", b64("\x00alice\x00z"))
		if err := c.closed(); err != nil {
			t.Errorf("connection not closed: %v", err)
		}
	})

	for _, f := range n.authCalls() {
		if f.Protocol != "SMTP" || f.Method != "AUTH" || !f.HasCredentials || f.ClientIP != "127.0.0.1" {
			t.Errorf("auth facts %+v", f)
		}
	}
}

func TestPasswordsNeverLogged(t *testing.T) {
	n := newFakeAdmitter(t)
	n.setAuth(true)
	n.addUser("alice", "pw-visible-in-logs-1")
	up := startMailServer(t, mailServerOpts{})
	n.addUpstream(t, "u1", up.addr)
	log, w := testLogger(t)
	_, addr := startProxy(t, Config{Logger: log}, n)
	c := greeted(t, addr)
	c.cmd(535, "5.7.8", "AUTH PLAIN %s", b64("\x00alice\x00pw-visible-in-logs-2"))
	c.cmd(235, "2.0.0", "AUTH PLAIN %s", b64("\x00alice\x00pw-visible-in-logs-1"))
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(221, "", "QUIT")
	if err := c.closed(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.String(), "pw-visible") {
		t.Errorf("a password reached the log:\n%s", w.String())
	}
	if !strings.Contains(w.String(), "authentication failed") {
		t.Errorf("the failure was not logged")
	}
}

func TestRateLimited451(t *testing.T) {
	n, up, addr := setup(t, Config{})
	lim := &ratelimit.Limit{ID: "l1"}
	n.setLimit(func(string, node.Facts) error {
		return &node.RateLimitedError{Decision: node.Decision{Limit: lim, RetryAfter: 7}}
	})
	c := greeted(t, addr)
	msg := c.cmd(451, "4.7.1", "MAIL FROM:<alice@test>")
	if !strings.Contains(msg, "7 seconds") {
		t.Errorf("reply %q does not say when to retry", msg)
	}
	if up.sessions.Load() != 0 {
		t.Error("upstream contacted for a limited message")
	}
	if n.event(eventRateLimited) != 1 {
		t.Error("rate_limited not counted")
	}
	n.setLimit(func(string, node.Facts) error { return node.ErrStoreUnavailable })
	c.cmd(451, "4.3.0", "MAIL FROM:<alice@test>")
}

// The data_size limits are checked again with the real size when the
// message is larger than its SIZE said; the upstream never gets it.
func TestRealSizeRechecked(t *testing.T) {
	n, up, addr := setup(t, Config{})
	lim := &ratelimit.Limit{ID: "big", DataSize: 5000}
	n.setLimit(func(_ string, f node.Facts) error {
		if f.Length >= lim.DataSize {
			return &node.RateLimitedError{Decision: node.Decision{Limit: lim, RetryAfter: 1}}
		}
		return nil
	})
	body, _ := message(1, 10_000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test> SIZE=1000") // declares less than it sends
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(451, "4.7.1")
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		return nil
	})
	if len(up.messages()) != 0 {
		t.Fatal("upstream received the message over the limit")
	}
	calls := n.limitCalls()
	if len(calls) != 2 || calls[1].facts.Length != int64(len(body)) || calls[1].facts.Method != "MAIL" ||
		!calls[1].facts.Recheck || calls[1].facts.Declared != 1000 {
		t.Errorf("limit calls %+v, want a second one with the real size", calls)
	}

	// A message within its declared size is not checked twice.
	small, _ := message(2, 500)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test> SIZE=%d", len(small))
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w = c.tp.DotWriter()
	_, _ = w.Write(small)
	_ = w.Close()
	c.expect(250, "2.0.0")
	if got := len(n.limitCalls()); got != 3 {
		t.Errorf("%d limit calls, want 3", got)
	}
}

func TestRecipientRejectionPassedOn(t *testing.T) {
	_, up, addr := setup(t, Config{})
	up.rejectRcpt["nobody@test"] = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	up.rejectRcpt["later@test"] = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
	body, sum := message(1, 3000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	if msg := c.cmd(550, "5.1.1", "RCPT TO:<nobody@test>"); msg != "5.1.1 No such user here" {
		t.Errorf("reply text %q, want the upstream's", msg)
	}
	c.cmd(452, "4.2.2", "RCPT TO:<later@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(250, "2.0.0")
	got := up.messages()
	if len(got) != 1 || got[0].Sum != sum || strings.Join(got[0].To, ",") != "bob@test" {
		t.Fatalf("upstream got %+v", got)
	}
}

func TestUpstreamFinalReplyPassedOn(t *testing.T) {
	_, up, addr := setup(t, Config{})
	up.finalReply = &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "Content rejected"}
	body, _ := message(1, 1000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	if msg := c.expect(554, "5.6.0"); msg != "5.6.0 Content rejected" {
		t.Errorf("reply %q", msg)
	}
	// The session and the upstream connection go on.
	up.mu.Lock()
	up.finalReply = nil
	up.mu.Unlock()
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w = c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(250, "2.0.0")
	if up.sessions.Load() != 1 {
		t.Errorf("%d upstream sessions, want the connection reused", up.sessions.Load())
	}
}

func TestDownUpstreamIsSkipped(t *testing.T) {
	n := newFakeAdmitter(t)
	good := startMailServer(t, mailServerOpts{})
	// A port with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	n.addUpstream(t, "a-dead", dead)
	n.addUpstream(t, "b-good", good.addr)
	_, addr := startProxy(t, Config{DialTimeout: time.Second}, n)

	for i := range 4 {
		body, sum := message(i, 1000)
		if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := good.messages(); len(got) != i+1 || got[i].Sum != sum {
			t.Fatalf("message %d not on the good upstream", i)
		}
	}
	if h := n.health("a-dead"); h != upstreams.HealthDown {
		t.Errorf("dead upstream health %q, want down", h)
	}
	if n.event(eventUpstreamFailed) < 1 {
		t.Error("upstream failure not counted")
	}
}

func TestNoUpstreamOrService451(t *testing.T) {
	n := newFakeAdmitter(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	n.addUpstream(t, "dead", dead)
	_, addr := startProxy(t, Config{DialTimeout: time.Second}, n)
	c := greeted(t, addr)
	c.cmd(451, "4.4.1", "MAIL FROM:<alice@test>") // connection refused
	c.cmd(451, "4.4.1", "MAIL FROM:<alice@test>") // now marked down
	n.setService("missing")
	c.cmd(451, "4.3.5", "MAIL FROM:<alice@test>")
	if f := n.inFlight("dead"); f != 0 {
		t.Errorf("in flight %d after failures", f)
	}
}

func TestSizeLimit552(t *testing.T) {
	n, up, addr := setup(t, Config{MaxSize: 20_000})
	c := greeted(t, addr)
	// Declared too large: refused at MAIL.
	c.cmd(552, "5.3.4", "MAIL FROM:<alice@test> SIZE=20001")
	// Undeclared and too large: refused at the end of DATA, not delivered.
	body, _ := message(1, 50_000)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(552, "5.3.4")
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		return nil
	})
	// The session goes on.
	small, sum := message(2, 10_000)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w = c.tp.DotWriter()
	_, _ = w.Write(small)
	_ = w.Close()
	c.expect(250, "2.0.0")
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v", got)
	}
	if n.inFlight("u1") != 0 {
		t.Error("pick not released")
	}
}

// A client that stalls mid-DATA is timed out with 421; the upstream never
// gets the partial message and the proxy keeps serving.
func TestClientStallsMidDATA(t *testing.T) {
	n, up, addr := setup(t, Config{ReadTimeout: 300 * time.Millisecond})
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	// More than the proxy's copy buffer, so some reaches the upstream;
	// then a line that would be a command if the stall were misread.
	body, _ := message(1, 100_000)
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("MAIL FROM:<smuggled@test>\r\n"))
	_ = c.tp.W.Flush()
	eventually(t, 2*time.Second, func() error {
		if up.inData.Load() == 0 {
			return errors.New("upstream has seen nothing yet")
		}
		return nil
	})
	c.expect(421, "4.4.2")
	if err := c.closed(); err != nil {
		t.Fatalf("connection not closed: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		if n.inFlight("u1") != 0 {
			return errors.New("pick still held")
		}
		return nil
	})
	if len(up.messages()) != 0 {
		t.Fatal("upstream received a partial message")
	}
	if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
		t.Fatalf("proxy not serving after a stall: %v", err)
	}
}

func TestClientDisconnectsMidDATA(t *testing.T) {
	n, up, addr := setup(t, Config{})
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	body, _ := message(1, 100_000)
	w := c.tp.DotWriter()
	_, _ = w.Write(body[:60_000])
	_ = c.tp.W.Flush()
	eventually(t, 2*time.Second, func() error {
		if up.inData.Load() == 0 {
			return errors.New("upstream has seen nothing yet")
		}
		return nil
	})
	c.conn.Close()
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		if n.inFlight("u1") != 0 {
			return errors.New("pick still held")
		}
		return nil
	})
	if len(up.messages()) != 0 {
		t.Fatal("upstream received a partial message")
	}
	if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
		t.Fatalf("proxy not serving after a disconnect: %v", err)
	}
}

// A message line over go-smtp's limit ends the session; the upstream does
// not get the message.
func TestLongLineInDATA(t *testing.T) {
	n, up, addr := setup(t, Config{})
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	c.send("Subject: long")
	c.send("")
	c.send("%s", strings.Repeat("L", 3000))
	c.send(".")
	c.expect(500, "5.4.0")
	if err := c.closed(); err != nil {
		t.Fatalf("connection not closed: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 || n.inFlight("u1") != 0 {
			return errors.New("upstream transaction not aborted")
		}
		return nil
	})
	if len(up.messages()) != 0 {
		t.Fatal("message with a line too long delivered")
	}
}

func TestMalformedCommands(t *testing.T) {
	_, up, addr := setup(t, Config{})
	c := greeted(t, addr)
	c.cmd(500, "5.5.2", "FOOO bar")
	c.cmd(501, "5.5.2", "FOO bar")
	c.cmd(501, "5.5.2", "MAIL alice")
	c.cmd(502, "5.5.1", "RCPT TO:<bob@test>")
	c.cmd(502, "5.5.1", "DATA")
	c.cmd(501, "5.5.4", "MAIL FROM:<alice@test> SIZE=abc")
	c.cmd(500, "5.5.4", "MAIL FROM:<alice@test> BOGUS=1")

	// The server answers an over-long line and hangs up before it has read
	// all of it, so the kernel may reset the connection under the reply:
	// either the 500 arrives or the connection is reset, never a hang.
	c2 := greeted(t, addr)
	go func() { _, _ = c2.conn.Write([]byte(strings.Repeat("A", 5000) + "\r\n")) }()
	c2.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if code, msg, err := c2.read(); err == nil && (code != 500 || !strings.HasPrefix(msg, "5.4.0")) {
		t.Fatalf("over-long line: %d %q, want 500 5.4.0", code, msg)
	} else if err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("over-long line: %v, want a 500 reply or a reset", err)
	}

	c3 := dialRaw(t, addr)
	_, _ = c3.conn.Write([]byte("\x00\xff\xfe garbage\r\nHELO\r\n\r\n"))
	for range 3 {
		if _, _, err := c3.read(); err != nil {
			break
		}
	}
	c3.conn.Close()

	body, sum := message(1, 1000)
	if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
		t.Fatalf("proxy not serving after malformed input: %v", err)
	}
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v", got)
	}
}

func TestDrainedUpstreamGetsNoNewMessage(t *testing.T) {
	n := newFakeAdmitter(t)
	a := startMailServer(t, mailServerOpts{})
	b := startMailServer(t, mailServerOpts{})
	n.addUpstream(t, "a", a.addr)
	n.addUpstream(t, "b", b.addr)
	_, addr := startProxy(t, Config{}, n)

	// A message in progress on a holds it in flight until it ends.
	c := greeted(t, addr)
	var first string
	for {
		c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
		if n.inFlight("a") == 1 {
			first = "a"
			break
		}
		c.cmd(250, "", "RSET")
	}
	n.table.SetState("mail", first, upstreams.StateDraining)
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	if n.inFlight("a") != 1 {
		t.Fatal("message in flight not counted while draining")
	}
	body, _ := message(1, 1000)
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(250, "2.0.0")
	if f := n.inFlight("a"); f != 0 {
		t.Fatalf("in flight %d after the message", f)
	}
	if len(a.messages()) != 1 {
		t.Fatal("the message in flight was not finished on the drained upstream")
	}
	for i := range 10 {
		if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if len(a.messages()) != 1 || len(b.messages()) != 10 {
		t.Fatalf("drained upstream got %d messages, other %d", len(a.messages()), len(b.messages()))
	}
}

func TestSTARTTLSToUpstream(t *testing.T) {
	n := newFakeAdmitter(t)
	up := startMailServer(t, mailServerOpts{tls: true})
	n.addUpstream(t, "u1", up.addr)
	_, addr := startProxy(t, Config{}, n)
	body, sum := message(1, 5000)
	if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
		t.Fatal(err)
	}
	got := up.messages()
	if len(got) != 1 || got[0].Sum != sum || !got[0].TLS {
		t.Fatalf("upstream got %+v, want one message over TLS", got)
	}
}

func TestUpstreamConnectionReused(t *testing.T) {
	n, up, addr := setup(t, Config{IdleTimeout: time.Minute})
	for i := range 5 {
		body, _ := message(i, 1000)
		if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
			t.Fatal(err)
		}
	}
	if s := up.sessions.Load(); s != 1 {
		t.Errorf("%d upstream sessions for 5 sequential messages, want 1", s)
	}
	// A pooled connection dropped by the upstream is replaced quietly.
	_ = up.srv.Close()
	up2 := startMailServerAt(t, up.addr)
	body, sum := message(9, 1000)
	if err := sendMail(addr, "alice@test", []string{"bob@test"}, body); err != nil {
		t.Fatalf("after the upstream restarted: %v", err)
	}
	if got := up2.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("restarted upstream got %+v", got)
	}
	if h := n.health("u1"); h == upstreams.HealthDown {
		t.Error("a stale pooled connection marked the upstream down")
	}
}

// startMailServerAt starts a recording upstream on a given address.
func startMailServerAt(t *testing.T, addr string) *mailServer {
	t.Helper()
	var m *mailServer
	eventually(t, 5*time.Second, func() error {
		var err error
		m, err = listenMailServer(t, mailServerOpts{addr: addr})
		return err
	})
	return m
}

func TestUpstreamDiesMidDATA(t *testing.T) {
	n, up, addr := setup(t, Config{})
	up.dataHook = func(got int64) error {
		if got > 20_000 {
			_ = up.srv.Close()
		}
		return nil
	}
	body, _ := message(1, 200_000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(451, "4.4.2")
	if n.inFlight("u1") != 0 {
		t.Error("pick not released")
	}
	c.cmd(250, "", "NOOP")
}

func TestPipelinedCommands(t *testing.T) {
	_, up, addr := setup(t, Config{})
	body, sum := message(1, 3000)
	c := greeted(t, addr)
	_, _ = c.conn.Write([]byte("MAIL FROM:<alice@test>\r\nRCPT TO:<bob@test>\r\nRCPT TO:<carol@test>\r\nDATA\r\n"))
	c.expect(250, "2.0.0")
	c.expect(250, "2.0.0")
	c.expect(250, "2.0.0")
	c.expect(354, "")
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	c.expect(250, "2.0.0")
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum || len(got[0].To) != 2 {
		t.Fatalf("upstream got %+v", got)
	}
}

func TestBDAT(t *testing.T) {
	_, up, addr := setup(t, Config{})
	body, sum := message(1, 9000)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.send("BDAT 4000")
	_, _ = c.conn.Write(body[:4000])
	c.expect(250, "2.0.0")
	c.send("BDAT %d LAST", len(body)-4000)
	_, _ = c.conn.Write(body[4000:])
	c.expect(250, "2.0.0")
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v", got)
	}
	// RSET in the middle of BDAT aborts the upstream transaction.
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.send("BDAT 4000")
	_, _ = c.conn.Write(body[:4000])
	c.expect(250, "2.0.0")
	c.cmd(250, "", "RSET")
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		return nil
	})
	if len(up.messages()) != 1 {
		t.Fatal("partial BDAT message delivered")
	}
}

// Commands that go-smtp lets through in the middle of a BDAT transfer do
// not wait for the transfer, which waits for them.
func TestCommandsDuringBDAT(t *testing.T) {
	body, _ := message(1, 9000)
	startBDAT := func(t *testing.T, addr string) *rawClient {
		c := greeted(t, addr)
		c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
		c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
		c.send("BDAT 4000")
		_, _ = c.conn.Write(body[:4000])
		c.expect(250, "2.0.0")
		return c
	}
	t.Run("AUTH", func(t *testing.T) {
		n, up, addr := setup(t, Config{})
		c := startBDAT(t, addr)
		c.cmd(503, "5.5.1", "AUTH PLAIN %s", b64("\x00alice\x00pw"))
		c.cmd(250, "", "RSET")
		eventually(t, 2*time.Second, func() error {
			if up.aborted.Load() != 1 || n.inFlight("u1") != 0 {
				return errors.New("upstream transaction not aborted")
			}
			return nil
		})
	})
	t.Run("STARTTLS", func(t *testing.T) {
		cert, key := certFiles(t)
		n := newFakeAdmitter(t)
		up := startMailServer(t, mailServerOpts{})
		n.addUpstream(t, "u1", up.addr)
		_, addr := startProxy(t, Config{TLSCert: cert, TLSKey: key}, n)
		c := startBDAT(t, addr)
		c.cmd(220, "", "STARTTLS")
		tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS after BDAT: %v", err)
		}
		c.tp = textproto.NewConn(tc)
		c.cmd(250, "", "EHLO client.test")
		eventually(t, 2*time.Second, func() error {
			if up.aborted.Load() != 1 || n.inFlight("u1") != 0 {
				return errors.New("upstream transaction not aborted")
			}
			return nil
		})
		// DATA, not BDAT: go-smtp itself races when a new BDAT follows
		// an abandoned one (its result channel is replaced under the
		// old transfer's goroutine).
		c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
		c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
		c.cmd(354, "", "DATA")
		w := c.tp.DotWriter()
		_, _ = w.Write(body)
		_ = w.Close()
		c.expect(250, "2.0.0")
		if got := up.messages(); len(got) != 1 {
			t.Fatalf("upstream got %d messages, want 1", len(got))
		}
	})
}

// DATA is relayed while it arrives: the upstream sees the start of a
// message before the client has sent the rest.
func TestDATAIsStreamed(t *testing.T) {
	_, up, addr := setup(t, Config{})
	body, sum := message(1, 4<<20)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	half := len(body) / 2
	for body[half-1] != '\n' {
		half++
	}
	w := c.tp.DotWriter()
	_, _ = w.Write(body[:half])
	_ = c.tp.W.Flush()
	eventually(t, 5*time.Second, func() error {
		// All but what sits in the proxy's and the sockets' buffers.
		if got := up.inData.Load(); got < int64(half)-(1<<20) {
			return fmt.Errorf("upstream has %d bytes of %d sent", got, half)
		}
		return nil
	})
	_, _ = w.Write(body[half:])
	_ = w.Close()
	c.expect(250, "2.0.0")
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatal("streamed message changed")
	}
}

func TestOpenModeWarnsOffLoopback(t *testing.T) {
	n := newFakeAdmitter(t)
	log, w := testLogger(t)
	s, err := New(Config{Logger: log}, n)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Serve(&addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 25}})
	}()
	eventually(t, 2*time.Second, func() error {
		if !strings.Contains(w.String(), "smtp proxy is open") {
			return errors.New("no warning")
		}
		return nil
	})
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// On loopback, or with an authorization server, no warning.
	log2, w2 := testLogger(t)
	_, _ = startProxy(t, Config{Logger: log2}, n)
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(w2.String(), "smtp proxy is open") {
		t.Error("warned on loopback")
	}
}

// addrListener reports another address than the one it listens on.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l *addrListener) Addr() net.Addr { return l.addr }

func TestReplyTextOfUpstreamSuccessKept(t *testing.T) {
	se := upstreamSuccess(250, "2.0.0 Ok: queued as ABC\n2.0.0 second line")
	if se.Code != 250 || se.EnhancedCode != (gosmtp.EnhancedCode{2, 0, 0}) || se.Message != "Ok: queued as ABC\nsecond line" {
		t.Errorf("got %+v", se)
	}
	se = upstreamSuccess(250, "Ok")
	if se.EnhancedCode != gosmtp.EnhancedCodeNotSet || se.Message != "Ok" {
		t.Errorf("got %+v", se)
	}
}

func TestReplyMapping(t *testing.T) {
	lim := &ratelimit.Limit{ID: "x"}
	cases := []struct {
		err  error
		code int
		enh  gosmtp.EnhancedCode
	}{
		{errAuthRequired, 530, gosmtp.EnhancedCode{5, 7, 0}},
		{node.ErrNoCredentials, 530, gosmtp.EnhancedCode{5, 7, 0}},
		{&node.AuthDeniedError{Status: 401}, 535, gosmtp.EnhancedCode{5, 7, 8}},
		{fmt.Errorf("%w: boom", node.ErrAuthUnavailable), 454, gosmtp.EnhancedCode{4, 7, 0}},
		{&node.RateLimitedError{Decision: node.Decision{Limit: lim}}, 451, gosmtp.EnhancedCode{4, 7, 1}},
		{node.ErrStoreUnavailable, 451, gosmtp.EnhancedCode{4, 3, 0}},
		{node.ErrNoService, 451, gosmtp.EnhancedCode{4, 3, 5}},
		{node.ErrNoUpstream, 451, gosmtp.EnhancedCode{4, 4, 1}},
		{&upstreamLostError{err: errors.New("eof")}, 451, gosmtp.EnhancedCode{4, 4, 2}},
		{errClientTimeout, 421, gosmtp.EnhancedCode{4, 4, 2}},
		{gosmtp.ErrDataTooLarge, 552, gosmtp.EnhancedCode{5, 3, 4}},
		{errors.New("anything else"), 451, gosmtp.EnhancedCode{4, 3, 0}},
	}
	for _, c := range cases {
		var se *gosmtp.SMTPError
		if !errors.As(reply(c.err), &se) || se.Code != c.code || se.EnhancedCode != c.enh {
			t.Errorf("reply(%v) = %v, want %d %v", c.err, reply(c.err), c.code, c.enh)
		}
	}
	if reply(nil) != nil {
		t.Error("reply(nil) is not nil")
	}
}
