package supervisor

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// reaper stops idle workers and removes scopes that have none left, and
// keeps warm_min workers per extension of live scopes. It also prunes the
// admission gate's idle tenants and the store's stale pending deploys. It
// runs as a component (see loops) from Start to Stop.
type reaper struct {
	conf   func() *Config
	log    *slog.Logger
	scopes *registry
	gate   *gate
	store  *Store
	tierOf func(tenant string) (string, Tier)
	// acquire, release and retire are the scopes' pools' (see pool.go).
	acquire func(ctx context.Context, sc *scope, ext ExtensionInfo, maxWorkers int) (*worker, bool, error)
	release func(sc *scope, w *worker)
	retire  func(sc *scope, w *worker, why string)
	remove  func([]*scope) []error // removes scopes that left the registry
	alive   *atomic.Int64          // the loop's heartbeat (see Health)

	loop *goLoop
}

func newReaper(r *reaper) *reaper {
	r.loop = newGoLoop(r.run)
	return r
}

func (r *reaper) Start(ctx context.Context) error { return r.loop.Start(ctx) }

func (r *reaper) Stop() error { return r.loop.Stop() }

// run reaps every quarter of idle_timeout until ctx ends.
func (r *reaper) run(ctx context.Context) {
	beat(r.alive)
	defer r.alive.Store(0)
	tick := time.NewTicker(max(r.conf().Pool.IdleTimeout.Duration/4, 100*time.Millisecond))
	defer tick.Stop()
	alive := time.NewTicker(heartbeatEvery)
	defer alive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-alive.C:
			beat(r.alive)
			continue
		case <-tick.C:
		}
		beat(r.alive)
		idle := r.conf().Pool.IdleTimeout.Duration
		r.gate.prune(func(tenant string) Tier { _, t := r.tierOf(tenant); return t }, time.Now())
		r.store.PrunePending()
		var gone []*scope
		for _, sc := range r.scopes.snapshot(nil) {
			beat(r.alive)
			for _, w := range sc.idleWorkers(idle, r.conf().Pool.WarmMin) {
				r.retire(sc, w, "idle")
				go w.stop()
			}
			r.warm(sc)
			if sc.unused(idle) && r.scopes.leaveIdle(sc) {
				gone = append(gone, sc)
			}
			// Idle scopes go removeParallel at a time; each soon after
			// it left the registry.
			if len(gone) == removeParallel {
				r.removeIdle(gone)
				gone = gone[:0]
			}
		}
		r.removeIdle(gone)
	}
}

// removeIdle removes idle scopes that left the registry, and logs it.
func (r *reaper) removeIdle(gone []*scope) {
	for i, err := range r.remove(gone) {
		sc := gone[i]
		if err != nil {
			r.log.Error("remove idle scope", "scope", sc.id.Key(), "err", err)
		} else {
			r.log.Info("idle scope removed", "tenant", sc.id.Tenant, "scope", sc.id.Key())
		}
	}
}

// warm starts workers up to warm_min for every extension version that has
// (or had) workers in sc.
func (r *reaper) warm(sc *scope) {
	if r.conf().Pool.WarmMin == 0 {
		return
	}
	var need []ExtensionInfo
	for _, p := range sc.poolList() {
		if p.short(r.conf().Pool.WarmMin) {
			need = append(need, p.ext)
		}
	}
	for _, ext := range need {
		beat(r.alive) // a start may take start_timeout
		ctx, cancel := context.WithTimeout(context.Background(), r.conf().Pool.StartTimeout.Duration)
		w, _, err := r.acquire(ctx, sc, ext, r.conf().Tiers[sc.tier].maxWorkers(r.conf().Pool))
		cancel()
		if err == nil {
			r.release(sc, w)
		}
	}
}
