package test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestRoundRobinEvenAcrossTwoUpstreams(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b1, b2 := startBackend(t, "b1", nil), startBackend(t, "b2", nil)
	register(t, a, map[string]any{"name": "web"}, b1, b2)
	c := proxyClient()
	counts := map[string]int{}
	for range 100 {
		code, up, _, err := get(c, a, "", "/")
		if err != nil || code != 200 {
			t.Fatalf("GET: %d %v", code, err)
		}
		counts[up]++
	}
	if d := counts["b1"] - counts["b2"]; d < -1 || d > 1 {
		t.Fatalf("round robin uneven over 100 requests: %v", counts)
	}
}

func TestHostAndPathRouting(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	api, www, wild, catchall, apiv2 := startBackend(t, "api", nil), startBackend(t, "www", nil),
		startBackend(t, "wild", nil), startBackend(t, "any", nil), startBackend(t, "apiv2", nil)
	register(t, a, map[string]any{"name": "api", "hosts": []string{"api.example.com"}}, api)
	register(t, a, map[string]any{"name": "apiv2", "hosts": []string{"api.example.com"}, "path_prefix": "/v2/"}, apiv2)
	register(t, a, map[string]any{"name": "www", "hosts": []string{"www.example.com"}}, www)
	register(t, a, map[string]any{"name": "wild", "hosts": []string{"*.example.com"}}, wild)
	register(t, a, map[string]any{"name": "any"}, catchall)
	c := proxyClient()
	cases := []struct{ host, path, want string }{
		{"api.example.com", "/x", "api"},
		{"API.example.com:8080", "/x", "api"},
		{"api.example.com", "/v2/users", "apiv2"},
		{"www.example.com", "/", "www"},
		{"shop.example.com", "/", "wild"},
		{"a.b.example.com", "/", "wild"},
		{"other.org", "/", "any"},
	}
	for _, tc := range cases {
		code, up, _, err := get(c, a, tc.host, tc.path)
		if err != nil || code != 200 || up != tc.want {
			t.Errorf("Host %s path %s: got %d from %q (%v), want %s", tc.host, tc.path, code, up, err, tc.want)
		}
	}
	// With no catch-all service, an unknown host is 404.
	a.mustAPI("DELETE", "/v1/services/any", nil, nil)
	eventually(t, 5*time.Second, func() error {
		code, _, body, err := get(c, a, "other.org", "/")
		if err != nil || code != 404 || !strings.Contains(body, "error") {
			return fmt.Errorf("got %d %q %v, want 404 with a JSON error", code, body, err)
		}
		return nil
	})
}

// TestBodiesStreamBothWays sends a 3 MiB body up and gets a 3 MiB body back,
// and shows neither is held whole: the upstream answers its first MiB before
// the client has sent its last, and the client reads that first MiB while the
// upstream is still waiting to send the rest.
func TestBodiesStreamBothWays(t *testing.T) {
	t.Parallel()
	const size = 3 << 20
	half := make(chan struct{})
	b := startBackend(t, "stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		h := sha256.New()
		buf := make([]byte, 1<<20)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		h.Write(buf)
		// The client sends its last two MiB only after reading this MiB.
		w.WriteHeader(200)
		w.Write(bytes.Repeat([]byte("a"), 1<<20))
		w.(http.Flusher).Flush()
		n, _ := io.Copy(h, r.Body)
		<-half
		w.Write(bytes.Repeat([]byte("b"), 2<<20))
		fmt.Fprintf(w, "\n%d %x", n+int64(len(buf)), h.Sum(nil))
	}))
	a := startAgent(t, agentOpts{})
	register(t, a, map[string]any{"name": "stream"}, b)

	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(body)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+a.http+"/upload", pr)
	req.ContentLength = size
	firstSent := make(chan struct{})
	go func() {
		pw.Write(body[:1<<20])
		close(firstSent)
	}()
	respc := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := proxyClient().Do(req)
		if err != nil {
			errc <- err
			return
		}
		respc <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-respc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("no response headers while the request body was still being sent: request buffered")
	}
	defer resp.Body.Close()
	<-firstSent
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("read first MiB: %v", err)
	}
	go func() {
		pw.Write(body[1<<20:])
		pw.Close()
	}()
	close(half)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if first[0] != 'a' || len(rest) < 2<<20 {
		t.Fatalf("response: first byte %q, rest %d bytes", first[0], len(rest))
	}
	tail := string(rest[2<<20:])
	if tail != fmt.Sprintf("\n%d %x", size, want) {
		t.Fatalf("upstream saw %q, want %d bytes with hash %x", tail, size, want)
	}
}

