package supervisor

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/sandbox"
)

// Scope slots. Every live scope holds one of the host's [scope] id_slots
// (its uid range). Two rules keep one tenant from taking them all: a
// tier's max_scopes caps each tenant's live scopes, and while fewer than
// [scope] reclaim_free of the slots are free a new scope reclaims an idle
// scope (no invocation in flight, longest unused) of the tenant holding the
// most — more than the new scope's tenant, or that tenant itself — instead
// of waiting for the reaper's idle_timeout.

// reclaimer applies these rules to the registry before a new scope is
// made.
type reclaimer struct {
	conf    func() *Config
	log     *slog.Logger
	scopes  *registry
	ids     *sandbox.IDAllocator // the slots
	metrics *metrics.Registry
	remove  func(*scope) error // removes a scope that left the registry
}

// makeRoomLocked runs before a new scope of id is made, with the
// registry's lock held: it checks the tenant's max_scopes and, when slots
// run low, reclaims a scope. When it had to release the lock meanwhile (to
// wait for a reclaim), again is true and the caller looks at the registry
// again.
func (r *reclaimer) makeRoomLocked(id ScopeID, tierName string, tier Tier) (again bool, err error) {
	if err := r.scopeLimitLocked(id.Tenant, tierName, tier); err != nil {
		r.metrics.IncRefused(tierName, refusalOf(err))
		return false, err
	}
	c := r.conf().Scope
	free := r.ids.Free()
	if free > 0 && float64(free) >= c.ReclaimFree*float64(c.IDSlots) {
		return false, nil
	}
	victim := r.pickVictimLocked(id.Tenant)
	if victim == nil {
		return false, nil // the id allocator says why, if no slot is left
	}
	r.scopes.leaveLocked(victim)
	if free > 0 {
		// A slot is left for this scope: reclaim for the next one.
		go r.reclaim(victim, id.Tenant)
		return false, nil
	}
	r.scopes.unlockedLocked(func() { r.reclaim(victim, id.Tenant) })
	return true, nil
}

// scopeLimitLocked refuses a new scope of tenant past its tier's
// max_scopes, with a hint of when one of its scopes may be gone: its
// longest unused idle scope reaches [pool] idle_timeout, and the reaper
// looks.
func (r *reclaimer) scopeLimitLocked(tenant, tierName string, tier Tier) error {
	if tier.MaxScopes <= 0 {
		return nil
	}
	n := 0
	var oldest time.Time
	r.scopes.eachLocked(func(sc *scope) {
		if sc.id.Tenant != tenant {
			return
		}
		n++
		if sc.active.Load() == 0 {
			if u := sc.lastUse(); oldest.IsZero() || u.Before(oldest) {
				oldest = u
			}
		}
	})
	if n < tier.MaxScopes {
		return nil
	}
	idle := r.conf().Pool.IdleTimeout.Duration
	tick := max(idle/4, 100*time.Millisecond) // the reaper's
	after := idle + tick
	if !oldest.IsZero() {
		after = max(idle-time.Since(oldest), 0) + tick
	}
	return &RetryAfterError{
		Err: fmt.Errorf("%w: tenant %s has %d live scopes, its tier %s allows %d (an idle scope goes after [pool] idle_timeout %s)",
			ErrScopeLimit, tenant, n, tierName, tier.MaxScopes, idle),
		After: after,
	}
}

// pickVictimLocked chooses the scope to reclaim for a new scope of
// requester: an idle scope of the tenant with the most live scopes, among
// requester and the tenants with more than requester (none loses a slot to
// a tenant holding as many); of that tenant's idle scopes the longest
// unused. nil: none.
func (r *reclaimer) pickVictimLocked(requester string) *scope {
	count := map[string]int{}
	r.scopes.eachLocked(func(sc *scope) { count[sc.id.Tenant]++ })
	var best *scope
	var bestN int
	var bestUsed time.Time
	r.scopes.eachLocked(func(sc *scope) {
		n := count[sc.id.Tenant]
		if sc.id.Tenant != requester && n <= count[requester] || sc.active.Load() > 0 {
			return
		}
		sc.mu.Lock()
		used, closed := sc.lastUsed, sc.closed
		sc.mu.Unlock()
		if closed {
			return
		}
		if best == nil || n > bestN || n == bestN && used.Before(bestUsed) {
			best, bestN, bestUsed = sc, n, used
		}
	})
	return best
}

// reclaim removes sc, taken out of the registry (registry.leaveLocked) to free its
// slot for a new scope of tenant forTenant.
func (r *reclaimer) reclaim(sc *scope, forTenant string) {
	r.log.Info("idle scope reclaimed for a new scope", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "tier", sc.tier,
		"unused", time.Since(sc.lastUse()).Round(time.Millisecond), "for_tenant", forTenant, "free_slots", r.ids.Free())
	r.metrics.IncReclaimed(sc.tier)
	if err := r.remove(sc); err != nil {
		r.log.Error("remove reclaimed scope", "scope", sc.id.Key(), "err", err)
	}
}

// noSlotError is the refusal of a new scope when every id slot is held
// by a scope that may not be reclaimed now.
func noSlotError(id ScopeID, err error) error {
	return &RetryAfterError{
		Err: fmt.Errorf("%w: no scope slot for %s: %w (every one is held by a scope with invocations in flight, or of a tenant with no more scopes than %s)",
			ErrBusy, id.Key(), err, id.Tenant),
		After: time.Second,
	}
}

// lastUse is when sc last took a worker.
func (sc *scope) lastUse() time.Time {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.lastUsed
}
