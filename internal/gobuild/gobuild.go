// Package gobuild builds the module's programs and example bundles for the
// end-to-end tests and the benchmarks, which run them as a real daemon
// would: one `go build` wrapper, one bundle layout.
package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds the package pkg (a path relative to root, e.g. ./cmd/scoped)
// of the module at root into out, with cgo on or off and the given build
// tags.
func Build(root, out, pkg string, cgo bool, tags ...string) error {
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if cgo {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// Bundle builds the extension package pkg of the module at root (a
// directory holding its manifest.toml) without cgo into the bundle
// directory dir, made if need be: the worker dir/entry and a copy of the
// manifest.
func Bundle(root, dir, pkg, entry string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := Build(root, filepath.Join(dir, entry), pkg, false); err != nil {
		return err
	}
	manifest, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(pkg), "manifest.toml"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.toml"), manifest, 0o644)
}

// OpenDirs makes dir and every directory below it 0755, whatever the
// umask, so that sandboxes' high host uids can reach what is in them.
func OpenDirs(dir string) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return err
	})
}
