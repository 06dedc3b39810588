package supervisor

import (
	"context"
	"errors"
	"time"

	"github.com/scoped-io/scoped/metrics"
)

// Metrics is the registry of the daemon's series; cmd/scoped serves it.
func (s *Supervisor) Metrics() *metrics.Registry { return s.metrics }

func (sc *scope) labels() metrics.ScopeLabels {
	return metrics.ScopeLabels{Tenant: sc.id.Tenant, Scope: sc.id.Key(), Tier: sc.tier, Environment: sc.id.Environment}
}

// resultOf classifies an invocation's outcome for the metrics.
func resultOf(err error) string {
	switch {
	case err == nil:
		return metrics.ResultOK
	case errors.Is(err, ErrDeadline):
		return metrics.ResultDeadline
	case errors.Is(err, ErrOutOfMemory):
		return metrics.ResultOOM
	case errors.Is(err, ErrWorker):
		return metrics.ResultCrash
	case errors.Is(err, ErrBusy):
		return metrics.ResultBusy
	case errors.Is(err, ErrCPUTime):
		return metrics.ResultCPUTime
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrTooLarge), errors.Is(err, ErrNotFound):
		return metrics.ResultInvalid
	}
	return metrics.ResultError
}

// sampler refreshes every live scope's series and the daemon's every
// [metrics] interval, from Start until Stop.
type sampler struct {
	conf    func() *Config
	scopes  func(keep func(*scope) bool) []*scope // the live scopes keep accepts (the registry's snapshot)
	acct    *accountant
	metrics *metrics.Registry
	// more adds what else the metrics report to each round (the
	// noisy-neighbour controller's counts).
	more func()
	loop *goLoop
}

var _ component = (*sampler)(nil)

func newSampler(conf func() *Config, scopes func(keep func(*scope) bool) []*scope, acct *accountant, m *metrics.Registry, more func()) *sampler {
	p := &sampler{conf: conf, scopes: scopes, acct: acct, metrics: m, more: more}
	p.loop = newGoLoop(p.run)
	return p
}

// Start starts the loop.
func (p *sampler) Start(ctx context.Context) error { return p.loop.Start(ctx) }

// Stop stops the loop and waits for it.
func (p *sampler) Stop() error { return p.loop.Stop() }

// run samples every interval until ctx ends.
func (p *sampler) run(ctx context.Context) {
	for {
		p.sample()
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.conf().Metrics.Interval.Duration):
		}
	}
}

func (p *sampler) sample() {
	scopes := p.scopes(nil)
	workers := 0
	for _, sc := range scopes {
		st, err := sc.node.Stats()
		if err != nil {
			p.metrics.IncError("scope_stats")
			continue
		}
		st.OOMKills += sc.oomLost.Load()
		n := sc.liveWorkers()
		workers += n
		sample := metrics.ScopeSample{
			CPU: st.CPUUsage, CPUThrottled: st.CPUThrottled, MemoryCurrent: st.MemoryCurrent,
			MemoryPeak: st.MemoryPeak, OOMKills: st.OOMKills, Pids: st.PidsCurrent, Workers: n,
		}
		p.acct.addScope(sc, &sample)
		// A scope removed meanwhile must not get its series back:
		// removeScope marks it closed (under sc.mu) before it drops them.
		sc.mu.Lock()
		if !sc.closed {
			p.metrics.UpdateScope(sc.labels(), sample)
		}
		sc.mu.Unlock()
	}
	if p.more != nil {
		p.more()
	}
	d := metrics.DaemonSample{Scopes: len(scopes), Workers: workers}
	p.acct.addDaemon(&d)
	p.metrics.SetDaemon(d)
}

func (sc *scope) liveWorkers() int {
	return len(sc.workerList())
}
