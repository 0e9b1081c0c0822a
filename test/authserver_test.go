package test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// authReply is what the test authorization server answers for one user.
// The zero value is a 200 with no auth_token, which vulcan must refuse.
type authReply struct {
	// Status is the answer's status; 0 means 200.
	Status int
	// Token, Service and Upstream make the JSON of a 200 answer
	// (auth_token, service, upstream); empty ones are left out.
	Token, Service, Upstream string
	// Body, when set, is sent instead of the JSON: a 4xx's body, or a 200
	// that is not JSON.
	Body string
	// ContentType of the answer; default application/json.
	ContentType string
	// Delay holds the answer back, to make a slow server.
	Delay time.Duration
	// Password, when set, is required: any other gets 401.
	Password string
	// Location is sent as the Location header (with a 3xx Status).
	Location string
}

// authOK answers 200 with a token and a service name (empty: none).
func authOK(token, service string) authReply { return authReply{Token: token, Service: service} }

// authUpstreams answers 200 with a token and an explicit upstream list.
func authUpstreams(token string, addrs ...string) authReply {
	r := authReply{Token: token}
	for i, a := range addrs {
		if i > 0 {
			r.Upstream += ","
		}
		r.Upstream += a
	}
	return r
}

// authDeny answers status with body and content type.
func authDeny(status int, contentType, body string) authReply {
	return authReply{Status: status, ContentType: contentType, Body: body}
}

// authQuery is one request the authorization server received.
type authQuery struct {
	Method   string
	Path     string
	RawQuery string
	Values   url.Values
}

// user is the query's username (the table's key).
func (q authQuery) user() string { return q.Values.Get("username") }

// authServer is a real authorization server speaking vulcan's protocol on a
// fresh loopback address. It answers each user from a table, records every
// query it receives, can hold its answers until released, and can be
// stopped and restarted on the same address. It is safe for concurrent use.
type authServer struct {
	t    testing.TB
	addr string

	mu       sync.Mutex
	users    map[string]authReply
	fallback authReply
	queries  []authQuery
	gate     chan struct{} // when set, answers wait for it to close
	srv      *http.Server
	down     chan struct{} // closed by stop: releases held answers
}

// startAuthServer serves users (username → reply) on a fresh 127.0.x.y
// address until the test ends. Unknown users get 403 {"error":"unknown user"}.
func startAuthServer(t testing.TB, users map[string]authReply) *authServer {
	t.Helper()
	ln, err := net.Listen("tcp", nextIP()+":0")
	if err != nil {
		t.Fatalf("auth server: %v", err)
	}
	s := &authServer{
		t:        t,
		addr:     ln.Addr().String(),
		users:    map[string]authReply{},
		fallback: authDeny(http.StatusForbidden, "application/json", `{"error":"unknown user"}`),
	}
	for u, r := range users {
		s.users[u] = r
	}
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

// url is the server's address for -auth-url.
func (s *authServer) url() string { return "http://" + s.addr + "/auth" }

// set installs or replaces the reply for user.
func (s *authServer) set(user string, r authReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[user] = r
}

// received returns a copy of every query so far, in arrival order.
func (s *authServer) received() []authQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]authQuery(nil), s.queries...)
}

// calls counts the queries received for user.
func (s *authServer) calls(user string) int {
	n := 0
	for _, q := range s.received() {
		if q.user() == user {
			n++
		}
	}
	return n
}

// total counts every query received.
func (s *authServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queries)
}

// hold makes answers wait (after the query is recorded) until the returned
// release is called; release is idempotent and also runs at cleanup.
func (s *authServer) hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			if s.gate == gate {
				s.gate = nil
			}
			s.mu.Unlock()
			close(gate)
		})
	}
	s.t.Cleanup(release)
	return release
}

// stop closes the listener and every connection: the address then refuses
// connections. Answers being held are abandoned.
func (s *authServer) stop() {
	s.mu.Lock()
	srv, down := s.srv, s.down
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	close(down)
	_ = srv.Close()
}

// restart serves again on the same address after stop.
func (s *authServer) restart() {
	s.t.Helper()
	var ln net.Listener
	eventually(s.t, 5*time.Second, func() error {
		var err error
		ln, err = net.Listen("tcp", s.addr)
		return err
	})
	s.serve(ln)
}

func (s *authServer) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.answer), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv, s.down = srv, make(chan struct{})
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.t.Logf("auth server %s: %v", s.addr, err)
		}
	}()
}

func (s *authServer) answer(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	s.queries = append(s.queries, authQuery{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Values: q})
	reply, ok := s.users[q.Get("username")]
	if !ok {
		reply = s.fallback
	}
	gate, down := s.gate, s.down
	s.mu.Unlock()

	if !authWait(r.Context(), gate, down, reply.Delay) {
		return
	}
	if reply.Password != "" && q.Get("password") != reply.Password {
		reply = authDeny(http.StatusUnauthorized, "application/json", `{"error":"bad password"}`)
	}
	body := reply.Body
	if body == "" {
		b, _ := json.Marshal(struct {
			AuthToken string `json:"auth_token,omitempty"`
			Service   string `json:"service,omitempty"`
			Upstream  string `json:"upstream,omitempty"`
			Extra     string `json:"extra_field_to_ignore"`
		}{reply.Token, reply.Service, reply.Upstream, "ignored"})
		body = string(b)
	}
	ct := reply.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	if reply.Location != "" {
		w.Header().Set("Location", reply.Location)
	}
	w.WriteHeader(cmp.Or(reply.Status, http.StatusOK))
	fmt.Fprint(w, body)
}

// authWait holds an answer for the gate and the delay; false means give up (the
// client or the server went away).
func authWait(ctx context.Context, gate, down <-chan struct{}, delay time.Duration) bool {
	if gate != nil {
		select {
		case <-gate:
		case <-down:
			return false
		case <-ctx.Done():
			return false
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-down:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}
