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

// sampler refreshes every scope's series and the daemon's every interval
// until ctx ends.
func (s *Supervisor) sampler(ctx context.Context) {
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.conf().Metrics.Interval.Duration):
		}
	}
}

func (s *Supervisor) sample() {
	scopes := s.scopes.snapshot(nil)
	workers := 0
	for _, sc := range scopes {
		st, err := sc.node.Stats()
		if err != nil {
			s.metrics.IncError("scope_stats")
			continue
		}
		st.OOMKills += sc.oomLost.Load()
		n := sc.liveWorkers()
		workers += n
		sample := metrics.ScopeSample{
			CPU: st.CPUUsage, CPUThrottled: st.CPUThrottled, MemoryCurrent: st.MemoryCurrent,
			MemoryPeak: st.MemoryPeak, OOMKills: st.OOMKills, Pids: st.PidsCurrent, Workers: n,
		}
		s.acct.addScope(sc, &sample)
		// A scope removed meanwhile must not get its series back:
		// removeScope marks it closed (under sc.mu) before it drops them.
		sc.mu.Lock()
		if !sc.closed {
			s.metrics.UpdateScope(sc.labels(), sample)
		}
		sc.mu.Unlock()
	}
	s.controlMetrics()
	d := metrics.DaemonSample{Scopes: len(scopes), Workers: workers}
	s.acct.addDaemon(&d)
	s.metrics.SetDaemon(d)
}

func (sc *scope) liveWorkers() int {
	return len(sc.workerList())
}
