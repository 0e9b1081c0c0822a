package test

import (
	"bufio"
	"cmp"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// authAgent starts a node whose -auth-url is urls, plus extra flags.
func authAgent(t *testing.T, urls string, extra ...string) *agent {
	t.Helper()
	return startAgent(t, agentOpts{extra: append([]string{"-auth-url", urls}, extra...)})
}

// clientFrom is a proxy client whose connections leave from ip, so the node
// sees that client address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 128}}
}

// proxyCall is one request sent through the proxy; user "" sends no credentials.
type proxyCall struct {
	method, path, host string
	user, pass         string
	body               string
}

// proxyResult is what the client got back.
type proxyResult struct {
	code     int
	header   http.Header
	body     string
	upstream string
}

// sendCall makes r through a's proxy.
func sendCall(c *http.Client, a *agent, r proxyCall) (proxyResult, error) {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(cmp.Or(r.method, "GET"), "http://"+a.http+cmp.Or(r.path, "/"), body)
	if err != nil {
		return proxyResult{}, err
	}
	if r.host != "" {
		hr.Host = r.host
	}
	if r.user != "" {
		hr.SetBasicAuth(r.user, r.pass)
	}
	hresp, err := c.Do(hr)
	if err != nil {
		return proxyResult{}, err
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(hresp.Body)
	return proxyResult{code: hresp.StatusCode, header: hresp.Header, body: string(b), upstream: hresp.Header.Get("X-Upstream")}, err
}

// mustCall is sendCall that fails the test on a transport error.
func mustCall(t *testing.T, c *http.Client, a *agent, r proxyCall) proxyResult {
	t.Helper()
	got, err := sendCall(c, a, r)
	if err != nil {
		t.Fatalf("%s %s as %q: %v", cmp.Or(r.method, "GET"), cmp.Or(r.path, "/"), r.user, err)
	}
	return got
}

// scrapeMetric reads one unlabelled sample from a's /metrics.
func scrapeMetric(a *agent, name string) (float64, error) {
	r, err := apiClient.Get("http://" + a.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// TestAuthStatusMapping checks every row of the HTTP mapping of DESIGN §3,
// and that nothing refused reaches the upstream.
func TestAuthStatusMapping(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{
		"ok":        authOK("t-ok", ""),
		"wrongpass": {Token: "t-wp", Password: "right"},
		"denied":    authDeny(403, "text/plain; charset=utf-8", "you shall not pass\n"),
		"teapot":    authDeny(418, "application/problem+json", `{"title":"short and stout"}`),
		"broken":    {Status: 500, Body: `{"error":"database on fire"}`},
		"badgw":     {Status: 502, ContentType: "text/html", Body: "<html>bad gateway</html>"},
		"notjson":   {ContentType: "text/html", Body: "<html>hello</html>"},
		"notoken":   {Service: "web"},
		"emptytok":  {Body: `{"auth_token":"","service":"web"}`},
		"slow":      {Token: "t-slow", Delay: 5 * time.Second},
	})
	a := authAgent(t, as.url(), "-auth-timeout", "500ms")
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)

	// The auth server is down for this node: nothing listens on its URL.
	gone := startAuthServer(t, nil)
	gone.stop()
	down := authAgent(t, gone.url(), "-auth-timeout", "500ms")
	register(t, down, map[string]any{"name": "web"}, b)

	const realm = `Basic realm="vulcan"`
	unavailable := func(r proxyResult) error {
		if !strings.Contains(r.body, `"error"`) {
			return fmt.Errorf("body %q is not a JSON error", r.body)
		}
		return nil
	}
	cases := []struct {
		name   string
		node   *agent
		r      proxyCall
		status int
		check  func(proxyResult) error
	}{
		{"accepted", a, proxyCall{user: "ok", pass: "pw"}, 200, func(r proxyResult) error {
			if r.upstream != "web" {
				return fmt.Errorf("served by %q, want the backend", r.upstream)
			}
			return nil
		}},
		{"no credentials", a, proxyCall{}, 401, func(r proxyResult) error {
			if got := r.header.Get("WWW-Authenticate"); got != realm {
				return fmt.Errorf("WWW-Authenticate = %q, want %q", got, realm)
			}
			return nil
		}},
		{"auth 401 passed on", a, proxyCall{user: "wrongpass", pass: "wrong"}, 401, func(r proxyResult) error {
			if r.body != `{"error":"bad password"}` {
				return fmt.Errorf("body %q, want the auth server's", r.body)
			}
			if got := r.header.Get("WWW-Authenticate"); got != realm {
				return fmt.Errorf("WWW-Authenticate = %q, want %q", got, realm)
			}
			return nil
		}},
		{"auth 403 passed on", a, proxyCall{user: "denied", pass: "pw"}, 403, func(r proxyResult) error {
			if r.body != "you shall not pass\n" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
				return fmt.Errorf("got %q (%s), want the auth server's body and type", r.body, r.header.Get("Content-Type"))
			}
			return nil
		}},
		{"auth 418 passed on", a, proxyCall{user: "teapot", pass: "pw"}, 418, func(r proxyResult) error {
			if r.body != `{"title":"short and stout"}` || r.header.Get("Content-Type") != "application/problem+json" {
				return fmt.Errorf("got %q (%s), want the auth server's body and type", r.body, r.header.Get("Content-Type"))
			}
			return nil
		}},
		{"unknown user 403", a, proxyCall{user: "nobody", pass: "pw"}, 403, func(r proxyResult) error {
			if r.body != `{"error":"unknown user"}` {
				return fmt.Errorf("body %q", r.body)
			}
			return nil
		}},
		{"auth 500", a, proxyCall{user: "broken", pass: "pw"}, 503, func(r proxyResult) error {
			if strings.Contains(r.body, "fire") {
				return fmt.Errorf("the auth server's 5xx body reached the client: %q", r.body)
			}
			return unavailable(r)
		}},
		{"auth 502", a, proxyCall{user: "badgw", pass: "pw"}, 503, unavailable},
		{"not JSON", a, proxyCall{user: "notjson", pass: "pw"}, 503, unavailable},
		{"no auth_token", a, proxyCall{user: "notoken", pass: "pw"}, 503, unavailable},
		{"empty auth_token", a, proxyCall{user: "emptytok", pass: "pw"}, 503, unavailable},
		{"timeout", a, proxyCall{user: "slow", pass: "pw"}, 503, unavailable},
		{"auth server down", down, proxyCall{user: "ok", pass: "pw"}, 503, unavailable},
		{"no credentials, server down", down, proxyCall{}, 401, nil},
	}
	c := proxyClient()
	for _, tc := range cases {
		got, err := sendCall(c, tc.node, tc.r)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got.code != tc.status {
			t.Errorf("%s: status %d (%q), want %d", tc.name, got.code, got.body, tc.status)
			continue
		}
		if tc.check != nil {
			if err := tc.check(got); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	}
	if n := b.hits.Load(); n != 1 {
		t.Errorf("backend served %d requests, want only the accepted one", n)
	}
	// A request without credentials never costs an auth call.
	for _, q := range as.received() {
		if q.user() == "" {
			t.Errorf("auth server asked with no username: %q", q.RawQuery)
		}
	}
}

// TestAuthQueryParameters checks the query of the original protocol for a
// GET and a POST, from a known client address, with a password that needs
// escaping, and that a query configured in -auth-url is kept without
// letting it shadow the client's parameters.
func TestAuthQueryParameters(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{"alice": authOK("t-alice", "")})
	a := authAgent(t, as.url()+"?site=eu&username=intruder")
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	ip := nextIP()
	c := clientFrom(ip)
	const pass = "p@ss w&rd=1+%/é"

	cases := []struct {
		r    proxyCall
		want map[string]string
	}{
		{proxyCall{method: "GET", path: "/path/x?a=1&b=two%20words", user: "alice", pass: pass},
			map[string]string{"method": "GET", "uri": "/path/x?a=1&b=two%20words", "length": "0"}},
		{proxyCall{method: "POST", path: "/submit", user: "alice", pass: pass, body: "hello world"},
			map[string]string{"method": "POST", "uri": "/submit", "length": "11"}},
		{proxyCall{method: "DELETE", path: "/items/7", user: "alice", pass: pass},
			map[string]string{"method": "DELETE", "uri": "/items/7", "length": "0"}},
	}
	for i, tc := range cases {
		if got := mustCall(t, c, a, tc.r); got.code != 200 {
			t.Fatalf("%s %s: %d %q", tc.r.method, tc.r.path, got.code, got.body)
		}
		qs := as.received()
		if len(qs) != i+1 {
			t.Fatalf("after %d requests the auth server saw %d queries", i+1, len(qs))
		}
		q := qs[i]
		if q.Method != "GET" || q.Path != "/auth" {
			t.Errorf("auth call is %s %s, want GET /auth", q.Method, q.Path)
		}
		want := map[string]string{"username": "alice", "password": pass, "protocol": "HTTP", "ip": ip, "site": "eu"}
		for k, v := range tc.want {
			want[k] = v
		}
		for k, v := range want {
			if got := q.Values[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s %s: %s = %q, want exactly [%q]", tc.r.method, tc.r.path, k, got, v)
			}
		}
		if len(q.Values) != len(want) {
			t.Errorf("%s %s: parameters %v, want only %v", tc.r.method, tc.r.path, q.Values, want)
		}
		// The client's parameters come in the original protocol's order.
		order := regexp.MustCompile(`username=.*&password=.*&protocol=.*&method=.*&uri=.*&length=.*&ip=`)
		if !order.MatchString(q.RawQuery) {
			t.Errorf("parameters out of order: %s", q.RawQuery)
		}
	}
	if got := b.last(); got == nil || got.Method != "DELETE" {
		t.Fatalf("backend did not receive the requests")
	}
}

