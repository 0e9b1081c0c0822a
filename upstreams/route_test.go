package upstreams

import (
	"encoding/json"
	"strings"
	"testing"
)

// routeTable registers the services of the precedence tests.
func routeTable(t testing.TB) *Table {
	t.Helper()
	tb, _, _ := newTestTable(t, Config{})
	for _, s := range []Service{
		{Name: "exact-root", Hosts: []string{"example.com"}},
		{Name: "exact-api", Hosts: []string{"Example.com"}, PathPrefix: "/api"},
		{Name: "wild", Hosts: []string{"*.example.com"}},
		{Name: "wild-api", Hosts: []string{"*.example.com"}, PathPrefix: "/api/v2"},
		{Name: "wild-deep", Hosts: []string{"*.b.example.com"}},
		{Name: "any", PathPrefix: "/"},
		{Name: "any-static", PathPrefix: "/static"},
		{Name: "only-api", Hosts: []string{"api.other.com"}, PathPrefix: "/api"},
		{Name: "tie-b", Hosts: []string{"tie.com"}},
		{Name: "tie-a", Hosts: []string{"tie.com", "also.tie.com"}},
		{Name: "v6", Hosts: []string{"::1"}},
		{Name: "mail", Protocol: ProtoSMTP, Hosts: []string{"mail.com"}},
	} {
		if err := s.Normalize(); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		tb.PutService(s)
	}
	return tb
}

func TestRoutePrecedence(t *testing.T) {
	tb := routeTable(t)
	for _, c := range []struct{ host, path, want string }{
		{"example.com", "/", "exact-root"},
		{"example.com", "/api/users", "exact-api"},
		{"EXAMPLE.com:8080", "/api", "exact-api"},
		{"example.com.", "/", "exact-root"},
		{"a.example.com", "/", "wild"},
		{"a.example.com", "/api/v2/x", "wild-api"},
		{"a.example.com", "/api/v1", "wild"},
		{"x.y.a.example.com", "/", "wild"},    // any depth
		{"c.b.example.com", "/", "wild-deep"}, // longest suffix
		{"b.example.com", "/", "wild"},        // not a subdomain of b.example.com
		{"other.com", "/", "any"},             // no host rule matches
		{"other.com", "/static/app.js", "any-static"},
		{"api.other.com", "/api/x", "only-api"},
		{"api.other.com", "/home", "any"}, // host group without a matching prefix
		{"", "/", "any"},
		{"tie.com", "/", "tie-a"}, // equal prefixes: first by name
		{"also.tie.com:443", "/", "tie-a"},
		{"[::1]:8080", "/", "v6"},
		{"::1", "/", "v6"},
		{"mail.com", "/", "any"}, // SMTP services are not routed
		{"example.com", "", ""},  // no prefix prefixes an empty path
	} {
		s, ok := tb.Route(c.host, c.path)
		if s.Name != c.want || ok != (c.want != "") {
			t.Errorf("Route(%q, %q) = %q, %v; want %q", c.host, c.path, s.Name, ok, c.want)
		}
	}
}

func TestRouteWithoutCatchAll(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	tb.PutService(Service{Name: "only", Hosts: []string{"example.com"}})
	if s, ok := tb.Route("other.com", "/"); ok {
		t.Fatalf("routed an unknown host to %s", s.Name)
	}
	tb.RemoveService("only")
	if _, ok := tb.Route("example.com", "/"); ok {
		t.Fatal("routed to a removed service")
	}
}

func TestRouteFollowsReplacement(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	tb.PutService(Service{Name: "web", Hosts: []string{"a.com"}})
	tb.PutService(Service{Name: "web", Hosts: []string{"b.com"}})
	if _, ok := tb.Route("a.com", "/"); ok {
		t.Fatal("old host still routed")
	}
	if s, ok := tb.Route("b.com", "/"); !ok || s.Name != "web" {
		t.Fatalf("new host: %q, %v", s.Name, ok)
	}
}

func TestRouteAllocations(t *testing.T) {
	tb := routeTable(t)
	for _, c := range [][2]string{
		{"example.com", "/api/users"},
		{"c.b.example.com:8443", "/"},
		{"unknown.org", "/static/x"},
	} {
		if n := testing.AllocsPerRun(200, func() { tb.Route(c[0], c[1]) }); n != 0 {
			t.Errorf("Route(%q, %q): %.1f allocations, want 0", c[0], c[1], n)
		}
	}
}

// FuzzRoute feeds untrusted Host headers and paths to the router: it must
// not panic, and any match must honour the service's rules.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"example.com", "A.EXAMPLE.COM:80", "[::1]:8080", "::1", "a..example.com", ".", "[", "]:", "x.b.example.com."} {
		f.Add(s, "/api/v2")
	}
	tb := routeTable(f)
	f.Fuzz(func(t *testing.T, host, path string) {
		s, ok := tb.Route(host, path)
		if !ok {
			return
		}
		if s.Protocol != ProtoHTTP || !strings.HasPrefix(path, s.PathPrefix) {
			t.Fatalf("Route(%q, %q) = %+v", host, path, s)
		}
		if len(s.Hosts) == 0 {
			return
		}
		h := canonicalHost(host)
		for _, want := range s.Hosts {
			want = canonicalHost(want)
			if d, wild := strings.CutPrefix(want, "*."); wild && strings.HasSuffix(h, "."+d) || h == want {
				return
			}
		}
		t.Fatalf("Route(%q, %q) = %s, whose hosts %v do not cover %q", host, path, s.Name, s.Hosts, h)
	})
}

// FuzzDurationJSON feeds untrusted JSON to Duration: it must not panic, and
// what it accepts must survive a round trip.
func FuzzDurationJSON(f *testing.F) {
	for _, s := range []string{`"1.5s"`, `2`, `0.25`, `"-3m"`, `"bogus"`, `null`, `1e300`, `"9999999999h"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Duration
		if err := json.Unmarshal(b, &d); err != nil {
			return
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("marshal %v: %v", d, err)
		}
		var back Duration
		if err := json.Unmarshal(out, &back); err != nil || back != d {
			t.Fatalf("round trip of %s: %s -> %v, %v", b, out, back, err)
		}
	})
}
