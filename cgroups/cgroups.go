package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	occ "github.com/opencontainers/cgroups"
	ocmanager "github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/internal/ident"
)

// Sentinel errors. Every error of this package wraps one of them or an
// error of the kernel.
var (
	ErrInvalidPath  = errors.New("invalid cgroup path")
	ErrInvalidLimit = errors.New("invalid cgroup limit")
	ErrNotSupported = errors.New("not supported by this cgroup version")
	ErrNotUnified   = errors.New("process is not in the expected unified cgroup")
	ErrBusy         = errors.New("cgroup still has processes")
	// ErrInvalidStat: a pressure, cpu.stat or /proc/stat file did not parse.
	ErrInvalidStat = errors.New("invalid cgroup or kernel stat file")
)

// Mode is the cgroup layout of the host.
type Mode int

const (
	V1     Mode = iota + 1 // legacy controllers only
	Hybrid                 // v1 controllers, plus cgroup2 without controllers (at /sys/fs/cgroup/unified)
	V2                     // pure unified hierarchy
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case Hybrid:
		return "hybrid"
	case V2:
		return "v2"
	}
	return "unknown"
}

// HostMode reports the cgroup layout of this host.
func HostMode() Mode {
	switch {
	case occ.IsCgroup2UnifiedMode():
		return V2
	case occ.IsCgroup2HybridMode():
		return Hybrid
	default:
		return V1
	}
}

// DefaultRoot is the absolute cgroup path scoped manages by default.
const DefaultRoot = "/scoped"

// Tree is the subtree of the cgroup hierarchy that scoped owns. All its
// methods are safe for concurrent use; nodes are plain values.
type Tree struct {
	root string
	mode Mode
}

// Open returns the tree rooted at the absolute cgroup path root (for example
// "/scoped"), creating the root node if needed. Each element of root must be
// a valid identifier.
func Open(root string) (*Tree, error) {
	if !path.IsAbs(root) || path.Clean(root) != root || root == "/" {
		return nil, fmt.Errorf("%w: root %q must be an absolute, clean path below /", ErrInvalidPath, root)
	}
	for _, e := range strings.Split(strings.TrimPrefix(root, "/"), "/") {
		if err := ident.Check("cgroup root element", e); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPath, err)
		}
	}
	t := &Tree{root: root, mode: HostMode()}
	if _, err := t.node(root, Limits{}); err != nil {
		return nil, err
	}
	return t, nil
}

// Root is the absolute cgroup path of the tree.
func (t *Tree) Root() string { return t.root }

// Mode is the host's cgroup layout the tree was opened on.
func (t *Tree) Mode() Mode { return t.mode }

// Node creates (if needed) and returns the node at the given path below the
// root, for example Node(Limits{}, "free", "acme", "production"). Every
// element must be a valid identifier; limits are applied to the last one.
func (t *Tree) Node(l Limits, elems ...string) (*Node, error) {
	if len(elems) == 0 {
		return nil, fmt.Errorf("%w: empty node path", ErrInvalidPath)
	}
	for _, e := range elems {
		if err := ident.CheckDotted("cgroup name", e); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPath, err)
		}
	}
	return t.node(path.Join(t.root, path.Join(elems...)), l)
}

// Load returns a handle on the node at the absolute cgroup path p without
// creating or changing it.
func Load(p string) (*Node, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	t := &Tree{root: p, mode: HostMode()}
	return t.manager(p, nil)
}

// checkPath checks that p is an absolute cgroup path below the root.
func checkPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("%w: %q must be an absolute, clean path below /", ErrInvalidPath, p)
	}
	return nil
}

func (t *Tree) manager(p string, r *occ.Resources) (*Node, error) {
	if r == nil {
		r = &occ.Resources{SkipDevices: true}
	}
	m, err := ocmanager.New(&occ.Cgroup{Path: p, Resources: r})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", p, err)
	}
	return &Node{path: p, mode: t.mode, m: m}, nil
}

