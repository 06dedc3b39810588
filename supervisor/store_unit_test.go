package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const unitManifest = "runtime = \"go\"\nentrypoint = \"worker\"\n"

// unitBundle is a valid go-runtime bundle whose worker holds content.
func unitBundle(content string) []BundleFile {
	return []BundleFile{
		{Path: ManifestFile, Mode: 0o644, Content: []byte(unitManifest)},
		{Path: "worker", Mode: 0o755, Content: []byte(content)},
	}
}

func newUnitStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := NewStore(dir, 4096, 8)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s, dir
}

// treeListing describes every entry under root: path, type, mode, size,
// modification time and a digest of the content.
func treeListing(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:8])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func TestUnitStoreDeployVersions(t *testing.T) {
	s, dir := newUnitStore(t)
	info, unchanged, err := s.Deploy("acme", "production", "hook", unitBundle("one"))
	if err != nil || unchanged {
		t.Fatalf("first Deploy = %+v, %v, %v", info, unchanged, err)
	}
	if info.Version != "v1" || info.Runtime != RuntimeGo || info.Entrypoint != "worker" ||
		info.Size != int64(len(unitManifest)+3) || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("first Deploy info = %+v", info)
	}
	wantDir := filepath.Join(dir, "extensions", "acme", "production", "hook", "v1", "bundle")
	if info.Dir != wantDir {
		t.Errorf("Dir = %q, want %q", info.Dir, wantDir)
	}

	// The same content, even listed in another order and with other
	// (equivalent) modes, is the same version.
	same := unitBundle("one")
	slices.Reverse(same)
	same[0].Mode = 0o700 // worker: still executable
	again, unchanged, err := s.Deploy("acme", "production", "hook", same)
	if err != nil || !unchanged || again.Version != "v1" || again.Digest != info.Digest {
		t.Fatalf("identical Deploy = %+v, %v, %v; want v1 unchanged", again, unchanged, err)
	}

	v2, unchanged, err := s.Deploy("acme", "production", "hook", unitBundle("two"))
	if err != nil || unchanged || v2.Version != "v2" || v2.Digest == info.Digest {
		t.Fatalf("second Deploy = %+v, %v, %v; want v2", v2, unchanged, err)
	}
	cur, err := s.Get("acme", "production", "hook", "")
	if err != nil || cur.Version != "v2" || cur.Digest != v2.Digest {
		t.Fatalf("Get current = %+v, %v; want v2", cur, err)
	}
	old, err := s.Get("acme", "production", "hook", "v1")
	if err != nil || old.Version != "v1" || old.Digest != info.Digest {
		t.Fatalf("Get v1 = %+v, %v", old, err)
	}
	if _, err := s.Get("acme", "production", "hook", "v9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get v9 = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("acme", "production", "hook", "../v1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get ../v1 = %v, want ErrInvalid", err)
	}
	if _, err := s.Get("acme", "production", "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown = %v, want ErrNotFound", err)
	}
	// Going back to the first content makes a new version, not v1 again.
	v3, unchanged, err := s.Deploy("acme", "production", "hook", unitBundle("one"))
	if err != nil || unchanged || v3.Version != "v3" || v3.Digest != info.Digest {
		t.Fatalf("third Deploy = %+v, %v, %v; want v3", v3, unchanged, err)
	}

	// The store survives a restart.
	s2, err := NewStore(dir, 4096, 8)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := s2.Get("acme", "production", "hook", ""); err != nil || cur.Version != "v3" {
		t.Fatalf("after reopening, Get = %+v, %v", cur, err)
	}
}

// Version names in a request are checked as identifiers, and "current"
// (the pointer file) is one. Asking for it must be NotFound, not an
// internal "not a directory" error.
func TestUnitStoreGetVersionNamedCurrent(t *testing.T) {
	s, _ := newUnitStore(t)
	if _, _, err := s.Deploy("acme", "production", "hook", unitBundle("one")); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"current", "bundle", "info", "v0", "v01", "v+1"} {
		if _, err := s.Get("acme", "production", "hook", v); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			t.Errorf("Get version %q = %v, want ErrNotFound or ErrInvalid", v, err)
		}
	}
}

