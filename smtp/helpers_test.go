package smtp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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

	gosmtp "github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"vulcan/node"
	"vulcan/upstreams"
)

// testWriter sends log lines to t.Log and keeps them for assertions.
type testWriter struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.b.Write(p)
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *testWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func testLogger(t testing.TB) (hclog.Logger, *testWriter) {
	t.Helper()
	w := &testWriter{t: t}
	return hclog.New(&hclog.LoggerOptions{Name: "smtp", Output: w, Level: hclog.Debug}), w
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeAdmitter stands for the node: authorization and limits are scripted,
// routing and picks go through a real upstreams.Table so that handles,
// health and drains behave as in a node. Safe for concurrent use.
type fakeAdmitter struct {
	table   *upstreams.Table
	service string // the smtp service sessions go to

	mu       sync.Mutex
	auth     bool              // an authorization server is "configured"
	users    map[string]string // user -> password
	authErr  error             // when set, every Authenticate fails with it
	authCall []node.Facts
	limit    func(token string, f node.Facts) error
	limCall  []limitCall
	events   map[string]int
}

type limitCall struct {
	token string
	facts node.Facts
}

func newFakeAdmitter(t testing.TB) *fakeAdmitter {
	t.Helper()
	log, _ := testLogger(t)
	f := &fakeAdmitter{
		table:   upstreams.NewTable(upstreams.Config{Logger: log.Named("upstreams")}),
		service: "mail",
		users:   map[string]string{},
		events:  map[string]int{},
	}
	svc := upstreams.Service{Name: "mail", Protocol: upstreams.ProtoSMTP}
	if err := svc.Normalize(); err != nil {
		t.Fatal(err)
	}
	f.table.PutService(svc)
	return f
}

// addUpstream registers addr as upstream id of the service.
func (f *fakeAdmitter) addUpstream(t testing.TB, id, addr string) {
	t.Helper()
	u := upstreams.Upstream{Service: "mail", ID: id, Addr: addr}
	if err := u.Normalize(); err != nil {
		t.Fatal(err)
	}
	f.table.PutUpstream(u)
}

func (f *fakeAdmitter) setAuth(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = on
}

func (f *fakeAdmitter) setAuthErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authErr = err
}

func (f *fakeAdmitter) addUser(user, pass string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[user] = pass
}

func (f *fakeAdmitter) setLimit(l func(token string, fa node.Facts) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limit = l
}

func (f *fakeAdmitter) setService(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.service = name
}

func (f *fakeAdmitter) serviceName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.service
}

func (f *fakeAdmitter) AuthEnabled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth
}

func (f *fakeAdmitter) Authenticate(_ context.Context, fa node.Facts) (node.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authCall = append(f.authCall, fa)
	if !f.auth {
		return node.Identity{Token: fa.ClientIP}, nil
	}
	if f.authErr != nil {
		return node.Identity{}, f.authErr
	}
	if !fa.HasCredentials {
		return node.Identity{}, node.ErrNoCredentials
	}
	if p, ok := f.users[fa.Username]; !ok || p != fa.Password {
		return node.Identity{}, &node.AuthDeniedError{Status: 403, Body: []byte("denied")}
	}
	return node.Identity{Token: "tok-" + fa.Username}, nil
}

func (f *fakeAdmitter) RouteSMTP(id node.Identity) (node.Route, error) {
	name := id.Service
	if name == "" {
		name = f.serviceName()
	}
	svc, ok := f.table.Service(name)
	if !ok {
		return node.Route{}, fmt.Errorf("%w: %s", node.ErrNoService, name)
	}
	return node.Route{Service: &svc}, nil
}

func (f *fakeAdmitter) CheckLimits(token string, fa node.Facts) (node.Decision, error) {
	f.mu.Lock()
	f.limCall = append(f.limCall, limitCall{token, fa})
	limit := f.limit
	f.mu.Unlock()
	if limit != nil {
		if err := limit(token, fa); err != nil {
			return node.Decision{}, err
		}
	}
	return node.Decision{Allowed: true}, nil
}

func (f *fakeAdmitter) Pick(r node.Route, exclude *node.Handle) (*node.Handle, error) {
	var h *node.Handle
	var err error
	if r.Service != nil {
		h, err = f.table.Pick(r.Service.Name, exclude)
	} else {
		h, err = f.table.PickAddrs(r.Upstreams, exclude)
	}
	switch {
	case errors.Is(err, upstreams.ErrNoService):
		return nil, fmt.Errorf("%w: %v", node.ErrNoService, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", node.ErrNoUpstream, err)
	}
	return h, nil
}

func (f *fakeAdmitter) ObserveSMTP(event string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events[event]++
}

func (f *fakeAdmitter) event(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events[name]
}

func (f *fakeAdmitter) limitCalls() []limitCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]limitCall(nil), f.limCall...)
}

func (f *fakeAdmitter) authCalls() []node.Facts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]node.Facts(nil), f.authCall...)
}

// inFlight is the number of picks held on upstream id.
func (f *fakeAdmitter) inFlight(id string) int64 {
	return f.table.InFlight()[upstreams.Key("mail", id)]
}

// health is the observed health of upstream id.
func (f *fakeAdmitter) health(id string) upstreams.Health {
	for _, sv := range f.table.Snapshot() {
		for _, u := range sv.Upstreams {
			if u.ID == id {
				return u.Health
			}
		}
	}
	return ""
}

// startProxy starts the proxy on 127.0.0.1:0 and returns its address.
func startProxy(t testing.TB, cfg Config, n Admitter) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger(t)
	}
	if cfg.Domain == "" {
		cfg.Domain = "proxy.test"
	}
	s, err := New(cfg, n)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// received is a message as an upstream got it.
