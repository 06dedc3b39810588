package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/scoped-io/scoped/internal/bundle"
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

// BundleFile is one file of an uploaded bundle (internal/bundle's File,
// which the fleet's bundle transfer shares).
type BundleFile = bundle.File

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
// version is written and synced in a temporary directory (<root>/.tmp-*)
// with no lock held, then renamed into place, and "current" is replaced by
// rename, so a crash leaves either the old or the new version current,
// never half of one, and no version is visible before it is complete.
//
// Locks: mu guards the maps and is never held across file I/O; each
// extension has its own lock, held while a version of it is published,
// pruned or removed (a rename and two small synced files). An invocation's
// Get therefore never waits for another extension's deploy, and a deploy's
// bundle write waits for nobody.
//
// Old versions are pruned: the newest keep_versions of each extension stay,
// and so do the current version and every version a live worker holds
// (Hold); a held version is pruned once its holds are gone (PrunePending).
type Store struct {
	root      string
	maxBundle atomic.Int64
	maxFiles  atomic.Int64
	keep      atomic.Int64 // versions kept per extension (0: all)
	log       atomic.Pointer[slog.Logger]

	mu sync.Mutex
	// currents caches the current version of each extension (by
	// tenant/env/name), so that an invocation reads no file; Deploy and
	// Remove keep it true.
	currents map[string]ExtensionInfo
	locks    map[string]*extLock // by cache key, while in use
	holds    map[string]int      // version directory → live holds
	pending  map[string]bool     // cache keys with versions left to prune

	// staged, when set (tests), runs after a deploy has written and synced
	// its files and before it publishes them.
	staged func()
}

// extLock serialises publishing, pruning and removing one extension.
type extLock struct {
	mu   sync.Mutex
	refs int // guarded by Store.mu
}

func cacheKey(tenant, env, name string) string { return tenant + "/" + env + "/" + name }

// NewStore opens (creating) the store under stateDir. It keeps every
// version until Configure sets keep_versions.
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
	// Remove what a crash left half-written (and, from older releases,
	// temporary directories inside an extension's directory).
	tmps, _ := filepath.Glob(filepath.Join(root, ".tmp-*"))
	old, _ := filepath.Glob(filepath.Join(root, "*", "*", "*", ".tmp-*"))
	for _, t := range append(tmps, old...) {
		_ = os.RemoveAll(t)
	}
	s := &Store{root: root, currents: map[string]ExtensionInfo{}, locks: map[string]*extLock{},
		holds: map[string]int{}, pending: map[string]bool{}}
	s.maxBundle.Store(maxBundle)
	s.maxFiles.Store(int64(maxFiles))
	s.log.Store(slog.New(slog.DiscardHandler))
	// Every extension is looked at once for versions to prune (the
	// reaper's first PrunePending), in case keep_versions was lowered.
	for _, e := range s.extensions(func(string) bool { return true }) {
		s.pending[cacheKey(e[0], e[1], e[2])] = true
	}
	return s, nil
}

// Configure sets the bundle caps and the versions kept from lim, and the
// logger; it may be called while the store is in use (a reload).
func (s *Store) Configure(lim APILimits, log *slog.Logger) {
	s.maxBundle.Store(lim.MaxBundle)
	s.maxFiles.Store(int64(lim.MaxBundleFiles))
	s.keep.Store(int64(lim.KeepVersions))
	if log != nil {
		s.log.Store(log)
	}
}

