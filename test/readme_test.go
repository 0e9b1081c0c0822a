package test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadmeQuickStart runs the README's first command (a node with no flags,
// so on the default addresses) and then its quick start block as written,
// with `go run ./cmd/vulcan` standing for the built binary.
func TestReadmeQuickStart(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:9090", "127.0.0.1:8001"} {
		if ln, err := net.Listen("tcp", addr); err != nil {
			t.Skipf("default address %s is taken on this machine: %v", addr, err)
		} else {
			ln.Close()
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	first, quick := readmeBlocks(t, string(readme))
	if !strings.HasPrefix(first, "go run ./cmd/vulcan agent") {
		t.Fatalf("README's first command is %q", first)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	os.Symlink(binary, filepath.Join(bin, "vulcan"))
	node := exec.Command(binary, "agent")
	node.Dir = dir
	var log lockedBuffer
	node.Stdout, node.Stderr = &log, &log
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Process.Kill()
		node.Wait()
		if t.Failed() {
			t.Logf("node log:\n%s", log.String())
		}
	})
	eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:9090/v1/status")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})

	script := strings.ReplaceAll(quick, "go run ./cmd/vulcan", "vulcan")
	script = strings.ReplaceAll(script, "/tmp/vulcan-demo", filepath.Join(dir, "demo"))
	// The upstream the quick start backgrounds must not outlive the test.
	sh := exec.Command("bash", "-c", "set -e\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n"+
		strings.Replace(script, "&\n", "&\nfor i in $(seq 50); do curl -fso /dev/null http://127.0.0.1:8001/ && break; sleep 0.1; done\n", 1))
	sh.Dir = dir
	sh.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	var out bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &out
	if err := sh.Run(); err != nil {
		t.Fatalf("quick start failed: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "hello from the upstream") {
		t.Fatalf("quick start output lacks the upstream's answer:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "vulcan-data")); err != nil {
		t.Fatalf("the default data directory was not created: %v", err)
	}
}

// readmeBlocks returns the first line of the first sh block and the whole
// quick start sh block.
func readmeBlocks(t *testing.T, readme string) (first, quick string) {
	var blocks []string
	for _, part := range strings.Split(readme, "```sh\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		blocks = append(blocks, body)
	}
	if len(blocks) < 2 {
		t.Fatalf("README has %d sh blocks", len(blocks))
	}
	first = strings.TrimSpace(strings.SplitN(blocks[0], "\n", 2)[0])
	for _, b := range blocks {
		if strings.Contains(b, "curl") {
			return first, b
		}
	}
	t.Fatal(fmt.Errorf("README has no quick start block with curl"))
	return "", ""
}
