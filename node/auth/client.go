// Package auth is the client of the authorization server: it asks whether a
// caller's credentials are good, and which auth token and route they map
// to, and caches the answers.
//
// The protocol is the original vulcan's: GET <url>?username=U&password=P&
// protocol=PROTO&method=M&uri=URI&length=N&ip=IP, answered by 200 with
// {"auth_token", "service" | "upstream"}, or by a 4xx that is passed on to
// the client as it is. Anything else makes the server unavailable.
//
// Passwords never leave the request to the server: they are not logged, not
// kept in the cache (only a salted digest is), and not quoted in errors.
package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/singleflight"
)

// Request is what the front end knows of a request when it authorizes it.
type Request struct {
	Username string
	Password string
	// Protocol is "HTTP" or "SMTP".
	Protocol string
	Method   string
	URI      string
	// Length is the request's body size in bytes. It is sent to the server
	// but is not part of the cache key (see key).
	Length int64
	IP     string
}

// Stats are the client's counters since New, for metrics.
type Stats struct {
	// Hits counts Authorize calls answered from the cache (denials too).
	Hits uint64
	// Misses counts Authorize calls that were not, including those that
	// joined a call already in flight for the same identity.
	Misses uint64
	// Calls counts HTTP requests sent to servers, failover attempts included.
	Calls uint64
	// Failures counts Calls that brought no usable answer: unreachable,
	// timeout, 5xx, or a body that is not the server's JSON.
	Failures uint64
	// Denials counts Calls answered with a 4xx.
	Denials uint64
	// Entries is the number of cached answers, expired ones included
	// until they are evicted.
	Entries int
}

// server is one configured authorization server, split once by New.
type server struct {
	// base is the URL without query or fragment; it is parsed per call
	// so that the password is only ever set on the request's own URL.
	base string
	// query is the configured query minus the client's parameters,
	// encoded; empty when there is none.
	query string
	// redacted names the server in logs and errors: no user info, no query.
	redacted string
}

// parameters the client sets: a configured URL's own values for them are
// dropped so the server never sees two.
var ownParams = [...]string{"username", "password", "protocol", "method", "uri", "length", "ip"}

// Client asks the authorization servers and caches their answers. It is
// safe for concurrent use. It owns no goroutine beyond the calls in
// flight, each bounded by Timeout per server tried.
type Client struct {
	servers    []server
	http       *http.Client
	timeout    time.Duration
	successTTL time.Duration
	denyTTL    time.Duration
	log        hclog.Logger
	now        func() time.Time
	salt       [32]byte

	cache  *cache
	flight singleflight.Group
	next   atomic.Uint64 // round robin over servers

	hits, misses, calls, failures, denials atomic.Uint64
}

// New validates cfg's URLs (absolute http or https URLs with a host) and
// returns a Client with cfg's defaults filled in.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("new auth client: no URL")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("new auth client: negative timeout %s", cfg.Timeout)
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("new auth client: negative max entries %d", cfg.MaxEntries)
	}
	c := &Client{
		http:       cfg.HTTPClient,
		timeout:    orDefault(cfg.Timeout, DefaultTimeout),
		successTTL: orDefault(cfg.SuccessTTL, DefaultSuccessTTL),
		denyTTL:    orDefault(cfg.DenyTTL, DefaultDenyTTL),
		log:        cfg.Logger,
		now:        cfg.Now,
	}
	for _, raw := range cfg.URLs {
		s, err := parseServer(raw)
		if err != nil {
			return nil, fmt.Errorf("new auth client: %w", err)
		}
		c.servers = append(c.servers, s)
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.http == nil {
		c.http = defaultHTTPClient(c.timeout)
	}
	maxEntries := cfg.MaxEntries
	if maxEntries == 0 {
		maxEntries = DefaultMaxEntries
	}
	c.cache = newCache(maxEntries)
	if _, err := rand.Read(c.salt[:]); err != nil {
		return nil, fmt.Errorf("new auth client: salt: %w", err)
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func parseServer(raw string) (server, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		// url's error quotes the input, which may carry user info.
		return server{}, fmt.Errorf("auth URL %d chars long: not a URL", len(raw))
	}
	name := u.Redacted()
	if u.Scheme != "http" && u.Scheme != "https" {
		return server{}, fmt.Errorf("auth URL %s: scheme must be http or https", name)
	}
	if u.Host == "" {
		return server{}, fmt.Errorf("auth URL %s: no host", name)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return server{}, fmt.Errorf("auth URL %s: query: %w", name, err)
	}
	for _, p := range ownParams {
		q.Del(p)
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	s := server{base: u.String(), query: q.Encode()}
	u.User = nil
	s.redacted = u.String()
	return s, nil
}

func defaultHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		// A redirect is not an answer. Following it would send the
		// request's URL, password included, to its target as a Referer,
		// and let the target answer for another identity.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			// The auth server is infrastructure reached directly: a proxy
			// picked up from the environment would only add a hop to fail.
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
		}}
}

