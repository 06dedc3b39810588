package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/scoped-io/scoped/internal/ident"
)

// ManifestFile is the bundle file that describes an extension.
const ManifestFile = "manifest.toml"

// Runtimes.
const (
	RuntimeGo   = "go"   // the entrypoint is a go-plugin worker (Go SDK)
	RuntimeExec = "exec" // the entrypoint is any program, run by scoped-exec
)

// Manifest is an extension's manifest.toml.
type Manifest struct {
	Runtime     string `toml:"runtime"`
	Entrypoint  string `toml:"entrypoint"`
	Description string `toml:"description"`
	// Network is what the extension needs: "none" (loopback only),
	// "egress" (its tier must allow it) or empty (what its tier gives).
	Network string `toml:"network"`
}

// BundleFile is one file of an uploaded bundle.
type BundleFile struct {
	Path    string
	Mode    uint32
	Content []byte
}

// ExtensionInfo describes one stored version of an extension.
type ExtensionInfo struct {
	Tenant      string    `json:"tenant"`
	Environment string    `json:"environment"`
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Digest      string    `json:"digest"`
	Runtime     string    `json:"runtime"`
	Entrypoint  string    `json:"entrypoint"`
	Network     string    `json:"network,omitempty"`
	Size        int64     `json:"size"`
	Created     time.Time `json:"created"`
	// Dir is the bundle's directory on the host (not stored).
	Dir string `json:"-"`
}

// Store keeps deployed extensions under <state>/extensions/<tenant>/<env>/
// <name>/<version>/ with a "current" file naming the current version. A
// version directory is written in a temporary directory and renamed into
// place, and "current" is replaced by rename, so a crash leaves either the
// old or the new version current, never half of one.
type Store struct {
	root      string
	maxBundle int64
	maxFiles  int

	mu sync.Mutex
	// currents caches the current version of each extension (by
	// tenant/env/name), so that an invocation reads no file; Deploy and
	// Remove keep it true.
	currents map[string]ExtensionInfo
}

func cacheKey(tenant, env, name string) string { return tenant + "/" + env + "/" + name }

// NewStore opens (creating) the store under stateDir.
func NewStore(stateDir string, maxBundle int64, maxFiles int) (*Store, error) {
	root := filepath.Join(stateDir, "extensions")
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, err
	}
	// Sandboxes (high host uids) must traverse to their bundle.
	for _, d := range []string{stateDir, root} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
	}
	// Remove what a crash left half-written.
	tmps, _ := filepath.Glob(filepath.Join(root, "*", "*", "*", ".tmp-*"))
	for _, t := range tmps {
		_ = os.RemoveAll(t)
	}
	return &Store{root: root, maxBundle: maxBundle, maxFiles: maxFiles, currents: map[string]ExtensionInfo{}}, nil
}

func checkTarget(tenant, env, name string) error {
	for _, f := range [][2]string{{"tenant", tenant}, {"environment", env}, {"extension", name}} {
		if err := ident.Check(f[0], f[1]); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return nil
}

// validateBundle checks every file and the manifest and returns the
// manifest, the digest and the total size.
func (s *Store) validateBundle(files []BundleFile) (Manifest, string, int64, error) {
	var m Manifest
	if len(files) == 0 {
		return m, "", 0, fmt.Errorf("%w: empty bundle", ErrInvalid)
	}
	if len(files) > s.maxFiles {
		return m, "", 0, fmt.Errorf("%w: bundle has %d files, at most %d are allowed", ErrTooLarge, len(files), s.maxFiles)
	}
	var size int64
	seen := map[string]bool{}
	for _, f := range files {
		if err := checkBundlePath(f.Path); err != nil {
			return m, "", 0, err
		}
		if f.Mode&^0o777 != 0 {
			return m, "", 0, fmt.Errorf("%w: %s is not a regular file (mode %#o): symlinks and devices are not allowed", ErrInvalid, f.Path, f.Mode)
		}
		if seen[f.Path] {
			return m, "", 0, fmt.Errorf("%w: %s appears twice", ErrInvalid, f.Path)
		}
		seen[f.Path] = true
		size += int64(len(f.Content))
		if size > s.maxBundle {
			return m, "", 0, fmt.Errorf("%w: bundle larger than %d bytes", ErrTooLarge, s.maxBundle)
		}
	}
	// A file may not also be a directory of another ("a" and "a/b").
	for p := range seen {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if seen[d] {
				return m, "", 0, fmt.Errorf("%w: %s is both a file and a directory", ErrInvalid, d)
			}
		}
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b BundleFile) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	var manifest []byte
	for _, f := range sorted {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.Path, normMode(f.Mode), len(f.Content))
		h.Write(f.Content)
		if f.Path == ManifestFile {
			manifest = f.Content
		}
	}
	if manifest == nil {
		return m, "", 0, fmt.Errorf("%w: the bundle has no %s", ErrInvalid, ManifestFile)
	}
	m, err := ParseManifest(manifest)
	if err != nil {
		return m, "", 0, err
	}
	ep := -1
	for i, f := range files {
		if f.Path == m.Entrypoint {
			ep = i
		}
	}
	switch {
	case ep < 0:
		return m, "", 0, fmt.Errorf("%w: entrypoint %s is not in the bundle", ErrInvalid, m.Entrypoint)
	case normMode(files[ep].Mode)&0o100 == 0:
		return m, "", 0, fmt.Errorf("%w: entrypoint %s is not executable", ErrInvalid, m.Entrypoint)
	}
	return m, "sha256:" + hex.EncodeToString(h.Sum(nil)), size, nil
}

