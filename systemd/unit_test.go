package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/supervisor"
)

func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("scoped.service")
	if err != nil {
		t.Fatal(err)
	}
	// Point ExecStart at a binary that exists here; verify checks it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/scoped", self)
	if err := os.WriteFile(filepath.Join(dir, "scoped.service"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "scoped.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "Delegate=yes", "KillMode=mixed", "WatchdogSec=", "RuntimeDirectory=scoped", "StateDirectory=scoped"} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}

func TestShippedConfigIsTheDefault(t *testing.T) {
	b, err := os.ReadFile("config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != supervisor.DefaultConfigTOML {
		t.Fatal("systemd/config.toml differs from supervisor/default.toml: copy it over")
	}
	if _, err := supervisor.LoadConfig("config.toml"); err != nil {
		t.Fatal(err)
	}
}
