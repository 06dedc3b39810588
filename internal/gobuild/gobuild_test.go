package gobuild

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBuildFails(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	err := Build("../..", filepath.Join(t.TempDir(), "x"), "./no/such/package", false)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("Build of a missing package: %v", err)
	}
}

func TestBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an example with go build")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	dir := filepath.Join(t.TempDir(), "b")
	if err := Bundle("../..", dir, "./examples/whoami", "whoami"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"whoami", "manifest.toml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := OpenDirs(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("after OpenDirs: %v, %v", fi.Mode(), err)
	}
}
