package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSection(t *testing.T) {
	const markStart, markEnd = "<!-- testbench:start -->", "<!-- testbench:end -->"
	section := func(body string) string { return markStart + "\n" + body + "\n" + markEnd + "\n" }
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	// Missing file: created with the intro.
	if err := WriteSection(path, markStart, markEnd, section("one")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), intro+"\n"+section("one"); got != want {
		t.Fatalf("new file:\n%s\nwant:\n%s", got, want)
	}

	// Other sections around ours are kept; ours is replaced.
	other := "\n## Other benchmark\n\nkeep me\n"
	if err := os.WriteFile(path, []byte(read()+other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("two")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), intro+"\n"+section("two")+other; got != want {
		t.Fatalf("replaced:\n%s\nwant:\n%s", got, want)
	}

	// A file without our markers gets the section appended.
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nhand written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("three")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "# Benchmarks\n\nhand written\n\n"+section("three"); got != want {
		t.Fatalf("appended:\n%s\nwant:\n%s", got, want)
	}

	// A lone marker is an error, and the file is left alone.
	broken := "# Benchmarks\n\n" + markStart + "\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("four")); err == nil || !strings.Contains(err.Error(), "unmatched") {
		t.Fatalf("lone marker: err = %v", err)
	}
	if read() != broken {
		t.Fatal("lone marker: file changed")
	}
}
