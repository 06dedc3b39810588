package main

import (
	"cmp"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// facts are the lines every section starts with: the run, and how the
// daemons were configured.
func (b *bench) facts(p func(string, ...any), args string, idle time.Duration, acct string) {
	p("- %s\n", benchmd.Command("go run -tags seccomp ./bench/cmd/churnbench", args))
	p("- Date: %s; the whole run took %s\n", benchmd.Date(), b.elapsed.Round(time.Second))
	p("- %s; load average (1, 5, 15 min) at the start: %s (other engineers share the machine)\n", benchmd.Machine(), b.kit.LoadAvg)
	p("- Versions: %s; worker `examples/whoami` (Go SDK), one idle worker per scope.\n", runtime.Version())
	p("- Daemons: `scoped` as shipped — every setting at its default (metering with its 10 s flush, `[accounting] mode =\n")
	p("  \"auto\"` (in use: %s), the noisy-neighbour controller, log rings, metrics sampled every 5 s, `[pool]\n", cmp.Or(acct, "unknown"))
	p("  max_concurrent = 1`) — but `[isolation] by = [\"user\"]` (a new user is a new scope), `[pool] idle_timeout = %q`,\n", idle.String())
	p("  a private id range, `[scope] id_slots` (`reclaim_free = 0.0`, the tier's `max_scopes = 0`: the one tenant may hold\n")
	p("  every slot), its own cgroup root and a loopback metrics port (for its goroutines and Go heap).\n")
}

func (b *bench) densityReport(args string, r *densityResult) string {
	w := benchmd.NewReport("churnbench-density", "## Scope density: many live idle scopes")
	p := w.P
	p("A daemon filled with %d live idle scopes (issue 13): what one scope costs, how long the daemon takes to start, stop\n", r.n)
	p("and recover that many, and what a new invocation costs beside them, against an empty daemon running meanwhile.\n\n")
	base, full := r.levels[0], r.levels[len(r.levels)-1]
	b.facts(p, args, denseIdle, full.acct)
	p("- Procedure: two daemons side by side, *empty* (`id_slots = %d`) and *dense* (`id_slots = %d`), each with one warm\n", r.emptySlots, r.denseSlots)
	p("  scope. The dense one is filled with %d scopes, %d first invocations of new users at a time (each checked cold).\n", r.n, b.o.parallel)
	p("  After 6 s and a settle (the machine busy at most a fifth of its CPU time over 100 ms: %s, reached: %v), both are\n", r.settleWaited.Round(100*time.Millisecond), r.settled)
	p("  read; then %d rounds, the daemons taking turns in alternating order, of a cold start and a call of the warm scope.\n", b.o.probes)
	p("  The dense daemon is stopped with SIGTERM (it removes every scope). A third daemon (*recover*) is filled alike, killed with\n")
	p("  SIGKILL and started again on what it left; it is checked to list no scope and to hold its cgroup root alone.\n")
	p("- Cleanup: every daemon left no cgroup; afterwards the host had %d mounts, %d nsfs mounts and %d network namespaces\n", r.hostAfter.mounts, r.hostAfter.nsfs, r.hostAfter.netns)
	p("  (before the part: %d, %d and %d).\n\n", r.hostBefore.mounts, r.hostBefore.nsfs, r.hostBefore.netns)

	p("### A new invocation beside %d scopes\n\n", r.n)
	p("| Invocation | empty daemon p50 / p90 / p99 | %d scopes p50 / p90 / p99 | ratio (p50) |\n| --- | ---: | ---: | ---: |\n", r.n)
	for _, row := range [][2]string{{"new scope (cold start)", "cold"}, {"warm call", "warm"}} {
		e, d := r.probes["empty "+row[1]], r.probes["dense "+row[1]]
		p("| %s | %s | %s | **%s** |\n", row[0], benchmd.Pcts(e, 1), benchmd.Pcts(d, 1), benchmd.DRatio(benchmd.Median(d), benchmd.Median(e)))
	}
	p("\n%d of each per daemon; the empty daemon held its warm scope and the scopes of these cold starts.\n\n", b.o.probes)

	p("### What a scope costs\n\n")
	p("The dense daemon read with its warm scope alone and at three stages of the fill. Each row is the least Go memory\n")
	p("and RSS of readings every 500 ms for 10 s and on until its Go runtime collected garbage (at most 90 s); a young\n")
	p("daemon holds the garbage of its start, so the first row runs high. \"Per scope\" is the growth since the row\n")
	p("before over the scopes added; the daemon's CPU is what it used while read, its scopes idle (100 %% = one CPU):\n\n")
	p("| scopes | scopes' cgroups | per scope | daemon Go memory (heap in use + stacks) | per scope | … of it stacks | daemon RSS | per scope | daemon CPU while read |\n")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for i, l := range r.levels {
		perCgroup, perGo, perRSS, gc := "", "", "", ""
		if i > 0 {
			prev := r.levels[i-1]
			k := float64(l.scopes - prev.scopes)
			perCgroup = benchmd.MiB((float64(l.mem) - float64(prev.mem)) / k)
			perGo, perRSS = benchmd.KiB(float64(l.goMem()-prev.goMem())/k), benchmd.KiB(float64(l.rss-prev.rss)/k)
			if !l.collected {
				gc = " (no collection seen)"
			}
		}
		p("| %d | %s | %s | %s%s | %s | %s | %s | %s | %.0f %% |\n", l.scopes, mib(l.mem), perCgroup,
			mib(l.goMem()), gc, perGo, mib(l.stacks), mib(l.rss), perRSS, 100*l.cpu)
	}
	if len(r.levels) >= 3 {
		hi, lo := r.levels[len(r.levels)-1], r.levels[len(r.levels)-2]
		k := float64(hi.scopes - lo.scopes)
		cg, gm := (float64(hi.mem)-float64(lo.mem))/k, float64(hi.goMem()-lo.goMem())/k
		p("\n**An idle scope costs %s in its cgroup and %s of the daemon's Go memory** (%d to %d scopes),\n", benchmd.MiB(cg), benchmd.KiB(gm), lo.scopes, hi.scopes)
		p("%s in all.\n\n", benchmd.MiB(cg+gm))
	}
	p("Counts, with the warm scope alone and with %d more:\n\n", r.n)
	p("| | before | after | per scope |\n| --- | ---: | ---: | ---: |\n")
	row := func(what string, a, b int) {
		p("| %s | %d | %d | %s |\n", what, a, b, strconv.FormatFloat(float64(b-a)/float64(r.n), 'f', 2, 64))
	}
	row("daemon file descriptors", base.fds, full.fds)
	kinds := maps.Clone(full.fdKinds)
	maps.Copy(kinds, base.fdKinds)
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		if a, b := base.fdKinds[k], full.fdKinds[k]; b != a {
			row("… of them "+k, a, b)
		}
	}
	row("daemon goroutines", base.goroutines, full.goroutines)
	row("daemon threads", base.threads, full.threads)
	row("cgroup directories (all hierarchies)", base.dirs, full.dirs)

	p("\n### Start, stop and recovery of %d scopes\n\n", r.n)
	p("| | scopes | time | per scope |\n| --- | ---: | ---: | ---: |\n")
	p("| fill the dense daemon (%d at a time) | %d | %s | %s |\n", b.o.parallel, r.n, benchmd.Secs(r.fillWall), per(r.fillWall, r.n))
	p("| fill the recover daemon (%d at a time) | %d | %s | %s |\n", b.o.parallel, r.n, benchmd.Secs(r.refillWall), per(r.refillWall, r.n))
	p("| **stop** (SIGTERM to exit) | %d | **%s** | %s |\n", r.stopScopes, benchmd.Secs(r.stop), per(r.stop, r.stopScopes))
	p("| **recovery** after SIGKILL (start to serving) | %d | **%s** | %s |\n", r.n, benchmd.Secs(r.recovery), per(r.recovery, r.n))
	p("| stop of the recovered daemon (no scope) | 0 | %s | |\n", benchmd.Secs(r.recoveredStop))
	p("\nThe first invocations that filled the dense daemon, p50 / p90 / p99 of each tenth (a growing\n")
	p("cost per scope would show as a rising row):\n\n")
	tenths(p, r.fill)
	p("\nsystemd's unit stops the daemon with `TimeoutStopSec=60` (then SIGKILL) and waits `TimeoutStartSec`\n")
	p("(90 s by default) for it to be ready, which includes this recovery.\n")
	return w.End()
}

