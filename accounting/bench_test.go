package accounting

import (
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
)

// BenchmarkContextSwitch measures what the eBPF programs add to a context
// switch. A helper process runs PingPong (two threads pinned to CPU 1 that
// wake each other through pipes): one b.N round trip is two switches and two
// wake-ups; the result is reported as ns/switch. The helper runs in the test's
// own cgroup (host/…) or in a scope's worker leaf (scope/…, four levels deeper,
// which alone costs the scheduler something), with
//
//	off                 no programs loaded
//	empty               an empty program on sched_switch: the floor of any
//	                    tracing program
//	ebpf                the accounting programs, the scope not tracked
//	ebpf-tracked        the accounting programs, the scope tracked: CPU time,
//	                    run-queue delay, task storage on its switches
//	…-nostats           without the kernel's BPF run-time statistics (which
//	                    Open enables: two clock reads per program run)
//
// Where the kernel's statistics are on, it also reports each program's own
// run time per run (switch-ns/run), which the noise of a
// shared machine disturbs far less than the wall time of the whole switch.
//
// Run: go test -run '^$' -bench ContextSwitch -benchtime 200000x -count 10 ./accounting/
func BenchmarkContextSwitch(b *testing.B) {
	testutil.RequiresRoot(b)
	e := newEnv(b)

	// progs are the programs whose kernel-measured cost per run a
	// configuration also reports (with BPF statistics on).
	type prog struct {
		name string
		p    *ebpf.Program
	}
	run := func(b *testing.B, s *ebpfSource, inScope, tracked bool, progs ...prog) {
		var where *cgroups.Node
		if inScope {
			scope, workers, id := e.scope(b, "bench", "w1")
			where = workers[0]
			if tracked {
				if err := s.Track(id, scope); err != nil {
					b.Fatal(err)
				}
				defer s.Untrack(id)
			}
		}
		c := startHelper(b, "pingpong")
		if where != nil {
			join(b, where, c)
		}
		// Let the kernel finish with the previous run's cgroups (their
		// release runs in kworkers) before measuring.
		time.Sleep(250 * time.Millisecond)
		before := make([]ProgramStats, len(progs))
		for i, p := range progs {
			before[i] = programStats(b, p.p)
		}
		b.ResetTimer()
		c.release(strconv.Itoa(b.N), "1")
		ns, err := strconv.ParseInt(c.line(), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.wait(10 * time.Second)
		b.ReportMetric(float64(ns), "ns/switch")
		for i, p := range progs {
			d := programStats(b, p.p)
			if runs := d.RunCount - before[i].RunCount; runs > 0 && d.RunTime > 0 {
				b.ReportMetric(float64(d.RunTime-before[i].RunTime)/float64(runs), p.name+"-ns/run")
			}
		}
	}
	b.Run("host/off", func(b *testing.B) { run(b, nil, false, false) })
	b.Run("scope/off", func(b *testing.B) { run(b, nil, true, false) })
	b.Run("scope/empty", func(b *testing.B) {
		requireEBPF(b)
		var progs []prog
		for _, tp := range []string{"switch"} {
			p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_" + tp, License: "GPL",
				Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			l, err := link.AttachTracing(link.TracingOptions{Program: p})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			progs = append(progs, prog{tp, p})
		}
		// The kernel's statistics, for the floor of a program run.
		if st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
			defer st.Close()
		}
		run(b, nil, true, false, progs...)
	})

	s := openSource(b, e.opts)
	ours := []prog{{"switch", s.objs.AcctSwitch}}
	b.Run("host/ebpf", func(b *testing.B) { run(b, s, false, false, ours...) })
	b.Run("scope/ebpf", func(b *testing.B) { run(b, s, true, false, ours...) })
	b.Run("scope/ebpf-tracked", func(b *testing.B) { run(b, s, true, true, ours...) })
	if s.statsFD != nil {
		s.statsFD.Close()
		s.statsFD = nil
		b.Run("host/ebpf-nostats", func(b *testing.B) { run(b, s, false, false) })
		b.Run("scope/ebpf-tracked-nostats", func(b *testing.B) { run(b, s, true, true) })
	}
}

func programStats(b *testing.B, p *ebpf.Program) ProgramStats {
	b.Helper()
	info, err := p.Info()
	if err != nil {
		b.Fatal(err)
	}
	var st ProgramStats
	st.RunTime, _ = info.Runtime()
	st.RunCount, _ = info.RunCount()
	return st
}
