package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
)

// pokeInterval is how often Shutdown looks for sessions that have become
// idle and closes them.
const pokeInterval = 50 * time.Millisecond

// copyBufferSize is the buffer that message data crosses on its way to the
// upstream: the most of a message held in memory per session.
const copyBufferSize = 32 << 10

// Server is the SMTP proxy. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	n      Admitter
	log    hclog.Logger
	srv    *gosmtp.Server
	dialer *dialer
	pool   *pool
	bufs   sync.Pool

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	closing bool
	// stop ends the pool's janitor, started by the first Serve.
	stop     chan struct{}
	janitor  sync.WaitGroup
	started  bool
	shutOnce sync.Once
}

// New returns a server relaying to the upstreams that n picks. It fails
// when the TLS certificate cannot be loaded.
func New(cfg Config, n Admitter) (*Server, error) {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:   cfg,
		n:     n,
		log:   cfg.Logger,
		conns: map[*trackedConn]struct{}{},
		stop:  make(chan struct{}),
		pool:  newPool(cfg.MaxIdlePerUpstream, cfg.IdleTimeout, cfg.MaxMessagesPerConn),
	}
	s.bufs.New = func() any { b := make([]byte, copyBufferSize); return &b }

	upTLS := cfg.UpstreamTLS
	if upTLS == nil {
		// Opportunistic, as between MTAs: upstreams commonly have
		// self-signed certificates or none that match their address.
		upTLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // opportunistic TLS, see Config.UpstreamTLS
	}
	s.dialer = &dialer{domain: cfg.Domain, dial: cfg.DialTimeout, read: cfg.ReadTimeout, write: cfg.WriteTimeout, tlsConfig: upTLS}

	srv := gosmtp.NewServer(gosmtp.BackendFunc(s.newSession))
	srv.Addr = cfg.Addr
	srv.Domain = cfg.Domain
	srv.MaxMessageBytes = cfg.MaxSize
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.ErrorLog = s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("smtp tls certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		return nil, errors.New("smtp tls: both a certificate and a key are needed")
	default:
		// Without TLS, AUTH over plain text is the only AUTH there is.
		srv.AllowInsecureAuth = true
	}
	s.srv = srv
	return s, nil
}

// ListenAndServe listens on Config.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp listen %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ln)
}

// Serve accepts sessions on ln until Shutdown; it then returns nil. ln is
// closed on return.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return gosmtp.ErrServerClosed
	}
	if !s.started {
		s.started = true
		s.janitor.Add(1)
		go s.reapIdle()
	}
	s.mu.Unlock()
	if !s.n.AuthEnabled() && !isLoopback(ln.Addr()) {
		s.log.Warn("smtp proxy is open: no authorization server is configured and the listener is not on loopback; anyone who reaches it can relay mail",
			"addr", ln.Addr().String())
	}
	if err := s.srv.Serve(&trackingListener{Listener: ln, srv: s}); err != nil {
		return fmt.Errorf("smtp serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting sessions, closes the idle ones (those not in a
// mail transaction get 421) and waits for the others to finish their
// message. When ctx ends first, the remaining sessions are closed, their
// messages aborted, and ctx's error returned. Idle upstream connections are
// closed last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	tick := time.NewTicker(pokeInterval)
	defer tick.Stop()
	s.pokeIdle()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			s.pokeIdle()
		}
	}
	if err != nil {
		s.closeAll()
	}
	s.shutOnce.Do(func() {
		close(s.stop)
		s.janitor.Wait()
		s.pool.close()
	})
	if errors.Is(err, gosmtp.ErrServerClosed) {
		return nil
	}
	return err
}

// reapIdle closes idle upstream connections past their time.
func (s *Server) reapIdle() {
	defer s.janitor.Done()
	t := time.NewTicker(max(s.cfg.IdleTimeout/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.pool.reap(now)
		}
	}
}

func (s *Server) track(c *trackedConn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(c *trackedConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) pokeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.pokeIfIdle()
	}
}

// closeAll drops every client connection; their goroutines then end the
// sessions and abort the messages in flight.
func (s *Server) closeAll() {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

func isLoopback(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
