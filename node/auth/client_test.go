package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// authServer is a real authorization server on loopback whose answer the
// test sets, and which records what it was asked.
type authServer struct {
	*httptest.Server
	calls   atomic.Int64
	mu      sync.Mutex
	queries []string // raw queries, in arrival order
	answer  func(w http.ResponseWriter, r *http.Request)
}

func newAuthServer(t testing.TB, answer func(w http.ResponseWriter, r *http.Request)) *authServer {
	t.Helper()
	s := &authServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.RawQuery)
		s.mu.Unlock()
		s.answer(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *authServer) lastQuery(t *testing.T) url.Values {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queries) == 0 {
		t.Fatal("server got no request")
	}
	q, err := url.ParseQuery(s.queries[len(s.queries)-1])
	if err != nil {
		t.Fatalf("server got a bad query: %v", err)
	}
	return q
}

func jsonAnswer(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// fakeClock is the cache's clock, moved by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// downURL is the URL of a loopback port that nothing listens on.
func downURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/auth"
}

var alice = Request{
	Username: "alice", Password: "wonderland", Protocol: "HTTP",
	Method: "GET", URI: "/v1/things?a=1", Length: 0, IP: "10.1.2.3",
}

func TestAuthorizeMapsSuccess(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Answer
	}{
		{"service", `{"auth_token":"tok","service":"billing","other":[1,2]}`, Answer{Token: "tok", Service: "billing"}},
		{"upstreams", `{"auth_token":"tok","upstream":" 10.0.0.1:3001, 10.0.0.2:3002,,"}`,
			Answer{Token: "tok", Upstreams: []string{"10.0.0.1:3001", "10.0.0.2:3002"}}},
		{"token only", `{"auth_token":"tok"}`, Answer{Token: "tok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAuthServer(t, jsonAnswer(200, tt.body))
			c := newClient(t, Config{URLs: []string{srv.URL}})
			got, err := c.Authorize(context.Background(), alice)
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("answer = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthorizePassesDenialOn(t *testing.T) {
	for _, status := range []int{401, 403, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			body := fmt.Sprintf(`{"error":"no entry %d"}`, status)
			srv := newAuthServer(t, jsonAnswer(status, body))
			c := newClient(t, Config{URLs: []string{srv.URL}})
			_, err := c.Authorize(context.Background(), alice)
			var denied *DeniedError
			if !errors.As(err, &denied) {
				t.Fatalf("err = %v, want a *DeniedError", err)
			}
			if denied.Status != status || string(denied.Body) != body || denied.ContentType != "application/json" {
				t.Fatalf("denied = %d %q %q, want %d %q application/json", denied.Status, denied.Body, denied.ContentType, status, body)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Fatal("a denial must not be ErrUnavailable")
			}
		})
	}
}

func TestAuthorizeUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
	}{
		{"500", jsonAnswer(500, `{"auth_token":"tok"}`)},
		{"503", jsonAnswer(503, `busy`)},
		{"not json", jsonAnswer(200, `<html>hello</html>`)},
		{"truncated json", jsonAnswer(200, `{"auth_token":"to`)},
		{"no token", jsonAnswer(200, `{"service":"billing"}`)},
		{"empty token", jsonAnswer(200, `{"auth_token":"","service":"billing"}`)},
		{"token not a string", jsonAnswer(200, `{"auth_token":12}`)},
		{"too large", jsonAnswer(200, `{"auth_token":"tok","pad":"`+strings.Repeat("x", maxBody)+`"}`)},
		{"302 without location", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(302) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAuthServer(t, tt.answer)
			c := newClient(t, Config{URLs: []string{srv.URL}})
			_, err := c.Authorize(context.Background(), alice)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if st := c.Stats(); st.Failures != 1 || st.Calls != 1 {
				t.Fatalf("stats = %+v, want 1 call, 1 failure", st)
			}
		})
	}
}

