package upstreams

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkServer is an HTTP upstream whose health answer can be changed.
type checkServer struct {
	*httptest.Server
	status atomic.Int32
	delay  atomic.Int64 // nanoseconds to wait before answering
	hits   atomic.Int64
	mu     sync.Mutex
	last   *http.Request
}

func newCheckServer(t *testing.T) *checkServer {
	t.Helper()
	cs := &checkServer{}
	cs.status.Store(http.StatusOK)
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		cs.mu.Lock()
		cs.last = r
		cs.mu.Unlock()
		if d := time.Duration(cs.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if s := int(cs.status.Load()); s >= 300 && s < 400 {
			// A redirect to a failing place: the check must not follow it.
			w.Header().Set("Location", "/broken")
			w.WriteHeader(s)
			return
		}
		w.WriteHeader(int(cs.status.Load()))
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *checkServer) addr() string { return cs.Listener.Addr().String() }

func (cs *checkServer) lastRequest() *http.Request {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.last
}

// greeter is a tiny SMTP server: it greets, answers EHLO and QUIT.
type greeter struct {
	ln       net.Listener
	greeting atomic.Value // string: the greeting line, or "" to stay silent
	ehlo     atomic.Value // string: the reply to EHLO
	ehlos    atomic.Int64
	mu       sync.Mutex
	lastEHLO string
	wg       sync.WaitGroup
}

func newGreeter(t *testing.T) *greeter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &greeter{ln: ln}
	g.greeting.Store("220 greeter ESMTP")
	g.ehlo.Store("250-greeter\r\n250 8BITMIME")
	g.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.wg.Go(func() { g.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		g.wg.Wait()
	})
	return g
}

func (g *greeter) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting := g.greeting.Load().(string)
	if greeting == "" {
		// Silent: hold the connection until the client gives up.
		_, _ = c.Read(make([]byte, 1))
		return
	}
	if _, err := c.Write([]byte(greeting + "\r\n")); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch verb, _, _ := strings.Cut(line, " "); strings.ToUpper(verb) {
		case "EHLO":
			g.ehlos.Add(1)
			g.mu.Lock()
			g.lastEHLO = line
			g.mu.Unlock()
			_, err = c.Write([]byte(g.ehlo.Load().(string) + "\r\n"))
		case "QUIT":
			_, _ = c.Write([]byte("221 bye\r\n"))
			return
		default:
			_, err = c.Write([]byte("500 what\r\n"))
		}
		if err != nil {
			return
		}
	}
}

func (g *greeter) addr() string { return g.ln.Addr().String() }

// startChecks runs RunChecks until the test ends, and checks that it
// returns promptly when told to stop.
func startChecks(t *testing.T, tb *Table) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.RunChecks(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("RunChecks did not return after its context was cancelled")
		}
	})
}

func fastCheck(path string) *HealthCheck {
	return &HealthCheck{Path: path, Interval: Duration(20 * time.Millisecond), Timeout: Duration(time.Second)}
}

func healthOf(t *testing.T, tb *Table, service, id string) Health {
	t.Helper()
	return viewOf(t, tb, service, id).Health
}

func TestHTTPCheckTakesDownAndBringsBack(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{})
	srv := newCheckServer(t)
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, HealthCheck: fastCheck("/health?deep=1")})
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: srv.addr()})
	startChecks(t, tb)

	eventually(t, 5*time.Second, "a first check", func() bool { return srv.hits.Load() > 0 })
	r := srv.lastRequest()
	if r.Method != http.MethodGet || r.URL.Path != "/health" || r.URL.RawQuery != "deep=1" || r.Host != srv.addr() {
		t.Fatalf("check request %s %s host %s", r.Method, r.URL, r.Host)
	}
	if len(hl.list()) != 0 {
		t.Fatalf("passing checks on an up upstream reported %v", hl.list())
	}

	srv.status.Store(http.StatusServiceUnavailable)
	eventually(t, 5*time.Second, "a down", func() bool { return healthOf(t, tb, "web", "a") == HealthDown })
	if _, err := tb.Pick("web", nil); err == nil {
		t.Fatal("picked an upstream its check took down")
	}
	srv.status.Store(http.StatusFound) // 3xx is healthy, and not followed
	eventually(t, 5*time.Second, "a up", func() bool { return healthOf(t, tb, "web", "a") == HealthUp })
	mustPick(t, tb, "web", nil).Release()
	if ev := hl.list(); !slices.Equal(ev, []string{"web/a down", "web/a up"}) {
		t.Fatalf("OnHealth calls %v, want [web/a down web/a up]", ev)
	}
}

func TestHTTPCheckRefusedAndTimeout(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	slow, ok := newCheckServer(t), newCheckServer(t)
	slow.delay.Store(int64(5 * time.Second))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	_ = ln.Close()
	hc := fastCheck("/")
	hc.Timeout = Duration(100 * time.Millisecond)
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, HealthCheck: hc})
	tb.PutUpstream(Upstream{Service: "web", ID: "refused", Addr: refused})
	tb.PutUpstream(Upstream{Service: "web", ID: "slow", Addr: slow.addr()})
	tb.PutUpstream(Upstream{Service: "web", ID: "ok", Addr: ok.addr()})
	startChecks(t, tb)
	eventually(t, 5*time.Second, "refused and slow down", func() bool {
		return healthOf(t, tb, "web", "refused") == HealthDown && healthOf(t, tb, "web", "slow") == HealthDown
	})
	if h := healthOf(t, tb, "web", "ok"); h != HealthUp {
		t.Fatalf("healthy upstream is %s", h)
	}
	for _, id := range pickIDs(t, tb, "web", 5) {
		if id != "ok" {
			t.Fatalf("picked %s", id)
		}
	}
}

