package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigFileAndFlags: an HCL file sets the node; a flag given on the
// command line wins over the file.
func TestConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	ip := nextIP()
	fileAdmin := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	flagAdmin := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	dir := t.TempDir()
	conf := filepath.Join(dir, "vulcan.hcl")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
node      = "from-file"
bind      = "%s:%d"
http      = "%s:%d"
admin     = "%s"
smtp      = ""
data      = %q
log_level = "debug"
`, ip, freePort(t, ip), ip, freePort(t, ip), fileAdmin, filepath.Join(dir, "data"))), 0o644)

	cmd := exec.Command(binary, "agent", "-config", conf, "-admin", flagAdmin)
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	a := &agent{t: t, admin: flagAdmin}
	var st struct{ Node string }
	eventually(t, 20*time.Second, func() error {
		_, err := a.api("GET", "/v1/status", nil, &st)
		return err
	})
	if st.Node != "from-file" {
		t.Errorf("node name %q, want the file's", st.Node)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "vulcan.db")); err != nil {
		t.Errorf("data dir from the file not used: %v", err)
	}
	if _, err := (&agent{t: t, admin: fileAdmin}).api("GET", "/v1/status", nil, nil); err == nil {
		t.Errorf("admin listens on the file's address although the flag overrides it")
	}
}

// TestBadConfigIsRefusedClearly: a malformed file or flag value stops the
// agent with exit status 1 and a message that names the problem.
func TestBadConfigIsRefusedClearly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("node = \n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", bad}, "bad.hcl"},
		{[]string{"-config", filepath.Join(dir, "missing.hcl")}, "missing.hcl"},
		{[]string{"-http", "nonsense"}, "http"},
		{[]string{"-gossip-key", "not-base64!"}, "gossip_key"},
		{[]string{"-gossip-key", "c2hvcnQ="}, "gossip_key"},
		{[]string{"-log-level", "loud"}, "log_level"},
		{[]string{"-no-such-flag"}, "no-such-flag"},
	} {
		cmd := exec.Command(binary, append([]string{"agent", "-data", t.TempDir()}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("agent %v: exit %v, output %q; want status 1 mentioning %q", tc.args, err, out, tc.want)
		}
	}
}