func TestAuthorizeServerDown(t *testing.T) {
	c := newClient(t, Config{URLs: []string{downURL(t)}})
	_, err := c.Authorize(context.Background(), alice)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestAuthorizeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	c := newClient(t, Config{URLs: []string{srv.URL}, Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := c.Authorize(context.Background(), alice)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err = %v, want it to say timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Authorize took %s with a 100ms timeout", d)
	}
}

func TestAuthorizeQueryParameters(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	// The configured query is kept, but its copies of our parameters go.
	c := newClient(t, Config{URLs: []string{srv.URL + "/check?realm=mail&username=evil&ip=1.1.1.1"}})
	tests := []struct {
		name string
		r    Request
	}{
		{"GET", Request{Username: "bob@example.com", Password: "p&ss=w?rd %+/", Protocol: "HTTP",
			Method: "GET", URI: "/path/with space?x=1&y=é", Length: 0, IP: "127.0.0.9"}},
		{"POST", Request{Username: "bob@example.com", Password: "p&ss=w?rd %+/", Protocol: "HTTP",
			Method: "POST", URI: "/upload", Length: 1 << 20, IP: "::1"}},
		{"SMTP", Request{Username: "carol", Password: "x", Protocol: "SMTP",
			Method: "MAIL", URI: "", Length: 4096, IP: "192.0.2.7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Authorize(context.Background(), tt.r); err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			want := url.Values{
				"realm":    {"mail"},
				"username": {tt.r.Username},
				"password": {tt.r.Password},
				"protocol": {tt.r.Protocol},
				"method":   {tt.r.Method},
				"uri":      {tt.r.URI},
				"length":   {fmt.Sprint(tt.r.Length)},
				"ip":       {tt.r.IP},
			}
			if got := srv.lastQuery(t); !reflect.DeepEqual(got, want) {
				t.Fatalf("query = %v, want %v", got, want)
			}
		})
	}
	// The protocol's own order follows the configured query.
	srv.mu.Lock()
	raw := srv.queries[0]
	srv.mu.Unlock()
	if !strings.HasPrefix(raw, "realm=mail&username=") || !strings.Contains(raw, "&length=0&ip=") {
		t.Fatalf("raw query = %q, want realm first then the protocol's order", raw)
	}
}

func TestCacheSequential(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok","service":"s"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}})
	for i := range 100 {
		r := alice
		r.Length = int64(i * 100) // length varies per POST: not in the key
		a, err := c.Authorize(context.Background(), r)
		if err != nil || a.Token != "tok" {
			t.Fatalf("call %d: %+v, %v", i, a, err)
		}
	}
	if n := srv.calls.Load(); n != 1 {
		t.Fatalf("server calls = %d, want 1", n)
	}
	if st := c.Stats(); st.Hits != 99 || st.Misses != 1 || st.Calls != 1 || st.Entries != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCacheConcurrentFirstCalls(t *testing.T) {
	release := make(chan struct{})
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		jsonAnswer(200, `{"auth_token":"tok"}`)(w, r)
	})
	c := newClient(t, Config{URLs: []string{srv.URL}, Timeout: 10 * time.Second})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			a, err := c.Authorize(context.Background(), alice)
			if err == nil && a.Token != "tok" {
				err = fmt.Errorf("token %q", a.Token)
			}
			errs <- err
		})
	}
	// Hold the answer until every caller has missed and joined the call.
	waitFor(t, func() bool { return c.Stats().Misses == n })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.calls.Load(); got != 1 {
		t.Fatalf("server calls = %d, want 1", got)
	}
}

