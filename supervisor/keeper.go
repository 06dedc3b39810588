package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/parallel"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/sandbox"
)

// keeper makes and removes the live scopes the registry holds: a scope's
// cgroup node in its tenant's tier, its host id range, accounting, network
// and series, and the CPU weights of the tier and tenant nodes that follow
// the live scopes. It is the component that removes them all when the
// daemon stops (see Recover).
type keeper struct {
	conf       func() *Config
	log        *slog.Logger
	tree       *cgroups.Tree
	ids        *sandbox.IDAllocator
	scopes     *registry
	metrics    *metrics.Registry
	net        *networks
	sandboxDir string
	tierOf     func(tenant string) (string, Tier)
	// track and untrack start and end a scope's accounting, flush
	// commits scopes' usage to the ledger (see accounting.go, meter.go).
	track   func(*scope)
	untrack func(*scope)
	flush   func(removed ...*scope) error

	reclaim *reclaimer   // makes room for a new scope
	grace   atomic.Int64 // how long Stop waits for the invocations in flight

	// memLows is the memory.low set on the tier nodes and the root (see
	// setMemoryLowsLocked), under the registry's lock.
	memLows map[string]int64
}

// newKeeper is k with its reclaimer, which removes what it reclaims with k.
func newKeeper(k *keeper) *keeper {
	k.reclaim = &reclaimer{conf: k.conf, log: k.log, scopes: k.scopes, ids: k.ids, metrics: k.metrics, remove: k.removeScope}
	return k
}

// Start starts nothing: scopes are made on demand (scopeFor).
func (k *keeper) Start(context.Context) error { return nil }

// applyTiers brings every live scope in line with its tenant's tier: a
// scope in another tier than its tenant's now is retired (its successor
// starts in the new tier on the next invocation), the tenant and scope
// nodes get the tier's limits, the tier nodes their weights.
func (k *keeper) applyTiers() error {
	scopes := k.scopes.snapshot(nil)
	var errs []error
	done := map[string]bool{}
	for _, sc := range scopes {
		name, t := k.tierOf(sc.id.Tenant)
		if name != sc.tier || t.Suspended {
			k.detachScope(sc, t.Suspended)
			continue
		}
		if !done[sc.id.Tenant] {
			done[sc.id.Tenant] = true
			tl := t.tenantLimits()
			k.scopes.locked(func() {
				tl.CPUWeight = k.scopes.tenantWeightLocked(name, sc.id.Tenant, t.CPUWeight)
				tl.CPUMax = k.scopes.tenantCPUMaxLocked(sc.id.Tenant, tl.CPUMax)
			})
			if _, err := k.tree.Node(tl, name, sc.id.Tenant); err != nil {
				errs = append(errs, err)
			}
		}
		limits := t.scopeLimits()
		// A scope's CPU settings are the same in every tier and belong
		// to the noisy-neighbour controller while it throttles the scope.
		if err := sc.node.Set(cgroups.Limits{MemoryMax: limits.MemoryMax, PidsMax: limits.PidsMax}); err != nil {
			errs = append(errs, err)
			continue
		}
		sc.mu.Lock()
		sc.limits = limits
		sc.mu.Unlock()
	}
	k.scopes.locked(func() { errs = append(errs, k.setTierWeightsLocked()) })
	errs = append(errs, k.net.update(k.scopes.snapshot(nil)))
	return errors.Join(errs...)
}

// setTierWeightsLocked sets each tier node's CPU weight to the sum of its
// live tenants' weights (see tierWeights), and their memory protection (see
// setMemoryLowsLocked). Callers hold the registry's lock.
func (k *keeper) setTierWeightsLocked() error {
	c := k.conf()
	return errors.Join(append(k.scopes.setTierWeightsLocked(
		func(tier string) uint64 { return c.Tiers[tier].CPUWeight },
		func(tier string, w uint64) error {
			_, err := k.tree.Node(cgroups.Limits{CPUWeight: w}, tier)
			return err
		}), k.setMemoryLowsLocked())...)
}

