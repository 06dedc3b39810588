package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// phase is one figure of each of calls.
func phase(calls []coldCall, f func(coldCall) time.Duration) []time.Duration {
	out := make([]time.Duration, len(calls))
	for i, c := range calls {
		out[i] = f(c)
	}
	return out
}

func total(c coldCall) time.Duration { return c.Total }

func (b *bench) report(args string, cr coldResult, in *inprocResult) string {
	w := benchmd.NewReport("netbench", "## Scope cold start with network egress vs none")
	p, ms, us, med, mean := w.P, benchmd.Ms, benchmd.Us, benchmd.Median, benchmd.Mean
	lat := make([][]time.Duration, len(b.modes))
	for i := range b.modes {
		lat[i] = phase(cr.calls[i], total)
	}
	none, egress, nopool := lat[0], lat[1], lat[2]

	p("What network egress adds to a scope's cold start: the first invocation of `examples/whoami` in a new scope (a new\n")
	p("tenant each time), as the client sees it, with the tenants' tier at `network = \"none\"`, at `network = \"egress\"` with\n")
	p("a pool of %d ready namespaces, and at `egress` with the pool off (`pool_size = 0`), side by side in one run.\n\n", b.o.poolSize)
	p("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/netbench", args))
	capacity := 100 * time.Millisecond * time.Duration(runtime.NumCPU())
	p("- Load average (1, 5, 15 min) at the start: %s. Before the run the rest of the machine kept %.0f %% of its CPU time\n",
		b.kit.LoadAvg, 100*float64(b.baseline)/float64(capacity))
	p("  busy; while the cold starts ran, everything but the benchmark and its daemons used %.0f %%.\n", 100*cr.otherShare)
	p("- Versions: %s; worker `examples/whoami` (Go SDK, %.1f MB); payload %q.\n", runtime.Version(), float64(len(b.files.Files[1].Content))/1e6, payload)
	p("- Network: each mode's daemons run inside a network namespace the benchmark made (`nsenter`, as the e2e network\n")
	p("  test does); its uplink `%s` (%s) is a veth into a second namespace (%s): no packet leaves the machine,\n", uplink, uplinkAddr, peerAddr)
	p("  and the host's ip_forward and scoped's links and nftables tables are checked untouched before and after.\n")
	p("- Daemons: modes differ only in the tier's `network`, the pool size, the cgroup root (`%s-<mode>`) and the\n", daemonCgroupRoot)
	p("  id range: isolation by tenant + environment; `[pool] warm_min = 0, max_workers = 4, max_concurrent = 16`;\n")
	p("  `[tiers.net] egress_allow = [%q], egress_rate = %d, ingress_rate = %d`; `[network] uplink = %q`;\n", allowRule, b.o.rate, b.o.rate, uplink)
	p("  `[log] level = \"info\"`; the rest (eBPF accounting included) at its default.\n")
	disc := fmt.Sprintf("The first %d of each daemon are discarded", b.o.warmup)
	switch b.o.warmup {
	case 0:
		disc = "None is discarded"
	case 1:
		disc = "The first of each daemon is discarded"
	}
	p("- Procedure: %d rounds, each a fresh daemon per mode (three at once) with whoami deployed to %d new tenants;\n", b.o.rounds, b.o.warmup+b.o.scopes)
	p("  once the egress pool is full and the machine back at its baseline (at most 10 %% busier over 100 ms), **one cold\n")
	p("  start every %s**, the modes taking turns in an order that rotates from step to step and round to round (each\n", b.o.pace)
	p("  daemon starts a new scope every %s). %s; the last scope is checked to have its mode's\n", time.Duration(len(b.modes))*b.o.pace, disc)
	p("  network; SIGTERM then removes every scope. %d cold starts per mode are measured (all the\n", b.o.rounds*b.o.scopes)
	p("  measurements took %s).\n", b.elapsed.Round(time.Second))
	var ready []int
	late := 0
	var maxLate time.Duration
	for _, calls := range cr.calls {
		for _, c := range calls {
			if c.poolReady >= 0 {
				ready = append(ready, c.poolReady)
			}
			if c.late > 0 {
				late++
				maxLate = max(maxLate, c.late)
			}
		}
	}
	p("- Pacing:")
	if len(ready) > 0 {
		slices.Sort(ready)
		p(" before each cold start with the pool, %d–%d namespaces were ready in it (median %d; the scope veths\n", ready[0], ready[len(ready)-1], ready[len(ready)/2])
		if ready[0] >= 1 {
			p("  less the scopes started), so every egress scope took a ready namespace.")
		} else {
			p("  less the scopes started): **the pool ran dry** at times, and those scopes made their namespace themselves.")
		}
	}
	if late > 0 {
		p(" %d starts began late (up to %s) because the previous one overran the pace.\n", late, ms(maxLate))
	} else {
		p(" No start was late: each cold start ended within the pace.\n")
	}
	if cr.settleMiss > 0 {
		p("- The machine was not back at its baseline within %s before %d of %d rounds.\n", settleMax, cr.settleMiss, b.o.rounds)
	}
	p("- Cleanup: every daemon left no cgroup, link, nftables table or changed ip_forward in its namespace; afterwards\n")
	p("  no cgroup named `*%s*` was left, and %s.\n\n", cgroupMark, b.bpfNote)

	p("### Cold start\n\n")
	p("| Mode | Cold starts | p50 | p90 | p99 | Mean |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for i, m := range b.modes {
		l := lat[i]
		p("| %s | %d | %s | %s | %s | %s |\n", m.name, len(l), ms(med(l)), ms(benchmd.Percentile(l, 90)), ms(benchmd.Percentile(l, 99)), ms(mean(l)))
	}
	p("\nRatios to none: **egress / none = %s (p50), %s (mean)**; **egress, pool off / none = %s (p50), %s (mean)**.\n",
		benchmd.DRatio(med(egress), med(none)), benchmd.DRatio(mean(egress), mean(none)), benchmd.DRatio(med(nopool), med(none)), benchmd.DRatio(mean(nopool), mean(none)))
	p("In time: egress adds %s at p50 (%s in the mean), egress without the pool %s (%s).\n",
		signedMs(med(egress)-med(none)), signedMs(mean(egress)-mean(none)), signedMs(med(nopool)-med(none)), signedMs(mean(nopool)-mean(none)))
	p("p99 is rank %d of %d cold starts, fastest first.\n\n", int(math.Ceil(0.99*float64(len(none)))), len(none))
	p("Differences of the means, ± two standard errors (the noise of this run):\n\n")
	for _, x := range []struct {
		name string
		l    []time.Duration
	}{{"egress − none", egress}, {"egress, pool off − none", nopool}} {
		d, se := mean(x.l)-mean(none), stdErr(x.l, none)
		verdict := "within the noise"
		if d > 2*se || d < -2*se {
			verdict = "beyond the noise"
		}
		p("- %s: %s ± %s (%s)\n", x.name, signedMs(d), ms(2*se), verdict)
	}
	p("\n")
	if in != nil {
		pool, nopoolE := med(in.series["pool, policy"]), med(in.series["no pool, policy"])
		p("For scale, `Egress` alone (in-process, below) takes %s with the pool and %s without: %.1f %% and\n",
			us(pool), us(nopoolE), 100*float64(pool)/float64(med(none)))
		p("%.1f %% of the p50 of a `none` cold start.\n\n", 100*float64(nopoolE)/float64(med(none)))
	}
	p("p50 per round (each round a fresh daemon per mode):\n\n")
	p("| Round | none | egress | egress, pool off |\n| ---: | ---: | ---: | ---: |\n")
	for r := range b.o.rounds {
		p("| %d |", r+1)
		for _, calls := range cr.calls {
			p(" %s |", ms(med(phase(slices.DeleteFunc(slices.Clone(calls), func(c coldCall) bool { return c.round != r }), total))))
		}
		p("\n")
	}

	p("\n### Where the difference goes\n\n")
	p("Medians of the phases of each cold start, as the daemon reports them in `Figures.cold_start` (medians need not add\n")
	p("up): **scope** = receipt to the worker's start (checks, the scope's cgroups); **network** = `netns.Manager.Egress`;\n")
	p("**sandbox** = worker cgroup, rootfs, libcontainer create and run; **handshake** = the worker's start up to its\n")
	p("handshake and gRPC connection; **reply** = the rest of the client's time (gRPC, Dispense, the call).\n\n")
	p("| Mode | scope | network | sandbox | handshake | reply | `Figures.queued` |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for i, m := range b.modes {
		f := func(f func(coldCall) time.Duration) string { return ms(med(phase(cr.calls[i], f))) }
		netCol := f(func(c coldCall) time.Duration { return c.Network })
		if m.network == "none" {
			netCol = "–"
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", m.name, f(func(c coldCall) time.Duration { return c.Scope }), netCol,
			f(func(c coldCall) time.Duration { return c.Sandbox }), f(func(c coldCall) time.Duration { return c.Handshake }),
			f(func(c coldCall) time.Duration { return c.Reply }), f(func(c coldCall) time.Duration { return c.Queued }))
	}
	p("\nWhat `Egress` does for a new egress scope, all before its sandbox starts:\n\n")
	p("1. **A namespace**: with the pool, a ready one is taken (the filler makes its successor in the background); without,\n")
	p("   it is made now: `unshare(CLONE_NEWNET)` on a locked thread, a veth pair (`eth0` inside, an isolated port of\n")
	p("   scoped's bridge outside), links up, the scope's address, a default route: each a netlink round trip.\n")
	p("2. **The allow-list**: the scope's entries in the policy's LPM map (one rule: one entry).\n")
	p("3. **eBPF attach ×5**: `connect4`, `connect6`, `sendmsg4`, `sendmsg6` and `cgroup_skb/egress` linked to the\n")
	p("   scope's cgroup (`BPF_LINK_CREATE` each; the kernel rebuilds the cgroup's effective program arrays).\n")
	p("4. **tc qdiscs**: a TBF on each end of the veth (the ingress cap outside, the egress cap on `eth0`).\n\n")
	p("The sandbox then joins that namespace instead of making an empty one, as it does for a `none` scope, which saves\n")
	p("about a bare `unshare(CLONE_NEWNET)` (below). With the pool, what is left to add is mostly the five attachments")
	if in != nil {
		pool, noise := med(in.series["pool, policy"]), 2*stdErr(egress, none)
		if pool < noise {
			p(": %s for all of `Egress`, below this run's noise (± %s)", us(pool), ms(noise))
		} else {
			p(": %s for all of `Egress` (this run's noise: ± %s)", us(pool), ms(noise))
		}
	}
	p(".\n")
	if in == nil {
		return w.End()
	}
	p("\n### In-process: `netns.Manager.Egress` alone\n\n")
	p("This process opens two `netns.Manager`s in host namespaces of their own made as above, one with a pool of %d\n", b.o.poolSize)
	p("namespaces, one without, and times `Egress` on a fresh cgroup at the daemon's scope depth, then `Net.Close`, %d\n", b.o.inprocN)
	p("times per variant, round-robin with a bare `unshare(CLONE_NEWNET)`, after a %s pause each (the pool had at least\n", b.o.inprocPace)
	p("%d ready before each pooled", in.minReady)
	p(" `Egress`). **policy** = the egress tier's: one allow-list rule and both caps; **no policy** = neither (no qdisc).\n\n")
	p("| Variant | Egress p50 | Egress p90 | Egress mean | Close p50 |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, v := range inprocVariants {
		e, c := in.series[v.name], in.series[v.name+" close"]
		p("| %s | %s | %s | %s | %s |\n", v.name, us(med(e)), us(benchmd.Percentile(e, 90)), us(mean(e)), us(med(c)))
	}
	m := func(name string) time.Duration { return med(in.series[name]) }
	p("\nBy difference of medians: a ready namespace + the allow-list + 5 attachments (pool, no policy) %s; the rule and\n", us(m("pool, no policy")))
	p("the two TBF qdiscs %s (pool: policy − no policy; %s without the pool); making the namespace %s (no pool − pool,\n",
		us(m("pool, policy")-m("pool, no policy")), us(m("no pool, policy")-m("no pool, no policy")), us(m("no pool, policy")-m("pool, policy")))
	p("with policy; %s without). `Close` runs when a scope is removed, not at its start. For scale:\n", us(m("no pool, no policy")-m("pool, no policy")))
	p("`unshare(CLONE_NEWNET)` alone, on a locked thread of the benchmark, takes %s (median of %d).\n", us(med(in.series[bare])), len(in.series[bare]))
	return w.End()
}

func signedMs(d time.Duration) string {
	if d < 0 {
		return "−" + benchmd.Ms(-d)
	}
	return "+" + benchmd.Ms(d)
}

// stdErr is the standard error of the difference of the means of a and b.
func stdErr(a, b []time.Duration) time.Duration {
	v := func(ds []time.Duration) float64 {
		if len(ds) < 2 {
			return 0
		}
		m := float64(benchmd.Mean(ds))
		var sum float64
		for _, d := range ds {
			sum += (float64(d) - m) * (float64(d) - m)
		}
		return sum / float64(len(ds)-1) / float64(len(ds))
	}
	return time.Duration(math.Sqrt(v(a) + v(b)))
}