// TestAuthCacheOneCallPerIdentity: 100 identical requests make one auth
// call; denials are cached too, failures are not.
func TestAuthCacheOneCallPerIdentity(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{
		"alice":  authOK("t-alice", ""),
		"denied": authDeny(403, "text/plain", "no"),
		"broken": {Status: 500},
	})
	a := authAgent(t, as.url())
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	c := proxyClient()
	for i := range 100 {
		if got := mustCall(t, c, a, proxyCall{path: "/same", user: "alice", pass: "pw"}); got.code != 200 {
			t.Fatalf("request %d: %d %q", i, got.code, got.body)
		}
	}
	if n := as.calls("alice"); n != 1 {
		t.Fatalf("100 identical requests made %d auth calls, want 1", n)
	}
	if n := b.hits.Load(); n != 100 {
		t.Fatalf("backend served %d, want 100", n)
	}
	eventually(t, 5*time.Second, func() error {
		hits, err := scrapeMetric(a, "vulcan_auth_cache_hits_total")
		if err == nil && hits != 99 {
			err = fmt.Errorf("cache hits metric %v, want 99", hits)
		}
		return err
	})
	// Another password is another identity: it is asked for, not served
	// from alice's entry.
	mustCall(t, c, a, proxyCall{path: "/same", user: "alice", pass: "other"})
	if n := as.calls("alice"); n != 2 {
		t.Fatalf("a different password made %d calls in all, want 2", n)
	}

	for range 3 {
		if got := mustCall(t, c, a, proxyCall{user: "denied", pass: "pw"}); got.code != 403 || got.body != "no" {
			t.Fatalf("denied: %d %q", got.code, got.body)
		}
		if got := mustCall(t, c, a, proxyCall{user: "broken", pass: "pw"}); got.code != 503 {
			t.Fatalf("broken: %d %q", got.code, got.body)
		}
	}
	if n := as.calls("denied"); n != 1 {
		t.Errorf("3 denied requests made %d calls, want 1 (denials are cached)", n)
	}
	if n := as.calls("broken"); n != 3 {
		t.Errorf("3 requests meeting a failure made %d calls, want 3 (failures are not cached)", n)
	}
}

