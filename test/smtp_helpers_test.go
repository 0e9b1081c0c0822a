package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// mtaMessage is a message as an upstream MTA accepted it.
type mtaMessage struct {
	From string
	To   []string
	Sum  [32]byte
	Size int64
}

// key identifies a message by its envelope and content.
func (m mtaMessage) key() string {
	return fmt.Sprintf("%s>%s#%x", m.From, strings.Join(m.To, ","), m.Sum)
}

// mta is a real SMTP upstream (go-smtp) on a fresh 127.0.x.y address. It
// records the messages it accepts with their envelope and sha256, counts
// the transactions that ended without the final dot, and can refuse
// chosen recipients. Safe for concurrent use.
type mta struct {
	t    testing.TB
	name string
	addr string
	srv  *gosmtp.Server

	mu     sync.Mutex
	msgs   []mtaMessage
	refuse map[string]*gosmtp.SMTPError

	mails   atomic.Int64 // MAIL commands accepted
	aborted atomic.Int64 // DATA cut off before the final dot
	inData  atomic.Int64 // bytes of the DATA in progress
}

// startMTA serves on a fresh loopback address until the test ends.
func startMTA(t testing.TB, name string) *mta {
	t.Helper()
	ln, err := net.Listen("tcp", nextIP()+":0")
	if err != nil {
		t.Fatalf("mta %s: %v", name, err)
	}
	m := &mta{t: t, name: name, addr: ln.Addr().String(), refuse: map[string]*gosmtp.SMTPError{}}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) {
		return &mtaSession{m: m}, nil
	}))
	srv.Domain = name + ".test"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 64 << 20
	srv.ErrorLog = mtaQuiet{}
	m.srv = srv
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m
}

type mtaQuiet struct{}

func (mtaQuiet) Printf(string, ...any) {}
func (mtaQuiet) Println(...any)        {}

// messages returns a copy of what the MTA accepted.
func (m *mta) messages() []mtaMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mtaMessage(nil), m.msgs...)
}

func (m *mta) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.msgs)
}

// refuseRcpt makes RCPT TO:<addr> answer e.
func (m *mta) refuseRcpt(addr string, e *gosmtp.SMTPError) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuse[addr] = e
}

type mtaSession struct {
	m    *mta
	from string
	to   []string
}

func (s *mtaSession) Mail(from string, _ *gosmtp.MailOptions) error {
	s.m.mails.Add(1)
	s.from, s.to = from, nil
	return nil
}

func (s *mtaSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.m.mu.Lock()
	e := s.m.refuse[to]
	s.m.mu.Unlock()
	if e != nil {
		return e
	}
	s.to = append(s.to, to)
	return nil
}

func (s *mtaSession) Data(r io.Reader) error {
	h := sha256.New()
	s.m.inData.Store(0)
	buf := make([]byte, 8192)
	var n int64
	for {
		k, err := r.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		s.m.inData.Store(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			s.m.aborted.Add(1)
			return err
		}
	}
	msg := mtaMessage{From: s.from, To: append([]string(nil), s.to...), Size: n}
	copy(msg.Sum[:], h.Sum(nil))
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, msg)
	s.m.mu.Unlock()
	return nil
}

func (s *mtaSession) Reset()        { s.from, s.to = "", nil }
func (s *mtaSession) Logout() error { return nil }

// smtpService registers the smtp service "mail" with the given MTAs on a.
func smtpService(t testing.TB, a *agent, ups ...*mta) {
	t.Helper()
	a.mustAPI("PUT", "/v1/services/mail", map[string]any{"name": "mail", "protocol": "smtp"}, nil)
	for _, m := range ups {
		a.mustAPI("PUT", "/v1/services/mail/upstreams/"+m.name, map[string]any{"addr": m.addr}, nil)
	}
}