type received struct {
	From string
	To   []string
	Sum  [32]byte
	Size int64
	TLS  bool
}

// mailServer is a real SMTP upstream on loopback that records the messages
// it accepts, with their envelope and sha256. Safe for concurrent use.
type mailServer struct {
	t    testing.TB
	addr string
	srv  *gosmtp.Server

	mu         sync.Mutex
	msgs       []received
	rejectRcpt map[string]*gosmtp.SMTPError
	finalReply *gosmtp.SMTPError // returned at the end of DATA when set
	queueID    atomic.Int64

	sessions atomic.Int64 // sessions opened (EHLO)
	aborted  atomic.Int64 // DATA that ended without the final dot
	inData   atomic.Int64 // bytes of the DATA in progress
	// dataHook, when set, is called with each chunk read in DATA.
	dataHook func(n int64) error
}

type mailServerOpts struct {
	tls  bool   // offer STARTTLS
	addr string // default 127.0.0.1:0
}

func startMailServer(t testing.TB, o mailServerOpts) *mailServer {
	t.Helper()
	m, err := listenMailServer(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func listenMailServer(t testing.TB, o mailServerOpts) (*mailServer, error) {
	t.Helper()
	m := &mailServer{t: t, rejectRcpt: map[string]*gosmtp.SMTPError{}}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		m.sessions.Add(1)
		return &mailSession{m: m, conn: c}, nil
	}))
	srv.Domain = "upstream.test"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 64 << 20
	srv.AllowInsecureAuth = true
	srv.ErrorLog = nopLogger{}
	if o.tls {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, err
	}
	m.addr = ln.Addr().String()
	m.srv = srv
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m, nil
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

func (m *mailServer) messages() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.msgs...)
}

type mailSession struct {
	m    *mailServer
	conn *gosmtp.Conn
	from string
	to   []string
}

func (s *mailSession) Mail(from string, _ *gosmtp.MailOptions) error {
	s.from, s.to = from, nil
	return nil
}

func (s *mailSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.m.mu.Lock()
	e := s.m.rejectRcpt[to]
	s.m.mu.Unlock()
	if e != nil {
		return e
	}
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	h := sha256.New()
	s.m.inData.Store(0)
	buf := make([]byte, 4096)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			s.m.inData.Store(n)
			if s.m.dataHook != nil {
				if err := s.m.dataHook(n); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			s.m.aborted.Add(1)
			return err
		}
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.finalReply != nil {
		return s.m.finalReply
	}
	_, isTLS := s.conn.TLSConnectionState()
	rec := received{From: s.from, To: append([]string(nil), s.to...), Size: n, TLS: isTLS}
	copy(rec.Sum[:], h.Sum(nil))
	s.m.msgs = append(s.m.msgs, rec)
	id := s.m.queueID.Add(1)
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("Ok: queued as Q%d", id)}
}

func (s *mailSession) Reset()        { s.from, s.to = "", nil }
func (s *mailSession) Logout() error { return nil }

// selfSigned makes a throwaway certificate for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := selfSignedPEM(t)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func selfSignedPEM(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// certFiles writes a self-signed pair into a temporary directory.
func certFiles(t testing.TB) (cert, key string) {
	t.Helper()
	c, k := selfSignedPEM(t)
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// rawClient speaks SMTP line by line, to see every reply exactly.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

// dialRaw connects and reads the greeting.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	c.expect(220, "")
	return c
}

// greeted connects and says EHLO.
func greeted(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.cmd(250, "", "EHLO client.test")
	return c
}

// send writes one line.
func (c *rawClient) send(format string, args ...any) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send %q: %v", fmt.Sprintf(format, args...), err)
	}
}

// read reads one reply.
func (c *rawClient) read() (int, string, error) {
	code, msg, err := c.tp.ReadResponse(0)
	return code, msg, err
}

// expect reads a reply and checks its code and, when enh is not empty, its
// enhanced code; it returns the text.
func (c *rawClient) expect(code int, enh string) string {
	c.t.Helper()
	got, msg, err := c.read()
	if err != nil {
		c.t.Fatalf("want %d %s, read failed: %v", code, enh, err)
	}
	if got != code || (enh != "" && !strings.HasPrefix(msg, enh+" ")) {
		c.t.Fatalf("want %d %s, got %d %s", code, enh, got, msg)
	}
	return msg
}

// cmd sends a line and expects a reply.
func (c *rawClient) cmd(code int, enh, format string, args ...any) string {
	c.t.Helper()
	c.send(format, args...)
	return c.expect(code, enh)
}

// closed reports whether the server has closed the connection (after
// reading whatever it sent before).
func (c *rawClient) closed() error {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, err := c.tp.ReadLine()
		if err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// message builds a CRLF message of about size bytes, with lines that
// start with dots to exercise dot-stuffing, and its sha256.
func message(seq, size int) ([]byte, [32]byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: a@test\r\nTo: b@test\r\nSubject: message %d\r\n\r\n", seq)
	line := 0
	for b.Len() < size {
		switch line % 7 {
		case 3:
			fmt.Fprintf(&b, ".leading dot %d\r\n", line)
		case 5:
			b.WriteString(".\r\n..\r\n")
		default:
			fmt.Fprintf(&b, "line %d of message %d: %s\r\n", line, seq, strings.Repeat("x", 60))
		}
		line++
	}
	return b.Bytes(), sha256.Sum256(b.Bytes())
}

// sendMail sends one message through addr with go-smtp's client.
func sendMail(addr, from string, to []string, body []byte) error {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail(from, to, bytes.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}
