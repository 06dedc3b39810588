package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	occ "github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// The delegated layout. A daemon that was given a cgroup of its own (a
// systemd service with Delegate=yes) must keep its processes out of that
// cgroup's inner nodes and write nothing outside it: it runs in the leaf
// <service>/supervisor and builds its tree under <service>/scopes.
const (
	SupervisorLeaf = "supervisor"
	ScopesNode     = "scopes"
)

// ErrNotDelegated: the process has no delegated cgroup of its own that
// the delegated layout could use; the error says why.
var ErrNotDelegated = errors.New("no delegated cgroup")

// Delegation is a cgroup delegated to the daemon.
type Delegation struct {
	// Service is the delegated cgroup, e.g. /system.slice/scoped.service.
	Service string
	// Systemd: the process was started by systemd as a service's
	// process (from its environment; see StartedBySystemd).
	Systemd bool
}

// Leaf is the daemon's own cgroup in the delegated layout.
func (d Delegation) Leaf() string { return path.Join(d.Service, SupervisorLeaf) }

// Root is the root of the scopes' tree in the delegated layout.
func (d Delegation) Root() string { return path.Join(d.Service, ScopesNode) }

// Detect works out the delegated cgroup of the calling process from
// /proc/self/cgroup, its environment and the host's cgroup layout. With
// systemd set (automatic detection) it must have been started by systemd
// in a ".service" cgroup; otherwise (the operator asserts the delegation)
// any cgroup but the root will do. The error wraps ErrNotDelegated and
// says why there is none; the Delegation is filled as far as it was
// worked out (Systemd in particular) even then.
func Detect(systemd bool) (Delegation, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Delegation{}, fmt.Errorf("%w: %w", ErrNotDelegated, err)
	}
	return detect(string(b), os.Getenv, os.Getpid(), HostMode(), systemd)
}

func detect(procCgroup string, getenv func(string) string, pid int, mode Mode, systemd bool) (Delegation, error) {
	d := Delegation{Systemd: StartedBySystemd(getenv, pid)}
	if systemd && !d.Systemd {
		return d, fmt.Errorf("%w: not started by systemd (no SYSTEMD_EXEC_PID naming this process, nor INVOCATION_ID or NOTIFY_SOCKET)", ErrNotDelegated)
	}
	if mode != V2 {
		return d, fmt.Errorf("%w: the delegated layout needs a pure cgroup v2 host, this one is %s", ErrNotDelegated, mode)
	}
	own, err := UnifiedCgroup(procCgroup)
	if err != nil {
		return d, err
	}
	if d.Service, err = serviceOf(own, systemd); err != nil {
		return d, err
	}
	return d, nil
}

// StartedBySystemd reports, from the environment (getenv), whether the
// process pid was started by systemd as a service's process: systemd 248
// and later set SYSTEMD_EXEC_PID to the pid it started, which a process
// that merely inherited the environment of a service does not have;
// earlier versions are recognised by INVOCATION_ID or NOTIFY_SOCKET.
func StartedBySystemd(getenv func(string) string, pid int) bool {
	if p := getenv("SYSTEMD_EXEC_PID"); p != "" {
		return p == strconv.Itoa(pid)
	}
	return getenv("INVOCATION_ID") != "" || getenv("NOTIFY_SOCKET") != ""
}

