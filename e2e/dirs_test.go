package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/testutil"
)

// TestRefusesUnreachableRuntimeDir: a runtime_dir below a directory the
// sandboxes' uids cannot search (0700) makes scoped refuse to start with a
// message that names that directory and the mode it needs, instead of
// failing every worker start later; nothing is left behind.
func TestRefusesUnreachableRuntimeDir(t *testing.T) {
	requireBins(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	closed := filepath.Join(dir, "c") // short: worker socket paths under it are bounded
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(closed, "r")
	root := fmt.Sprintf("/scoped-e2e-%d-%d", os.Getpid(), daemonSeq.Add(1))
	testutil.CheckLeaks(t, root)
	cfg := fmt.Sprintf("socket = %q\nstate_dir = %q\nruntime_dir = %q\ncgroup_root = %q\n[metrics]\nlisten = \"off\"\n",
		filepath.Join(dir, "scoped.sock"), filepath.Join(dir, "state"), run, root)
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.scoped, "--config", config)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("scoped started with runtime_dir below a 0700 directory:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("scoped did not refuse to start:\n%s", out.String())
	}
	t.Logf("refusal: %s", strings.TrimSpace(out.String()))
	for _, want := range []string{closed + " is mode 0700", "o+x", "runtime_dir"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(run); err == nil {
		t.Errorf("the refused daemon made %s", run)
	}
}
