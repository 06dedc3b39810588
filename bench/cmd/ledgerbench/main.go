// Command ledgerbench measures the metering ledger's write throughput: it
// commits what a daemon's flush commits — for each of -scopes scopes the
// seven meters' deltas (one extension each) and the scope's cursor — in one
// transaction per flush, back to back for -duration, into a fresh ledger in
// a temporary directory (SQLite, WAL, synchronous=FULL, as the daemon opens
// it), and reports records (deltas) per second, commits per second and the
// commit latency. With -o it writes its section of BENCHMARKS.md.
//
// Run: go run ./bench/cmd/ledgerbench -o BENCHMARKS.md
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/metering"
)

const (
	markStart   = "<!-- ledgerbench:start -->"
	markEnd     = "<!-- ledgerbench:end -->"
	baseCommand = "go run ./bench/cmd/ledgerbench"
)

func main() {
	scopes := flag.String("scopes", "10,100,1000", "comma-separated scope counts per flush")
	dur := flag.Duration("duration", 3*time.Second, "time per scope count")
	out := flag.String("o", "", "replace (or add) this program's section in this markdown `file`")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*scopes, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n < 1 || n*7 > metering.MaxDeltas {
			fmt.Fprintf(os.Stderr, "ledgerbench: -scopes %q: want counts in 1..%d\n", *scopes, metering.MaxDeltas/7)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if *dur < 100*time.Millisecond {
		fmt.Fprintln(os.Stderr, "ledgerbench: -duration must be at least 100ms")
		os.Exit(2)
	}
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("%s\n## Metering ledger write throughput (issue 6)\n\n", markStart)
	p("Each commit is one daemon flush: for every scope, its seven meters' deltas (one extension) and\n")
	p("its cursor (~200 bytes), in one transaction; commits back to back for %s per scope count, into\n", *dur)
	p("a fresh ledger (SQLite via modernc.org/sqlite, WAL, synchronous=FULL, 60 s windows) in a\n")
	p("temporary directory on this machine's disk.\n\n")
	p("%s", benchmd.Facts(baseCommand, benchmd.QuoteArgs(os.Args[1:])))
	p("- Load average (1, 5, 15 min) at the start: %s\n\n", benchmd.LoadAvg())
	p("| Scopes per flush | Commits | Records/s | Commits/s | Commit p50 | Commit p99 |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, n := range counts {
		r, err := run(n, *dur)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ledgerbench:", err)
			os.Exit(1)
		}
		p("| %d | %d | %.0f | %.1f | %s | %s |\n", n, len(r.lat), float64(r.records)/r.elapsed.Seconds(),
			float64(len(r.lat))/r.elapsed.Seconds(), benchmd.Percentile(r.lat, 50).Round(10*time.Microsecond).String(), benchmd.Percentile(r.lat, 99).Round(10*time.Microsecond).String())
	}
	p("\nA daemon flushes every 10 s by default: even 1000 live scopes need one such commit per flush.\n")
	p("%s\n", markEnd)
	fmt.Print(w.String())
	if *out != "" {
		if err := benchmd.WriteSection(*out, markStart, markEnd, w.String()); err != nil {
			fmt.Fprintln(os.Stderr, "ledgerbench:", err)
			os.Exit(1)
		}
	}
}

type result struct {
	records int
	lat     []time.Duration
	elapsed time.Duration
}

func run(scopes int, d time.Duration) (result, error) {
	dir, err := os.MkdirTemp("", "ledgerbench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	l, err := metering.Open(dir, time.Minute)
	if err != nil {
		return result{}, err
	}
	defer l.Close()
	meters := metering.Meters()
	var r result
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
			return result{}, err
		}
		r.lat = append(r.lat, time.Since(t0))
		r.records += len(deltas)
	}
	r.elapsed = time.Since(start)
	return r, nil
}
