package test

import (
	"strings"
	"testing"
)

// TestCLIManagesServicesAndUpstreams drives the admin subcommands of the
// binary against a running node and checks both their output and what the
// node then does.
func TestCLIManagesServicesAndUpstreams(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b1, b2 := startBackend(t, "b1", nil), startBackend(t, "b2", nil)
	must := func(args ...string) string {
		t.Helper()
		out, err := a.cli(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	must("service", "put", "web", "-host", "cli.example.com", "-lb", "least_conn")
	must("upstream", "put", "web", "b1", b1.addr)
	must("upstream", "put", "web", "b2", b2.addr, "-weight", "2")
	ls := must("service", "ls")
	for _, want := range []string{"web", "cli.example.com", "least_conn", "b1", b1.addr, "b2", "active"} {
		if !strings.Contains(ls, want) {
			t.Errorf("service ls lacks %q:\n%s", want, ls)
		}
	}
	if out := must("status"); !strings.Contains(out, a.name) || !strings.Contains(out, `"embedded"`) {
		t.Errorf("status: %s", out)
	}
	if out := must("members"); !strings.Contains(out, a.name) || !strings.Contains(out, "alive") {
		t.Errorf("members: %s", out)
	}
	if out := must("upstream", "drain", "web", "b2", "-wait", "5s"); !strings.Contains(out, `"done": true`) {
		t.Errorf("drain -wait: %s", out)
	}
	c := proxyClient()
	for range 20 {
		if code, up, _, err := get(c, a, "cli.example.com", "/"); err != nil || code != 200 || up != "b1" {
			t.Fatalf("with b2 drained: %d from %q %v", code, up, err)
		}
	}
	must("upstream", "enable", "web", "b2")
	if out := must("service", "ls"); strings.Contains(out, "draining") {
		t.Errorf("b2 still draining after enable:\n%s", out)
	}
	id := strings.TrimSpace(must("limit", "add", "-path", "/api", "-period", "60", "-threshold", "5"))
	if out := must("limit", "ls"); !strings.Contains(out, id) || !strings.Contains(out, "/api") {
		t.Errorf("limit ls lacks %s:\n%s", id, out)
	}
	must("limit", "rm", id)
	must("upstream", "rm", "web", "b1")
	must("service", "rm", "web")
	if out := must("service", "ls"); strings.Contains(out, "web") {
		t.Errorf("service still listed after rm:\n%s", out)
	}

	// Errors exit 1 with the reason on stderr.
	for _, args := range [][]string{
		{"service", "rm", "nosuch"},
		{"upstream", "put", "nosuch", "u", "127.0.0.1:1"},
		{"upstream", "put", "web"},
		{"limit", "add", "-period", "10"},
		{"bogus"},
	} {
		if _, err := a.cli(args...); err == nil || !strings.Contains(err.Error(), "exit status 1") {
			t.Errorf("vulcan %v: want exit status 1, got %v", args, err)
		}
	}
}