// lockExt takes the lock of the extension with cache key key and returns
// its unlock.
func (s *Store) lockExt(key string) func() {
	s.mu.Lock()
	l := s.locks[key]
	if l == nil {
		l = &extLock{}
		s.locks[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}

// checkTarget is the store's own check of the ids it joins into a path
// (extDir). The API edge checked them already (a Target); this cheap check
// stays because a path built from an unchecked id ("..", "a/b") would
// reach outside the store, whatever caller forgot the edge's check. It also
// tells extension directories from staged ones when listing.
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
	maxFiles, maxBundle := s.maxFiles.Load(), s.maxBundle.Load()
	if int64(len(files)) > maxFiles {
		return m, "", 0, fmt.Errorf("%w: bundle has %d files, at most %d are allowed", ErrTooLarge, len(files), maxFiles)
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
		if size > maxBundle {
			return m, "", 0, fmt.Errorf("%w: bundle larger than %d bytes", ErrTooLarge, maxBundle)
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
	var manifest []byte
	for _, f := range files {
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
	return m, bundle.Digest(files), size, nil
}

func normMode(m uint32) uint32 { return bundle.NormMode(m) }

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
// they equal the current version (then unchanged is true). The files are
// written and synced with no lock held; only publishing them (a rename and
// the "current" pointer) takes the extension's lock. Concurrent deploys of
// one extension get distinct versions. Versions beyond keep_versions are
// pruned afterwards.
func (s *Store) Deploy(tenant, env, name string, files []BundleFile) (info ExtensionInfo, unchanged bool, err error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return info, false, err
	}
	m, digest, size, err := s.validateBundle(files)
	if err != nil {
		return info, false, err
	}
	if cur, err := s.Get(tenant, env, name, ""); err == nil && cur.Digest == digest {
		return cur, true, nil
	}
	tmp, err := s.stage(files)
	if err != nil {
		return info, false, err
	}
	defer os.RemoveAll(tmp) // nothing left once published
	if s.staged != nil {
		s.staged()
	}
	info, unchanged, err = s.publish(tenant, env, name, "", tmp, m, digest, size)
	if err == nil && !unchanged {
		s.prune(tenant, env, name)
	}
	return info, unchanged, err
}

// Import stores files fetched from another node as version (or, "", the
// next version) of the extension and makes it current, only if they are
// the bundle digest names: Deploy's checks apply (paths, modes, manifest,
// caps), then the digest must match (else an error wrapping ErrInvalid and
// bundle.ErrDigestMismatch, and nothing is stored). Files equal to the
// current version leave it as it is (unchanged); an existing version of
// the same name must have the same digest (it is made current).
func (s *Store) Import(tenant, env, name, version, digest string, files []BundleFile) (info ExtensionInfo, unchanged bool, err error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return info, false, err
	}
	if version != "" {
		if err := checkVersion(version); err != nil {
			return info, false, err
		}
	}
	if err := bundle.CheckDigest(digest); err != nil {
		return info, false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m, got, size, err := s.validateBundle(files)
	if err != nil {
		return info, false, err
	}
	if got != digest {
		return info, false, fmt.Errorf("%w: %w: the files are %s, not %s", ErrInvalid, bundle.ErrDigestMismatch, got, digest)
	}
	if cur, err := s.Get(tenant, env, name, ""); err == nil && cur.Digest == digest {
		return cur, true, nil
	}
	tmp, err := s.stage(files)
	if err != nil {
		return info, false, err
	}
	defer os.RemoveAll(tmp)
	info, unchanged, err = s.publish(tenant, env, name, version, tmp, m, digest, size)
	if err == nil && !unchanged {
		s.prune(tenant, env, name)
	}
	return info, unchanged, err
}

// FilesByDigest reads the files of a stored version (of any extension)
// whose bundle has the digest: the current versions first (cached), then
// every stored version. The files read must have that digest (else an
// error wrapping bundle.ErrDigestMismatch: the store is corrupt); none:
// ErrNotFound.
func (s *Store) FilesByDigest(digest string) ([]BundleFile, error) {
	if err := bundle.CheckDigest(digest); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var dirs []string
	s.mu.Lock()
	for _, info := range s.currents {
		if info.Digest == digest {
			dirs = append(dirs, info.Dir)
		}
	}
	s.mu.Unlock()
	if len(dirs) == 0 {
		infos, _ := filepath.Glob(filepath.Join(s.root, "*", "*", "*", "v*", "info.json"))
		for _, p := range infos {
			vdir := filepath.Dir(p)
			rel, _ := filepath.Rel(s.root, vdir)
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) != 4 || checkTarget(parts[0], parts[1], parts[2]) != nil || checkVersion(parts[3]) != nil {
				continue
			}
			if info, err := s.load(vdir); err == nil && info.Digest == digest {
				dirs = append(dirs, info.Dir)
			}
		}
	}
	var firstErr error
	for _, dir := range dirs {
		files, err := s.readBundle(dir)
		if err == nil {
			err = bundle.Verify(files, digest)
		}
		if err == nil {
			return files, nil
		}
		if firstErr == nil && !errors.Is(err, fs.ErrNotExist) { // a version pruned meanwhile is no error
			firstErr = fmt.Errorf("bundle %s in %s: %w", digest, dir, err)
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("%w: no stored bundle has digest %s", ErrNotFound, digest)
}

// readBundle reads the regular files under a version's bundle directory,
// within the store's caps; anything but a directory or a regular file is
// refused.
func (s *Store) readBundle(dir string) ([]BundleFile, error) {
	maxFiles, maxBundle := s.maxFiles.Load(), s.maxBundle.Load()
	var files []BundleFile
	var size int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if int64(len(files)) >= maxFiles || size+fi.Size() > maxBundle {
			return fmt.Errorf("%w: stored bundle over the caps (%d files, %d bytes)", ErrTooLarge, maxFiles, maxBundle)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		size += int64(len(b))
		if size > maxBundle {
			return fmt.Errorf("%w: stored bundle larger than %d bytes", ErrTooLarge, maxBundle)
		}
		files = append(files, BundleFile{Path: filepath.ToSlash(rel), Mode: normMode(uint32(fi.Mode().Perm())), Content: b})
		return nil
	})
	return files, err
}

// stage writes and syncs the bundle in a new temporary directory of the
// store's root (tmp/bundle/...) and returns that directory.
func (s *Store) stage(files []BundleFile) (tmp string, err error) {
	tmp, err = os.MkdirTemp(s.root, ".tmp-")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	bundle := filepath.Join(tmp, "bundle")
	for _, f := range files {
		p := filepath.Join(bundle, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := writeFileSync(p, f.Content, os.FileMode(normMode(f.Mode))); err != nil {
			return "", err
		}
	}
	// Directories made by MkdirAll honour the umask: make them readable.
	_ = filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return tmp, nil
}

// publish makes the staged directory tmp the extension's next version and
// its current one, under the extension's lock.
// version names the new version; "" is the next one.
func (s *Store) publish(tenant, env, name, version, tmp string, m Manifest, digest string, size int64) (info ExtensionInfo, unchanged bool, err error) {
	key := cacheKey(tenant, env, name)
	unlock := s.lockExt(key)
	defer unlock()
	// Another deploy of the same content may have won the race.
	if cur, err := s.currentLocked(tenant, env, name); err == nil && cur.Digest == digest {
		return cur, true, nil
	}
	dir := s.extDir(tenant, env, name)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return info, false, err
	}
	for d := dir; d != s.root; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o711)
	}
	if version == "" {
		if version, err = s.nextVersion(dir); err != nil {
			return info, false, err
		}
	} else if have, err := s.load(filepath.Join(dir, version)); err == nil {
		// An imported version that is here already.
		if have.Digest != digest {
			return info, false, fmt.Errorf("%w: version %s of extension %s is stored with digest %s, not %s", ErrInvalid, version, name, have.Digest, digest)
		}
		if err := replaceFile(filepath.Join(dir, "current"), []byte(version+"\n")); err != nil {
			s.mu.Lock()
			delete(s.currents, key)
			s.mu.Unlock()
			return info, false, err
		}
		s.mu.Lock()
		s.currents[key] = have
		s.mu.Unlock()
		return have, false, nil
	}
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
		// "current" may or may not name the new version: read it again.
		s.mu.Lock()
		delete(s.currents, key)
		s.mu.Unlock()
		return info, false, err
	}
	info.Dir = filepath.Join(dir, version, "bundle")
	s.mu.Lock()
	s.currents[key] = info
	s.mu.Unlock()
	return info, false, nil
}

