// Command ledgerbench measures the metering ledger's write throughput: one
// commit per daemon flush (every scope's seven meter deltas and its cursor,
// one transaction), back to back, into a fresh ledger as the daemon opens it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/metering"
)

func main() {
	scopes := flag.String("scopes", "10,100,1000", "comma-separated scope counts per flush")
	dur := flag.Duration("duration", 3*time.Second, "time per scope count")
	benchmd.Main("ledgerbench", false, func(_ context.Context, args string) ([]string, error) {
		var counts []int
		for _, f := range strings.Split(*scopes, ",") {
			var n int
			if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n < 1 || n*7 > metering.MaxDeltas {
				return nil, fmt.Errorf("-scopes %q: want counts in 1..%d", *scopes, metering.MaxDeltas/7)
			}
			counts = append(counts, n)
		}
		if *dur < 100*time.Millisecond {
			return nil, fmt.Errorf("-duration must be at least 100ms")
		}
		r := benchmd.NewReport("ledgerbench", "## Metering ledger write throughput (issue 6)")
		r.P("Each commit is one daemon flush: for every scope, its seven meters' deltas (one extension) and\n")
		r.P("its cursor (~200 bytes), in one transaction; commits back to back for %s per scope count, into\n", *dur)
		r.P("a fresh ledger (SQLite via modernc.org/sqlite, WAL, synchronous=FULL, 60 s windows) in a\n")
		r.P("temporary directory on this machine's disk.\n\n")
		r.P("%s", benchmd.Facts("go run ./bench/cmd/ledgerbench", args))
		r.P("- Load average (1, 5, 15 min) at the start: %s\n\n", benchmd.LoadAvg())
		r.P("| Scopes per flush | Commits | Records/s | Commits/s | Commit p50 | Commit p99 |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, n := range counts {
			records, lat, elapsed, err := measure(n, *dur)
			if err != nil {
				return nil, err
			}
			r.P("| %d | %d | %.0f | %.1f | %s | %s |\n", n, len(lat), float64(records)/elapsed.Seconds(), float64(len(lat))/elapsed.Seconds(),
				benchmd.Percentile(lat, 50).Round(10*time.Microsecond), benchmd.Percentile(lat, 99).Round(10*time.Microsecond))
		}
		r.P("\nA daemon flushes every 10 s by default: even 1000 live scopes need one such commit per flush.\n")
		return []string{r.End()}, nil
	})
}

// measure commits flushes of scopes scopes for d and returns the records
// written, each commit's latency and the time it took.
func measure(scopes int, d time.Duration) (records int, lat []time.Duration, elapsed time.Duration, _ error) {
	dir, err := os.MkdirTemp("", "ledgerbench-")
	if err != nil {
		return 0, nil, 0, err
	}
	defer os.RemoveAll(dir)
	l, err := metering.Open(dir, time.Minute)
	if err != nil {
		return 0, nil, 0, err
	}
	defer l.Close()
	meters := metering.Meters()
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		now := time.Now()
		deltas := make([]metering.Delta, 0, scopes*len(meters))
		cursors := make(map[string][]byte, scopes)
		for s := range scopes {
			tenant := fmt.Sprintf("t%d", s%50)
			dims := metering.Dimensions{Scope: fmt.Sprintf("%s.s%d", tenant, s), Environment: "production", Extension: "hook"}
			for _, m := range meters {
				deltas = append(deltas, metering.Delta{Tenant: tenant, Meter: m, Dims: dims, At: now, Value: 1})
			}
			cursors[dims.Scope] = []byte(fmt.Sprintf(`{"cpu_ns":%d,"rx":%d,"tx":%d,"at":"%s","mem":%d,"ext":{"hook":[%d,1,%d]}}`,
				i*1000000, i*100, i*100, now.Format(time.RFC3339Nano), 1<<20, i, i*1000))
		}
		t0 := time.Now()
		if err := l.Commit(deltas, cursors); err != nil {
			return 0, nil, 0, err
		}
		lat = append(lat, time.Since(t0))
		records += len(deltas)
	}
	return records, lat, time.Since(start), nil
}