func (t *Tree) node(p string, l Limits) (*Node, error) {
	r, err := l.resources(t.mode)
	if err != nil {
		return nil, err
	}
	n, err := t.create(p, r)
	if err != nil {
		return nil, err
	}
	// Through Set: an existing node may be idle (a capped tenant's), and
	// the kernel refuses a weight there with EINVAL.
	if err := n.Set(l); err != nil {
		return nil, err
	}
	return n, nil
}

// create makes the node at p in every hierarchy, its manager holding r.
func (t *Tree) create(p string, r *occ.Resources) (*Node, error) {
	n, err := t.manager(p, r)
	if err != nil {
		return nil, err
	}
	if err := n.m.Apply(-1); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	if err := n.mkdirAll(); err != nil {
		return nil, err
	}
	return n, nil
}

// mkdirAll makes the node's directory in every hierarchy. Apply leaves out
// two directories the v1 manager still lists in its paths: the devices one
// (SkipDevices), and on hybrid hosts the unified one, which it creates on a
// best-effort basis only. Without them AddPid fails half-way and
// libcontainer's pid listing (which reads the devices hierarchy) sees
// nothing; scoped also relies on the unified directory (eBPF keys by
// unified cgroup id).
func (n *Node) mkdirAll() error {
	for _, dir := range n.m.GetPaths() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// Cleanup kills every process below the root and removes every node below
// it, leaving the root itself in place. It is what a daemon runs at start to
// remove what a crashed run left behind. It returns the number of nodes
// removed.
func (t *Tree) Cleanup() (int, error) {
	root, err := t.manager(t.root, nil)
	if err != nil {
		return 0, err
	}
	// A crash can leave a node in some hierarchies only (between two
	// mkdirs), so collect the children's names from all of them.
	var names []string
	for _, dir := range root.m.GetPaths() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, err
		}
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(names, e.Name()) {
				names = append(names, e.Name())
			}
		}
	}
	var errs []error
	removed := 0
	for _, name := range names {
		n, err := t.manager(path.Join(t.root, name), nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := n.count()
		if err := n.Remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed += c
	}
	return removed, errors.Join(errs...)
}