func TestUnitStoreFilesOnDisk(t *testing.T) {
	s, dir := newUnitStore(t)
	files := append(unitBundle("#!/bin/sh\necho hi\n"),
		BundleFile{Path: "lib/data.txt", Mode: 0o600, Content: []byte("data")},
		BundleFile{Path: "lib/sub/tool", Mode: 0o700, Content: []byte("tool")},
		BundleFile{Path: "empty", Mode: 0o644, Content: nil},
	)
	info, _, err := s.Deploy("acme", "staging", "hook", files)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path    string
		mode    fs.FileMode
		content string
	}{
		{ManifestFile, 0o644, unitManifest},
		{"worker", 0o755, "#!/bin/sh\necho hi\n"},
		{"lib/data.txt", 0o644, "data"}, // normalised: readable by the sandbox
		{"lib/sub/tool", 0o755, "tool"},
		{"empty", 0o644, ""},
	} {
		p := filepath.Join(info.Dir, filepath.FromSlash(c.path))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want regular %v", c.path, fi.Mode(), c.mode)
		}
		if b, _ := os.ReadFile(p); string(b) != c.content {
			t.Errorf("%s: content %q, want %q", c.path, b, c.content)
		}
	}
	for _, d := range []string{"lib", "lib/sub"} {
		if fi, err := os.Stat(filepath.Join(info.Dir, d)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("dir %s: %v, %v; want 0755", d, fi, err)
		}
	}
	// Sandboxes with high host uids must be able to traverse to the bundle.
	for p := info.Dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("%s: mode %v, others cannot traverse", p, fi.Mode())
		}
		if p == dir {
			break
		}
	}
	// Nothing but the version and "current" in the extension directory.
	entries, _ := os.ReadDir(filepath.Dir(filepath.Dir(info.Dir)))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"current", "v1"}) {
		t.Errorf("extension dir holds %q, want [current v1]", names)
	}
}

