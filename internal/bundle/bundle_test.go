package bundle

import (
	"errors"
	"strings"
	"testing"
)

func TestUnitDigest(t *testing.T) {
	a := []File{{Path: "manifest.toml", Mode: 0o600, Content: []byte("m")}, {Path: "worker", Mode: 0o700, Content: []byte("w")}}
	b := []File{{Path: "worker", Mode: 0o755, Content: []byte("w")}, {Path: "manifest.toml", Mode: 0o644, Content: []byte("m")}}
	if Digest(a) != Digest(b) {
		t.Fatal("order or non-normalised mode bits changed the digest")
	}
	if a[0].Path != "manifest.toml" {
		t.Fatal("Digest reordered its argument")
	}
	// A known value (printf ... | sha256sum): stored digests must not change.
	if got, want := Digest(a), "sha256:742cd912da84a3b62912baed9dbd82f9483c966cce09aeaedfbf4e2482eca933"; got != want {
		t.Fatalf("Digest = %s, want %s", got, want)
	}
	for _, c := range [][]File{
		{{Path: "manifest.toml", Mode: 0o644, Content: []byte("m")}, {Path: "worker", Mode: 0o644, Content: []byte("w")}},
		{{Path: "manifest.toml", Mode: 0o644, Content: []byte("m")}, {Path: "worker", Mode: 0o755, Content: []byte("W")}},
		{{Path: "manifest.toml", Mode: 0o644, Content: []byte("mw")}, {Path: "worker", Mode: 0o755}},
	} {
		if Digest(c) == Digest(a) {
			t.Fatalf("%+v has the digest of %+v", c, a)
		}
	}
	if err := Verify(b, Digest(a)); err != nil {
		t.Fatal(err)
	}
	if err := Verify(b[:1], Digest(a)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Verify of other files: %v", err)
	}
}

func TestUnitCheckDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	if err := CheckDigest(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:", good[:len(good)-1], good + "0", strings.ToUpper(good), "sha512:" + good[7:],
		"sha256:" + strings.Repeat("g", 64), " " + good, good[:70] + "\x00"} {
		if err := CheckDigest(bad); !errors.Is(err, ErrInvalidDigest) {
			t.Fatalf("CheckDigest(%q) = %v", bad, err)
		}
	}
}

// FuzzUnitCheckDigest: CheckDigest never panics, accepts exactly the
// digests Digest makes the form of, and its error quotes a bounded input.
func FuzzUnitCheckDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha256:")
	f.Add(strings.Repeat("x", 4096))
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckDigest(s)
		ok := len(s) == 71 && strings.HasPrefix(s, "sha256:") && strings.Trim(s[7:], "0123456789abcdef") == ""
		if (err == nil) != ok {
			t.Fatalf("CheckDigest(%q) = %v", s, err)
		}
		if err != nil && len(err.Error()) > 512 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}
