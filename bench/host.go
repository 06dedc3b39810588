package bench

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// RepoRoot is the directory holding the module's go.mod, found from the
// working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/scoped-io/scoped\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the scoped repository (no go.mod of github.com/scoped-io/scoped above the working directory)")
		}
		dir = parent
	}
}

// CheckTraversable fails unless dir and its parents let others through.
func CheckTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %o) is not traversable by others, which sandboxes need; set TMPDIR to a directory that is", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// CgroupsLeft runs the equivalent of `find /sys/fs/cgroup -maxdepth 3
// -iname '*scoped*'`: mine are those whose name holds mark (a benchmark's), others
// belong to someone else (a daemon or a test running on the host).
func CgroupsLeft(mark string) (mine, others []string) {
	base := "/sys/fs/cgroup"
	_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		depth := 0
		if rel != "." {
			depth = strings.Count(rel, "/") + 1
		}
		name := strings.ToLower(d.Name())
		if depth > 0 && strings.Contains(name, "scoped") {
			if strings.Contains(name, mark) {
				mine = append(mine, p)
			} else {
				others = append(others, p)
			}
		}
		if depth >= 3 {
			return fs.SkipDir
		}
		return nil
	})
	return mine, others
}

// WorkDir makes a new temporary directory named after prefix that the
// sandboxes' root users (high host uids) can traverse to their bundles,
// sockets and root file systems: mode 0711, every directory above it
// searchable by others (else an error that says so). The caller removes it.
func WorkDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if err := CheckTraversable(filepath.Dir(dir)); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// Lock takes the host-wide lock of the benchmark named name (an abstract
// unix socket @scoped-bench-<name>, which the kernel releases when the
// process ends), so that two runs never share cgroup roots. Close the
// listener to release it.
func Lock(name string) (io.Closer, error) {
	l, err := net.Listen("unix", "@scoped-bench-"+name)
	if err != nil {
		return nil, fmt.Errorf("another %sbench runs on this host (the abstract socket @scoped-bench-%s is taken): %w", name, name, err)
	}
	return l, nil
}