func normMode(m uint32) uint32 {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// checkBundlePath refuses absolute paths, "..", empty elements and
// anything but a clean relative slash path of at most 255 bytes.
func checkBundlePath(p string) error {
	switch {
	case p == "" || len(p) > 255:
		return fmt.Errorf("%w: bundle path %q is empty or too long", ErrInvalid, p)
	case strings.ContainsAny(p, "\x00\\"):
		return fmt.Errorf("%w: bundle path %q has a NUL or backslash", ErrInvalid, p)
	case path.IsAbs(p) || path.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || p == "..":
		return fmt.Errorf("%w: bundle path %q must be clean and relative, without ..", ErrInvalid, p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." || e == "." || strings.HasPrefix(e, ".tmp-") {
			return fmt.Errorf("%w: bundle path %q has a forbidden element %q", ErrInvalid, p, e)
		}
	}
	return nil
}

// ParseManifest parses and checks a manifest.toml.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	md, err := toml.Decode(string(b), &m)
	if err != nil {
		return m, fmt.Errorf("%w: %s: %w", ErrInvalid, ManifestFile, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return m, fmt.Errorf("%w: %s: unknown keys %v", ErrInvalid, ManifestFile, u)
	}
	if m.Runtime != RuntimeGo && m.Runtime != RuntimeExec {
		return m, fmt.Errorf("%w: %s: runtime %q is not %q or %q", ErrInvalid, ManifestFile, m.Runtime, RuntimeGo, RuntimeExec)
	}
	if err := checkBundlePath(m.Entrypoint); err != nil {
		return m, fmt.Errorf("%s: entrypoint: %w", ManifestFile, err)
	}
	if m.Network != "" && m.Network != NetworkNone && m.Network != NetworkEgress {
		return m, fmt.Errorf("%w: %s: network %q is not %q or %q", ErrInvalid, ManifestFile, m.Network, NetworkNone, NetworkEgress)
	}
	return m, nil
}

func (s *Store) extDir(tenant, env, name string) string {
	return filepath.Join(s.root, tenant, env, name)
}

// Deploy stores files as the new current version of the extension, unless
// they equal the current version (then unchanged is true).
func (s *Store) Deploy(tenant, env, name string, files []BundleFile) (info ExtensionInfo, unchanged bool, err error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return info, false, err
	}
	m, digest, size, err := s.validateBundle(files)
	if err != nil {
		return info, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.extDir(tenant, env, name)
	if cur, err := s.current(tenant, env, name); err == nil && cur.Digest == digest {
		return cur, true, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return info, false, err
	}
	for d := dir; d != s.root; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o711)
	}
	version, err := s.nextVersion(dir)
	if err != nil {
		return info, false, err
	}
	tmp, err := os.MkdirTemp(dir, ".tmp-")
	if err != nil {
		return info, false, err
	}
	defer os.RemoveAll(tmp)
	bundle := filepath.Join(tmp, "bundle")
	for _, f := range files {
		p := filepath.Join(bundle, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return info, false, err
		}
		if err := writeFileSync(p, f.Content, os.FileMode(normMode(f.Mode))); err != nil {
			return info, false, err
		}
	}
	// Directories made by MkdirAll honour the umask: make them readable.
	_ = filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	info = ExtensionInfo{
		Tenant: tenant, Environment: env, Name: name, Version: version,
		Digest: digest, Runtime: m.Runtime, Entrypoint: m.Entrypoint, Network: m.Network, Size: size,
		Created: time.Now().UTC().Truncate(time.Second),
	}
	meta, _ := json.MarshalIndent(info, "", "  ")
	if err := writeFileSync(filepath.Join(tmp, "info.json"), meta, 0o644); err != nil {
		return info, false, err
	}
	if err := os.Chmod(tmp, 0o711); err != nil {
		return info, false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, version)); err != nil {
		return info, false, err
	}
	if err := replaceFile(filepath.Join(dir, "current"), []byte(version+"\n")); err != nil {
		return info, false, err
	}
	info.Dir = filepath.Join(dir, version, "bundle")
	s.currents[cacheKey(tenant, env, name)] = info
	return info, false, nil
}