// TestAuthSingleflightConcurrentFirstRequests: 100 concurrent first
// requests of one user, all waiting on the node at once, make one call.
func TestAuthSingleflightConcurrentFirstRequests(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{"alice": authOK("t-alice", "")})
	a := authAgent(t, as.url(), "-auth-timeout", "20s")
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	release := as.hold()

	const n = 100
	c := proxyClient()
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			got, err := sendCall(c, a, proxyCall{path: "/burst", user: "alice", pass: "pw"})
			if err != nil {
				t.Errorf("burst request: %v", err)
			}
			codes <- got.code
		})
	}
	// Every request has reached the auth cache and missed before the one
	// call is allowed to answer.
	eventually(t, 30*time.Second, func() error {
		m, err := scrapeMetric(a, "vulcan_auth_cache_misses_total")
		if err == nil && (m < n || as.total() == 0) {
			err = fmt.Errorf("%v of %d requests are waiting, %d auth calls", m, n, as.total())
		}
		return err
	})
	if got := as.total(); got != 1 {
		t.Fatalf("%d auth calls while %d identical requests wait, want 1", got, n)
	}
	release()
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Fatalf("a burst request got %d", code)
		}
	}
	if got := as.calls("alice"); got != 1 {
		t.Fatalf("%d concurrent first requests made %d auth calls, want 1", n, got)
	}
	if calls, err := scrapeMetric(a, "vulcan_auth_calls_total"); err != nil || calls != 1 {
		t.Fatalf("vulcan_auth_calls_total = %v (%v), want 1", calls, err)
	}
}

