package test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
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

// TestMetricsAndDashboard: /metrics speaks Prometheus text with the node's
// own series, and /ui/ serves the dashboard.
func TestMetricsAndDashboard(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{})
	b := startBackend(t, "b", nil)
	register(t, a, map[string]any{"name": "web"}, b)
	for range 3 {
		if code, _, _, err := get(proxyClient(), a, "", "/"); err != nil || code != 200 {
			t.Fatalf("GET: %d %v", code, err)
		}
	}
	for path, wants := range map[string][]string{
		"/metrics": {`vulcan_http_responses_total{code="2xx"} 3`, `vulcan_upstream_up{service="web",state="active",upstream="b"} 1`,
			"vulcan_cluster_members_alive 1"},
		"/ui/":       {"<title>vulcan</title>", "app.js"},
		"/ui/app.js": {"/v1/services"},
	} {
		resp, err := apiClient.Get("http://" + a.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range wants {
			if resp.StatusCode != 200 || !strings.Contains(string(body), w) {
				t.Errorf("GET %s: status %d, body lacks %q", path, resp.StatusCode, w)
			}
		}
	}
}

// TestAdminToken: with -admin-token every API call needs the bearer token.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentOpts{extra: []string{"-admin-token", "s3cret"}})
	for _, path := range []string{"/v1/status", "/v1/services", "/metrics", "/debug/pprof/"} {
		resp, err := apiClient.Get("http://" + a.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET %s without token: %d, want 401", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+a.admin+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := apiClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("with token: %v %v", resp, err)
	}
	resp.Body.Close()
	cmd := exec.Command(binary, "status")
	cmd.Env = append(os.Environ(), "VULCAN_ADDR=http://"+a.admin, "VULCAN_TOKEN=s3cret")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), a.name) {
		t.Fatalf("CLI with VULCAN_TOKEN: %v %s", err, out)
	}
}
