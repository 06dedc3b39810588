package accounting

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
)

// TestTrackMany tracks 3,000 scopes, each with its memory cgroups as the
// daemon makes them, created one after the other as the daemon does: every
// cgroup's per-CPU memory eats the per-CPU pages the kernel refills
// acct_scopes' per-CPU values from. Before Track retried, one such run had
// 9 inserts fail with ENOMEM (scopes 2,566 to 2,715), others none: the test
// logs the retries it needed. The next scope beyond MaxScopes fails with
// ErrFull.
func TestTrackMany(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 3,000 cgroups")
	}
	e := newEnv(t)
	const n = 3000
	o := e.opts
	o.MaxScopes = n
	s := openSource(t, o)
	var ids []uint64
	start := time.Now()
	for i := range n + 1 {
		sc, err := e.tree.Node(cgroups.Limits{MemoryMax: 1 << 30, PidsMax: 100}, "free", "acme", fmt.Sprintf("many%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := sc.Remove(); err != nil {
				t.Errorf("Remove %s: %v", sc.Path(), err)
			}
		})
		if _, err := sc.Child("w1", cgroups.Limits{MemoryMax: 1 << 29}); err != nil {
			t.Fatal(err)
		}
		id, err := sc.ID()
		if err != nil {
			t.Fatal(err)
		}
		err = s.Track(id, sc)
		switch {
		case i == n && !errors.Is(err, ErrFull):
			t.Errorf("Track of scope %d beyond MaxScopes %d = %v, want ErrFull", i+1, n, err)
		case i < n && err != nil:
			t.Fatalf("Track of scope %d: %v", i+1, err)
		case i < n:
			ids = append(ids, id)
		}
	}
	s.mu.Lock()
	retried := s.retried
	s.mu.Unlock()
	t.Logf("%d scopes made and tracked in %s; %d inserts retried after ENOMEM", n, time.Since(start), retried)
	if st := s.Stats(); st.Scopes != n || st.Maps["acct_scopes"].Entries != n {
		t.Errorf("Stats: %d scopes, acct_scopes %+v; want %d", st.Scopes, st.Maps["acct_scopes"], n)
	}
	for _, id := range ids {
		if err := s.Untrack(id); err != nil {
			t.Fatal(err)
		}
	}
	if n := entries(t, s.objs.AcctScopes); n != 0 {
		t.Errorf("%d acct_scopes entries left", n)
	}
}

// TestTrackRetriesENOMEM: Track retries an insert the kernel refused with
// ENOMEM (it cannot be provoked at will: see TestTrackMany), and gives up
// with the kernel's error if it goes on.
func TestTrackRetriesENOMEM(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	scope, _, id := e.scope(t, "enomem")
	fails := 2
	s.update = func(id uint64, zero []acctScopeStats) error {
		if fails > 0 {
			fails--
			return fmt.Errorf("update: %w", unix.ENOMEM)
		}
		return s.objs.AcctScopes.Update(id, zero, ebpf.UpdateNoExist)
	}
	track(t, s, id, scope)
	if s.retried != 2 {
		t.Errorf("%d retries, want 2", s.retried)
	}
	if err := s.Untrack(id); err != nil {
		t.Fatal(err)
	}
	fails = trackRetries + 1
	if err := s.Track(id, scope); !errors.Is(err, unix.ENOMEM) {
		t.Errorf("Track while the kernel refuses = %v, want ENOMEM", err)
	}
	if st := s.Stats(); st.Scopes != 0 {
		t.Errorf("Stats after a failed Track: %+v", st)
	}
	if attached(t, s, scope.UnifiedDir()) {
		t.Error("a program attached after a failed Track")
	}
	track(t, s, id, scope) // the kernel takes it again
}

// BenchmarkUntrack measures Untrack with 100 and 2,000 scopes tracked and 8
// pair entries per scope in acct_pairs (written by the benchmark: as many
// as a busy host makes). One op is one Untrack; the scopes are made once.
//
// Run: go test -run '^$' -bench Untrack -benchtime 100x ./accounting/
func BenchmarkUntrack(b *testing.B) {
	e := newEnv(b)
	const most, pairsPer = 2000, 8
	o := e.opts
	o.MaxPairs = most * pairsPer
	s := openSource(b, o)
	nodes := make([]*cgroups.Node, most)
	ids := make([]uint64, most)
	for i := range most {
		nodes[i], _, ids[i] = e.scope(b, fmt.Sprintf("bench%d", i))
	}
	for _, n := range []int{100, most} {
		b.Run(fmt.Sprintf("scopes-%d", n), func(b *testing.B) {
			if b.N > n {
				b.Fatalf("b.N %d > %d scopes: run with -benchtime %dx or less", b.N, n, n)
			}
			for i := range n {
				track(b, s, ids[i], nodes[i])
			}
			for i := range n {
				for k := 1; k <= pairsPer; k++ {
					key := acctPairKey{Victim: ids[i], Preemptor: ids[(i+k)%n]}
					if err := s.objs.AcctPairs.Update(key, uint64(1), ebpf.UpdateAny); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if err := s.Untrack(ids[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for i := b.N; i < n; i++ {
				if err := s.Untrack(ids[i]); err != nil {
					b.Fatal(err)
				}
			}
			s.mu.Lock()
			err := s.readPairs()
			s.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
