package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// treeSnapshot lists every file below root: relative path → mode, size and
// modification time.
func treeSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzUnitStoreDeploy: the bundle walker and unpacker. A file list is
// either refused with ErrInvalid or ErrTooLarge, leaving the store as it
// was (no version directory, no temporary one), or stored as a version
// that holds exactly its files inside the version's directory; deploying
// it again changes nothing, removing it leaves nothing.
func FuzzUnitStoreDeploy(f *testing.F) {
	for _, b := range fuzzBundleSeeds() {
		f.Add(b, false)
		f.Add(b, true)
	}
	dir := filepath.Join(f.TempDir(), "state")
	const maxBundle, maxFiles = 4096, 8
	s, err := NewStore(dir, maxBundle, maxFiles)
	if err != nil {
		f.Fatal(err)
	}
	cwd := dirNames(f, ".")
	f.Fuzz(func(t *testing.T, bundle []byte, twice bool) {
		files := fuzzBundle(bundle)
		before := treeSnapshot(t, dir)
		info, unchanged, err := s.Deploy("acme", "production", "hook", files)
		if now := dirNames(t, "."); !slices.Equal(now, cwd) {
			t.Fatalf("Deploy wrote into the package directory: %q", now)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Deploy: %v, not ErrInvalid or ErrTooLarge", err)
			}
			if c := changed(before, treeSnapshot(t, dir)); len(c) > 0 {
				t.Fatalf("a refused Deploy (%v) changed %q", err, c)
			}
			return
		}
		if unchanged {
			t.Fatalf("the first Deploy is unchanged")
		}
		size := 0
		for _, f := range files {
			size += len(f.Content)
			if f.Mode&^0o777 != 0 || checkBundlePath(f.Path) != nil {
				t.Fatalf("stored %q with mode %#o", f.Path, f.Mode)
			}
		}
		if size > maxBundle || len(files) > maxFiles || info.Size != int64(size) {
			t.Fatalf("stored %d files of %d bytes (info: %d)", len(files), size, info.Size)
		}
		checkStored(t, s, info, files)
		if twice {
			again, unchanged, err := s.Deploy("acme", "production", "hook", files)
			if err != nil || !unchanged || again.Version != info.Version || again.Digest != info.Digest {
				t.Fatalf("the same bundle again: %+v, %v, %v", again, unchanged, err)
			}
		}
		if err := s.Remove("acme", "production", "hook"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(s.extDir("acme", "production", "hook")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("removed, then Lstat: %v", err)
		}
	})
}