// nextVersion returns "v<N+1>" for the highest stored "v<N>".
func (s *Store) nextVersion(dir string) (string, error) {
	vs, err := versions(dir)
	if err != nil {
		return "", err
	}
	n := 0
	if len(vs) > 0 {
		n = vs[0]
	}
	return "v" + strconv.Itoa(n+1), nil
}

// versions are the numbers of the version directories in dir, highest
// first.
func versions(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if e.IsDir() && checkVersion(e.Name()) == nil {
			i, _ := strconv.Atoi(e.Name()[1:])
			out = append(out, i)
		}
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out, nil
}

// Get returns a version of an extension; version "" is the current one.
// The current version comes from a cache; a miss reads it under the
// extension's own lock, so Get never waits for another extension.
func (s *Store) Get(tenant, env, name, version string) (ExtensionInfo, error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return ExtensionInfo{}, err
	}
	if version == "" {
		key := cacheKey(tenant, env, name)
		s.mu.Lock()
		info, ok := s.currents[key]
		s.mu.Unlock()
		if ok {
			return info, nil
		}
		unlock := s.lockExt(key)
		defer unlock()
		return s.currentLocked(tenant, env, name)
	}
	if err := checkVersion(version); err != nil {
		return ExtensionInfo{}, err
	}
	return s.load(filepath.Join(s.extDir(tenant, env, name), version))
}