// UnifiedCgroup returns the cgroup v2 path of a /proc/<pid>/cgroup file's
// content (its "0::" line).
func UnifiedCgroup(procCgroup string) (string, error) {
	for line := range strings.SplitSeq(procCgroup, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no cgroup v2 line (0::) in /proc/self/cgroup", ErrNotDelegated)
}

// serviceOf returns the delegated cgroup of a process in the cgroup own:
// own itself, or its parent when own is already that cgroup's supervisor
// leaf (a restarted daemon, or systemd's DelegateSubgroup=supervisor). With
// unit set it must be a systemd service's cgroup (name.service).
func serviceOf(own string, unit bool) (string, error) {
	if !path.IsAbs(own) || path.Clean(own) != own || own == "/" {
		return "", fmt.Errorf("%w: the process's cgroup %q is not one below the root", ErrNotDelegated, own)
	}
	for e := range strings.SplitSeq(own[1:], "/") {
		if !unitName(e) {
			return "", fmt.Errorf("%w: the process's cgroup %q has an element (%q) that is not a plain systemd unit name", ErrNotDelegated, own, e)
		}
	}
	svc := own
	if dir, base := path.Split(own); base == SupervisorLeaf && dir != "/" {
		svc = path.Clean(dir)
	}
	if unit && !strings.HasSuffix(svc, ".service") {
		return "", fmt.Errorf("%w: the process's cgroup %q is not a systemd service's (name.service)", ErrNotDelegated, own)
	}
	return svc, nil
}

// unitName reports whether e is a cgroup name of the characters of
// systemd's unit names (letters, digits, ":", "_", ".", "\", "@", "-").
func unitName(e string) bool {
	if e == "" || e == "." || e == ".." || len(e) > 255 {
		return false
	}
	for _, c := range []byte(e) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.\\@-", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// Marked reports whether systemd marked the delegated cgroup as such (the
// extended attribute trusted.delegate, systemd 251 and later): a unit
// without Delegate=yes is not.
func (d Delegation) Marked() bool {
	_, err := unix.Getxattr(filepath.Join(unifiedMount(V2), d.Service), "trusted.delegate", nil)
	return err == nil
}

// OpenDelegated sets up the delegated layout of d and returns the scopes'
// tree at d.Root(). It moves the process pid (all its threads) into the
// leaf d.Leaf() — the delegated cgroup must hold no other process: the
// no-internal-process rule keeps an inner node with processes from
// enabling controllers — then enables in the delegated cgroup every
// controller it was given, sets the leaf's cpu.weight to weight (0: leave
// it) and opens the tree. A leaf and a tree a previous run left are
// reused (Cleanup removes the tree's nodes). It writes nothing outside
// d.Service but through runc's manager, which, creating a node, enables
// the available controllers on every ancestor (as libcontainer does for
// every sandbox it starts): no change where systemd enabled them already.
func OpenDelegated(d Delegation, pid int, weight uint64) (*Tree, error) {
	if HostMode() != V2 {
		return nil, fmt.Errorf("%w: the delegated layout needs a pure cgroup v2 host", ErrNotDelegated)
	}
	if _, err := serviceOf(d.Service, false); err != nil || path.Base(d.Service) == SupervisorLeaf {
		return nil, fmt.Errorf("%w: invalid delegated cgroup %q", ErrInvalidPath, d.Service)
	}
	if weight > 10000 {
		return nil, fmt.Errorf("%w: cpu weight %d not in 1..10000", ErrInvalidLimit, weight)
	}
	svc := filepath.Join(unifiedMount(V2), d.Service)
	leaf := filepath.Join(unifiedMount(V2), d.Leaf())
	avail, err := occ.ReadFile(svc, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("%w: controllers of %s: %w", ErrNotDelegated, d.Service, err)
	}
	ctrls := strings.Fields(avail)
	if missing := slices.DeleteFunc([]string{"cpu", "memory", "pids"}, func(c string) bool { return slices.Contains(ctrls, c) }); len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s was not given the %s controllers (systemd's Delegate=yes gives them)", ErrNotDelegated, d.Service, strings.Join(missing, ", "))
	}
	procs, err := occ.GetPids(svc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotDelegated, d.Service, err)
	}
	if others := slices.DeleteFunc(procs, func(p int) bool { return p == pid }); len(others) > 0 {
		return nil, fmt.Errorf("%w: %s holds other processes than this one (%v): it is not a cgroup of this daemon's own", ErrNotDelegated, d.Service, others)
	}
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", d.Leaf(), err)
	}
	if err := occ.WriteCgroupProc(leaf, pid); err != nil {
		return nil, fmt.Errorf("move pid %d to %s: %w", pid, d.Leaf(), err)
	}
	if err := verifyUnified(V2, pid, d.Leaf()); err != nil {
		return nil, err
	}
	if err := occ.WriteFile(svc, "cgroup.subtree_control", "+"+strings.Join(ctrls, " +")); err != nil {
		return nil, fmt.Errorf("enable controllers in %s: %w", d.Service, err)
	}
	if weight > 0 {
		if err := occ.WriteFile(leaf, "cpu.weight", strconv.FormatUint(weight, 10)); err != nil {
			return nil, fmt.Errorf("cpu weight of %s: %w", d.Leaf(), err)
		}
	}
	t := &Tree{root: d.Root(), mode: V2}
	if _, err := t.node(t.root, Limits{}); err != nil {
		return nil, err
	}
	return t, nil
}
