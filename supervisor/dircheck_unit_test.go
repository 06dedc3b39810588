package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// reachableTempDir is a temp dir whose own directories others may search.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUnitCheckSandboxReach(t *testing.T) {
	dir := reachableTempDir(t)
	closed := filepath.Join(dir, "closed")
	open := filepath.Join(dir, "open")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{closed, 0o700}, {filepath.Join(closed, "inner"), 0o755}, {open, 0o711}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	if err := os.Symlink(closed, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		bad  string // the directory the error must name; "" for none
	}{
		{filepath.Join(open, "run"), ""},
		{filepath.Join(open, "not", "yet", "run"), ""}, // made 0711 later
		{closed, ""}, // the daemon sets the directory itself
		{filepath.Join(closed, "run"), closed},
		{filepath.Join(closed, "inner", "run"), closed},
		{filepath.Join(closed, "missing", "run"), closed},
		{filepath.Join(dir, "link", "run"), closed}, // through a symbolic link
	} {
		err := checkSandboxReach("runtime_dir", c.path, 1048576)
		if c.bad == "" {
			if err != nil {
				t.Errorf("%s: %v", c.path, err)
			}
			continue
		}
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", c.path, err)
			continue
		}
		for _, want := range []string{"runtime_dir " + c.path + ": ", c.bad + " is mode 0700", "uids from 1048576", "o+x", "chmod o+x " + c.bad} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q lacks %q", c.path, err, want)
			}
		}
	}
	// Missing directories above are made 0711, whatever the umask.
	old := syscall.Umask(0o077)
	err := checkSandboxReach("state_dir", filepath.Join(open, "new", "er", "state"), 1048576)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(open, "new"), filepath.Join(open, "new", "er")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o711 {
			t.Errorf("%s: %v %v, want mode 0711", d, fi.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(open, "new", "er", "state")); err == nil {
		t.Errorf("state_dir itself was made by the check")
	}
	// A file where a directory should be.
	file := filepath.Join(open, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkSandboxReach("state_dir", filepath.Join(file, "state"), 1048576); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file above state_dir: %v", err)
	}
}