// TestAuthServerDownCachedIdentitiesKeepWorking: while the auth server is
// down, cached identities are served and new ones get 503; once it is back
// the new ones get in (the failure was not cached).
func TestAuthServerDownCachedIdentitiesKeepWorking(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{"alice": authOK("t-alice", ""), "bob": authOK("t-bob", "")})
	a := authAgent(t, as.url())
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	c := proxyClient()
	alice := proxyCall{path: "/app", user: "alice", pass: "pw-a"}
	bob := proxyCall{path: "/app", user: "bob", pass: "pw-b"}
	if got := mustCall(t, c, a, alice); got.code != 200 {
		t.Fatalf("alice before the outage: %d", got.code)
	}

	as.stop()
	for i := range 10 {
		if got := mustCall(t, c, a, alice); got.code != 200 || got.upstream != "web" {
			t.Fatalf("cached alice during the outage, request %d: %d %q", i, got.code, got.body)
		}
	}
	for range 2 {
		if got := mustCall(t, c, a, bob); got.code != 503 {
			t.Fatalf("new bob during the outage: %d %q, want 503", got.code, got.body)
		}
	}

	as.restart()
	eventually(t, 10*time.Second, func() error {
		if got, err := sendCall(c, a, bob); err != nil || got.code != 200 {
			return fmt.Errorf("bob after the outage: %d %v", got.code, err)
		}
		return nil
	})
	if n := as.calls("alice"); n != 1 {
		t.Errorf("alice made %d auth calls, want 1", n)
	}
}