func TestUnitStoreListAndRemove(t *testing.T) {
	s, _ := newUnitStore(t)
	for _, d := range [][3]string{
		{"acme", "production", "hook"}, {"acme", "staging", "hook"}, {"acme", "production", "rules"},
		{"globex", "production", "hook"},
	} {
		if _, _, err := s.Deploy(d[0], d[1], d[2], unitBundle(d[0]+d[1]+d[2])); err != nil {
			t.Fatal(err)
		}
	}
	names := func(l []ExtensionInfo) []string {
		var out []string
		for _, e := range l {
			out = append(out, e.Tenant+"/"+e.Environment+"/"+e.Name+"@"+e.Version)
		}
		slices.Sort(out)
		return out
	}
	all, err := s.List(func(string) bool { return true })
	if err != nil || len(all) != 4 {
		t.Fatalf("List all = %v, %v", names(all), err)
	}
	acme, _ := s.List(func(tn string) bool { return tn == "acme" })
	if want := []string{"acme/production/hook@v1", "acme/production/rules@v1", "acme/staging/hook@v1"}; !slices.Equal(names(acme), want) {
		t.Errorf("List acme = %q, want %q", names(acme), want)
	}
	none, _ := s.List(func(string) bool { return false })
	if len(none) != 0 {
		t.Errorf("List none = %q", names(none))
	}

	if err := s.Remove("acme", "production", "hook"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := s.Get("acme", "production", "hook", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("acme", "production", "hook", "v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get v1 after Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove("acme", "production", "hook"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove("acme", "production", "../hook"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Remove ../hook = %v, want ErrInvalid", err)
	}
	if _, err := s.Get("acme", "staging", "hook", ""); err != nil {
		t.Errorf("Remove took another environment's extension: %v", err)
	}
	acme, _ = s.List(func(tn string) bool { return tn == "acme" })
	if want := []string{"acme/production/rules@v1", "acme/staging/hook@v1"}; !slices.Equal(names(acme), want) {
		t.Errorf("List acme after Remove = %q, want %q", names(acme), want)
	}
}

func TestUnitStoreRejects(t *testing.T) {
	manifest := func(body string) BundleFile {
		return BundleFile{Path: ManifestFile, Mode: 0o644, Content: []byte(body)}
	}
	worker := BundleFile{Path: "worker", Mode: 0o755, Content: []byte("w")}
	with := func(extra ...BundleFile) []BundleFile { return append(unitBundle("w"), extra...) }
	file := func(p string) BundleFile { return BundleFile{Path: p, Mode: 0o644, Content: []byte("x")} }
	long := strings.Repeat("a", 70)
	var tooMany []BundleFile
	for i := range 8 {
		tooMany = append(tooMany, file(fmt.Sprintf("f%d", i)))
	}

	type tc struct {
		tenant, env, name string
		files             []BundleFile
		want              error
	}
	ok := func(files []BundleFile, want error) tc { return tc{"acme", "production", "hook", files, want} }
	cases := map[string]tc{
		"../x path":            ok(with(file("../x")), ErrInvalid),
		"deep ../ path":        ok(with(file("a/../../x")), ErrInvalid),
		"/abs path":            ok(with(file("/etc/passwd")), ErrInvalid),
		"a/../b":               ok(with(file("a/../b")), ErrInvalid),
		"./a":                  ok(with(file("./a")), ErrInvalid),
		"a/./b":                ok(with(file("a/./b")), ErrInvalid),
		"a//b":                 ok(with(file("a//b")), ErrInvalid),
		"trailing slash":       ok(with(file("a/")), ErrInvalid),
		"..":                   ok(with(file("..")), ErrInvalid),
		".":                    ok(with(file(".")), ErrInvalid),
		"empty path":           ok(with(file("")), ErrInvalid),
		"NUL in path":          ok(with(file("a\x00b")), ErrInvalid),
		"backslash in path":    ok(with(file(`a\..\b`)), ErrInvalid),
		"256-byte path":        ok(with(file(strings.Repeat("p", 256))), ErrInvalid),
		".tmp- element":        ok(with(file(".tmp-1/x")), ErrInvalid),
		"duplicate path":       ok(with(file("a"), file("a")), ErrInvalid),
		"duplicate manifest":   ok(with(manifest(unitManifest)), ErrInvalid),
		"file and dir":         ok(with(file("a"), file("a/b")), ErrInvalid),
		"file and deep dir":    ok(with(file("a/b/c"), file("a")), ErrInvalid),
		"symlink mode":         ok(with(BundleFile{Path: "link", Mode: 0o120777, Content: []byte("/etc/passwd")}), ErrInvalid),
		"setuid mode":          ok(with(BundleFile{Path: "suid", Mode: 0o4755, Content: []byte("x")}), ErrInvalid),
		"device mode":          ok(with(BundleFile{Path: "dev", Mode: 0o20666}), ErrInvalid),
		"dir mode":             ok(with(BundleFile{Path: "d", Mode: 0o40755}), ErrInvalid),
		"symlink entrypoint":   ok([]BundleFile{manifest(unitManifest), {Path: "worker", Mode: 0o120777, Content: []byte("/bin/sh")}}, ErrInvalid),
		"empty bundle":         ok(nil, ErrInvalid),
		"missing manifest":     ok([]BundleFile{worker}, ErrInvalid),
		"manifest in subdir":   ok([]BundleFile{worker, {Path: "x/" + ManifestFile, Mode: 0o644, Content: []byte(unitManifest)}}, ErrInvalid),
		"manifest unknown key": ok([]BundleFile{manifest(unitManifest + "memory = 1\n"), worker}, ErrInvalid),
		"manifest bad toml":    ok([]BundleFile{manifest("runtime = \n"), worker}, ErrInvalid),
		"bad runtime":          ok([]BundleFile{manifest("runtime = \"python\"\nentrypoint = \"worker\"\n"), worker}, ErrInvalid),
		"no runtime":           ok([]BundleFile{manifest("entrypoint = \"worker\"\n"), worker}, ErrInvalid),
		"entrypoint missing":   ok([]BundleFile{manifest("runtime = \"go\"\nentrypoint = \"nope\"\n"), worker}, ErrInvalid),
		"entrypoint empty":     ok([]BundleFile{manifest("runtime = \"go\"\n"), worker}, ErrInvalid),
		"entrypoint ../":       ok([]BundleFile{manifest("runtime = \"exec\"\nentrypoint = \"../../bin/sh\"\n"), worker}, ErrInvalid),
		"entrypoint absolute":  ok([]BundleFile{manifest("runtime = \"exec\"\nentrypoint = \"/bin/sh\"\n"), worker}, ErrInvalid),
		"entrypoint not exec":  ok([]BundleFile{manifest(unitManifest), {Path: "worker", Mode: 0o644, Content: []byte("w")}}, ErrInvalid),
		"entrypoint is a dir":  ok([]BundleFile{manifest("runtime = \"go\"\nentrypoint = \"bin\"\n"), {Path: "bin/worker", Mode: 0o755}}, ErrInvalid),
		"over max size":        ok(unitBundle(strings.Repeat("x", 4096)), ErrTooLarge),
		"too many files":       ok(append(unitBundle("w"), tooMany...), ErrTooLarge),
		"tenant 70 chars":      {long, "production", "hook", unitBundle("w"), ErrInvalid},
		"tenant A":             {"A", "production", "hook", unitBundle("w"), ErrInvalid},
		"tenant empty":         {"", "production", "hook", unitBundle("w"), ErrInvalid},
		"tenant ../x":          {"../x", "production", "hook", unitBundle("w"), ErrInvalid},
		"tenant *":             {"*", "production", "hook", unitBundle("w"), ErrInvalid},
		"env 70 chars":         {"acme", long, "hook", unitBundle("w"), ErrInvalid},
		"env A":                {"acme", "A", "hook", unitBundle("w"), ErrInvalid},
		"env empty":            {"acme", "", "hook", unitBundle("w"), ErrInvalid},
		"env ../x":             {"acme", "../x", "hook", unitBundle("w"), ErrInvalid},
		"name 70 chars":        {"acme", "production", long, unitBundle("w"), ErrInvalid},
		"name A":               {"acme", "production", "A", unitBundle("w"), ErrInvalid},
		"name empty":           {"acme", "production", "", unitBundle("w"), ErrInvalid},
		"name ../x":            {"acme", "production", "../x", unitBundle("w"), ErrInvalid},
		"name .tmp-x":          {"acme", "production", ".tmp-x", unitBundle("w"), ErrInvalid},
	}

	s, dir := newUnitStore(t)
	first, _, err := s.Deploy("acme", "production", "hook", unitBundle("first"))
	if err != nil {
		t.Fatal(err)
	}
	before := treeListing(t, dir)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			info, unchanged, err := s.Deploy(c.tenant, c.env, c.name, c.files)
			if !errors.Is(err, c.want) {
				t.Fatalf("Deploy = %+v, %v, %v; want %v", info, unchanged, err, c.want)
			}
			// Also for an extension the store does not have yet.
			if c.tenant == "acme" && c.env == "production" && c.name == "hook" {
				if _, _, err := s.Deploy("acme", "production", "fresh", c.files); !errors.Is(err, c.want) {
					t.Fatalf("Deploy of a new extension = %v; want %v", err, c.want)
				}
			}
			if after := treeListing(t, dir); !slices.Equal(before, after) {
				t.Fatalf("rejected Deploy changed the store:\n%s", listingDiff(before, after))
			}
			cur, err := s.Get("acme", "production", "hook", "")
			if err != nil || cur.Version != "v1" || cur.Digest != first.Digest {
				t.Fatalf("current after rejected Deploy = %+v, %v", cur, err)
			}
		})
	}
}

