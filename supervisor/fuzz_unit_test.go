package supervisor

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzUnitBundlePath(f *testing.F) {
	for _, s := range []string{
		"worker", "bin/worker", "a/b/c.txt", "..", "../x", "a/../b", "./a", "/abs", "a//b", "a/",
		"", ".", "...", "a..b", "..a", "a/..", `a\b`, "a\x00b", ".tmp-1", "x/.tmp-y/z", ".hidden",
		strings.Repeat("a", 255), strings.Repeat("a", 256), "é/ü", "a\nb",
	} {
		f.Add(s)
	}
	base := filepath.Join(f.TempDir(), "bundle")
	f.Fuzz(func(t *testing.T, p string) {
		err := checkBundlePath(p)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("checkBundlePath(%q) = %v, not ErrInvalid", p, err)
			}
			return
		}
		if p == "" || len(p) > 255 || strings.ContainsAny(p, "\x00\\") {
			t.Fatalf("accepted %q", p)
		}
		for _, e := range strings.Split(p, "/") {
			if e == "" || e == "." || e == ".." || strings.HasPrefix(e, ".tmp-") {
				t.Fatalf("accepted %q with element %q", p, e)
			}
		}
		j := filepath.Join(base, filepath.FromSlash(p))
		if !strings.HasPrefix(j, base+string(filepath.Separator)) {
			t.Fatalf("%q joined to %q is %q, outside the base", p, base, j)
		}
		rel, err := filepath.Rel(base, j)
		if err != nil || rel != filepath.FromSlash(p) {
			t.Fatalf("%q joined to %q is %q (rel %q, %v): the path was not clean", p, base, j, rel, err)
		}
		for _, e := range strings.Split(rel, string(filepath.Separator)) {
			if e == ".." {
				t.Fatalf("%q joined is %q, has a .. element", p, j)
			}
		}
	})
}

func FuzzUnitManifest(f *testing.F) {
	for _, s := range []string{
		unitManifest,
		"runtime = \"exec\"\nentrypoint = \"bin/run.sh\"\ndescription = \"shout\"\n",
		"runtime = \"go\"\nentrypoint = \"../worker\"\n",
		"runtime = \"go\"\nentrypoint = \"/bin/sh\"\n",
		"runtime = \"python\"\nentrypoint = \"x\"\n",
		"runtime = \"go\"\nentrypoint = \"worker\"\nextra = 1\n",
		"runtime = \"go\"\nentrypoint = \"worker\"\n[table]\nx = 1\n",
		"runtime = 1\n",
		"runtime = [\"go\"]\n",
		"entrypoint = \"w\"\nruntime = \"go\"\nruntime = \"exec\"\n",
		"runtime = \"go\"\nentrypoint = \"a\\u0000b\"\n",
		"runtime = \"go\"\nentrypoint = '''\nworker'''\n",
		"\xff\xfe",
		"",
		"[[x]]\n[[x]]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseManifest(%q) = %v, not ErrInvalid", b, err)
			}
			return
		}
		if m.Runtime != RuntimeGo && m.Runtime != RuntimeExec {
			t.Fatalf("ParseManifest(%q) accepted runtime %q", b, m.Runtime)
		}
		if err := checkBundlePath(m.Entrypoint); err != nil {
			t.Fatalf("ParseManifest(%q) accepted entrypoint %q: %v", b, m.Entrypoint, err)
		}
	})
}
