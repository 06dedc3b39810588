package supervisor

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
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
		// Written back as TOML, it parses as the same manifest.
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(m); err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		if again, err := ParseManifest(buf.Bytes()); err != nil || again != m {
			t.Fatalf("%+v written back as %q parses as %+v, %v", m, buf.Bytes(), again, err)
		}
	})
}

// FuzzUnitRingWriterChunks: the lines a ringWriter stores do not depend on
// how the output was cut into writes, and none is longer than maxLineLen.
// In the input, 0xff stands for 1000 bytes without a newline, so that long
// lines are easy to reach; cuts seeds the sizes of the writes.
func FuzzUnitRingWriterChunks(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint64(1))
	f.Add([]byte("one line\nanother\n"), uint64(7))
	f.Add([]byte("x\xffy\n"), uint64(3))
	// Found by this fuzzer in 12 s against logring.go as it is: a 7000-byte
	// line in one write is cut to 4096 bytes, in three writes it is split.
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\n"), uint64(61))
	f.Fuzz(func(t *testing.T, prog []byte, cuts uint64) {
		if len(prog) > 64 {
			return
		}
		var data []byte
		for _, b := range prog {
			if b == 0xff {
				data = append(data, strings.Repeat("L", 1000)...)
			} else {
				data = append(data, b)
			}
		}
		store := func(chunks [][]byte) []string {
			fx := newRingWriterFixture(len(data) + 2)
			for _, c := range chunks {
				if n, err := fx.w.Write(c); n != len(c) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			return ringLines(fx.lines())
		}
		want := store([][]byte{data})
		var chunks [][]byte
		rest := data
		for x := cuts | 1; len(rest) > 0; {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			n := min(len(rest), 1+int(x%uint64(2*maxLineLen)))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		got := store(chunks)
		if !slices.Equal(got, want) {
			t.Fatalf("%d writes store lines of %v; one write stores %v", len(chunks), lineLens(got), lineLens(want))
		}
		for _, l := range got {
			if len(l) > maxLineLen {
				t.Fatalf("stored a line of %d bytes", len(l))
			}
		}
	})
}
