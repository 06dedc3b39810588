package control

import (
	"errors"
	"runtime"
	"time"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
)

// ScopeInfo is what AccountingSource needs to know of a live scope.
type ScopeInfo struct {
	Key, Tenant string
	ID          uint64 // unified cgroup id, as the scope is tracked with
	// UnifiedDir is the scope's cgroup2 directory, where cpu.pressure is
	// read; "" for none.
	UnifiedDir string
	Weight     uint64  // configured CPU weight
	CPUMax     float64 // configured CPU max in CPUs, 0: no cap
	// TenantWeight is the tenant's CPU weight against other tenants (0:
	// unknown; see ScopeSample.TenantWeight).
	TenantWeight uint64
	// TenantCPUMax is the tenant's configured CPU max in CPUs (0: no cap).
	TenantCPUMax float64
}

// CounterReader reads a tracked scope's cumulative counters.
// accounting.Source satisfies it.
type CounterReader interface {
	Read(id uint64) (accounting.Counters, error)
}

var _ CounterReader = accounting.Source(nil)

// AccountingSource is a Source that reads every scope that scopes lists
// from r, and its cpu.pressure where the kernel has it. A scope that cannot
// be read (not tracked, ID 0, just removed) is left out of the snapshot;
// the snapshot fails only when r is closed.
func AccountingSource(r CounterReader, scopes func() []ScopeInfo) Source {
	return SourceFunc(func() (Snapshot, error) {
		list := scopes()
		snap := Snapshot{At: time.Now(), Scopes: make([]ScopeSample, 0, len(list)), CPUs: float64(runtime.NumCPU()), HostBusy: hostBusy()}
		for _, s := range list {
			if s.ID == 0 {
				continue
			}
			c, err := r.Read(s.ID)
			if errors.Is(err, accounting.ErrClosed) {
				return Snapshot{}, err
			}
			if err != nil {
				continue
			}
			psi, _ := cgroups.ReadPSI(s.UnifiedDir, "cpu") // none on error: the run-queue signal remains
			snap.Scopes = append(snap.Scopes, ScopeSample{
				Key: s.Key, Tenant: s.Tenant, ID: s.ID, Counters: c, PSI: psi,
				Weight: s.Weight, CPUMax: s.CPUMax, TenantWeight: s.TenantWeight, TenantCPUMax: s.TenantCPUMax,
			})
		}
		return snap, nil
	})
}

// hostBusy is the CPU time the host has been busy (0 when unreadable).
func hostBusy() time.Duration {
	d, _ := cgroups.HostBusy()
	return d
}