func TestSharedCallSurvivesFirstCallerLeaving(t *testing.T) {
	release := make(chan struct{})
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		jsonAnswer(200, `{"auth_token":"tok"}`)(w, r)
	})
	c := newClient(t, Config{URLs: []string{srv.URL}, Timeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Authorize(ctx, alice)
		first <- err
	}()
	waitFor(t, func() bool { return srv.calls.Load() == 1 })
	second := make(chan error, 1)
	go func() {
		a, err := c.Authorize(context.Background(), alice)
		if err == nil && a.Token != "tok" {
			err = fmt.Errorf("token %q", a.Token)
		}
		second <- err
	}()
	waitFor(t, func() bool { return c.Stats().Misses == 2 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first caller err = %v, want Canceled and ErrUnavailable", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if got := srv.calls.Load(); got != 1 {
		t.Fatalf("server calls = %d, want 1", got)
	}
	// The shared call's answer was cached although its starter left.
	if _, err := c.Authorize(context.Background(), alice); err != nil || srv.calls.Load() != 1 {
		t.Fatalf("after: err %v, calls %d", err, srv.calls.Load())
	}
}

func TestCallerGoneBeforeMissMakesNoCall(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Authorize(ctx, alice); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want Canceled and ErrUnavailable", err)
	}
	if c.Stats().Calls != 0 {
		t.Fatal("a call was made for a caller already gone")
	}
}

func TestCachedIdentityAnswersWhileServerDown(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok","service":"s"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}})
	if _, err := c.Authorize(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	a, err := c.Authorize(context.Background(), alice)
	if err != nil || a.Token != "tok" || a.Service != "s" {
		t.Fatalf("cached identity: %+v, %v", a, err)
	}
	other := alice
	other.Username = "mallory"
	if _, err := c.Authorize(context.Background(), other); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("uncached identity: err = %v, want ErrUnavailable", err)
	}
}

func TestCacheKeyFields(t *testing.T) {
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("password") != alice.Password {
			jsonAnswer(401, `{"error":"bad password"}`)(w, r)
			return
		}
		jsonAnswer(200, `{"auth_token":"tok"}`)(w, r)
	})
	c := newClient(t, Config{URLs: []string{srv.URL}})
	if _, err := c.Authorize(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	// A wrong password must never be answered by the cached success.
	wrong := alice
	wrong.Password = "not-" + alice.Password
	var denied *DeniedError
	if _, err := c.Authorize(context.Background(), wrong); !errors.As(err, &denied) {
		t.Fatalf("wrong password: err = %v, want a denial", err)
	}
	vary := []func(*Request){
		func(r *Request) { r.Username = "alice2" },
		func(r *Request) { r.Protocol = "SMTP" },
		func(r *Request) { r.Method = "POST" },
		func(r *Request) { r.URI = "/other" },
		func(r *Request) { r.IP = "10.9.9.9" },
	}
	for i, f := range vary {
		r := alice
		f(&r)
		before := srv.calls.Load()
		if _, err := c.Authorize(context.Background(), r); err != nil {
			t.Fatalf("variant %d: %v", i, err)
		}
		if srv.calls.Load() != before+1 {
			t.Fatalf("variant %d was answered from the cache", i)
		}
	}
	// Username and password are hashed together: moving a byte from one
	// to the other is another identity.
	shifted := alice
	shifted.Username, shifted.Password = alice.Username+"w", alice.Password[1:]
	if k1, k2 := credDigest(&c.salt, alice.Username, alice.Password), credDigest(&c.salt, shifted.Username, shifted.Password); k1 == k2 {
		t.Fatal("credential digests collide when a byte moves from password to username")
	}
}

func TestSuccessTTL(t *testing.T) {
	clock := newFakeClock()
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}, Now: clock.Now})
	authorize := func() {
		t.Helper()
		if _, err := c.Authorize(context.Background(), alice); err != nil {
			t.Fatal(err)
		}
	}
	authorize()
	clock.Advance(DefaultSuccessTTL - time.Millisecond)
	authorize()
	if n := srv.calls.Load(); n != 1 {
		t.Fatalf("calls before expiry = %d, want 1", n)
	}
	clock.Advance(time.Millisecond)
	authorize()
	if n := srv.calls.Load(); n != 2 {
		t.Fatalf("calls after expiry = %d, want 2", n)
	}
}

