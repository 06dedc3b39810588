// Package bundle is what the store and the fleet's bundle transfer share
// about a bundle without importing each other: its files and its digest,
// computed one way everywhere (a node that fetched a bundle checks it with
// the function the store named it with).
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// File is one file of a bundle.
type File struct {
	Path    string
	Mode    uint32
	Content []byte
}

var (
	// ErrInvalidDigest: a string is not "sha256:" and 64 lowercase hex
	// digits.
	ErrInvalidDigest = errors.New("invalid bundle digest")
	// ErrDigestMismatch: files are not the bundle their digest names.
	ErrDigestMismatch = errors.New("bundle digest mismatch")
)

// DigestPrefix starts every digest.
const DigestPrefix = "sha256:"

// NormMode is the mode the store keeps of a file's mode: 0755 when any
// execute bit is set, else 0644.
func NormMode(m uint32) uint32 {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// Digest is the bundle's digest: sha256 over the files sorted by path, each
// as its path, NUL, its normalised mode in octal, NUL, its length in
// decimal, NUL and its content; "sha256:" and the hex sum. files is not
// modified.
func Digest(files []File) string {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.Path, NormMode(f.Mode), len(f.Content))
		h.Write(f.Content)
	}
	return DigestPrefix + hex.EncodeToString(h.Sum(nil))
}

// CheckDigest accepts "sha256:" and 64 lowercase hex digits only.
func CheckDigest(d string) error {
	hexPart, ok := strings.CutPrefix(d, DigestPrefix)
	if !ok || len(hexPart) != sha256.Size*2 {
		return fmt.Errorf("%w: %q is not sha256:<64 hex digits>", ErrInvalidDigest, clip(d))
	}
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: %q is not sha256:<64 lowercase hex digits>", ErrInvalidDigest, clip(d))
		}
	}
	return nil
}

// clip is the first 80 bytes of s, for an error's text.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Verify checks that files are the bundle digest names.
func Verify(files []File, digest string) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	if got := Digest(files); got != digest {
		return fmt.Errorf("%w: the files' digest is %s, %s was asked for", ErrDigestMismatch, got, digest)
	}
	return nil
}