// currentLocked is the current version, from the cache or read (and
// cached); callers hold the extension's lock.
func (s *Store) currentLocked(tenant, env, name string) (ExtensionInfo, error) {
	key := cacheKey(tenant, env, name)
	s.mu.Lock()
	info, ok := s.currents[key]
	s.mu.Unlock()
	if ok {
		return info, nil
	}
	info, err := s.current(tenant, env, name)
	if err == nil {
		s.mu.Lock()
		s.currents[key] = info
		s.mu.Unlock()
	}
	return info, err
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
	key := cacheKey(tenant, env, name)
	unlock := s.lockExt(key)
	dir := s.extDir(tenant, env, name)
	if _, err := os.Stat(filepath.Join(dir, "current")); err != nil {
		unlock()
		return fmt.Errorf("%w: extension %s of tenant %s in %s", ErrNotFound, name, tenant, env)
	}
	// Unpublish first, then remove: a crash in between leaves no current.
	s.mu.Lock()
	delete(s.currents, key)
	delete(s.pending, key)
	s.mu.Unlock()
	if err := os.Remove(filepath.Join(dir, "current")); err != nil {
		unlock()
		return err
	}
	// Move the versions out of the way, and delete them without the lock.
	trash, err := os.MkdirTemp(s.root, ".tmp-rm-")
	if err == nil {
		if rerr := os.Rename(dir, filepath.Join(trash, "x")); rerr != nil {
			_ = os.Remove(trash)
			trash, err = "", rerr
		}
	}
	unlock()
	if err != nil {
		return os.RemoveAll(dir)
	}
	return os.RemoveAll(trash)
}

// extensions lists [tenant, env, name] of every extension with a current
// version whose tenant allow accepts.
func (s *Store) extensions(allow func(tenant string) bool) [][3]string {
	paths, _ := filepath.Glob(filepath.Join(s.root, "*", "*", "*", "current"))
	var out [][3]string
	for _, p := range paths {
		rel, _ := filepath.Rel(s.root, filepath.Dir(p))
		parts := strings.Split(rel, string(filepath.Separator))
		// Staged bundles (.tmp-*) are no extensions, whatever they hold.
		if len(parts) != 3 || checkTarget(parts[0], parts[1], parts[2]) != nil || !allow(parts[0]) {
			continue
		}
		out = append(out, [3]string{parts[0], parts[1], parts[2]})
	}
	return out
}

