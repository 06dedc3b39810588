package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// GoBuild builds the package pkg of the module at root into out, with cgo
// on or off and the given build tags.
func GoBuild(root, out, pkg string, cgo bool, tags ...string) error {
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
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// BuildDaemon builds the daemon of the module at root (with cgo and -tags
// seccomp) into bin/scoped and scoped-exec, which the daemon expects next
// to itself, into bin/scoped-exec. It returns the daemon's path.
func BuildDaemon(root, bin string) (string, error) {
	scoped := filepath.Join(bin, "scoped")
	if err := GoBuild(root, scoped, "./cmd/scoped", true, "seccomp"); err != nil {
		return "", err
	}
	if err := GoBuild(root, filepath.Join(bin, "scoped-exec"), "./cmd/scoped-exec", false); err != nil {
		return "", err
	}
	return scoped, nil
}

// BuildBundle builds the example extension ./examples/name of the module at
// root into the directory dir (made if need be): the worker dir/name and a
// copy of its manifest.toml. It returns the bundle as deployed, the two
// files read back with their modes: manifest.toml first, then the worker.
func BuildBundle(root, dir, name string) (*scopedv1.Bundle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := GoBuild(root, filepath.Join(dir, name), "./examples/"+name, false); err != nil {
		return nil, err
	}
	manifest, err := os.ReadFile(filepath.Join(root, "examples", name, "manifest.toml"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.toml"), manifest, 0o644); err != nil {
		return nil, err
	}
	b := &scopedv1.Bundle{}
	for _, f := range []string{"manifest.toml", name} {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		content, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		b.Files = append(b.Files, &scopedv1.File{Path: f, Mode: uint32(fi.Mode().Perm()), Content: content})
	}
	return b, nil
}

// ChmodDirs makes dir and every directory below it 0755, whatever the
// umask, so that the daemon's workers can reach what is in them.
func ChmodDirs(dir string) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return err
	})
}