// Authorize answers for r: from the cache when an answer for the same
// identity (every field but Length) is live, else by asking a server.
//
// It returns a *DeniedError when a server answered 4xx, and an error
// wrapping ErrUnavailable when no server gave a usable answer. A burst of
// identical misses makes one call, which ctx does not cancel: each caller
// may give up on its own ctx (the error then wraps both ErrUnavailable and
// ctx.Err()), while the call goes on for the others, bounded by Timeout.
// The Length sent is that of the caller that started the call.
func (c *Client) Authorize(ctx context.Context, r Request) (Answer, error) {
	k := key{
		user:     r.Username,
		protocol: r.Protocol,
		method:   r.Method,
		uri:      r.URI,
		ip:       r.IP,
		cred:     credDigest(&c.salt, r.Username, r.Password),
	}
	if a, denied, ok := c.cache.get(&k, c.now()); ok {
		c.hits.Add(1)
		if denied != nil {
			return Answer{}, denied
		}
		return a, nil
	}
	c.misses.Add(1)
	return c.miss(ctx, k, r)
}

// miss is apart from Authorize so that only a miss moves the key and the
// request to the heap for the shared call.
func (c *Client) miss(ctx context.Context, k key, r Request) (Answer, error) {
	if err := ctx.Err(); err != nil {
		// The caller is gone: do not start a call on its behalf.
		return Answer{}, fmt.Errorf("authorize: %w: %w", ErrUnavailable, err)
	}
	detached := context.WithoutCancel(ctx)
	ch := c.flight.DoChan(k.flightKey(), func() (any, error) {
		return c.resolve(detached, &k, &r)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return Answer{}, res.Err
		}
		return res.Val.(Answer), nil
	case <-ctx.Done():
		return Answer{}, fmt.Errorf("authorize: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// Stats returns the counters; they are read one by one, not as a snapshot.
func (c *Client) Stats() Stats {
	return Stats{
		Hits:     c.hits.Load(),
		Misses:   c.misses.Load(),
		Calls:    c.calls.Load(),
		Failures: c.failures.Load(),
		Denials:  c.denials.Load(),
		Entries:  c.cache.len(),
	}
}

// resolve runs once per burst of identical misses and caches its outcome.
func (c *Client) resolve(ctx context.Context, k *key, r *Request) (Answer, error) {
	// A burst's latecomer may start a new flight just after the previous
	// one stored its answer and left: look again before calling.
	if a, denied, ok := c.cache.get(k, c.now()); ok {
		if denied != nil {
			return Answer{}, denied
		}
		return a, nil
	}
	a, err := c.call(ctx, r)
	var denied *DeniedError
	switch {
	case err == nil:
		if c.successTTL > 0 {
			c.cache.put(k, a, nil, c.now().Add(c.successTTL))
		}
	case errors.As(err, &denied):
		if c.denyTTL > 0 {
			c.cache.put(k, Answer{}, denied, c.now().Add(c.denyTTL))
		}
	}
	return a, err
}

// call asks the servers in round-robin order, moving to the next one only
// when the request did not get through (dial error, reset, timeout): a
// server that answered, even 5xx, has spoken for this call.
func (c *Client) call(ctx context.Context, r *Request) (Answer, error) {
	q := ownQuery(r)
	n := uint64(len(c.servers))
	start := c.next.Add(1) - 1
	var err error
	for i := range n {
		s := &c.servers[(start+i)%n]
		var a Answer
		var reached bool
		a, reached, err = c.callOne(ctx, s, q, r.Password)
		if reached {
			return a, err
		}
	}
	return Answer{}, err
}

// ownQuery encodes the client's parameters in the protocol's order.
func ownQuery(r *Request) string {
	var sb strings.Builder
	sb.Grow(64 + len(r.Username) + len(r.Password) + len(r.Protocol) + len(r.Method) + 2*len(r.URI) + len(r.IP))
	sb.WriteString("username=")
	sb.WriteString(url.QueryEscape(r.Username))
	sb.WriteString("&password=")
	sb.WriteString(url.QueryEscape(r.Password))
	sb.WriteString("&protocol=")
	sb.WriteString(url.QueryEscape(r.Protocol))
	sb.WriteString("&method=")
	sb.WriteString(url.QueryEscape(r.Method))
	sb.WriteString("&uri=")
	sb.WriteString(url.QueryEscape(r.URI))
	sb.WriteString("&length=")
	sb.WriteString(strconv.FormatInt(r.Length, 10))
	sb.WriteString("&ip=")
	sb.WriteString(url.QueryEscape(r.IP))
	return sb.String()
}

// callOne makes one HTTP call; reached is false when the request did not
// get an answer at all, so that the next server may be tried.
func (c *Client) callOne(ctx context.Context, s *server, own, password string) (a Answer, reached bool, err error) {
	c.calls.Add(1)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base, nil)
	if err != nil {
		c.failures.Add(1)
		return Answer{}, true, unavailable(s.redacted, "build request")
	}
	rawQuery := own
	if s.query != "" {
		rawQuery = s.query + "&" + own
	}
	req.URL.RawQuery = rawQuery
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.failures.Add(1)
		reason := transportReason(err, rawQuery, password)
		c.log.Warn("auth server unreachable", "server", s.redacted, "error", reason)
		return Answer{}, false, unavailable(s.redacted, reason)
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		_ = resp.Body.Close()
	}()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		c.failures.Add(1)
		reason := "read answer: " + transportReason(err, rawQuery, password)
		c.log.Warn("auth server answer unreadable", "server", s.redacted, "status", resp.StatusCode, "error", reason)
		return Answer{}, true, unavailable(s.redacted, reason)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if len(body) > maxBody {
			c.failures.Add(1)
			c.log.Warn("auth server answer too large", "server", s.redacted, "limit", maxBody)
			return Answer{}, true, unavailable(s.redacted, "answer larger than 64 KiB")
		}
		a, err := DecodeAnswer(body)
		if err != nil {
			c.failures.Add(1)
			c.log.Warn("auth server answer invalid", "server", s.redacted, "error", err)
			return Answer{}, true, unavailable(s.redacted, err.Error())
		}
		return a, true, nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		c.denials.Add(1)
		if len(body) > maxBody {
			body = body[:maxBody]
		}
		c.log.Debug("authorization denied", "server", s.redacted, "status", resp.StatusCode)
		return Answer{}, true, &DeniedError{
			Status:      resp.StatusCode,
			Body:        body,
			ContentType: resp.Header.Get("Content-Type"),
		}
	default:
		c.failures.Add(1)
		c.log.Warn("auth server failed", "server", s.redacted, "status", resp.StatusCode)
		return Answer{}, true, unavailable(s.redacted, "status "+strconv.Itoa(resp.StatusCode))
	}
}
