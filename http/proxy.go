// Package http is the HTTP front end of a node: it turns a request into a
// node admission (authorize, route, rate-limit, pick an upstream) and
// proxies it with httputil.ReverseProxy, retrying once on another upstream
// when that is safe. Upstream requests go through a purpose-built HTTP/1.1
// transport with a keep-alive pool per upstream (transport.go); upgrades
// and the unusual go through net/http's Transport.
package http

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/node"
)

// Admitter is what the front end needs of a node. Implementations are safe
// for concurrent use.
type Admitter interface {
	AdmitHTTP(ctx context.Context, f node.Facts) (node.Admission, error)
	Pick(r node.Route, exclude *node.Handle) (*node.Handle, error)
	ObserveHTTP(status int)
}

// Config tunes the front end; zero values take the defaults below.
type Config struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections (default 120s).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps request headers; larger get 431 (default 64 KiB).
	MaxHeaderBytes int
	// DialTimeout bounds connecting to an upstream (default 5s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds waiting for an upstream's response
	// headers after the request was sent (default 60s); past it, 504.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerUpstream sizes the keep-alive pool to each upstream
	// (default 512).
	MaxIdleConnsPerUpstream int
	Logger                  hclog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	def(&c.DialTimeout, 5*time.Second)
	def(&c.ResponseHeaderTimeout, 60*time.Second)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxIdleConnsPerUpstream == 0 {
		c.MaxIdleConnsPerUpstream = 512
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Upstream connection limits that Config does not expose (net/http's
// Transport defaults).
const (
	idleConnTimeout        = 90 * time.Second
	maxResponseHeaderBytes = 10 << 20
)

// Server is the HTTP proxy.
type Server struct {
	cfg      Config
	node     Admitter
	log      hclog.Logger
	proxy    *httputil.ReverseProxy
	upstream *upstreamTransport
	srv      *http.Server
}

// New builds the proxy for n.
func New(cfg Config, n Admitter) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, node: n, log: cfg.Logger}
	dial := (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	// The general transport carries what the upstream transport leaves to
	// it: upgrades (WebSocket), Expect: 100-continue.
	general := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerUpstream,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       connBufferSize,
		ReadBufferSize:        connBufferSize,
	}
	s.upstream = &upstreamTransport{
		dial:                  dial,
		fallback:              general,
		responseHeaderTimeout: cfg.ResponseHeaderTimeout,
		maxHeaderBytes:        maxResponseHeaderBytes,
		pool:                  newConnPool(cfg.MaxIdleConnsPerUpstream, idleConnTimeout),
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    &retryTransport{next: s.upstream, node: n, log: s.log},
		BufferPool:   newBufferPool(),
		ErrorHandler: s.proxyError,
		ErrorLog:     s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight, up to ctx;
// then it closes the idle connections to upstreams.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.upstream.CloseIdleConnections()
	return err
}

// proxyState travels in the request context from ServeHTTP to the
// transport: the route to pick from and the upstream currently chosen. It
// is that context itself, the request's with the state as one more value,
// and it holds the request's status recorder: one allocation for the three.
type proxyState struct {
	context.Context
	route    node.Route
	handle   *node.Handle
	passAuth bool
	retry    bool
	rec      statusRecorder
}

type stateKey struct{}

// Value returns the state for stateKey, and the request context's values
// otherwise.
func (st *proxyState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return st
	}
	return st.Context.Value(key)
}