// nextVersion returns "v<N+1>" for the highest stored "v<N>".
func (s *Store) nextVersion(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	n := 0
	for _, e := range entries {
		if v, ok := strings.CutPrefix(e.Name(), "v"); ok && e.IsDir() {
			if i, err := strconv.Atoi(v); err == nil && i > n {
				n = i
			}
		}
	}
	return "v" + strconv.Itoa(n+1), nil
}

// Get returns a version of an extension; version "" is the current one.
func (s *Store) Get(tenant, env, name, version string) (ExtensionInfo, error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return ExtensionInfo{}, err
	}
	if version == "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		if info, ok := s.currents[cacheKey(tenant, env, name)]; ok {
			return info, nil
		}
		info, err := s.current(tenant, env, name)
		if err == nil {
			s.currents[cacheKey(tenant, env, name)] = info
		}
		return info, err
	}
	if err := checkVersion(version); err != nil {
		return ExtensionInfo{}, err
	}
	return s.load(filepath.Join(s.extDir(tenant, env, name), version))
}

// checkVersion accepts the names the store gives versions: v1, v2, …
// (not "current", which passes ident.Check but names the pointer file).
func checkVersion(v string) error {
	n, ok := strings.CutPrefix(v, "v")
	if i, err := strconv.Atoi(n); !ok || err != nil || i < 1 || "v"+strconv.Itoa(i) != v {
		return fmt.Errorf("%w: version %q is not v1, v2, …", ErrInvalid, v)
	}
	return nil
}

func (s *Store) current(tenant, env, name string) (ExtensionInfo, error) {
	dir := s.extDir(tenant, env, name)
	b, err := os.ReadFile(filepath.Join(dir, "current"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ExtensionInfo{}, fmt.Errorf("%w: extension %s of tenant %s in %s", ErrNotFound, name, tenant, env)
		}
		return ExtensionInfo{}, err
	}
	v := strings.TrimSpace(string(b))
	if err := ident.Check("version", v); err != nil {
		return ExtensionInfo{}, fmt.Errorf("corrupt current version of %s: %w", dir, err)
	}
	return s.load(filepath.Join(dir, v))
}

func (s *Store) load(dir string) (ExtensionInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ExtensionInfo{}, fmt.Errorf("%w: %s", ErrNotFound, filepath.Base(dir))
		}
		return ExtensionInfo{}, err
	}
	var info ExtensionInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return ExtensionInfo{}, fmt.Errorf("corrupt %s/info.json: %w", dir, err)
	}
	info.Dir = filepath.Join(dir, "bundle")
	return info, nil
}

// Remove deletes every version of an extension.
func (s *Store) Remove(tenant, env, name string) error {
	if err := checkTarget(tenant, env, name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.extDir(tenant, env, name)
	if _, err := os.Stat(filepath.Join(dir, "current")); err != nil {
		return fmt.Errorf("%w: extension %s of tenant %s in %s", ErrNotFound, name, tenant, env)
	}
	// Unpublish first, then remove: a crash in between leaves no current.
	delete(s.currents, cacheKey(tenant, env, name))
	if err := os.Remove(filepath.Join(dir, "current")); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// List returns the current version of every extension of the tenants for
// which allow returns true.
func (s *Store) List(allow func(tenant string) bool) ([]ExtensionInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	paths, err := filepath.Glob(filepath.Join(s.root, "*", "*", "*", "current"))
	if err != nil {
		return nil, err
	}
	var out []ExtensionInfo
	for _, p := range paths {
		rel, _ := filepath.Rel(s.root, filepath.Dir(p))
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 3 || !allow(parts[0]) {
			continue
		}
		info, err := s.current(parts[0], parts[1], parts[2])
		if err == nil {
			out = append(out, info)
		}
	}
	return out, nil
}

func writeFileSync(p string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// replaceFile writes b to p atomically (write, fsync, rename, fsync dir).
func replaceFile(p string, b []byte) error {
	tmp := p + ".tmp"
	_ = os.Remove(tmp)
	if err := writeFileSync(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