// TestAuthPasswordsNeverLogged runs requests with distinctive passwords
// through every path of the auth client (success, denial, 5xx, not JSON,
// timeout, unreachable, failover) with trace logging, then reads the node's
// whole log and its metrics and finds none of them.
func TestAuthPasswordsNeverLogged(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{
		"good":    {Token: "t-good", Password: "Pw-good-7c1e4a9b"},
		"bad":     {Token: "t-bad", Password: "the-right-one"},
		"broken":  {Status: 500, Body: "oops"},
		"notjson": {Body: "<html>"},
		"slow":    {Token: "t-slow", Delay: 3 * time.Second},
	})
	gone := startAuthServer(t, nil)
	gone.stop()
	a := authAgent(t, gone.url()+","+as.url(), "-auth-timeout", "300ms", "-log-level", "trace")
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	c := proxyClient()

	passwords := map[string]string{
		"good":    "Pw-good-7c1e4a9b",
		"bad":     "Pw-bad-5d2f8e31",
		"broken":  "Pw-broken-91ab77c2",
		"notjson": "Pw-notjson-0e6d4f18",
		"slow":    "Pw-slow-3a8c5b60",
		"odd":     "Pw odd&=?/%-4b7d",
	}
	for user, pass := range passwords {
		for _, path := range []string{"/a", "/b?q=1"} {
			mustCall(t, c, a, proxyCall{path: path, user: user, pass: pass})
			mustCall(t, c, a, proxyCall{method: "POST", path: path, user: user, pass: pass, body: "payload"})
		}
	}
	if got := mustCall(t, c, a, proxyCall{user: "good", pass: passwords["good"]}); got.code != 200 {
		t.Fatalf("good user: %d %q", got.code, got.body)
	}
	as.stop()
	late := "Pw-late-c0ffee42"
	passwords["late"] = late
	if got := mustCall(t, c, a, proxyCall{user: "late", pass: late}); got.code != 503 {
		t.Fatalf("with every auth server down: %d, want 503", got.code)
	}

	r, err := apiClient.Get("http://" + a.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if err := a.terminate(15 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	log := a.log.String()
	for _, want := range []string{"authorization failed", "auth server unreachable", "auth server failed"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q: the test would not see a password logged there", want)
		}
	}
	for user, pass := range passwords {
		forms := []string{pass, url.QueryEscape(pass), url.PathEscape(pass),
			base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
		for _, f := range forms {
			if strings.Contains(log, f) {
				t.Errorf("the node's log holds %s's password as %q", user, f)
			}
			if strings.Contains(string(metrics), f) {
				t.Errorf("the metrics hold %s's password as %q", user, f)
			}
		}
	}
}

// TestAuthExplicitUpstreamList: an answer's explicit list is served round
// robin; a registered address in it obeys its drain, an unregistered one is
// proxied to and tracked passively.
func TestAuthExplicitUpstreamList(t *testing.T) {
	t.Parallel()
	r1, r2, x := startBackend(t, "r1", nil), startBackend(t, "r2", nil), startBackend(t, "x", nil)
	as := startAuthServer(t, map[string]authReply{"lister": authUpstreams("t-list", r1.addr, r2.addr, x.addr)})
	a := authAgent(t, as.url())
	// The host rule does not match the requests: only the list routes them.
	register(t, a, map[string]any{"name": "pool", "hosts": []string{"pool.internal"}}, r1, r2)
	c := proxyClient()
	lister := proxyCall{path: "/work", user: "lister", pass: "pw"}
	spread := func(n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			got := mustCall(t, c, a, lister)
			if got.code != 200 {
				t.Fatalf("explicit list: %d %q", got.code, got.body)
			}
			seen[got.upstream]++
		}
		return seen
	}
	if seen := spread(30); seen["r1"] != 10 || seen["r2"] != 10 || seen["x"] != 10 {
		t.Fatalf("30 requests over a list of 3: %v, want 10 each", seen)
	}

	a.mustAPI("POST", "/v1/services/pool/upstreams/r1/drain", nil, nil)
	before := r1.hits.Load()
	if seen := spread(30); seen["r1"] != 0 || seen["r2"] == 0 || seen["x"] == 0 {
		t.Fatalf("with r1 drained: %v, want none on r1", seen)
	}
	if n := r1.hits.Load(); n != before {
		t.Fatalf("drained r1 received %d requests", n-before)
	}

	a.mustAPI("POST", "/v1/services/pool/upstreams/r1/enable", nil, nil)
	if seen := spread(30); seen["r1"] == 0 {
		t.Fatalf("r1 enabled again gets nothing: %v", seen)
	}

	// The unregistered address fails: the request is retried on another,
	// and the address is marked down so the next ones skip it.
	x.close()
	if seen := spread(30); seen["x"] != 0 || seen["r1"]+seen["r2"] != 30 {
		t.Fatalf("with x gone: %v", seen)
	}
	log := a.log.String()
	if !strings.Contains(log, "upstream down") || !strings.Contains(log, x.addr) {
		t.Fatalf("x not marked down in the log")
	}
	tries := strings.Count(log, "upstream connection failed")
	// Round robin would have tried it 10 times; down, it gets a trial per
	// backoff (1s, then 2s) at most.
	if tries == 0 || tries > 5 {
		t.Fatalf("%d connection attempts to x in 30 requests: want it tried, then skipped while down", tries)
	}
	if n := as.calls("lister"); n != 1 {
		t.Errorf("lister made %d auth calls, want 1", n)
	}
}

