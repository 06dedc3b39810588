package cgroups

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	occ "github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// killRound is how long KillExcept waits for the processes of one round to
// go before it freezes and kills again.
const killRound = 50 * time.Millisecond

// KillExcept sends SIGKILL to every process of the node and its
// descendants except keep, and waits until only keep is left, about
// timeout at most (a freeze that does not complete adds the freezer's own
// wait). Processes are found by cgroup, not by process group or parent:
// one that called setsid, double-forked or keeps forking goes too. The
// node is frozen while its processes are listed and signalled, so that
// nothing forks in between and no listed pid can be reused (a frozen task
// cannot exit and be reaped), then thawed (keep with it); where freezing
// fails it kills unfrozen, round after round. It returns how many processes it signalled. A node with no
// process but keep costs one read of its process list and is not frozen.
// If processes are left at timeout, or the node cannot be thawed, it fails
// with ErrBusy; the caller should then kill keep too (Kill).
func (n *Node) KillExcept(keep int, timeout time.Duration) (int, error) {
	others, err := n.pidsExcept(keep)
	if err != nil || len(others) == 0 {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	signalled := map[int]bool{}
	for {
		// Not frozen (no freezer, or a task that would not stop), the
		// kill is still right, only racier: another round follows.
		ferr := n.m.Freeze(occ.Frozen)
		others, err = n.pidsExcept(keep)
		for _, pid := range others {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				signalled[pid] = true
			}
		}
		// Thaw even after a failed freeze: runc's v2 freezer leaves
		// cgroup.freeze at 1 when the node did not report frozen in time.
		// A v1 freezer lets killed tasks die only once thawed (v2 lets
		// them go frozen); keep must run again in any case.
		if terr := n.thaw(); terr != nil {
			if st, _ := n.m.GetFreezerState(); ferr == nil || st == occ.Frozen {
				return len(signalled), fmt.Errorf("%w: %s stays frozen: %w", ErrBusy, n.path, terr)
			}
		}
		if err != nil {
			return len(signalled), fmt.Errorf("kill in %s: %w", n.path, err)
		}
		for round := time.Now().Add(killRound); ; time.Sleep(time.Millisecond) {
			if others, err = n.pidsExcept(keep); err != nil {
				return len(signalled), fmt.Errorf("kill in %s: %w", n.path, err)
			}
			if len(others) == 0 {
				return len(signalled), nil
			}
			if time.Now().After(deadline) {
				return len(signalled), fmt.Errorf("%w: %s: %d processes survive SIGKILL", ErrBusy, n.path, len(others))
			}
			if time.Now().After(round) {
				break
			}
		}
	}
}

// thaw thaws the node, retrying a few times: a frozen node left behind
// would hold its processes, keep among them, forever.
func (n *Node) thaw() error {
	var err error
	for range 5 {
		if err = n.m.Freeze(occ.Thawed); err == nil {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return err
}

// pidsExcept lists the processes of the node and its descendants but keep.
func (n *Node) pidsExcept(keep int) ([]int, error) {
	pids, err := n.Pids()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(pids, func(p int) bool { return p == keep }), nil
}

// OOMKills is the number of processes of the node (and, where OOM kills
// reach parents, of its descendants) that the kernel's OOM killer killed:
// memory.events oom_kill on v2, memory.oom_control oom_kill on v1. It is a
// single read, cheaper than Stats.
func (n *Node) OOMKills() (uint64, error) {
	v, err := n.m.OOMKillCount()
	if err != nil {
		if isGone(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("oom kills of %s: %w", n.path, err)
	}
	return v, nil
}

// OOMKillsReachParents reports whether the kernel counts an OOM kill in
// the OOMKills of every ancestor of the victim's cgroup as well as in its
// own: on cgroup v2, unless cgroup2 is mounted with memory_localevents. On
// v1 and hybrid hosts it counts it in the victim's own cgroup only
// (whichever ancestor's limit was hit), so a count read from a parent
// misses kills in its children.
func (n *Node) OOMKillsReachParents() bool {
	return n.mode == V2 && !localEvents()
}

// localEvents reports whether the cgroup2 mount at /sys/fs/cgroup has the
// memory_localevents option.
var localEvents = sync.OnceValue(func() bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) >= 4 && fs[1] == "/sys/fs/cgroup" && fs[2] == "cgroup2" {
			return slices.Contains(strings.Split(fs[3], ","), "memory_localevents")
		}
	}
	return false
})
