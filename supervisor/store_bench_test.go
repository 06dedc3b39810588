package supervisor

import (
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkStoreGetDuringDeploy measures the invocation path's store
// lookup (Get of the current version, what every Invoke does) of tenant B,
// idle and while tenant A deploys 64 MiB bundles back to back. Lookups
// arrive every 100µs (plus the sleep's overshoot), each in a goroutine of
// its own; it reports their p50, p99 and max in µs; in "deploy" only
// lookups that started while a deploy was in flight count. The store lives on a real disk
// ($SCOPED_BENCH_DIR, else /var/tmp), where fsync costs what it costs:
//
//	go test -tags seccomp -run '^$' -bench StoreGetDuringDeploy -benchtime 50000x ./supervisor/
func BenchmarkStoreGetDuringDeploy(b *testing.B) {
	for _, mode := range []string{"idle", "deploy"} {
		b.Run(mode, func(b *testing.B) {
			base := os.Getenv("SCOPED_BENCH_DIR")
			if base == "" {
				base = "/var/tmp"
			}
			dir, err := os.MkdirTemp(base, "scoped-store-bench-")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(dir)
			s, err := NewStore(dir, 64<<20+4096, 8)
			if err != nil {
				b.Fatal(err)
			}
			withKeep(s, 2)
			if _, _, err := s.Deploy("tenant-b", "production", "hook", unitBundle("b")); err != nil {
				b.Fatal(err)
			}
			big := make([]byte, 64<<20)
			for i := range big {
				big[i] = byte(i * 7)
			}
			var inDeploy atomic.Bool
			var deploys atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if mode == "deploy" {
				started := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						big[0] = byte(i) // a new digest each time
						files := []BundleFile{
							{Path: ManifestFile, Mode: 0o644, Content: []byte(unitManifest)},
							{Path: "worker", Mode: 0o755, Content: big},
						}
						inDeploy.Store(true)
						if i == 0 {
							close(started)
						}
						_, _, err := s.Deploy("tenant-a", "production", "big", files)
						inDeploy.Store(false)
						if err != nil {
							b.Error(err)
							return
						}
						deploys.Add(1)
					}
				}()
				<-started
			}
			// Invocations arrive every 100µs whatever the store does (an
			// open loop), each in its own goroutine, as the API serves them.
			lat := make([]time.Duration, b.N)
			keep := make([]bool, b.N)
			var calls sync.WaitGroup
			b.ResetTimer()
			for i := range b.N {
				calls.Add(1)
				go func() {
					defer calls.Done()
					keep[i] = mode == "idle" || inDeploy.Load()
					t0 := time.Now()
					if _, err := s.Get("tenant-b", "production", "hook", ""); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(t0)
				}()
				time.Sleep(100 * time.Microsecond)
			}
			calls.Wait()
			b.StopTimer()
			close(stop)
			wg.Wait()
			var kept []time.Duration
			for i, d := range lat {
				if keep[i] {
					kept = append(kept, d)
				}
			}
			lat = kept
			if len(lat) == 0 {
				b.Skip("no lookup overlapped a deploy")
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(1), "max-µs")
			b.ReportMetric(float64(len(lat)), "samples")
			b.ReportMetric(float64(deploys.Load()), "deploys")
		})
	}
}