// smtpMessage builds a CRLF message of about size bytes, with lines that
// start with dots, and returns it with its sha256.
func smtpMessage(tag string, size int) ([]byte, [32]byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@test\r\nTo: rcpt@test\r\nSubject: %s\r\n\r\n", tag)
	for i := 0; b.Len() < size; i++ {
		switch i % 5 {
		case 2:
			fmt.Fprintf(&b, ".dot-stuffed line %d of %s\r\n", i, tag)
		case 4:
			b.WriteString(".\r\n")
		default:
			fmt.Fprintf(&b, "%s line %d %s\r\n", tag, i, strings.Repeat("z", 50))
		}
	}
	return b.Bytes(), sha256.Sum256(b.Bytes())
}

// smtpClient is a go-smtp client logged in to a node (AUTH PLAIN when user
// is set).
func smtpClient(t testing.TB, addr, user, pass string) *gosmtp.Client {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial smtp %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if user != "" {
		if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
			t.Fatalf("AUTH %s: %v", user, err)
		}
	}
	return c
}

// smtpRaw speaks SMTP line by line, to see each reply exactly.
type smtpRaw struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

// dialSMTP connects, reads the greeting and says EHLO.
func dialSMTP(t testing.TB, addr string) *smtpRaw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial smtp %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &smtpRaw{t: t, conn: conn, tp: textproto.NewConn(conn)}
	c.expect(220, "")
	c.cmd(250, "", "EHLO client.test")
	return c
}

// expect reads a reply and checks its code and enhanced code (if enh is
// not empty); it returns the text.
func (c *smtpRaw) expect(code int, enh string) string {
	c.t.Helper()
	got, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("want %d %s: %v", code, enh, err)
	}
	if got != code || (enh != "" && !strings.HasPrefix(msg, enh+" ")) {
		c.t.Fatalf("want %d %s, got %d %s", code, enh, got, msg)
	}
	return msg
}

// cmd sends one line and expects a reply.
func (c *smtpRaw) cmd(code int, enh, format string, args ...any) string {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	return c.expect(code, enh)
}

// auth logs in with AUTH PLAIN and expects code.
func (c *smtpRaw) auth(user, pass string, code int, enh string) {
	c.t.Helper()
	ir := "\x00" + user + "\x00" + pass
	c.cmd(code, enh, "AUTH PLAIN %s", b64std(ir))
}

// data sends DATA, the message (dot-stuffed) and its end, and expects code.
func (c *smtpRaw) data(body []byte, code int, enh string) string {
	c.t.Helper()
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	if _, err := w.Write(body); err != nil {
		c.t.Fatalf("write message: %v", err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatalf("end message: %v", err)
	}
	return c.expect(code, enh)
}

// partial sends DATA and the start of body, without its end.
func (c *smtpRaw) partial(body []byte) {
	c.t.Helper()
	c.cmd(354, "", "DATA")
	w := c.tp.DotWriter()
	if _, err := w.Write(body); err != nil {
		c.t.Fatalf("write message: %v", err)
	}
	if err := c.tp.W.Flush(); err != nil {
		c.t.Fatalf("flush: %v", err)
	}
}

// closedByPeer waits until the node closes the connection.
func (c *smtpRaw) closedByPeer() error {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := c.tp.ReadLine()
		if err == io.EOF || errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "reset")) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", nextIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func b64std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func saslPlain(user, pass string) sasl.Client { return sasl.NewPlainClient("", user, pass) }

// smtpCertFiles writes a throwaway self-signed certificate and key for
// loopback into a temporary directory.
func smtpCertFiles(t testing.TB) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vulcan.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "smtp.crt"), filepath.Join(dir, "smtp.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// smtpTLSClientConfig trusts any certificate: the test's is self-signed.
func smtpTLSClientConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test certificate
}

// smtpSendSized sends a message on c declaring its size at MAIL, as most
// MTAs do when the server offers SIZE.
func smtpSendSized(c *gosmtp.Client, from string, to []string, body []byte) error {
	if err := c.Mail(from, &gosmtp.MailOptions{Size: int64(len(body))}); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Close()
}
