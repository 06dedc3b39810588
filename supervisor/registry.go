package supervisor

import (
	"sync"
	"sync/atomic"
	"time"
)

// registry is the set of live scopes, by ScopeID.Key(), and its lock. It
// also holds what must change with the set under the same lock: the
// cgroup paths of scopes that left it and are being removed (a successor
// of the same path waits for them), the CPU weights set for the live scopes'
// tier and tenant nodes, and whether the daemon stops (then it takes no new
// scopes and no new invocations).
//
// Methods without a suffix take the lock; those named …Locked run with it
// held, inside locked or acquire. Its zero value is an empty registry.
type registry struct {
	mu     sync.Mutex
	scopes map[string]*scope // by ScopeID.Key()
	// removing holds the scopes that left the registry and are being
	// removed, by cgroup path, each with a channel closed once it is gone
	// (see leaveLocked and removedLocked).
	removing map[string]chan struct{}
	stopping bool
	inflight sync.WaitGroup // invocations between enter and exit
	entered  atomic.Int64   // how many: drain need not wait for none

	tierCPU map[string]uint64 // CPU weight last set on each tier node
	// throttled holds the weights the noisy-neighbour controller set on
	// scopes below their base, by scope key.
	throttled map[string]uint64
	// tenantCaps holds the CPU max the controller's fair-share rule set on
	// tenants' nodes, by tenant (see tenantCPUMaxLocked).
	tenantCaps map[string]float64
}

// enter counts one invocation in flight, or refuses it with ErrStopping
// once the daemon stops; exit takes it back.
func (r *registry) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return ErrStopping
	}
	r.inflight.Add(1)
	r.entered.Add(1)
	return nil
}

func (r *registry) exit() {
	r.entered.Add(-1)
	r.inflight.Done()
}

// stop makes the registry refuse new scopes and invocations. It reports
// whether it was the first call.
func (r *registry) stop() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := !r.stopping
	r.stopping = true
	return first
}

func (r *registry) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

// drain waits up to grace for the invocations in flight, once the registry
// stops (no new ones enter); false: some are still running.
func (r *registry) drain(grace time.Duration) bool {
	if r.entered.Load() == 0 {
		return true
	}
	drained := make(chan struct{})
	go func() { r.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
		return true
	case <-time.After(grace):
		return false
	}
}

// takeAll empties the registry and returns what it held. The scopes are
// not reserved (see leaveLocked): only a stopping daemon takes them all.
func (r *registry) takeAll() []*scope {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.snapshotLocked(nil)
	r.scopes = nil
	return out
}

// get returns the live scope of key.
func (r *registry) get(key string) (*scope, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sc, ok := r.scopes[key]
	return sc, ok
}

// snapshot copies the live scopes keep accepts (all when keep is nil), in
// no order. keep runs with the lock held: it must not block.
func (r *registry) snapshot(keep func(*scope) bool) []*scope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshotLocked(keep)
}

func (r *registry) snapshotLocked(keep func(*scope) bool) []*scope {
	out := make([]*scope, 0, len(r.scopes))
	for _, sc := range r.scopes {
		if keep == nil || keep(sc) {
			out = append(out, sc)
		}
	}
	return out
}

// find returns a live scope match accepts, or nil. match runs with the
// lock held.
func (r *registry) find(match func(*scope) bool) *scope {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sc := range r.scopes {
		if match(sc) {
			return sc
		}
	}
	return nil
}

// len is the number of live scopes.
func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.scopes)
}

// locked runs f with the registry locked, for work that must not
// interleave with changes of the live set (the weights of tier and tenant
// nodes follow it).
func (r *registry) locked(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// acquire returns the live scope of key with one invocation counted in its
// active (the caller takes it back; an active scope is never reclaimed).
// Without one it calls create, with the lock held, which returns the new
// scope to add (addLocked), or again when it had to release the lock
// meanwhile (waitRemovedLocked, unlockedLocked) and the registry must be
// looked at anew. A stopping registry refuses with ErrStopping.
func (r *registry) acquire(key string, create func() (sc *scope, again bool, err error)) (*scope, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.stopping {
			return nil, ErrStopping
		}
		if sc, ok := r.scopes[key]; ok {
			sc.active.Add(1)
			return sc, nil
		}
		sc, again, err := create()
		if err != nil {
			return nil, err
		}
		if again {
			continue
		}
		sc.active.Add(1)
		return sc, nil
	}
}

// addLocked makes sc live.
func (r *registry) addLocked(sc *scope) {
	if r.scopes == nil {
		r.scopes = map[string]*scope{}
	}
	r.scopes[sc.id.Key()] = sc
}

