package control

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/scoped-io/scoped/accounting"
)

// bytesReader hands out the fuzzer's bytes, over and over: a short input
// makes a long, periodic trace (long enough for cool-downs to pass), and
// short inputs keep the fuzzer's minimisation quick.
type bytesReader struct {
	b []byte
	i int
}

func (r *bytesReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	r.i++
	return r.b[(r.i-1)%len(r.b)]
}

// FuzzDecide feeds Decide snapshots made from random bytes: scopes coming
// and going, cgroups recreated, counters growing, jumping or going back,
// preemptions by known, unknown and own ids, odd PSI, weights and CPU
// maxes, and a clock that may stand still or go back. Decide must not
// panic, must not modify its input state, must be a function of its inputs,
// and every output must hold checkInvariants.
func FuzzDecide(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 3, 2, 1, 7, 200, 10, 100, 30, 20, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add([]byte{0, 0, 0, 1, 2, 3, 10, 0x07, 0x13, 100, 200, 7, 20, 50, 9, 0x53, 150, 30, 3, 0, 60, 9, 1})
	f.Add([]byte{1, 2, 3, 0, 4, 5, 10, 0xff, 0x23, 200, 100, 24, 90, 40, 0x80, 10})
	f.Fuzz(fuzzBody)
}

func fuzzBody(t *testing.T, data []byte) {
	{
		r := &bytesReader{b: data}
		cfg := DefaultConfig()
		cfg.DetectTicks = 1 + int(r.byte()%4)
		cfg.RecoverTicks = 1 + int(r.byte()%4)
		cfg.Cooldown.Duration = time.Duration(r.byte()%5) * time.Second
		cfg.MaxThrottled = 1 + int(r.byte()%3)
		cfg.CalmCPU = float64(r.byte()%4) / 10
		cfg.MinShare = 0.1 + float64(r.byte()%9)/10
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		const nScopes = 6
		keys := [nScopes]string{"a.p", "a.s", "b.p", "c.p", "d.p", "e.p"}
		ids := [nScopes]uint64{1, 2, 3, 4, 5, 6}
		var cum [nScopes]accounting.Counters
		var psi [nScopes]PSI
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var st State
		ticks := 1 + int(r.byte())%80
		for range ticks {
			at = at.Add(time.Duration(int8(r.byte())) * 100 * time.Millisecond)
			snap := Snapshot{At: at}
			present := r.byte()
			for i := range nScopes {
				if present&(1<<i) == 0 {
					continue
				}
				op := r.byte()
				switch op % 16 {
				case 0:
					ids[i] += 100 // recreated
					cum[i], psi[i] = accounting.Counters{}, PSI{}
				case 1:
					cum[i] = accounting.Counters{} // source restarted
				}
				c := &cum[i]
				c.CPU += time.Duration(r.byte()) * 10 * time.Millisecond
				n := uint64(r.byte()) * 4
				c.RunqDelay.Buckets[r.byte()%accounting.HistogramBuckets] += n
				c.RunqDelay.Count += n
				by := r.byte()
				p := uint64(r.byte()) * 2
				c.Preemptions += p
				if p > 0 {
					if c.PreemptedBy == nil {
						c.PreemptedBy = map[uint64]uint64{}
					}
					// Another scope, itself, or an id no one has.
					c.PreemptedBy[[]uint64{ids[int(by)%nScopes], ids[i], 999}[int(by)%3]] += p
				}
				s := ScopeSample{Key: keys[i], Tenant: keys[i][:1], ID: ids[i], Counters: clone(*c)}
				switch op / 16 % 4 {
				case 1:
					psi[i].Full += time.Duration(r.byte()) * 5 * time.Millisecond
					cp := psi[i]
					s.PSI = &cp
				case 2:
					s.PSI = &PSI{Full: time.Duration(r.byte())} // may go back
				}
				switch op / 64 {
				case 1:
					s.Weight = uint64(r.byte()) * 40
				case 2:
					s.CPUMax = float64(r.byte()) / 50
				case 3:
					s.CPUMax = []float64{math.NaN(), math.Inf(1), -1, 0}[r.byte()%4]
				}
				snap.Scopes = append(snap.Scopes, s)
				if op%16 == 2 {
					snap.Scopes = append(snap.Scopes, s) // a duplicate key
				}
			}
			before := st.Throttled()
			next, acts, evs := Decide(cfg, st, snap)
			if after := st.Throttled(); !mapsEqual(before, after) {
				t.Fatalf("Decide modified its input state: %v → %v", before, after)
			}
			next2, acts2, evs2 := Decide(cfg, st, snap)
			if !reflect.DeepEqual(acts, acts2) || !reflect.DeepEqual(evs, evs2) || !mapsEqual(next.Throttled(), next2.Throttled()) {
				t.Fatalf("two calls with the same inputs differ:\n%+v\n%+v", acts, acts2)
			}
			checkInvariants(t, cfg, snap, next, acts, evs)
			st = next
		}
	}
}
