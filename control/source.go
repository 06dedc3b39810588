package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/accounting"
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
			psi, _ := ReadPSI(s.UnifiedDir) // none on error: the run-queue signal remains
			snap.Scopes = append(snap.Scopes, ScopeSample{
				Key: s.Key, Tenant: s.Tenant, ID: s.ID, Counters: c, PSI: psi,
				Weight: s.Weight, CPUMax: s.CPUMax, TenantWeight: s.TenantWeight,
			})
		}
		return snap, nil
	})
}

// ReadPSI reads the cpu.pressure file of the cgroup2 directory dir. It
// returns nil and no error when dir is "" or the kernel keeps no pressure
// there (no file, or PSI disabled); errors wrap ErrInvalidPSI or the
// kernel's. In hybrid mode the unified directory has the file even with no
// controller enabled.
func ReadPSI(dir string) (*PSI, error) {
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.pressure"))
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.EOPNOTSUPP):
		return nil, nil
	case err != nil:
		return nil, err
	}
	p, err := parsePSI(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &p, nil
}

// parsePSI parses a pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=1757784
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=1757763
//
// where total is in microseconds. A missing "full" line (kernels before
// 5.13 for cpu) leaves Full zero.
func parsePSI(s string) (PSI, error) {
	var p PSI
	var some bool
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var total string
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "total="); ok {
				total = v
			}
		}
		us, err := strconv.ParseUint(total, 10, 63)
		if err != nil || us > uint64(1<<63-1)/uint64(time.Microsecond) {
			return PSI{}, fmt.Errorf("%w: %q", ErrInvalidPSI, line)
		}
		d := time.Duration(us) * time.Microsecond
		switch f[0] {
		case "some":
			p.Some, some = d, true
		case "full":
			p.Full = d
		}
	}
	if !some {
		return PSI{}, fmt.Errorf("%w: no \"some\" line", ErrInvalidPSI)
	}
	return p, nil
}

// hostBusy is the CPU time the host has been busy (user, nice, system,
// irq, softirq and steal in /proc/stat's first line; 0 when unreadable).
func hostBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
