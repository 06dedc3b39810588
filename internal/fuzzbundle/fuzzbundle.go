// Package fuzzbundle is what the fuzz targets that deploy bundles share
// (the extension store's in supervisor, the API edge's in api): a bundle's
// file list encoded in fuzz bytes, seeds, and the check of what the store
// wrote for a version. Tests only.
package fuzzbundle

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// File is one file of a bundle (the fields of supervisor.BundleFile, which
// converts to and from it).
type File struct {
	Path    string
	Mode    uint32
	Content []byte
}

// Decode decodes a file list from fuzz bytes. Each file is two bytes of
// path length, the path, four bytes of mode, two bytes of content length
// and the content (little endian); a content length with the top bit set
// stands for that many (the low 15 bits) copies of the next byte, so that
// sizes near the caps are easy to reach. A cut record ends the list.
func Decode(b []byte) []File {
	var files []File
	for len(b) >= 2 {
		n := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if len(b) < n+6 {
			break
		}
		f := File{Path: string(b[:n]), Mode: binary.LittleEndian.Uint32(b[n:])}
		c := int(binary.LittleEndian.Uint16(b[n+4:]))
		b = b[n+6:]
		if c&0x8000 != 0 {
			if len(b) < 1 {
				break
			}
			f.Content = bytes.Repeat(b[:1], c&0x7fff)
			b = b[1:]
		} else {
			if len(b) < c {
				break
			}
			f.Content = b[:c:c]
			b = b[c:]
		}
		files = append(files, f)
	}
	return files
}

// Encode encodes files for Decode (contents up to 32 KiB).
func Encode(files ...File) []byte {
	var b []byte
	for _, f := range files {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Path)))
		b = append(b, f.Path...)
		b = binary.LittleEndian.AppendUint32(b, f.Mode)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Content)))
		b = append(b, f.Content...)
	}
	return b
}

// Seeds are file lists from the store's tests and their edges, for a store
// whose manifest is manifestFile and a valid go-runtime manifest (its
// entrypoint "worker").
func Seeds(manifestFile, manifest string) [][]byte {
	m := File{Path: manifestFile, Mode: 0o644, Content: []byte(manifest)}
	worker := File{Path: "worker", Mode: 0o755, Content: []byte("w")}
	execManifest := File{Path: manifestFile, Mode: 0o644, Content: []byte("runtime = \"exec\"\nentrypoint = \"bin/run.sh\"\n")}
	var big []byte
	big = Encode(m)
	big = binary.LittleEndian.AppendUint16(big, 6)
	big = append(big, "worker"...)
	big = binary.LittleEndian.AppendUint32(big, 0o755)
	big = binary.LittleEndian.AppendUint16(big, 0x8000|(4096-uint16(len(manifest))))
	big = append(big, 'x')
	return [][]byte{
		Encode(m, worker),
		Encode(execManifest, File{Path: "bin/run.sh", Mode: 0o700, Content: []byte("#!/bin/sh\n")}, File{Path: "bin/lib/x.txt", Mode: 0o600}),
		big,
		Encode(),
		Encode(m),
		Encode(m, File{Path: "worker", Mode: 0o644}),
		Encode(m, worker, worker),
		Encode(m, worker, File{Path: "worker/x", Mode: 0o644}),
		Encode(m, worker, File{Path: "../escape", Mode: 0o644}),
		Encode(m, worker, File{Path: "/etc/passwd", Mode: 0o644}),
		Encode(m, worker, File{Path: "a\x00b", Mode: 0o644}),
		Encode(m, worker, File{Path: strings.Repeat("a", 255), Mode: 0o644}),
		Encode(m, worker, File{Path: strings.Repeat("a", 256), Mode: 0o644}),
		Encode(m, worker, File{Path: strings.Repeat("d/", 100) + "f", Mode: 0o644}),
		Encode(m, worker, File{Path: "link", Mode: 0o120777, Content: []byte("/etc")}),
		Encode(m, worker, File{Path: "dev", Mode: 0o20666}),
		Encode(m, worker, File{Path: "suid", Mode: 0o4755}),
		Encode(m, worker, File{Path: ".tmp-x", Mode: 0o644}),
		Encode(m, worker, File{Path: "current", Mode: 0o644}),
		Encode(m, worker, File{Path: "info.json", Mode: 0o644}),
		Encode(File{Path: manifestFile, Mode: 0o644, Content: []byte("runtime = \"go\"\nentrypoint = \"../worker\"\n")}, worker),
		Encode(m, worker, File{Path: "a"}, File{Path: "b"}, File{Path: "c"}, File{Path: "d"}, File{Path: "e"}, File{Path: "f"}, File{Path: "g"}),
	}
}

// DirNames lists the names in dir.
func DirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Changed lists the paths that differ between two snapshots (path → what
// the snapshot saw of it).
func Changed(a, b map[string]string) []string {
	var out []string
	for p, v := range a {
		if b[p] != v {
			out = append(out, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

var reVersion = regexp.MustCompile(`^v[1-9][0-9]*$`)

// normMode is the mode the store gives a file of mode m.
func normMode(m uint32) uint32 {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// CheckStored checks a version the store says it stored in the extension's
// directory ext: it holds info.json and bundle/, which holds exactly files
// (their contents, normalised modes, no other file, no symlink), "current"
// names it, and no temporary directory is left.
func CheckStored(t *testing.T, ext, version string, files []File) {
	t.Helper()
	if !reVersion.MatchString(version) {
		t.Fatalf("stored version %q is not v1, v2, …", version)
	}
	if b, err := os.ReadFile(filepath.Join(ext, "current")); err != nil || string(b) != version+"\n" {
		t.Fatalf("current = %q, %v; want %s", b, err, version)
	}
	for _, n := range DirNames(t, ext) {
		if n != "current" && !reVersion.MatchString(n) {
			t.Fatalf("%s left in %s", n, ext)
		}
	}
	vdir := filepath.Join(ext, version)
	if n := DirNames(t, vdir); !slices.Equal(n, []string{"bundle", "info.json"}) {
		t.Fatalf("%s holds %q", vdir, n)
	}
	want := map[string]File{}
	dirs := map[string]bool{".": true}
	for _, f := range files {
		want[f.Path] = f
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	bundle := filepath.Join(vdir, "bundle")
	seen := 0
	err := filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(bundle, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("%s is outside %s", p, bundle)
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if !dirs[rel] {
				t.Fatalf("directory %s is no file's", rel)
			}
		case fi.Mode().IsRegular():
			f, ok := want[rel]
			if !ok {
				t.Fatalf("file %s is not in the bundle", rel)
			}
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(b, f.Content) {
				t.Fatalf("%s holds %d bytes (%v), the bundle %d", rel, len(b), err, len(f.Content))
			}
			if got := uint32(fi.Mode()); got != normMode(f.Mode) {
				t.Fatalf("%s has mode %#o, want %#o", rel, got, normMode(f.Mode))
			}
			seen++
		default:
			t.Fatalf("%s is a %v", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(files) {
		t.Fatalf("%d files stored, the bundle has %d", seen, len(files))
	}
}