// ServeHTTP admits and proxies one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := facts(r)
	adm, err := s.node.AdmitHTTP(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h, err := s.node.Pick(adm.Route, nil)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st := &proxyState{Context: r.Context(), route: adm.Route, handle: h, retry: true}
	if adm.Route.Service != nil {
		st.passAuth = adm.Route.Service.PassAuth
		st.retry = adm.Route.Service.RetryEnabled()
	}
	defer func() { st.handle.Release() }()
	if d := adm.Decision; d.Limit != nil {
		hd := w.Header()
		hd["X-Ratelimit-Limit"] = []string{strconv.FormatInt(d.Limit.Threshold, 10)}
		hd["X-Ratelimit-Remaining"] = []string{strconv.FormatInt(d.Remaining, 10)}
		hd["X-Ratelimit-Reset"] = []string{strconv.Itoa(d.Reset)}
	}
	if r.ContentLength != 0 {
		// Let an upstream answer while the client is still sending (Go's
		// HTTP/1 server would otherwise wait for the whole body first).
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	st.rec.ResponseWriter = w
	s.proxy.ServeHTTP(&st.rec, r.WithContext(st))
	s.node.ObserveHTTP(st.rec.status())
}

func facts(r *http.Request) node.Facts {
	f := node.Facts{
		Protocol: node.ProtoHTTP,
		Method:   r.Method,
		URI:      r.RequestURI,
		Host:     r.Host,
		Path:     r.URL.Path,
		Length:   max(r.ContentLength, 0),
		ClientIP: clientIP(r.RemoteAddr),
	}
	f.Username, f.Password, f.HasCredentials = r.BasicAuth()
	return f
}

func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// rewrite points the outbound request at the picked upstream. The client's
// Host is kept, as HAProxy does, so upstreams can serve virtual hosts.
func rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(stateKey{}).(*proxyState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.handle.Addr()
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	if !st.passAuth {
		pr.Out.Header.Del("Authorization")
	}
}

// retryTransport sends the request to the picked upstream and, when the
// connection fails in a way that proves the request was not processed,
// marks the upstream down and tries once more on another.
type retryTransport struct {
	next http.RoundTripper
	node Admitter
	log  hclog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(stateKey{}).(*proxyState)
	var body *readTracker
	if req.Body != nil && req.Body != http.NoBody {
		body = &readTracker{ReadCloser: req.Body}
		req.Body = body
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		st.handle.Succeeded()
		return resp, nil
	}
	if !isConnFailure(err) || req.Context().Err() != nil {
		return nil, err
	}
	st.handle.Failed(err)
	t.log.Debug("upstream connection failed", "upstream", st.handle.Addr(), "error", err)
	if !st.retry || !safeToRetry(req, body, err) {
		return nil, err
	}
	next, perr := t.node.Pick(st.route, st.handle)
	if perr != nil || next.Addr() == st.handle.Addr() {
		if perr == nil {
			next.Release()
		}
		return nil, err
	}
	st.handle.Release()
	st.handle = next
	req.URL.Host = next.Addr()
	resp, err = t.next.RoundTrip(req)
	if err != nil {
		if isConnFailure(err) && req.Context().Err() == nil {
			next.Failed(err)
		}
		return nil, err
	}
	next.Succeeded()
	return resp, nil
}

// safeToRetry: a request whose connection could not even be opened was
// never seen by the upstream, whatever its method, as long as its body was
// not read; an idempotent request without a body may be retried after any
// connection failure.
func safeToRetry(req *http.Request, body *readTracker, err error) bool {
	if body != nil && body.read.Load() {
		return false
	}
	if isDialError(err) {
		return true
	}
	return idempotent(req.Method) && (req.Body == nil || req.Body == http.NoBody)
}

// idempotent reports whether sending a request with this method twice has
// the effect of sending it once.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isConnFailure tells a failure of the upstream connection from a timeout
// waiting for its answer (which is the upstream being slow, not gone).
func isConnFailure(err error) bool {
	if isTimeout(err) {
		return isDialError(err)
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readTracker records whether the transport read any of the request body.
// The body may be read from a goroutine of the transport that outlives a
// failed RoundTrip, hence the atomic.
type readTracker struct {
	io.ReadCloser
	read atomic.Bool
}

func (r *readTracker) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 && !r.read.Load() {
		r.read.Store(true)
	}
	return n, err
}

// copyBufferSize sizes the proxy's copy buffers.
const copyBufferSize = 32 << 10

// bufferPool lends copy buffers to the proxy. It pools array pointers, so
// that neither Get nor Put allocates.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

func (b *bufferPool) Put(p []byte) {
	if len(p) == copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(p))
	}
}

// statusRecorder remembers the status written, for metrics. It keeps the
// writer's optional interfaces reachable through Unwrap, which
// http.ResponseController (used by ReverseProxy) follows.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