// List returns the current version of every extension of the tenants for
// which allow returns true.
func (s *Store) List(allow func(tenant string) bool) ([]ExtensionInfo, error) {
	var out []ExtensionInfo
	for _, e := range s.extensions(allow) {
		if info, err := s.Get(e[0], e[1], e[2], ""); err == nil {
			out = append(out, info)
		}
	}
	return out, nil
}

// Hold marks the version of info in use by a live worker until the
// returned function is called (once is enough; more calls do nothing): a
// held version is never pruned.
func (s *Store) Hold(info ExtensionInfo) (release func()) {
	vdir := filepath.Dir(info.Dir)
	s.mu.Lock()
	s.holds[vdir]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.holds[vdir]--; s.holds[vdir] <= 0 {
				delete(s.holds, vdir)
			}
			s.mu.Unlock()
		})
	}
}

// maxPrunePerCall bounds the extensions one PrunePending looks at.
const maxPrunePerCall = 64

// PrunePending prunes the extensions whose pruning had to wait (versions
// held by live workers, or not looked at since the start); the reaper
// calls it on every tick.
func (s *Store) PrunePending() {
	s.mu.Lock()
	var keys []string
	for k := range s.pending {
		if len(keys) == maxPrunePerCall {
			break
		}
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		parts := strings.Split(k, "/")
		s.prune(parts[0], parts[1], parts[2])
	}
}

// prune removes the versions of an extension beyond the newest
// keep_versions, except the current one and held ones; when it leaves a
// held one it marks the extension pending. Errors are logged: a deploy
// that published its version succeeded.
func (s *Store) prune(tenant, env, name string) []string {
	key := cacheKey(tenant, env, name)
	keep := int(s.keep.Load())
	if keep <= 0 {
		s.mu.Lock()
		delete(s.pending, key)
		s.mu.Unlock()
		return nil
	}
	log := s.log.Load().With("tenant", tenant, "environment", env, "extension", name)
	dir := s.extDir(tenant, env, name)
	unlock := s.lockExt(key)
	cur, err := s.currentLocked(tenant, env, name)
	var vs []int
	if err == nil {
		vs, err = versions(dir)
	}
	if err != nil {
		unlock()
		s.mu.Lock()
		delete(s.pending, key)
		s.mu.Unlock()
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("prune extension versions", "err", err)
		}
		return nil
	}
	var victims []string
	held := false
	s.mu.Lock()
	for i, n := range vs {
		v := "v" + strconv.Itoa(n)
		switch {
		case i < keep || v == cur.Version:
		case s.holds[filepath.Join(dir, v)] > 0:
			held = true
		default:
			victims = append(victims, v)
		}
	}
	if held {
		s.pending[key] = true
	} else {
		delete(s.pending, key)
	}
	s.mu.Unlock()
	var trash string
	if len(victims) > 0 {
		// Unpublish under the lock (a rename each), delete without it.
		trash, err = os.MkdirTemp(s.root, ".tmp-prune-")
		for i, v := range victims {
			if err == nil {
				err = os.Rename(filepath.Join(dir, v), filepath.Join(trash, v))
			}
			if err != nil {
				victims = victims[:i]
				break
			}
		}
	}
	unlock()
	if err != nil {
		log.Warn("prune extension versions", "err", err)
	}
	if trash != "" {
		if rerr := os.RemoveAll(trash); rerr != nil {
			log.Warn("prune extension versions", "err", rerr)
		}
	}
	if len(victims) > 0 {
		log.Info("old extension versions pruned", "versions", strings.Join(victims, ","), "current", cur.Version,
			"kept", keep, "held_left", held)
	}
	return victims
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

// BundleFilesByDigest reads the files of a stored bundle by its digest
// (Store.FilesByDigest): what the fleet's bundle service serves to other
// nodes.
func (s *Supervisor) BundleFilesByDigest(digest string) ([]BundleFile, error) {
	return s.store.FilesByDigest(digest)
}