// TestAuthAnswerNamesService: the service the auth server names wins over
// the host rules; an answer naming none falls back to them.
func TestAuthAnswerNamesService(t *testing.T) {
	t.Parallel()
	ba, bb := startBackend(t, "alpha", nil), startBackend(t, "beta", nil)
	as := startAuthServer(t, map[string]authReply{
		"to-beta":  authOK("t1", "beta"),
		"to-alpha": authOK("t2", "alpha"),
		"by-host":  authOK("t3", ""),
		"to-ghost": authOK("t4", "ghost"),
	})
	a := authAgent(t, as.url())
	register(t, a, map[string]any{"name": "alpha", "hosts": []string{"alpha.test"}}, ba)
	register(t, a, map[string]any{"name": "beta", "hosts": []string{"beta.test"}}, bb)
	c := proxyClient()
	cases := []struct {
		user, host, want string
	}{
		{"to-beta", "alpha.test", "beta"},
		{"to-beta", "elsewhere.test", "beta"},
		{"to-alpha", "beta.test", "alpha"},
		{"by-host", "beta.test", "beta"},
		{"by-host", "alpha.test", "alpha"},
	}
	for _, tc := range cases {
		got := mustCall(t, c, a, proxyCall{host: tc.host, user: tc.user, pass: "pw"})
		if got.code != 200 || got.upstream != tc.want {
			t.Errorf("%s with Host %s: %d from %q, want %s", tc.user, tc.host, got.code, got.upstream, tc.want)
		}
	}
	hits := ba.hits.Load() + bb.hits.Load()
	if got := mustCall(t, c, a, proxyCall{host: "alpha.test", user: "to-ghost", pass: "pw"}); got.code != 404 {
		t.Errorf("a service that does not exist: %d %q, want 404", got.code, got.body)
	}
	if ba.hits.Load()+bb.hits.Load() != hits {
		t.Errorf("a request for a missing service reached an upstream")
	}
}

// TestAuthPassAuth: pass_auth forwards the client's Authorization header;
// without it the header is stripped.
func TestAuthPassAuth(t *testing.T) {
	t.Parallel()
	bp, bs := startBackend(t, "pass", nil), startBackend(t, "strip", nil)
	as := startAuthServer(t, map[string]authReply{"u": authOK("t-u", "")})
	a := authAgent(t, as.url())
	register(t, a, map[string]any{"name": "pass", "hosts": []string{"pass.test"}, "pass_auth": true}, bp)
	register(t, a, map[string]any{"name": "strip", "hosts": []string{"strip.test"}, "pass_auth": false}, bs)
	c := proxyClient()
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:s3cret"))
	for _, host := range []string{"pass.test", "strip.test"} {
		if got := mustCall(t, c, a, proxyCall{host: host, user: "u", pass: "s3cret"}); got.code != 200 {
			t.Fatalf("%s: %d %q", host, got.code, got.body)
		}
	}
	if got := bp.last().Header.Get("Authorization"); got != want {
		t.Errorf("pass_auth true: upstream saw Authorization %q, want %q", got, want)
	}
	if got := bs.last().Header.Values("Authorization"); len(got) != 0 {
		t.Errorf("pass_auth false: upstream saw Authorization %q", got)
	}
}

// TestAuthFailoverFirstURLDown: with two auth URLs of which the first
// refuses connections, every call still gets its answer from the second.
func TestAuthFailoverFirstURLDown(t *testing.T) {
	t.Parallel()
	gone := startAuthServer(t, nil)
	gone.stop()
	as := startAuthServer(t, nil)
	const users = 12
	for i := range users {
		as.set(fmt.Sprintf("user%d", i), authOK(fmt.Sprintf("t%d", i), ""))
	}
	a := authAgent(t, gone.url()+","+as.url())
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	c := proxyClient()
	for i := range users {
		if got := mustCall(t, c, a, proxyCall{user: fmt.Sprintf("user%d", i), pass: "pw"}); got.code != 200 {
			t.Fatalf("user%d: %d %q", i, got.code, got.body)
		}
	}
	if n := as.total(); n != users {
		t.Fatalf("the live auth server answered %d calls, want %d", n, users)
	}
	// Round robin sent about half of the first attempts to the dead URL.
	calls, err := scrapeMetric(a, "vulcan_auth_calls_total")
	if err != nil || calls < users+users/4 {
		t.Fatalf("vulcan_auth_calls_total = %v (%v): the dead URL was hardly tried", calls, err)
	}
}

