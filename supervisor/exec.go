package supervisor

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/cgroups"
)

// execCleanupTimeout bounds how long the end of an exec invocation waits
// for what its program left running to die.
const execCleanupTimeout = 5 * time.Second

// execState is what the supervisor keeps about a worker of the exec
// runtime. Such a worker (scoped-exec) serves one invocation at a time,
// so every process of its leaf cgroup other than itself belongs to the
// invocation in flight, or to the one that just ended.
type execState struct {
	leaf    *cgroups.Node // the worker's own cgroup
	oomSeen atomic.Uint64 // OOM kills in leaf accounted for so far
}

func newExecState(cgroup string) (*execState, error) {
	leaf, err := cgroups.Load(cgroup)
	if err != nil {
		return nil, fmt.Errorf("%w: the cgroup of an exec worker: %w", ErrWorker, err)
	}
	return &execState{leaf: leaf}, nil
}

// oomBase is how many OOM kills of w's own cgroup were already reported
// (by endExec): failure counts only those beyond.
func (w *worker) oomBase() uint64 {
	if w.exec == nil {
		return 0
	}
	return w.exec.oomSeen.Load()
}

// endExec runs when an invocation of an exec worker ends, whatever the
// outcome (reply, handler error, deadline, cancelled caller), before its
// slot is given back: it kills, by cgroup, every process of the worker's
// leaf but the worker itself (what the program left behind: setsid
// daemons, double forks, a fork bomb), and counts the OOM kills of the
// leaf since the last invocation. It reports whether there were any.
// A worker whose leaf cannot be emptied is retired: it is never handed
// out again and is stopped once its slot is back.
func (i *invoker) endExec(sc *scope, w *worker, log *slog.Logger) (oom bool) {
	if w.exited() {
		return false // failure works out what happened
	}
	start := time.Now()
	killed, err := w.exec.leaf.KillExcept(w.pid(), execCleanupTimeout)
	if err != nil {
		log.Warn("exec worker: what the program left running cannot be killed, worker retired",
			"worker", w.id, "err", err)
		i.retire(sc, w, "exec cleanup")
	} else if killed > 0 {
		log.Debug("exec worker: killed what the program left running", "worker", w.id, "processes", killed,
			"took", time.Since(start))
	}
	n, err := w.exec.leaf.OOMKills()
	if err != nil {
		log.Warn("exec worker: oom kills", "worker", w.id, "err", err)
		return false
	}
	seen := w.exec.oomSeen.Load()
	if n <= seen {
		return false
	}
	w.exec.oomSeen.Store(n)
	sc.countOOM(n-seen, w.exec.leaf.OOMKillsReachParents())
	log.Warn("exec worker: the OOM killer killed processes of the invocation", "worker", w.id, "oom_kills", n-seen)
	return true
}

// countOOM adds d OOM kills counted in a worker's own cgroup to the
// scope's: where the kernel counted them in the scope's node too (v2),
// failure must not take them for a worker's; where it did not (v1,
// hybrid), the scope's figures add them (oomLost).
func (sc *scope) countOOM(d uint64, reachParents bool) {
	if !reachParents {
		sc.oomLost.Add(d)
		return
	}
	sc.mu.Lock()
	sc.oomSeen += d
	sc.mu.Unlock()
}

// execOOMError is the error of an exec invocation whose program (or the
// worker running it) the OOM killer killed.
func execOOMError(sc *scope, ext ExtensionInfo) error {
	sc.mu.Lock()
	limit := sc.limits.MemoryMax
	sc.mu.Unlock()
	return fmt.Errorf("%w (limit %d MiB): the kernel killed a process of %s", ErrOutOfMemory, limit>>20, ext.Name)
}