func (b *bench) churnReport(args string, r *churnResult) string {
	w := benchmd.NewReport("churnbench-churn", "## Scope churn: scopes created and removed, and what is left")
	p := w.P
	p("%d scopes created and removed by one daemon (issue 13): each a new user's first invocation, which makes the scope\n", r.n)
	p("(cgroups, a host id range, a sandbox and its worker); the daemon removes it once idle. Then what is left, against a\n")
	p("baseline taken before.\n\n")
	b.facts(p, args, b.o.idle, r.base.acct)
	p("- Procedure: `[scope] id_slots = %d`. A first round of %d scopes, all removed; then the baseline. Then %d new\n", r.batch, 2*b.o.parallel, r.n)
	p("  users' first invocations, %d at a time (each checked cold; one refused for want of an id slot is retried after\n", b.o.parallel)
	p("  100 ms: %d were), while the daemon removes the scopes idle %s; the scopes it lists are sampled every second.\n", r.slotWaits, b.o.idle)
	p("  Once it lists none, what is left is read (waiting up to a minute for the baseline). Then **every id slot at once**:\n")
	p("  the idle timeout raised to 1 h (SIGHUP reload), %d new scopes made (each must get a slot, so none leaked), the\n", r.batch)
	p("  timeout set back; the reaper removes them all in one pass, timed until none is listed; read again; stopped.\n\n")

	p("### Create and remove\n\n")
	p("| | |\n| --- | ---: |\n")
	p("| scopes created and removed | %d |\n", r.n)
	p("| wall time, first invocation to no scope left | %s (%s per scope) |\n", benchmd.Secs(r.wall), per(r.wall, r.n))
	p("| **create**: a new scope's first invocation, p50 / p90 / p99 (%d in flight) | **%s** |\n", b.o.parallel, benchmd.Pcts(r.create, 1))
	p("| most scopes live at once (sampled) | %d |\n", r.peakLive)
	p("| the last invocation's end until no scope was left | %s |\n", benchmd.Secs(r.drain))
	p("| **remove**: %d idle scopes in one reaper pass | %s, **%s per scope** |\n", r.batch, benchmd.Secs(r.batchRemove), per(r.batchRemove, r.batch))
	p("| (creating those %d, %d at a time) | %s, %s per scope |\n", r.batch, b.o.parallel, benchmd.Secs(r.batchCreate), per(r.batchCreate, r.batch))
	p("| stop of the daemon (no scope) | %s |\n", benchmd.Secs(r.stop))
	p("\nThe first invocations, p50 / p90 / p99 of each tenth of the churn:\n\n")
	tenths(p, r.create)

	p("\n### Left behind\n\n")
	p("| | baseline | after the churn | after all slots at once | left |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, row := range leakRows {
		base, after, final := row.of(r.base), row.of(r.after), row.of(r.final)
		p("| %s | %d | %d | %d | **%d** |\n", row.name, base, after, final, max(after-base, final-base, 0))
	}
	p("| id slots: all %d taken at once after the churn | | | all | **0** |\n", r.batch)
	p("\nA network namespace outlives its processes only through a process, an nsfs mount or an open descriptor: the rows\n")
	p("above count each. (Machine-wide, %d, %d and %d distinct network namespaces were in use by processes at the three\n",
		r.base.host.netns, r.after.host.netns, r.final.host.netns)
	p("readings; other engineers' tests make some.) The daemon's Go memory (heap in use + stacks, one reading each,\n")
	p("garbage included) was %s at the baseline, %s after the churn and %s at the end; its RSS %s, %s and %s.\n",
		mib(r.base.goMem()), mib(r.after.goMem()), mib(r.final.goMem()), mib(r.base.rss), mib(r.after.rss), mib(r.final.rss))
	return w.End()
}

// tenths writes a table of the p50 / p90 / p99 of each tenth of ds.
func tenths(p func(string, ...any), ds []time.Duration) {
	p("| Scopes | p50 / p90 / p99 |\n| --- | ---: |\n")
	for i := range 10 {
		if lo, hi := i*len(ds)/10, (i+1)*len(ds)/10; hi > lo {
			p("| %d–%d | %s |\n", lo+1, hi, benchmd.Pcts(ds[lo:hi], 1))
		}
	}
}

// per is d per one of n, in milliseconds with one decimal.
func per(d time.Duration, n int) string { return benchmd.MsP(d/time.Duration(max(n, 1)), 1) }

func mib[T int64 | uint64](n T) string { return benchmd.MiB(float64(n)) }