func TestForwardedHeadersReachUpstream(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "fwd", nil)
	a := startAgent(t, agentOpts{})
	register(t, a, map[string]any{"name": "fwd"}, b)
	req, _ := http.NewRequest("GET", "http://"+a.http+"/x", nil)
	req.Host = "shop.example.com"
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client may not choose its own address
	req.SetBasicAuth("u", "p")
	resp, err := proxyClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := b.last()
	if xff := got.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the client's address 127.0.0.1", xff)
	}
	if h := got.Header.Get("X-Forwarded-Host"); h != "shop.example.com" {
		t.Errorf("X-Forwarded-Host = %q", h)
	}
	if p := got.Header.Get("X-Forwarded-Proto"); p != "http" {
		t.Errorf("X-Forwarded-Proto = %q", p)
	}
	if got.Host != "shop.example.com" {
		t.Errorf("Host = %q, want the client's", got.Host)
	}
	if got.Header.Get("Authorization") != "" {
		t.Errorf("Authorization forwarded to an upstream without pass_auth")
	}
}

func TestWebSocketEchoThroughProxy(t *testing.T) {
	t.Parallel()
	up := websocket.Upgrader{}
	b := startBackend(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	}))
	a := startAgent(t, agentOpts{})
	register(t, a, map[string]any{"name": "ws"}, b)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+a.http+"/socket", nil)
	if err != nil {
		t.Fatalf("dial through proxy: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := range 5 {
		msg := fmt.Sprintf("hello %d", i)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

// TestKilledUpstreamIsAvoidedAndComesBack: with one of two upstreams dead,
// every GET still succeeds (retried on the other), the dead one gets nothing
// while down, and an active check returns it to rotation once it is back.
func TestKilledUpstreamIsAvoidedAndComesBack(t *testing.T) {
	t.Parallel()
	b1, b2 := startBackend(t, "b1", nil), startBackend(t, "b2", nil)
	a := startAgent(t, agentOpts{})
	register(t, a, map[string]any{"name": "web", "health_check": map[string]any{"path": "/", "interval": "200ms", "timeout": "1s"}}, b1, b2)
	c := proxyClient()
	for range 10 {
		if code, _, _, err := get(c, a, "", "/"); err != nil || code != 200 {
			t.Fatalf("warm-up GET: %d %v", code, err)
		}
	}
	sentB2 := `vulcan_upstream_requests_total{service="web",upstream="b2"}`
	failedB2 := `vulcan_upstream_connect_failures_total{service="web",upstream="b2"}`
	sent0, failed0 := rlMustMetric(t, a, sentB2), rlMustMetric(t, a, failedB2)
	b2.close()
	for i := range 200 {
		code, up, body, err := get(c, a, "", fmt.Sprintf("/r%d", i))
		if err != nil || code != 200 || up != "b1" {
			t.Fatalf("request %d with b2 dead: %d from %q %q %v", i, code, up, body, err)
		}
	}
	// At most the one request that found b2 dead (a failing health check
	// may have found it first) was sent its way, and retried on b1.
	sent, failed := rlMustMetric(t, a, sentB2)-sent0, rlMustMetric(t, a, failedB2)-failed0
	if sent > 1 || failed != sent {
		t.Fatalf("while b2 was down, %v requests were sent to it and %v failed; want at most 1, failed", sent, failed)
	}
	eventually(t, 5*time.Second, func() error {
		var svc struct {
			Upstreams []struct{ ID, Health string }
		}
		a.mustAPI("GET", "/v1/services/web", nil, &svc)
		for _, u := range svc.Upstreams {
			if u.ID == "b2" && u.Health != "down" {
				return fmt.Errorf("b2 health %s", u.Health)
			}
		}
		return nil
	})
	b2.reopen(t)
	before := b2.hits.Load()
	eventually(t, 10*time.Second, func() error {
		code, _, _, err := get(c, a, "", "/")
		if err != nil || code != 200 {
			return fmt.Errorf("GET: %d %v", code, err)
		}
		if b2.hits.Load() == before {
			return fmt.Errorf("b2 not back in rotation")
		}
		return nil
	})
}

func TestAdminAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b := startBackend(t, "b", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	cases := []struct {
		method, path, body string
		want               int
	}{
		{"PUT", "/v1/services/web2", `{"protocol": "http",`, 400},
		{"PUT", "/v1/services/web2", `{"protocol": "gopher"}`, 400},
		{"PUT", "/v1/services/web2", `{"protocl": "http"}`, 400},
		{"PUT", "/v1/services/bad%20name", `{}`, 400},
		{"PUT", "/v1/services/nosuch/upstreams/u1", `{"addr": "127.0.0.1:1"}`, 404},
		{"PUT", "/v1/services/web/upstreams/u1", `{"addr": "127.0.0.1"}`, 400},
		{"PUT", "/v1/services/web/upstreams/u1", `{"addr": "nohost:port"}`, 400},
		{"PUT", "/v1/services/web/upstreams/u1", `[1,2]`, 400},
		{"DELETE", "/v1/services/nosuch", ``, 404},
		{"POST", "/v1/services/web/upstreams/nosuch/drain", ``, 404},
		{"POST", "/v1/services/web/upstreams/b/drain?wait=soon", ``, 400},
		{"PATCH", "/v1/services/web", `{}`, 405},
		{"GET", "/v1/services/web/upstreams/b/drain", ``, 405},
		{"DELETE", "/v1/status", ``, 405},
		{"POST", "/v1/limits", `{"period": 10}`, 400},
		{"POST", "/v1/limits", `{"period": 0, "threshold": 1}`, 400},
		{"POST", "/v1/limits", `{"path": "(", "period": 1, "threshold": 1}`, 400},
	}
	for _, tc := range cases {
		code, err := a.api(tc.method, tc.path, tc.body, nil)
		se, ok := err.(*statusError)
		if !ok || code != tc.want {
			t.Errorf("%s %s %s: got %d %v, want %d", tc.method, tc.path, tc.body, code, err, tc.want)
			continue
		}
		var e struct{ Error string }
		if jerr := jsonUnmarshal(se.body, &e); jerr != nil || e.Error == "" {
			t.Errorf("%s %s: body %q is not a JSON error", tc.method, tc.path, se.body)
		}
	}
	if code, _, _, err := get(proxyClient(), a, "", "/"); err != nil || code != 200 {
		t.Fatalf("node stopped serving after bad admin input: %d %v", code, err)
	}
}

func TestMalformedClientRequests(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b := startBackend(t, "b", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	raw := func(req string) string {
		conn, err := net.DialTimeout("tcp", a.http, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go conn.Write([]byte(req))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line
	}
	if got := raw("GARBAGE\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("bad request line: got %q, want 400", got)
	}
	big := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 128<<10) + "\r\n\r\n"
	if got := raw(big); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("oversized headers: got %q, want 431", got)
	}
	if got := raw("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("bad Content-Length: got %q, want 400", got)
	}
	if code, _, _, err := get(proxyClient(), a, "", "/"); err != nil || code != 200 {
		t.Fatalf("node stopped serving after malformed requests: %d %v", code, err)
	}
}

// TestSigtermDrainsAndRestartKeepsState: SIGTERM lets a slow request finish,
// refuses new connections, exits 0; the restarted node has its services.
func TestSigtermDrainsAndRestartKeepsState(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	b := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done")
	}))
	a := startAgent(t, agentOpts{})
	register(t, a, map[string]any{"name": "web", "hosts": []string{"app.example.com"}}, b)
	a.mustAPI("POST", "/v1/services/web/upstreams/slow/drain", nil, nil)
	a.mustAPI("POST", "/v1/services/web/upstreams/slow/enable", nil, nil)
	a.mustAPI("PUT", "/v1/services/other", map[string]any{"lb": "least_conn"}, nil)
	a.mustAPI("PUT", "/v1/services/other/upstreams/o1", map[string]any{"addr": "127.0.0.1:9", "weight": 3}, nil)
	a.mustAPI("POST", "/v1/services/other/upstreams/o1/drain", nil, nil)

	var wg sync.WaitGroup
	var slowCode int
	var slowBody string
	var slowErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		slowCode, _, slowBody, slowErr = get(proxyClient(), a, "app.example.com", "/slow")
	}()
	<-started
	exited := make(chan error, 1)
	go func() { exited <- a.terminate(20 * time.Second) }()
	eventually(t, 5*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", a.http, time.Second)
		if err == nil {
			conn.Close()
			return errNotYet
		}
		return nil
	})
	select {
	case err := <-exited:
		t.Fatalf("exited (%v) while a request was in flight", err)
	default:
	}
	close(release)
	wg.Wait()
	if slowErr != nil || slowCode != 200 || slowBody != "done" {
		t.Fatalf("in-flight request: %d %q %v", slowCode, slowBody, slowErr)
	}
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}

	a.start()
	var svcs []struct {
		Name, LB  string
		Hosts     []string
		Upstreams []struct {
			ID, Addr, State string
			Weight          int
		}
	}
	a.mustAPI("GET", "/v1/services", nil, &svcs)
	got := fmt.Sprintf("%+v", svcs)
	if len(svcs) != 2 || svcs[0].Name != "other" || svcs[0].LB != "least_conn" || len(svcs[0].Upstreams) != 1 ||
		svcs[0].Upstreams[0].State != "draining" || svcs[0].Upstreams[0].Weight != 3 ||
		svcs[1].Name != "web" || len(svcs[1].Hosts) != 1 || len(svcs[1].Upstreams) != 1 || svcs[1].Upstreams[0].State != "active" {
		t.Fatalf("after restart: %s", got)
	}
	if code, up, _, err := get(proxyClient(), a, "app.example.com", "/"); err != nil || code != 200 || up != "slow" {
		t.Fatalf("after restart: %d %q %v", code, up, err)
	}
}

// TestAcknowledgedWriteSurvivesKill9: an admin write that was answered is in
// the store, even when the node is killed the instant after.
func TestAcknowledgedWriteSurvivesKill9(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	for i := range 3 {
		name := fmt.Sprintf("svc%d", i)
		a.mustAPI("PUT", "/v1/services/"+name, map[string]any{"path_prefix": "/" + name}, nil)
		a.mustAPI("PUT", "/v1/services/"+name+"/upstreams/u", map[string]any{"addr": "127.0.0.1:9"}, nil)
		a.mustAPI("POST", "/v1/services/"+name+"/upstreams/u/drain", nil, nil)
		a.kill9()
		a.start()
		var svcs []struct {
			Name      string
			Upstreams []struct{ ID, State string }
		}
		a.mustAPI("GET", "/v1/services", nil, &svcs)
		if len(svcs) != i+1 {
			t.Fatalf("after kill -9 %d: %d services, want %d: %+v", i, len(svcs), i+1, svcs)
		}
		last := svcs[len(svcs)-1]
		if last.Name != name || len(last.Upstreams) != 1 || last.Upstreams[0].State != "draining" {
			t.Fatalf("after kill -9: %+v", last)
		}
	}
}
