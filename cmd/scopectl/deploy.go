package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func runDeploy(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "deploy")
	tenant := f.String("tenant", "", "tenant id (required)")
	env := f.String("env", "", "environment, e.g. production (required)")
	name := f.String("name", "", "extension name (required)")
	pos, err := g.parse(f, args, 1, 1)
	if err != nil {
		return err
	}
	if err := required("tenant", *tenant, "env", *env, "name", *name); err != nil {
		return err
	}
	bundle, err := readBundle(pos[0])
	if err != nil {
		return err
	}
	if g.verbose {
		for _, file := range bundle.Files {
			fmt.Fprintf(g.stderr, "%04o %8s  %s\n", file.Mode, size(int64(len(file.Content))), file.Path)
		}
	}

	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := c.Deploy(cctx, &scopedv1.DeployRequest{Tenant: *tenant, Environment: *env, Name: *name, Bundle: bundle})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	e := resp.GetExtension()
	st := "deployed"
	if resp.GetUnchanged() {
		st = "unchanged"
	}
	t := newTable(g.stdout, "NAME", "VERSION", "DIGEST", "RUNTIME", "SIZE", "STATUS")
	t.row(e.GetName(), e.GetVersion(), e.GetDigest(), e.GetRuntime(), size(e.GetSize()), st)
	return t.flush()
}

// readBundle reads the regular files under dir into a bundle: paths relative
// to dir with slashes, mode 0755 for executables and 0644 otherwise. A
// symbolic link or any other special file is refused: the daemon would refuse
// it too, and following it could upload files from outside dir.
func readBundle(dir string) (*scopedv1.Bundle, error) {
	fi, err := os.Stat(dir) // the directory named may itself be a link
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	b := &scopedv1.Bundle{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		shown := filepath.Join(dir, rel)
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			return fmt.Errorf("refusing symlink %s -> %s: a bundle holds regular files only; copy the file in instead", shown, target)
		case d.IsDir():
			return nil
		case !t.IsRegular():
			return fmt.Errorf("refusing %s: not a regular file (%v)", shown, t)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		mode := uint32(0o644)
		if info.Mode().Perm()&0o111 != 0 {
			mode = 0o755
		}
		b.Files = append(b.Files, &scopedv1.File{Path: filepath.ToSlash(rel), Mode: mode, Content: content})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(b.Files) == 0 {
		return nil, fmt.Errorf("%s holds no files", dir)
	}
	return b, nil
}