// Limits are inclusive: a bundle of exactly max_bundle bytes and
// max_bundle_files files is accepted.
func TestUnitStoreLimitsInclusive(t *testing.T) {
	s, _ := newUnitStore(t) // 4096 bytes, 8 files
	files := unitBundle(strings.Repeat("x", 4096-len(unitManifest)))
	if _, _, err := s.Deploy("acme", "production", "big", files); err != nil {
		t.Fatalf("bundle of exactly max_bundle bytes: %v", err)
	}
	files = unitBundle("w")
	for i := range 6 {
		files = append(files, BundleFile{Path: fmt.Sprintf("f%d", i), Mode: 0o644})
	}
	if _, _, err := s.Deploy("acme", "production", "many", files); err != nil {
		t.Fatalf("bundle of exactly max_bundle_files files: %v", err)
	}
}

func TestUnitStoreRemovesHalfWrittenVersions(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, 4096, 8)
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := s.Deploy("acme", "production", "hook", unitBundle("one"))
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "extensions", "acme", "production", "hook")
	tmp := filepath.Join(ext, ".tmp-123456")
	if err := os.MkdirAll(filepath.Join(tmp, "bundle", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "bundle", "lib", "half"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(dir, 4096, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s survived NewStore: %v", tmp, err)
	}
	if _, err := os.Stat(info.Dir); err != nil {
		t.Fatalf("NewStore removed a complete version: %v", err)
	}
	if v, _, err := s.Deploy("acme", "production", "hook", unitBundle("two")); err != nil || v.Version != "v2" {
		t.Fatalf("Deploy after cleanup = %+v, %v", v, err)
	}
}

func TestUnitStoreConcurrentDeploys(t *testing.T) {
	s, _ := newUnitStore(t)
	const n = 8
	var wg sync.WaitGroup
	versions := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, _, err := s.Deploy("acme", "production", "hook", unitBundle(fmt.Sprint("content ", i)))
			versions[i], errs[i] = info.Version, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(versions)
	if len(slices.Compact(slices.Clone(versions))) != n {
		t.Fatalf("versions not distinct: %q", versions)
	}
	cur, err := s.Get("acme", "production", "hook", "")
	if err != nil || !slices.Contains(versions, cur.Version) {
		t.Fatalf("current = %+v, %v", cur, err)
	}
}

// BUG: workers are pooled by versionKey, "name@version". Within one scope,
// two extensions with the same name in different environments (isolation
// by user, extension, or nothing) share that key, and so do an extension's
// v1 and the v1 deployed after it was removed: an invocation is then served
// by a warm worker running another bundle.
func TestUnitVersionKeyDistinguishesBundles(t *testing.T) {
	s, _ := newUnitStore(t)
	prod, _, err := s.Deploy("acme", "production", "hook", unitBundle("prod code"))
	if err != nil {
		t.Fatal(err)
	}
	staging, _, err := s.Deploy("acme", "staging", "hook", unitBundle("staging code"))
	if err != nil {
		t.Fatal(err)
	}
	// With isolation by extension both go to the same scope.
	iso := Isolation{By: []string{"extension"}}
	a := iso.scopeOf(Target{tenant: "acme", environment: "production", extension: "hook"})
	b := iso.scopeOf(Target{tenant: "acme", environment: "staging", extension: "hook"})
	if a != b {
		t.Fatalf("precondition: scopes %+v and %+v differ", a, b)
	}
	if versionKey(prod) == versionKey(staging) {
		t.Errorf("production and staging bundles (%s, %s) share pool key %q in scope %s",
			prod.Digest, staging.Digest, versionKey(prod), a.Key())
	}

	if err := s.Remove("acme", "production", "hook"); err != nil {
		t.Fatal(err)
	}
	again, _, err := s.Deploy("acme", "production", "hook", unitBundle("new prod code"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != prod.Version {
		t.Logf("redeploy after Remove got %s (old %s)", again.Version, prod.Version)
	}
	if again.Digest != prod.Digest && versionKey(again) == versionKey(prod) {
		t.Errorf("removed and redeployed bundle (%s, was %s) keeps pool key %q: warm workers run the removed code",
			again.Digest, prod.Digest, versionKey(again))
	}
}

func listingDiff(before, after []string) string {
	var b strings.Builder
	for _, l := range before {
		if !slices.Contains(after, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// withKeep sets keep_versions on s.
func withKeep(s *Store, n int) {
	lim := DefaultConfig().Limits
	lim.MaxBundle, lim.MaxBundleFiles, lim.KeepVersions = s.maxBundle.Load(), int(s.maxFiles.Load()), n
	s.Configure(lim, nil)
}

// within runs f and fails the test if it has not returned after a minute:
// a guard against a hang, not a measure of time.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s blocked while a deploy was writing its bundle", what)
	}
}

// A deploy writes and syncs its bundle holding no lock: while one is held
// inside that phase, Get (the invocation path) of its own and of other
// tenants' extensions, List, and a deploy of another extension all return.
func TestUnitStoreGetDoesNotWaitForDeploy(t *testing.T) {
	s, _ := newUnitStore(t)
	if _, _, err := s.Deploy("acme", "production", "hook", unitBundle("acme v1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Deploy("globex", "production", "hook", unitBundle("globex v1")); err != nil {
		t.Fatal(err)
	}
	// A store opened afresh has nothing cached: Get reads the disk.
	s2, err := NewStore(filepath.Dir(s.root), 4096, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range []*Store{s, s2} {
		inWrite, release := make(chan struct{}), make(chan struct{})
		var first atomic.Bool
		st.staged = func() {
			if !first.Swap(true) { // only the first deploy waits
				close(inWrite)
				<-release
			}
		}
		deployed := make(chan error, 1)
		// The staged bundle holds a file named like a version pointer:
		// List must not take the temporary directory for an extension.
		files := append(unitBundle(fmt.Sprint("acme ", i)), BundleFile{Path: "x/current", Mode: 0o644, Content: []byte("v1\n")})
		go func() {
			_, _, err := st.Deploy("acme", "production", "hook", files)
			deployed <- err
		}()
		<-inWrite
		within(t, "Get of another tenant", func() {
			if info, err := st.Get("globex", "production", "hook", ""); err != nil || info.Version != "v1" {
				t.Errorf("Get globex = %+v, %v", info, err)
			}
		})
		within(t, "Get of the extension being deployed", func() {
			if info, err := st.Get("acme", "production", "hook", ""); err != nil || info.Version != fmt.Sprint("v", i+1) {
				t.Errorf("Get acme while deploying = %+v, %v; want v%d, the new version unseen", info, err, i+1)
			}
		})
		within(t, "List", func() {
			list, err := st.List(func(string) bool { return true })
			if err != nil || len(list) != 2+i {
				t.Errorf("List = %+v, %v; want the %d extensions", list, err, 2+i)
			}
		})
		within(t, "Deploy of another tenant", func() {
			if _, _, err := st.Deploy("globex", "production", "other", unitBundle("globex other "+st.root)); err != nil {
				t.Error(err)
			}
		})
		close(release)
		if err := <-deployed; err != nil {
			t.Fatal(err)
		}
		st.staged = nil
	}
	if info, err := s2.Get("acme", "production", "hook", ""); err != nil || info.Version != "v3" {
		t.Fatalf("after both deploys, current = %+v, %v; want v3", info, err)
	}
	if info, err := s.Get("acme", "production", "hook", "v2"); err != nil || info.Version != "v2" {
		t.Fatalf("v2 = %+v, %v", info, err)
	}
}

// keep_versions: 8 deploys keep the newest 5 (the current one among them)
// and a held older version; the held one goes once its hold is released.
func TestUnitStorePrunesOldVersions(t *testing.T) {
	s, dir := newUnitStore(t)
	withKeep(s, 5)
	ext := filepath.Join(dir, "extensions", "acme", "production", "hook")
	var release func()
	for i := 1; i <= 8; i++ {
		info, _, err := s.Deploy("acme", "production", "hook", unitBundle(fmt.Sprint("content ", i)))
		if err != nil || info.Version != fmt.Sprint("v", i) {
			t.Fatalf("deploy %d = %+v, %v", i, info, err)
		}
		if i == 2 {
			release = s.Hold(info) // a live worker runs v2
		}
	}
	onDisk := func() []string {
		t.Helper()
		vs, err := versions(ext)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range vs {
			out = append(out, fmt.Sprint("v", n))
		}
		return out
	}
	if got, want := onDisk(), []string{"v8", "v7", "v6", "v5", "v4", "v2"}; !slices.Equal(got, want) {
		t.Fatalf("versions after 8 deploys = %v, want %v", got, want)
	}
	if cur, err := s.Get("acme", "production", "hook", ""); err != nil || cur.Version != "v8" {
		t.Fatalf("current = %+v, %v", cur, err)
	}
	if _, err := s.Get("acme", "production", "hook", "v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get pruned v1 = %v, want ErrNotFound", err)
	}
	// Still held: the reaper's tick leaves it.
	s.PrunePending()
	if got := onDisk(); !slices.Contains(got, "v2") {
		t.Fatalf("held v2 pruned: %v", got)
	}
	release()
	release() // twice is once
	s.PrunePending()
	if got, want := onDisk(), []string{"v8", "v7", "v6", "v5", "v4"}; !slices.Equal(got, want) {
		t.Fatalf("after the hold went = %v, want %v", got, want)
	}
	s.mu.Lock()
	pending, holds := len(s.pending), len(s.holds)
	s.mu.Unlock()
	if pending != 0 || holds != 0 {
		t.Errorf("pending %d, holds %d left", pending, holds)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "extensions", ".tmp-*")); len(tmps) > 0 {
		t.Errorf("left behind: %v", tmps)
	}
	// The next version number stays unique.
	if info, _, err := s.Deploy("acme", "production", "hook", unitBundle("content 9")); err != nil || info.Version != "v9" {
		t.Fatalf("deploy 9 = %+v, %v", info, err)
	}

	// keep_versions lowered while the daemon was down: the first reaper
	// tick of the next start prunes.
	s2, err := NewStore(dir, 4096, 8)
	if err != nil {
		t.Fatal(err)
	}
	withKeep(s2, 2)
	s2.PrunePending()
	if got, want := onDisk(), []string{"v9", "v8"}; !slices.Equal(got, want) {
		t.Fatalf("after a start with keep_versions 2 = %v, want %v", got, want)
	}
	// 0 keeps everything.
	withKeep(s2, 0)
	for i := 10; i <= 12; i++ {
		if _, _, err := s2.Deploy("acme", "production", "hook", unitBundle(fmt.Sprint("content ", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := onDisk(); len(got) != 5 {
		t.Fatalf("keep_versions 0 kept %v", got)
	}
}

// Concurrent deploys of one extension, with pruning: distinct versions,
// the current one is one of them and complete, nothing half-written left.
func TestUnitStoreConcurrentDeploysPrune(t *testing.T) {
	s, dir := newUnitStore(t)
	withKeep(s, 3)
	const n = 12
	var wg sync.WaitGroup
	versions := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, _, err := s.Deploy("acme", "production", "hook", unitBundle(fmt.Sprint("content ", i)))
			versions[i], errs[i] = info.Version, err
			// Invocations meanwhile always see a complete version.
			if cur, err := s.Get("acme", "production", "hook", ""); err != nil {
				errs[i] = errors.Join(errs[i], err)
			} else if _, err := os.Stat(filepath.Join(cur.Dir, "worker")); err != nil {
				errs[i] = errors.Join(errs[i], fmt.Errorf("current %s incomplete: %w", cur.Version, err))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(versions)
	if len(slices.Compact(slices.Clone(versions))) != n {
		t.Fatalf("versions not distinct: %q", versions)
	}
	cur, err := s.Get("acme", "production", "hook", "")
	if err != nil || cur.Version != "v12" {
		t.Fatalf("current = %+v, %v; want v12", cur, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "extensions", "acme", "production", "hook", "v*"))
	if len(left) != 3 {
		t.Errorf("kept %v, want 3 versions", left)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "extensions", ".tmp-*")); len(tmps) > 0 {
		t.Errorf("left behind: %v", tmps)
	}
}

// A Remove while a deploy of the same extension is writing: the deploy
// then publishes a fresh extension, and nothing is left half-made.
func TestUnitStoreRemoveDuringDeploy(t *testing.T) {
	s, dir := newUnitStore(t)
	if _, _, err := s.Deploy("acme", "production", "hook", unitBundle("one")); err != nil {
		t.Fatal(err)
	}
	inWrite, release := make(chan struct{}), make(chan struct{})
	s.staged = func() { close(inWrite); <-release }
	deployed := make(chan error, 1)
	go func() {
		_, _, err := s.Deploy("acme", "production", "hook", unitBundle("two"))
		deployed <- err
	}()
	<-inWrite
	within(t, "Remove", func() {
		if err := s.Remove("acme", "production", "hook"); err != nil {
			t.Error(err)
		}
	})
	close(release)
	if err := <-deployed; err != nil {
		t.Fatal(err)
	}
	if cur, err := s.Get("acme", "production", "hook", ""); err != nil || cur.Version != "v1" {
		t.Fatalf("after remove and deploy = %+v, %v; want a fresh v1", cur, err)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "extensions", ".tmp-*")); len(tmps) > 0 {
		t.Errorf("left behind: %v", tmps)
	}
}