func (r *registry) getLocked(key string) (*scope, bool) {
	sc, ok := r.scopes[key]
	return sc, ok
}

// eachLocked calls f for every live scope.
func (r *registry) eachLocked(f func(*scope)) {
	for _, sc := range r.scopes {
		f(sc)
	}
}

// waitRemovedLocked waits, with the lock released, until the scope of
// cgroup path p that left the registry is removed (see leaveLocked). It
// reports whether it waited: then the registry may have changed.
func (r *registry) waitRemovedLocked(p string) bool {
	ch := r.removing[p]
	if ch == nil {
		return false
	}
	r.unlockedLocked(func() { <-ch })
	return true
}

// unlockedLocked runs f with the lock released, and takes it again.
func (r *registry) unlockedLocked(f func()) {
	r.mu.Unlock()
	defer r.mu.Lock()
	f()
}

// leave takes sc out of the registry to be removed (see leaveLocked) if
// it is still the live scope of its key; it reports whether sc left.
func (r *registry) leave(sc *scope) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scopes[sc.id.Key()] != sc {
		return false
	}
	r.leaveLocked(sc)
	return true
}

// leaveIdle is leave for a scope without invocations in flight, while the
// daemon does not stop (an invocation may have taken sc since the caller
// looked: acquire counts it in active under the lock).
func (r *registry) leaveIdle(sc *scope) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scopes[sc.id.Key()] != sc || r.stopping || sc.active.Load() != 0 {
		return false
	}
	r.leaveLocked(sc)
	return true
}

// leaveLocked takes sc out of the registry to be removed (removeScopes):
// until its removal is over (removedLocked), a new scope of the same
// cgroup path waits (waitRemovedLocked), since removing the old node would
// take the new one with it.
func (r *registry) leaveLocked(sc *scope) {
	if r.scopes[sc.id.Key()] == sc {
		delete(r.scopes, sc.id.Key())
	}
	if r.removing == nil {
		r.removing = map[string]chan struct{}{}
	}
	if _, ok := r.removing[sc.node.Path()]; !ok {
		r.removing[sc.node.Path()] = make(chan struct{})
	}
}

// removedLocked ends the reservations of scopes that left the registry
// and are gone.
func (r *registry) removedLocked(scopes []*scope) {
	for _, sc := range scopes {
		if ch, ok := r.removing[sc.node.Path()]; ok {
			delete(r.removing, sc.node.Path())
			close(ch)
		}
	}
}

// tenantHasScopesLocked reports whether tenant has live scopes in tier.
func (r *registry) tenantHasScopesLocked(tier, tenant string) bool {
	for _, sc := range r.scopes {
		if sc.id.Tenant == tenant && sc.tier == tier {
			return true
		}
	}
	return false
}

// setThrottledLocked records the weight the controller set on the scope
// of key (at or above scopeBaseWeight: none).
func (r *registry) setThrottledLocked(key string, weight uint64) {
	if weight >= scopeBaseWeight {
		delete(r.throttled, key)
		return
	}
	if r.throttled == nil {
		r.throttled = map[string]uint64{}
	}
	r.throttled[key] = weight
}

// forgetThrottled drops the controller's weight of a removed scope of key
// unless a successor of the key is live; it reports whether one is.
func (r *registry) forgetThrottled(key string) (live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, live = r.scopes[key]
	if !live {
		delete(r.throttled, key)
	}
	return live
}

// tenantWeightLocked is a tenant node's CPU weight now: base, its tier's,
// scaled down by the most throttled of its live scopes.
func (r *registry) tenantWeightLocked(tier, tenant string, base uint64) uint64 {
	w := base
	for key, sw := range r.throttled {
		if sc, ok := r.scopes[key]; ok && sc.tier == tier && sc.id.Tenant == tenant {
			w = min(w, max(base*sw/scopeBaseWeight, 1))
		}
	}
	return w
}

// setTierWeightsLocked sets each tier node's CPU weight, with set, to the
// sum of its live tenants' weights (weight of the tier; see tierWeights)
// where it changed.
func (r *registry) setTierWeightsLocked(weight func(tier string) uint64, set func(tier string, w uint64) error) []error {
	sums := map[string]uint64{}
	seen := map[[2]string]bool{}
	for _, sc := range r.scopes {
		k := [2]string{sc.tier, sc.id.Tenant}
		if seen[k] {
			continue
		}
		seen[k] = true
		sums[sc.tier] += weight(sc.tier)
	}
	var errs []error
	for name, w := range tierWeights(sums) {
		if r.tierCPU[name] == w {
			continue
		}
		if err := set(name, w); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.tierCPU == nil {
			r.tierCPU = map[string]uint64{}
		}
		r.tierCPU[name] = w
	}
	return errs
}