// detachScope takes sc out of the registry, so that the next invocation
// starts a new scope (in the tenant's tier now), and removes it: at once
// when kill is set, else once its invocations in flight are done.
func (k *keeper) detachScope(sc *scope, kill bool) {
	if !k.scopes.leave(sc) {
		return
	}
	k.log.Info("scope leaves its tier", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "tier", sc.tier, "kill", kill)
	go func() {
		if !kill {
			deadline := time.Now().Add(k.conf().Limits.MaxTimeout.Duration + 5*time.Second)
			for sc.active.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err := k.removeScope(sc); err != nil {
			k.log.Error("remove scope", "scope", sc.id.Key(), "err", err)
		}
	}()
}

// Stop stops the scopes: the registry takes no new ones, the invocations
// in flight get the grace set by the daemon's Stop, then every worker is
// killed and every scope's cgroup and sandbox removed.
func (k *keeper) Stop() error {
	k.scopes.stop()
	grace := time.Duration(k.grace.Load())
	if !k.scopes.drain(grace) {
		k.log.Warn("grace period over, killing workers with invocations in flight", "grace", grace)
	}
	// The tenant and tier nodes go with the tree's cleanup below.
	errs := k.removeScopes(k.scopes.takeAll())
	if _, err := sandbox.Cleanup(k.sandboxDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := k.tree.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeParallel bounds how many scopes are removed at once. Removing one
// mostly waits on the kernel (killed processes to exit, cgroups to go
// after an RCU grace period), so many overlap well on few CPUs; the bound
// keeps a stop from opening thousands of cgroup and state files at once.
const removeParallel = 16

// removeScope removes a scope that left the registry.
func (k *keeper) removeScope(sc *scope) error {
	return k.removeScopes([]*scope{sc})[0]
}

// removeScopes removes scopes that left the registry: it stops their
// workers, commits their last usage to the ledger (one transaction for
// them all), and removes their accounting, networks, series, cgroups and
// host id ranges, at most removeParallel scopes at once; then the tenant
// nodes they leave empty (not while the daemon stops: the tree's cleanup
// removes those). The work per scope does not depend on how many other
// scopes there are. It returns each scope's error (nil: removed).
func (k *keeper) removeScopes(scopes []*scope) []error {
	errs := make([]error, len(scopes))
	if len(scopes) == 0 {
		return errs
	}
	_ = parallel.ForEach(scopes, removeParallel, func(sc *scope) error { sc.stopAll(); return nil })
	// Their last usage goes to the ledger while their cgroups are still
	// there.
	if err := k.flush(scopes...); err != nil {
		k.log.Error("metering: final flush of scopes", "scopes", len(scopes), "err", err)
	}
	idx := make([]int, len(scopes))
	for i := range idx {
		idx[i] = i
	}
	stopping := k.scopes.isStopping()
	_ = parallel.ForEach(idx, removeParallel, func(i int) error {
		errs[i] = k.removeScopeNode(scopes[i], stopping)
		return nil
	})
	k.scopes.locked(func() { k.removedLocked(scopes, stopping) })
	return errs
}

// removedLocked ends the reservations of removed scopes (see
// registry.leaveLocked) and, unless the daemon stops, removes the tenant
// nodes they left empty and sets the tier nodes' weights. Callers hold the
// registry's lock.
func (k *keeper) removedLocked(scopes []*scope, stopping bool) {
	k.scopes.removedLocked(scopes)
	if stopping {
		return
	}
	// A tenant node goes when its last scope in its tier goes.
	done := map[[2]string]bool{}
	for _, sc := range scopes {
		key := [2]string{sc.tier, sc.id.Tenant}
		if done[key] || k.scopes.tenantHasScopesLocked(sc.tier, sc.id.Tenant) {
			continue
		}
		done[key] = true
		if tenant, terr := cgroups.Load(path.Join(k.tree.Root(), sc.tier, sc.id.Tenant)); terr == nil {
			if pids, _ := tenant.Pids(); len(pids) == 0 {
				_ = tenant.Remove()
			}
		}
	}
	if werr := k.setTierWeightsLocked(); werr != nil {
		k.log.Warn("tier weights", "err", werr)
	}
}

// removeScopeNode removes what is left of a scope whose workers are gone,
// but its tenant's node. While the daemon stops, accounting is closed
// afterwards, all scopes at once: untracking one scope sweeps the whole
// preemption-pair map under accounting's lock, which for every scope of a
// stop made it quadratic (22 s of a 40 s stop of 2,000 scopes).
func (k *keeper) removeScopeNode(sc *scope, stopping bool) error {
	if !stopping {
		k.untrack(sc)
	}
	if err := k.net.closeScope(sc); err != nil {
		k.log.Error("network of a scope", "scope", sc.id.Key(), "err", err)
	}
	if !k.scopes.forgetThrottled(sc.id.Key()) {
		// A successor in another tier keeps the key's series.
		k.metrics.RemoveScope(sc.id.Key())
	}
	err := sc.node.Remove()
	k.ids.Release(sc.id.Key())
	return err
}

// scopeFor returns the live scope of id with one invocation counted in its
// active (the caller takes it back; an active scope is never reclaimed),
// creating its cgroup node and taking a host id range on first use.
func (k *keeper) scopeFor(id ScopeID) (*scope, error) {
	return k.scopes.acquire(id.Key(), func() (*scope, bool, error) { return k.newScopeLocked(id) })
}

// newScopeLocked makes the scope of id live, in its tenant's tier now, once
// there is room for it (reclaimer.makeRoomLocked; again: the registry's lock was
// released meanwhile, look again). Callers hold the registry's lock.
func (k *keeper) newScopeLocked(id ScopeID) (_ *scope, again bool, _ error) {
	tierName, tier := k.tierOf(id.Tenant)
	// This very scope may be being removed (idle, reclaimed, or it left
	// its tier and came back): its cgroup must be gone before its
	// successor makes it again, else the removal takes the new one.
	if k.scopes.waitRemovedLocked(path.Join(k.tree.Root(), tierName, id.Tenant, id.Name)) {
		return nil, true, nil
	}
	if again, err := k.reclaim.makeRoomLocked(id, tierName, tier); err != nil || again {
		return nil, again, err
	}
	tl := tier.tenantLimits()
	tl.CPUWeight = k.scopes.tenantWeightLocked(tierName, id.Tenant, tier.CPUWeight)
	tl.CPUMax = k.scopes.tenantCPUMaxLocked(id.Tenant, tl.CPUMax)
	if _, err := k.tree.Node(tl, tierName, id.Tenant); err != nil {
		return nil, false, fmt.Errorf("cgroup of tenant %s: %w", id.Tenant, err)
	}
	limits := tier.scopeLimits()
	node, err := k.tree.Node(limits, tierName, id.Tenant, id.Name)
	if err != nil {
		return nil, false, fmt.Errorf("cgroup of scope %s: %w", id.Key(), err)
	}
	ids, err := k.ids.Acquire(id.Key())
	if err != nil {
		_ = node.Remove()
		return nil, false, noSlotError(id, err)
	}
	sc := &scope{
		id: id, tier: tierName, node: node, ids: ids, limits: limits, created: time.Now(), lastUsed: time.Now(),
		ring: newLogRing(k.conf().Scope.LogLines),
	}
	if st, err := node.Stats(); err == nil {
		sc.oomSeen = st.OOMKills
	}
	k.track(sc)
	k.scopes.addLocked(sc)
	if err := k.setTierWeightsLocked(); err != nil {
		k.log.Warn("tier weights", "err", err)
	}
	k.log.Info("scope created", "tenant", id.Tenant, "scope", id.Key(), "tier", tierName, "cgroup", node.Path(), "host_uid", ids.Base)
	return sc, false, nil
}
