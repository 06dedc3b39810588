package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/internal/bundle"
)

func sortedFiles(fs []BundleFile) []BundleFile {
	out := slices.Clone(fs)
	slices.SortFunc(out, func(a, b BundleFile) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func sameFiles(a, b []BundleFile) bool {
	a, b = sortedFiles(a), sortedFiles(b)
	return slices.EqualFunc(a, b, func(x, y BundleFile) bool {
		return x.Path == y.Path && normMode(x.Mode) == normMode(y.Mode) && string(x.Content) == string(y.Content)
	})
}

func TestUnitStoreFilesByDigest(t *testing.T) {
	s, _ := newUnitStore(t)
	files := append(unitBundle("one"), BundleFile{Path: "lib/data.txt", Mode: 0o600, Content: []byte("data")})
	v1, _, err := s.Deploy("acme", "prod", "ext", files)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Digest != bundle.Digest(files) {
		t.Fatalf("Deploy's digest %s is not bundle.Digest's %s", v1.Digest, bundle.Digest(files))
	}
	if _, _, err := s.Deploy("acme", "prod", "ext", unitBundle("two")); err != nil {
		t.Fatal(err)
	}
	// v1 is no longer current: found by the scan of every version.
	for _, d := range []string{v1.Digest, bundle.Digest(unitBundle("two"))} {
		got, err := s.FilesByDigest(d)
		if err != nil {
			t.Fatalf("FilesByDigest(%s): %v", d, err)
		}
		if bundle.Digest(got) != d {
			t.Fatalf("FilesByDigest(%s) read files of digest %s", d, bundle.Digest(got))
		}
	}
	got, _ := s.FilesByDigest(v1.Digest)
	if !sameFiles(got, files) {
		t.Fatalf("FilesByDigest read %+v, want %+v", got, files)
	}
	if _, err := s.FilesByDigest(bundle.Digest(unitBundle("never"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown digest: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "sha256:", "sha256:xyz", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "../../etc"} {
		if _, err := s.FilesByDigest(bad); !errors.Is(err, ErrInvalid) || !errors.Is(err, bundle.ErrInvalidDigest) {
			t.Fatalf("FilesByDigest(%q): %v, want ErrInvalid", bad, err)
		}
	}
	// A stored file changed on disk: refused, never served as the digest.
	if err := os.WriteFile(filepath.Join(v1.Dir, "lib", "data.txt"), []byte("DATA"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FilesByDigest(v1.Digest); !errors.Is(err, bundle.ErrDigestMismatch) {
		t.Fatalf("corrupt stored bundle: %v, want ErrDigestMismatch", err)
	}
}

func TestUnitStoreImport(t *testing.T) {
	src, _ := newUnitStore(t)
	files := unitBundle("payload")
	info, _, err := src.Deploy("acme", "prod", "ext", files)
	if err != nil {
		t.Fatal(err)
	}
	dst, dstDir := newUnitStore(t)
	// A digest that does not match: nothing stored.
	before := treeListing(t, dstDir)
	if _, _, err := dst.Import("acme", "prod", "ext", "v3", bundle.Digest(unitBundle("other")), files); !errors.Is(err, bundle.ErrDigestMismatch) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Import with a wrong digest: %v", err)
	}
	if d := listingDiff(before, treeListing(t, dstDir)); d != "" {
		t.Fatalf("a refused import left:\n%s", d)
	}
	for _, bad := range []struct {
		name  string
		files []BundleFile
	}{
		{"dotdot", append(unitBundle("x"), BundleFile{Path: "../evil", Mode: 0o644})},
		{"absolute", append(unitBundle("x"), BundleFile{Path: "/etc/passwd", Mode: 0o644})},
		{"symlink", append(unitBundle("x"), BundleFile{Path: "link", Mode: uint32(os.ModeSymlink) | 0o777})},
		{"device", append(unitBundle("x"), BundleFile{Path: "dev", Mode: uint32(os.ModeDevice) | 0o600})},
	} {
		if _, _, err := dst.Import("acme", "prod", "ext", "", bundle.Digest(bad.files), bad.files); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Import %s: %v, want ErrInvalid", bad.name, err)
		}
	}
	if _, _, err := dst.Import("acme", "prod", "ext", "current", info.Digest, files); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Import as version \"current\": %v", err)
	}
	if _, _, err := dst.Import("acme", "prod", "ext", "v3", "sha256:nope", files); !errors.Is(err, bundle.ErrInvalidDigest) {
		t.Fatalf("Import with a malformed digest: %v", err)
	}
	got, unchanged, err := dst.Import("acme", "prod", "ext", "v3", info.Digest, files)
	if err != nil || unchanged {
		t.Fatalf("Import: %v (unchanged %v)", err, unchanged)
	}
	if got.Version != "v3" || got.Digest != info.Digest {
		t.Fatalf("imported %s %s, want v3 %s", got.Version, got.Digest, info.Digest)
	}
	cur, err := dst.Get("acme", "prod", "ext", "")
	if err != nil || cur.Version != "v3" {
		t.Fatalf("current after import: %+v %v", cur, err)
	}
	if _, unchanged, err := dst.Import("acme", "prod", "ext", "v3", info.Digest, files); err != nil || !unchanged {
		t.Fatalf("second Import: %v (unchanged %v)", err, unchanged)
	}
	// The next local deploy follows the imported version.
	next, _, err := dst.Deploy("acme", "prod", "ext", unitBundle("local"))
	if err != nil || next.Version != "v4" {
		t.Fatalf("deploy after import: %+v %v", next, err)
	}
	// v3 again (a rollback in the fleet's registry): current again.
	if back, _, err := dst.Import("acme", "prod", "ext", "v3", info.Digest, files); err != nil || back.Version != "v3" {
		t.Fatalf("import of a stored version: %+v %v", back, err)
	}
	// The same version name with other content: refused.
	other := unitBundle("other")
	if _, _, err := dst.Import("acme", "prod", "ext", "v4", bundle.Digest(unitBundle("other")), other); !errors.Is(err, ErrInvalid) {
		t.Fatalf("import over v4 with other content: %v", err)
	}
	read, err := dst.FilesByDigest(info.Digest)
	if err != nil || !sameFiles(read, files) {
		t.Fatalf("FilesByDigest after import: %v", err)
	}
}
