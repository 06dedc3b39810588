package control

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
)

// fakeScope is a cgroup for the cgroupfs accounting source.
type fakeScope struct{ cpu time.Duration }

func (fakeScope) UnifiedDir() string               { return "" }
func (s *fakeScope) Stats() (cgroups.Stats, error) { return cgroups.Stats{CPUUsage: s.cpu}, nil }

// AccountingSource over a real accounting source (the cgroupfs one, which
// needs no kernel here): untracked scopes and scopes without an id are left
// out, PSI is read where there is a directory.
func TestAccountingSource(t *testing.T) {
	acct, err := accounting.Open(accounting.Options{ForceFallback: true, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeScope{cpu: time.Second}
	if err := acct.Track(7, a); err != nil {
		t.Fatal(err)
	}
	a.cpu += 300 * time.Millisecond
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cpu.pressure"), []byte("some total=3\nfull total=2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := AccountingSource(acct, func() []ScopeInfo {
		return []ScopeInfo{
			{Key: "a.x", Tenant: "a", ID: 7, UnifiedDir: dir, Weight: 50, CPUMax: 2},
			{Key: "b.x", Tenant: "b", ID: 8}, // not tracked
			{Key: "c.x", Tenant: "c", ID: 0}, // no cgroup id
		}
	})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Scopes) != 1 || snap.At.IsZero() {
		t.Fatalf("snapshot %+v", snap)
	}
	s := snap.Scopes[0]
	if s.Key != "a.x" || s.Tenant != "a" || s.ID != 7 || s.Counters.CPU != 300*time.Millisecond ||
		s.Weight != 50 || s.CPUMax != 2 || s.PSI == nil || s.PSI.Full != 2*time.Microsecond {
		t.Errorf("sample %+v (psi %+v)", s, s.PSI)
	}
	acct.Close()
	if _, err := src.Snapshot(); !errors.Is(err, accounting.ErrClosed) {
		t.Errorf("closed source: %v", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
