package bench

import (
	"os"
	"path"
	"path/filepath"

	"encoding/json"
	"fmt"
	"github.com/scoped-io/scoped/internal/gobuild"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// BuildDaemon builds the daemon of the module at root (with cgo and -tags
// seccomp) into bin/scoped and scoped-exec, which the daemon expects next
// to itself, into bin/scoped-exec. It returns the daemon's path.
func BuildDaemon(root, bin string) (string, error) {
	scoped := filepath.Join(bin, "scoped")
	if err := gobuild.Build(root, scoped, "./cmd/scoped", true, "seccomp"); err != nil {
		return "", err
	}
	if err := gobuild.Build(root, filepath.Join(bin, "scoped-exec"), "./cmd/scoped-exec", false); err != nil {
		return "", err
	}
	return scoped, nil
}

// BuildBundle builds the extension package pkg of the module at root
// (e.g. ./examples/whoami, a directory with its manifest.toml) into the
// directory dir (made if need be): the worker dir/<last element of pkg> and
// a copy of its manifest. It returns the bundle as deployed, the two files
// read back with their modes: manifest.toml first, then the worker.
func BuildBundle(root, dir, pkg string) (*scopedv1.Bundle, error) {
	name := path.Base(pkg)
	if err := gobuild.Bundle(root, dir, pkg, name); err != nil {
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
func ChmodDirs(dir string) error { return gobuild.OpenDirs(dir) }

// CheckWhoami checks that the whoami example's reply result echoed
// payload and reported no error.
func CheckWhoami(result []byte, payload string) error {
	var r struct {
		Payload string   `json:"payload"`
		Errors  []string `json:"errors"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("whoami's reply %.200q: %w", result, err)
	}
	if r.Payload != payload {
		return fmt.Errorf("whoami echoed %d payload bytes, want the %d sent", len(r.Payload), len(payload))
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("whoami: %q", r.Errors)
	}
	return nil
}
