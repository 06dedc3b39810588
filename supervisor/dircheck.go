package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// checkSandboxReach refuses a directory (runtime_dir or state_dir, named
// key) that the sandboxes cannot reach. They run as mapped host uids from
// idBase, neither owner nor group of the daemon's directories, and bind
// their bundle (under state_dir) and their socket directory (under
// runtime_dir) by path: every directory above dir needs search permission
// for others (o+x), or every worker start fails at its first invocation
// ("remount-propagation … permission denied"). dir itself and what is
// below it the daemon makes and sets itself; directories above it that do
// not exist yet are made here, 0711 whatever the umask. Symbolic links are
// resolved first: what counts is the directories the path leads through.
func checkSandboxReach(key, dir string, idBase uint32) error {
	parent := filepath.Dir(filepath.Clean(dir))
	// The longest part of the path that exists now; the rest is made
	// here, 0711 whatever the umask (MkdirAll below dir would honour it).
	var missing []string
	for {
		if _, err := os.Stat(parent); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s %s: %w", ErrConfig, key, dir, err)
		}
		missing = append(missing, parent)
		parent = filepath.Dir(parent)
	}
	real, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrConfig, key, dir, err)
	}
	var chain []string
	for p := real; ; p = filepath.Dir(p) {
		chain = append(chain, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		fi, err := os.Stat(chain[i])
		if err != nil {
			return fmt.Errorf("%w: %s %s: %w", ErrConfig, key, dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s %s: %s is not a directory", ErrConfig, key, dir, chain[i])
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%w: %s %s: %s is mode %#o; the sandboxes (host uids from %d) need o+x on every directory above %s (chmod o+x %s, or choose another %s)",
				ErrConfig, key, dir, chain[i], fi.Mode().Perm(), idBase, key, chain[i], key)
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s %s: %w", ErrConfig, key, dir, err)
		}
		if err := os.Chmod(missing[i], 0o711); err != nil {
			return fmt.Errorf("%w: %s %s: %w", ErrConfig, key, dir, err)
		}
	}
	return nil
}

// checkDirs runs checkSandboxReach on runtime_dir and state_dir, and warns
// when the exec runtime's worker binary is there but out of the sandboxes'
// reach (only its extensions would fail).
func checkDirs(c *Config, log *slog.Logger) error {
	for _, d := range [][2]string{{"runtime_dir", c.RuntimeDir}, {"state_dir", c.StateDir}} {
		if err := checkSandboxReach(d[0], d[1], c.Scope.IDBase); err != nil {
			return err
		}
	}
	exe := c.execWorker()
	if fi, err := os.Stat(exe); err == nil {
		err = checkSandboxReach("exec_worker", exe, c.Scope.IDBase)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			err = fmt.Errorf("exec_worker %s is mode %#o; the sandboxes need o+x", exe, fi.Mode().Perm())
		}
		if err != nil {
			log.Warn("the exec runtime's extensions will fail to start", "err", err)
		}
	}
	return nil
}
