package main

import (
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	res := map[string][]time.Duration{
		vOff:                            {ps(1000), ps(1010)},
		vAttached:                       {ps(1100), ps(1110)},
		vTracked:                        {ps(1200)},
		vAttachedStats:                  {ps(1150)},
		vAttachedStats + " acct_switch": {ps(80), ps(82)},
	}
	got := report(options{rounds: 2, warmup: 1, n: 10, cpu: 1}, "-o BENCHMARKS.md", "0.1 0.2 0.3", res)
	for _, want := range []string{
		"<!-- switchbench:start -->\n## Context switches with accounting attached (issue 4)\n",
		"`sudo make bench`, which runs `go run -tags seccomp ./bench/cmd/switchbench -o BENCHMARKS.md`",
		"| off | 1005.0 | 1000.0 | 1010.0 | 1.000× | +0.0 |",
		"| attached | 1105.0 | 1100.0 | 1110.0 | 1.100× | +100.0 |",
		"| tracked | 1200.0 | 1200.0 | 1200.0 | 1.194× | +195.0 |",
		"| attached, BPF stats on | 1150.0 | 1150.0 | 1150.0 | 1.144× | +145.0 |",
		"| attached, BPF stats on | 81.0 |",
		"| tracked, BPF stats on | n/a |",
		"Load average (1, 5, 15 min) at the start: 0.1 0.2 0.3",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if !strings.HasSuffix(got, "<!-- switchbench:end -->\n") {
		t.Errorf("report does not end with its end marker")
	}
}