func TestSMTPCheck(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{CheckHELO: "probe.example"})
	g := newGreeter(t)
	tb.PutService(Service{Name: "mail", Protocol: ProtoSMTP, HealthCheck: fastCheck("")})
	tb.PutUpstream(Upstream{Service: "mail", ID: "m1", Addr: g.addr()})
	startChecks(t, tb)
	eventually(t, 5*time.Second, "an EHLO", func() bool { return g.ehlos.Load() > 0 })
	g.mu.Lock()
	ehlo := g.lastEHLO
	g.mu.Unlock()
	if ehlo != "EHLO probe.example" {
		t.Fatalf("check sent %q", ehlo)
	}

	g.greeting.Store("554 go away")
	eventually(t, 5*time.Second, "down on a 554 greeting", func() bool { return healthOf(t, tb, "mail", "m1") == HealthDown })
	g.greeting.Store("220 greeter ESMTP")
	eventually(t, 5*time.Second, "up again", func() bool { return healthOf(t, tb, "mail", "m1") == HealthUp })
	g.ehlo.Store("502 no EHLO here")
	eventually(t, 5*time.Second, "down on a refused EHLO", func() bool { return healthOf(t, tb, "mail", "m1") == HealthDown })
	g.ehlo.Store("250 ok")
	eventually(t, 5*time.Second, "up again", func() bool { return healthOf(t, tb, "mail", "m1") == HealthUp })
	want := []string{"mail/m1 down", "mail/m1 up", "mail/m1 down", "mail/m1 up"}
	if ev := hl.list(); !slices.Equal(ev, want) {
		t.Fatalf("OnHealth calls %v, want %v", ev, want)
	}
}

func TestSMTPCheckSilentServerTimesOut(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	g := newGreeter(t)
	g.greeting.Store("")
	hc := fastCheck("")
	hc.Timeout = Duration(100 * time.Millisecond)
	tb.PutService(Service{Name: "mail", Protocol: ProtoSMTP, HealthCheck: hc})
	tb.PutUpstream(Upstream{Service: "mail", ID: "m1", Addr: g.addr()})
	startChecks(t, tb)
	eventually(t, 5*time.Second, "down on a silent server", func() bool { return healthOf(t, tb, "mail", "m1") == HealthDown })
}

func TestChecksFollowRegistrations(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	startChecks(t, tb) // before anything is registered
	s1, s2 := newCheckServer(t), newCheckServer(t)
	s1.status.Store(http.StatusInternalServerError)
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, HealthCheck: fastCheck("/one")})
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: s1.addr()})
	eventually(t, 5*time.Second, "a new upstream checked", func() bool { return healthOf(t, tb, "web", "a") == HealthDown })

	tb.PutUpstream(Upstream{Service: "web", ID: "b", Addr: s2.addr()})
	eventually(t, 5*time.Second, "a second upstream checked", func() bool { return s2.hits.Load() > 0 })

	// A changed check restarts on the new path.
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, HealthCheck: fastCheck("/two")})
	eventually(t, 5*time.Second, "the new path", func() bool {
		r := s2.lastRequest()
		return r != nil && r.URL.Path == "/two"
	})

	// A removed upstream stops being checked: while b is checked several
	// more times, a is checked at most once more (a check in progress).
	tb.RemoveUpstream("web", "a")
	stoppedAt := s1.hits.Load()
	base := s2.hits.Load()
	eventually(t, 5*time.Second, "more checks of b", func() bool { return s2.hits.Load() >= base+5 })
	if n := s1.hits.Load(); n > stoppedAt+1 {
		t.Fatalf("removed upstream checked %d more times", n-stoppedAt)
	}

	// A service that drops its check stops checking.
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP})
	stoppedAt = s2.hits.Load()
	s3 := newCheckServer(t)
	tb.PutService(Service{Name: "other", Protocol: ProtoHTTP, HealthCheck: fastCheck("/")})
	tb.PutUpstream(Upstream{Service: "other", ID: "x", Addr: s3.addr()})
	eventually(t, 5*time.Second, "checks of another service", func() bool { return s3.hits.Load() >= 5 })
	if n := s2.hits.Load(); n > stoppedAt+1 {
		t.Fatalf("unchecked service still checked %d more times", n-stoppedAt)
	}
}

func TestRunChecksStopsDuringASlowCheck(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	g := newGreeter(t)
	g.greeting.Store("") // never greets
	slow := newCheckServer(t)
	slow.delay.Store(int64(time.Minute))
	hc := &HealthCheck{Interval: Duration(time.Minute), Timeout: Duration(time.Minute)}
	tb.PutService(Service{Name: "mail", Protocol: ProtoSMTP, HealthCheck: hc})
	tb.PutUpstream(Upstream{Service: "mail", ID: "m1", Addr: g.addr()})
	hc2 := *hc
	hc2.Path = "/"
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, HealthCheck: &hc2})
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: slow.addr()})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.RunChecks(ctx)
	}()
	eventually(t, 5*time.Second, "the checks under way", func() bool { return slow.hits.Load() > 0 })
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("RunChecks still running 3s after cancel, with checks whose timeout is a minute")
	}
	// A check cut short says nothing about the upstream.
	if h := healthOf(t, tb, "web", "a"); h != HealthUp {
		t.Fatalf("cancelled check marked the upstream %s", h)
	}
}