func TestDenialCachedFiveSeconds(t *testing.T) {
	clock := newFakeClock()
	srv := newAuthServer(t, jsonAnswer(403, `forbidden`))
	c := newClient(t, Config{URLs: []string{srv.URL}, Now: clock.Now})
	deny := func() {
		t.Helper()
		var denied *DeniedError
		if _, err := c.Authorize(context.Background(), alice); !errors.As(err, &denied) || denied.Status != 403 || string(denied.Body) != "forbidden" {
			t.Fatalf("err = %v, want the 403", err)
		}
	}
	deny()
	clock.Advance(5*time.Second - time.Millisecond)
	deny()
	if n := srv.calls.Load(); n != 1 {
		t.Fatalf("calls within 5s = %d, want 1", n)
	}
	clock.Advance(time.Millisecond)
	deny()
	if n := srv.calls.Load(); n != 2 {
		t.Fatalf("calls after 5s = %d, want 2", n)
	}
}

func TestFailuresNotCached(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			jsonAnswer(500, `oops`)(w, r)
			return
		}
		jsonAnswer(200, `{"auth_token":"tok"}`)(w, r)
	})
	c := newClient(t, Config{URLs: []string{srv.URL}})
	if _, err := c.Authorize(context.Background(), alice); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	fail.Store(false)
	if _, err := c.Authorize(context.Background(), alice); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if n := srv.calls.Load(); n != 2 {
		t.Fatalf("calls = %d, want 2", n)
	}
}

func TestNegativeTTLDisablesCaching(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}, SuccessTTL: -1})
	for range 3 {
		if _, err := c.Authorize(context.Background(), alice); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.calls.Load(); n != 3 {
		t.Fatalf("calls = %d, want 3", n)
	}
}

func TestCacheBoundEvictsLeastRecentlyUsed(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{srv.URL}, MaxEntries: 3})
	user := func(name string) Request { r := alice; r.Username = name; return r }
	for _, name := range []string{"a", "b", "c", "a", "d"} { // "b" is then the least recently used
		if _, err := c.Authorize(context.Background(), user(name)); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.Stats(); st.Entries != 3 || srv.calls.Load() != 4 {
		t.Fatalf("entries %d, calls %d; want 3, 4", st.Entries, srv.calls.Load())
	}
	for _, name := range []string{"a", "c", "d"} {
		if _, err := c.Authorize(context.Background(), user(name)); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.calls.Load(); n != 4 {
		t.Fatalf("a, c or d was evicted: calls = %d", n)
	}
	if _, err := c.Authorize(context.Background(), user("b")); err != nil {
		t.Fatal(err)
	}
	if n := srv.calls.Load(); n != 5 {
		t.Fatalf("b was not evicted: calls = %d", n)
	}
}

func TestFailoverToNextURL(t *testing.T) {
	srv := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{downURL(t), srv.URL}})
	for i := range 4 { // round robin starts on each URL in turn
		r := alice
		r.Username = fmt.Sprint("user", i)
		if _, err := c.Authorize(context.Background(), r); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := srv.calls.Load(); n != 4 {
		t.Fatalf("live server calls = %d, want 4", n)
	}
	// Two of the four calls started on the dead URL and failed over.
	if st := c.Stats(); st.Calls != 6 || st.Failures != 2 {
		t.Fatalf("stats = %+v, want 6 calls and 2 failures", st)
	}
}