// TestOpenModeTokenIsClientIP: without -auth-url no credentials are needed
// and the limit's token is the client's IP.
func TestOpenModeTokenIsClientIP(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	ip1, ip2 := nextIP(), nextIP()
	var lim struct{ ID string }
	a.mustAPI("POST", "/v1/limits", map[string]any{
		"auth_token": "^" + regexp.QuoteMeta(ip1) + "$", "period": 60, "threshold": 2,
	}, &lim)
	c1, c2 := clientFrom(ip1), clientFrom(ip2)
	for i, want := range []int{200, 200, 429, 429} {
		if got := mustCall(t, c1, a, proxyCall{path: "/x"}); got.code != want {
			t.Fatalf("request %d from %s: %d, want %d", i+1, ip1, got.code, want)
		} else if want == 429 && !strings.Contains(got.body, lim.ID) {
			t.Fatalf("429 body %q does not name limit %s", got.body, lim.ID)
		}
	}
	for i := range 4 {
		if got := mustCall(t, c2, a, proxyCall{path: "/x", user: "ignored", pass: "pw"}); got.code != 200 {
			t.Fatalf("request %d from %s (another token): %d", i+1, ip2, got.code)
		}
	}
	// A limit on every loopback client, as an operator would write it.
	a.mustAPI("DELETE", "/v1/limits/"+lim.ID, nil, nil)
	a.mustAPI("POST", "/v1/limits", map[string]any{"auth_token": `^127\.0\.`, "period": 60, "threshold": 2}, nil)
	ip3 := nextIP()
	c3 := clientFrom(ip3)
	for i, want := range []int{200, 200, 429} {
		if got := mustCall(t, c3, a, proxyCall{path: "/y"}); got.code != want {
			t.Fatalf("request %d from %s under ^127\\.0\\.: %d, want %d", i+1, ip3, got.code, want)
		}
	}
}

// TestAuthExplicitListObeysHealthAndCountsInFlight: a registered upstream
// named in an explicit list is skipped while its health check fails, and a
// request sent to it through the list counts as in flight, so a drain with
// wait does not finish until that request does.
func TestAuthExplicitListObeysHealthAndCountsInFlight(t *testing.T) {
	t.Parallel()
	held, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var served [2]atomic.Int64
	handler := func(i int, healthy bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/health":
				if !healthy {
					http.Error(w, "sick", 500)
				}
				return
			case "/hold":
				held <- struct{}{}
				<-release
			}
			served[i].Add(1)
		})
	}
	good, sick := startBackend(t, "good", handler(0, true)), startBackend(t, "sick", handler(1, false))
	as := startAuthServer(t, map[string]authReply{"lister": authUpstreams("t-list", sick.addr, good.addr)})
	a := authAgent(t, as.url())
	register(t, a, map[string]any{"name": "pool", "hosts": []string{"pool.internal"},
		"health_check": map[string]any{"path": "/health", "interval": "100ms", "timeout": "1s"}}, good, sick)
	eventually(t, 10*time.Second, func() error {
		var svc struct {
			Upstreams []struct{ ID, Health string }
		}
		if _, err := a.api("GET", "/v1/services/pool", nil, &svc); err != nil {
			return err
		}
		for _, u := range svc.Upstreams {
			if want := map[string]string{"good": "up", "sick": "down"}[u.ID]; u.Health != want {
				return fmt.Errorf("%s is %q, want %q", u.ID, u.Health, want)
			}
		}
		return nil
	})
	c := proxyClient()
	for range 20 {
		if got := mustCall(t, c, a, proxyCall{path: "/work", user: "lister", pass: "pw"}); got.code != 200 || got.upstream != "good" {
			t.Fatalf("explicit list with sick down: %d from %q", got.code, got.upstream)
		}
	}
	if n := served[1].Load(); n != 0 {
		t.Fatalf("the upstream failing its health check served %d requests from the list", n)
	}

	done := make(chan proxyResult, 1)
	go func() {
		got, _ := sendCall(c, a, proxyCall{path: "/hold", user: "lister", pass: "pw"})
		done <- got
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request never reached the upstream")
	}
	if code, err := a.api("POST", "/v1/services/pool/upstreams/good/drain?wait=300ms", nil, nil); code != 408 {
		t.Fatalf("drain with a request in flight through the list: %d %v, want 408", code, err)
	}
	releaseOnce.Do(func() { close(release) })
	if got := <-done; got.code != 200 {
		t.Fatalf("the request in flight during the drain got %d", got.code)
	}
	a.mustAPI("POST", "/v1/services/pool/upstreams/good/drain?wait=5s", nil, nil)
	// Both listed upstreams are now unusable: nothing is left to pick.
	if got := mustCall(t, c, a, proxyCall{path: "/work", user: "lister", pass: "pw"}); got.code != 503 {
		t.Fatalf("list of a drained and a down upstream: %d, want 503", got.code)
	}
}