// Descendants lists the cgroup paths exactly depth levels below the root
// (1: its children), from every hierarchy, as a crash can leave a node in
// some hierarchies only. It creates and changes nothing.
func (t *Tree) Descendants(depth int) ([]string, error) {
	if depth < 1 {
		return nil, fmt.Errorf("%w: depth %d", ErrInvalidPath, depth)
	}
	root, err := t.manager(t.root, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, dir := range root.m.GetPaths() {
		rels := []string{"."}
		for range depth {
			var next []string
			for _, rel := range rels {
				entries, err := os.ReadDir(filepath.Join(dir, rel))
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						continue
					}
					return nil, err
				}
				for _, e := range entries {
					if e.IsDir() {
						next = append(next, path.Join(rel, e.Name()))
					}
				}
			}
			rels = next
		}
		for _, rel := range rels {
			seen[path.Join(t.root, rel)] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// Close removes the root node itself, and any empty node left below it. It
// fails with ErrBusy, and kills nothing, if any process is left below it.
func (t *Tree) Close() error {
	n, err := t.manager(t.root, nil)
	if err != nil {
		return err
	}
	if pids, _ := n.Pids(); len(pids) > 0 {
		return fmt.Errorf("%w: %s: %d processes", ErrBusy, t.root, len(pids))
	}
	return n.Remove()
}

// unifiedMount returns where cgroup2 is mounted, or "" on pure v1.
func unifiedMount(m Mode) string {
	switch m {
	case V2:
		return "/sys/fs/cgroup"
	case Hybrid:
		return "/sys/fs/cgroup/unified"
	}
	return ""
}

// Node is one cgroup of the tree. It is a handle: two Nodes for the same path
// are interchangeable.
type Node struct {
	path string
	mode Mode
	m    occ.Manager
}

// Path is the absolute cgroup path of the node, as libcontainer's
// configs.Cgroup.Path wants it.
func (n *Node) Path() string { return n.path }

// Child creates (if needed) the child node name with limits l.
func (n *Node) Child(name string, l Limits) (*Node, error) {
	if err := ident.CheckDotted("cgroup name", name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPath, err)
	}
	t := &Tree{root: n.path, mode: n.mode}
	return t.node(path.Join(n.path, name), l)
}

// Set applies limits to the node. Zero fields are left as they are.
//
// An idle node (CPUIdle) has the kernel's least weight, which cannot be
// written: while the node is idle and l does not clear it, Set leaves
// CPUWeight alone; clearing it gives the node the default weight back, so
// l should carry the weight it is to have.
func (n *Node) Set(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	switch {
	case l.CPUIdle < 0:
		if err := n.setIdle(false); err != nil { // before the weight
			return err
		}
	case l.CPUWeight != 0 && n.idle():
		l.CPUWeight = 0
	}
	r, err := l.resources(n.mode)
	if err != nil {
		return err
	}
	if err := n.m.Set(r); err != nil {
		return fmt.Errorf("set limits on %s: %w", n.path, err)
	}
	if l.CPUIdle > 0 {
		return n.setIdle(true)
	}
	return nil
}

// idle tells whether the node is SCHED_IDLE (cpu.idle 1).
func (n *Node) idle() bool {
	b, err := os.ReadFile(filepath.Join(n.m.Path("cpu"), "cpu.idle"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// setIdle writes cpu.idle, which runc's managers do not know on v1.
func (n *Node) setIdle(idle bool) error {
	v := []byte("0")
	if idle {
		v = []byte("1")
	}
	dir := n.m.Path("cpu")
	err := os.WriteFile(filepath.Join(dir, "cpu.idle"), v, 0)
	switch {
	case errors.Is(err, os.ErrNotExist) && dirExists(dir):
		return fmt.Errorf("%w: %s: no cpu.idle (kernel before 5.15, or no cpu controller)", ErrNotSupported, n.path)
	case err != nil:
		return fmt.Errorf("set cpu.idle on %s: %w", n.path, err)
	}
	return nil
}

// UnifiedDir is the node's directory in the unified (cgroup2) hierarchy, or
// "" on pure v1 hosts.
func (n *Node) UnifiedDir() string {
	mnt := unifiedMount(n.mode)
	if mnt == "" {
		return ""
	}
	return filepath.Join(mnt, n.path)
}

// ID is the node's cgroup2 id (the inode of its unified directory), the key
// that bpf_get_current_cgroup_id() returns for its tasks.
func (n *Node) ID() (uint64, error) {
	dir := n.UnifiedDir()
	if dir == "" {
		return 0, fmt.Errorf("%w: no unified hierarchy on cgroup v1", ErrNotSupported)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", n.path, err)
	}
	return st.Ino, nil
}

// Pids lists the processes of the node and its descendants.
func (n *Node) Pids() ([]int, error) {
	var (
		pids []int
		err  error
	)
	// runc's v1 manager lists the devices hierarchy, which scoped creates
	// only so that AddPid works; the pids one is always there where scoped
	// runs, and is what its limits count.
	if dir := n.m.Path("pids"); n.mode != V2 && dir != "" {
		pids, err = occ.GetAllPids(dir)
	} else {
		pids, err = n.m.GetAllPids()
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return pids, err
}

// Join moves the process pid (all its threads) into the node, in every
// hierarchy, and checks on hybrid and v2 hosts that it arrived in the
// unified one. On error the process may have been moved into some
// hierarchies but not others; the caller should kill it. Prefer starting a
// process in its cgroup (libcontainer does); Join is for processes that
// already run.
func (n *Node) Join(pid int) error {
	if err := n.m.AddPid("", pid); err != nil {
		return fmt.Errorf("join pid %d to %s: %w", pid, n.path, err)
	}
	err := verifyUnified(n.mode, pid, n.path)
	if errors.Is(err, ErrNotUnified) && n.mode == Hybrid {
		// runc's v1 manager lists the unified directory among its paths
		// only when it detected hybrid mode at init, and elsewhere (Apply)
		// ignores failures to write it: do it here if it did not happen.
		if werr := occ.WriteCgroupProc(n.UnifiedDir(), pid); werr != nil {
			return fmt.Errorf("join pid %d to unified %s: %w", pid, n.path, werr)
		}
		err = verifyUnified(n.mode, pid, n.path)
	}
	return err
}

// count returns the number of nodes at and below n, for reporting: the
// most found in any one hierarchy.
func (n *Node) count() int {
	most := 0
	for _, dir := range n.m.GetPaths() {
		c := 0
		_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				c++
			}
			return nil
		})
		most = max(most, c)
	}
	return most
}

// Kill sends SIGKILL to every process of the node and its descendants and
// waits until they are gone (at most ten seconds). On cgroup v2 it uses
// cgroup.kill; elsewhere it freezes the node first, so that nothing can fork
// between reading the pid list and killing it.
func (n *Node) Kill() error {
	if n.mode == V2 {
		dir := filepath.Join("/sys/fs/cgroup", n.path)
		err := occ.WriteFile(dir, "cgroup.kill", "1")
		switch {
		case errors.Is(err, os.ErrNotExist) && !occ.PathExists(dir):
			return nil
		case err == nil:
			return n.waitEmpty()
		}
		// cgroup.kill appeared in Linux 5.14; fall through on older kernels.
	}
	frozen := n.m.Freeze(occ.Frozen) == nil
	for range 100 {
		pids, err := n.Pids()
		if err != nil {
			return fmt.Errorf("kill %s: %w", n.path, err)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if frozen {
			// Killed tasks only die once thawed; freeze again afterwards.
			_ = n.m.Freeze(occ.Thawed)
			time.Sleep(time.Millisecond)
			frozen = n.m.Freeze(occ.Frozen) == nil
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	if frozen {
		_ = n.m.Freeze(occ.Thawed)
	}
	return n.waitEmpty()
}

func (n *Node) waitEmpty() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := n.Pids()
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: %d processes survive SIGKILL", ErrBusy, n.path, len(pids))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Remove kills the node's processes and removes the node and everything
// below it, bottom-up, in every hierarchy.
func (n *Node) Remove() error {
	if err := n.Kill(); err != nil {
		return err
	}
	// GetPaths is the manager's own map, and RemovePaths deletes what it
	// removed from the map it is given: copy it, so the handle stays usable.
	paths := maps.Clone(n.m.GetPaths())
	if n.mode == Hybrid {
		paths[""] = n.UnifiedDir()
	}
	if err := occ.RemovePaths(paths); err != nil {
		return fmt.Errorf("remove %s: %w", n.path, err)
	}
	return nil
}

// VerifyUnified checks that pid sits in the unified hierarchy at the cgroup
// path want (or below it). On hybrid hosts the v1 managers ignore a failure
// to join the unified tree, and an unaccounted process would escape eBPF
// accounting; on pure v1 hosts there is nothing to check.
func VerifyUnified(pid int, want string) error {
	return verifyUnified(HostMode(), pid, want)
}

func verifyUnified(mode Mode, pid int, want string) error {
	if mode == V1 {
		return nil
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return fmt.Errorf("verify cgroup of pid %d: %w", pid, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if p, ok := strings.CutPrefix(s.Text(), "0::"); ok {
			if p == want || strings.HasPrefix(p, want+"/") {
				return nil
			}
			return fmt.Errorf("%w: pid %d is in %q, want %q", ErrNotUnified, pid, p, want)
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("verify cgroup of pid %d: %w", pid, err)
	}
	return fmt.Errorf("%w: pid %d has no 0:: line", ErrNotUnified, pid)
}

// isGone reports whether err says the process or cgroup no longer exists.
func isGone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENODEV)
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}