func TestNoFailoverOnAnswer(t *testing.T) {
	bad := newAuthServer(t, jsonAnswer(500, `down for maintenance`))
	good := newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`))
	c := newClient(t, Config{URLs: []string{bad.URL, good.URL}})
	if _, err := c.Authorize(context.Background(), alice); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want the 500 as ErrUnavailable", err)
	}
	if good.calls.Load() != 0 {
		t.Fatal("a server that answered was failed over")
	}
}

func TestRoundRobin(t *testing.T) {
	a := newAuthServer(t, jsonAnswer(200, `{"auth_token":"a"}`))
	b := newAuthServer(t, jsonAnswer(200, `{"auth_token":"b"}`))
	c := newClient(t, Config{URLs: []string{a.URL, b.URL}})
	for i := range 10 {
		r := alice
		r.Username = fmt.Sprint("user", i)
		if _, err := c.Authorize(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls.Load() != 5 || b.calls.Load() != 5 {
		t.Fatalf("calls a=%d b=%d, want 5 each", a.calls.Load(), b.calls.Load())
	}
}

func TestAllURLsDown(t *testing.T) {
	c := newClient(t, Config{URLs: []string{downURL(t), downURL(t)}})
	if _, err := c.Authorize(context.Background(), alice); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if st := c.Stats(); st.Calls != 2 {
		t.Fatalf("calls = %d, want each URL tried once", st.Calls)
	}
}

// syncBuffer collects log output written from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPasswordNeverLeaks(t *testing.T) {
	const password = "S3cret pa$$&word=/?"
	forms := []string{password, url.QueryEscape(password), url.PathEscape(password)}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	// A server that hangs up mid-answer fails the read of the body.
	hangup := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{"auth_`))
		panic(http.ErrAbortHandler)
	})
	servers := map[string]string{
		"down":    downURL(t),
		"timeout": hang.URL,
		"hangup":  hangup.URL,
		"500":     newAuthServer(t, jsonAnswer(500, "boom")).URL,
		"badjson": newAuthServer(t, jsonAnswer(200, "{nope")).URL,
		"401":     newAuthServer(t, jsonAnswer(401, "who are you")).URL,
		"ok":      newAuthServer(t, jsonAnswer(200, `{"auth_token":"tok"}`)).URL,
	}
	for name, u := range servers {
		t.Run(name, func(t *testing.T) {
			var logs syncBuffer
			logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
			c := newClient(t, Config{URLs: []string{u}, Timeout: 200 * time.Millisecond, Logger: logger})
			r := alice
			r.Password = password
			_, err := c.Authorize(context.Background(), r)
			if name != "ok" && err == nil {
				t.Fatal("want an error")
			}
			var texts []string
			if err != nil {
				texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
			}
			texts = append(texts, logs.String(), fmt.Sprintf("%#v", c.Stats()))
			for i := range c.cache.shards {
				s := &c.cache.shards[i]
				s.mu.Lock()
				for k, e := range s.m {
					texts = append(texts, fmt.Sprintf("%#v %#v", k, *e), k.flightKey())
				}
				s.mu.Unlock()
			}
			for _, text := range texts {
				for _, f := range forms {
					if strings.Contains(text, f) {
						t.Fatalf("password form %q found in %q", f, text)
					}
				}
			}
			if name != "ok" && name != "401" && !strings.Contains(logs.String(), "[WARN]") {
				t.Fatalf("failure was not logged: %q", logs.String())
			}
		})
	}
}

func TestNewValidatesURLs(t *testing.T) {
	for _, urls := range [][]string{
		nil,
		{"127.0.0.1:8000"},
		{"ftp://auth.example/"},
		{"http:///nohost"},
		{"http://ok.example/", "::bad"},
		{"http://auth.example/?a=%zz"},
	} {
		if _, err := New(Config{URLs: urls}); err == nil {
			t.Errorf("New(%q) accepted", urls)
		}
	}
	if _, err := New(Config{URLs: []string{"http://u:secretpw@auth.example/?x=1"}, Timeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
	// The error for a bad URL does not quote its user info.
	_, err := New(Config{URLs: []string{"ftp://u:secretpw@auth.example/"}})
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("err = %v", err)
	}
	if _, err := New(Config{URLs: []string{"https://auth.example:8443/check?realm=x"}}); err != nil {
		t.Fatalf("valid URL refused: %v", err)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met before the deadline")
		}
		time.Sleep(time.Millisecond)
	}
}