// TestAuthRedirectIsNotFollowed: an auth server answering a redirect has
// given no answer (503), and the redirect is not followed: following it
// would send the request's URL, password included, to the redirect's
// target in a Referer header.
func TestAuthRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	elsewhere := startBackend(t, "elsewhere", nil)
	as := startAuthServer(t, map[string]authReply{
		"moved":  {Status: http.StatusFound, Location: "http://" + elsewhere.addr + "/collect", Body: "moved"},
		"moved2": {Status: http.StatusTemporaryRedirect, Location: "/auth?username=ok", Body: "moved"},
		"ok":     authOK("t-ok", ""),
	})
	a := authAgent(t, as.url())
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	c := proxyClient()
	for _, user := range []string{"moved", "moved2"} {
		if got := mustCall(t, c, a, proxyCall{user: user, pass: "Pw-redirect-5e1"}); got.code != 503 {
			t.Errorf("%s: auth server redirect gave %d %q, want 503", user, got.code, got.body)
		}
	}
	if n := elsewhere.hits.Load(); n != 0 {
		t.Errorf("the redirect was followed to another host (Referer %q)", elsewhere.last().Header.Get("Referer"))
	}
	if n := as.calls("ok"); n != 0 {
		t.Errorf("the redirect was followed on the auth server itself: %d calls", n)
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("a redirected authorization reached the upstream")
	}
}

// TestAuthClientGoneWhileWaiting: a client that hangs up while its
// authorization is slow is not an auth server failure (no failure counted,
// no warning logged), and the call it started still fills the cache for
// the next request.
func TestAuthClientGoneWhileWaiting(t *testing.T) {
	t.Parallel()
	as := startAuthServer(t, map[string]authReply{"patient": {Token: "t-p", Delay: time.Second}})
	a := authAgent(t, as.url(), "-auth-timeout", "10s")
	b := startBackend(t, "web", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	impatient := proxyClient()
	impatient.Timeout = 200 * time.Millisecond
	if _, err := sendCall(impatient, a, proxyCall{path: "/p", user: "patient", pass: "pw"}); err == nil {
		t.Fatal("the impatient client got an answer before the auth server gave one")
	}
	eventually(t, 10*time.Second, func() error {
		if n, err := scrapeMetric(a, "vulcan_auth_cache_entries"); err != nil || n != 1 {
			return fmt.Errorf("cache entries %v %v, want the answer cached", n, err)
		}
		return nil
	})
	if got := mustCall(t, proxyClient(), a, proxyCall{path: "/p", user: "patient", pass: "pw"}); got.code != 200 {
		t.Fatalf("after the call completed: %d %q", got.code, got.body)
	}
	if n := as.calls("patient"); n != 1 {
		t.Fatalf("%d auth calls, want the abandoned one reused", n)
	}
	if n, err := scrapeMetric(a, "vulcan_auth_failures_total"); err != nil || n != 0 {
		t.Errorf("vulcan_auth_failures_total = %v (%v) after a client hung up, want 0", n, err)
	}
	if strings.Contains(a.log.String(), "authorization failed") {
		t.Errorf("a client hanging up was logged as an authorization failure")
	}
}
