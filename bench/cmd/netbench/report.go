package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
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

func (b *bench) report(args string, cr coldResult, in *inprocResult) string {
	w := benchmd.NewReport("netbench", "## Scope cold start with network egress vs none")
	p := w.P
	ms3 := b.modes()
	lat := make([][]time.Duration, len(ms3))
	for i := range ms3 {
		lat[i] = phase(cr.calls[i], func(c coldCall) time.Duration { return c.Total })
	}
	none, egress, nopool := lat[0], lat[1], lat[2]

	p("What network egress adds to a scope's cold start: the first invocation of `examples/whoami` in a\n")
	p("new scope (a new tenant each time), as the client sees it, with the tenants' tier at\n")
	p("`network = \"none\"`, at `network = \"egress\"` with a pool of %d ready namespaces, and at `egress`\n", b.o.poolSize)
	p("with the pool off (`pool_size = 0`: each namespace made when its scope starts), side by side in\n")
	p("one run.\n\n")
	p("- %s\n", benchmd.Command("go run -tags seccomp ./bench/cmd/netbench", args))
	p("- Date: %s; the measurements took %s\n", benchmd.Date(), b.elapsed.Round(time.Second))
	p("- %s\n", benchmd.Machine())
	capacity := 100 * time.Millisecond * time.Duration(runtime.NumCPU())
	p("- Load average (1, 5, 15 min) at the start: %s. Before the run the rest of the machine kept %.0f %%\n", b.kit.LoadAvg,
		100*float64(b.baseline)/float64(capacity))
	p("  of its CPU time busy; while the cold starts ran, everything but the benchmark and its daemons (other\n")
	p("  processes, kernel threads, the hypervisor's steal) used %.0f %%. A busy machine inflates every mode.\n", 100*cr.otherShare)
	p("- Versions: %s, the daemon built with `-tags seccomp`; worker `examples/whoami` (Go SDK, %.1f MB,\n", runtime.Version(), float64(len(b.files.Files[1].Content))/1e6)
	p("  built with `CGO_ENABLED=0 go build` as the e2e tests do); payload %q.\n", payload)
	p("- Network: every daemon runs inside a network namespace the benchmark made (`nsenter --net=/proc/<pid>/fd/<fd>`,\n")
	p("  as the e2e network test does), one per mode; its uplink `%s` (%s) is a veth into a second\n", uplink, uplinkAddr)
	p("  namespace (%s), so no packet leaves the machine and the host's own ip_forward, links and\n", peerAddr)
	p("  nftables are never touched (checked before and after the run).\n")
	p("- Daemons: `scoped` with a private configuration that differs between modes only in the tier's\n")
	p("  `network`, the pool size, the cgroup root (`%s-<mode>`) and the host id range: isolation by\n", daemonCgroupRoot)
	p("  tenant + environment; `[pool] warm_min = 0, max_workers = 4, max_concurrent = 16, idle_timeout = \"1h\"`;\n")
	p("  `[tenants] default_tier = \"net\"`; `[tiers.net] network = \"none\" | \"egress\", egress_allow = [%q],\n", allowRule)
	p("  egress_rate = %d, ingress_rate = %d` (bytes/s); `[network] uplink = %q, pool_size = %d | 0`;\n", b.o.rate, b.o.rate, uplink, b.o.poolSize)
	p("  `[log] level = \"info\"`; everything else\n")
	p("  at its default (eBPF accounting included). The benchmark calls each over its unix socket with\n")
	p("  `client.Dial` (one connection).\n")
	p("- Procedure: %d rounds. Each starts a fresh daemon per mode (three at once, in their own\n", b.o.rounds)
	p("  namespaces), deploys whoami to %d new tenants of each (untimed), waits until the egress daemon's\n", b.o.warmup+b.o.scopes)
	p("  pool is full and the machine is back at its baseline (busy at most 10 %% of its CPU time more than\n")
	p("  before the run, over 100 ms), then makes **one cold start every %s** (start to start), the three\n", b.o.pace)
	p("  modes taking turns in an order that rotates from step to step and round to round, so each daemon\n")
	p("  starts a new scope every %s. Each cold start is a new tenant's first `Invoke`\n", time.Duration(len(ms3))*b.o.pace)
	p("  (`Figures.cold` checked). %s; the last scope is checked to\n", discarded(b.o.warmup))
	p("  have the network of its mode; the daemons are stopped with SIGTERM, which removes every scope.\n")
	p("  %d cold starts per mode are measured. Taking turns keeps a drift of the machine out of the ratios;\n", b.o.rounds*b.o.scopes)
	p("  the daemons not being timed are idle meanwhile (but their eBPF accounting programs are loaded too).\n")
	var ready []int
	late := 0
	var maxLate time.Duration
	for i := range ms3 {
		for _, c := range cr.calls[i] {
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
		p(" before each cold start with the pool, %d–%d namespaces were ready in it (median %d;\n",
			ready[0], ready[len(ready)-1], ready[len(ready)/2])
		p("  counted as the scope veths in the daemon's namespace less the scopes started; one may be half\n")
		if ready[0] >= 1 {
			p("  made), so every egress scope took a ready namespace while the filler made its successor in\n")
			p("  the background.")
		} else {
			p("  made): **the pool ran dry** at times, and those scopes made their namespace themselves.")
		}
	}
	if late > 0 {
		p(" %d starts began late (up to %s) because the previous one overran the pace.\n", late, benchmd.Ms(maxLate))
	} else {
		p(" No start was late: each cold start ended within the pace.\n")
	}
	if cr.settleMiss > 0 {
		p("- The machine was not back at its baseline within %s before %d of %d rounds.\n", settleMax, cr.settleMiss, b.o.rounds)
	}
	p("- Cleanup: every daemon stopped with SIGTERM and left no cgroup, link, nftables table or changed\n")
	p("  ip_forward in its namespace; namespaces closed, temporary directory removed; afterwards no cgroup\n")
	p("  named `*%s*` was left, and %s.\n\n", cgroupMark, b.bpfNote)

	p("### Cold start\n\n")
	p("| Mode | Cold starts | p50 | p90 | p99 | Mean |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for i, m := range ms3 {
		l := lat[i]
		p("| %s | %d | %s | %s | %s | %s |\n", m.name, len(l), benchmd.Ms(benchmd.Median(l)), benchmd.Ms(benchmd.Percentile(l, 90)), benchmd.Ms(benchmd.Percentile(l, 99)), benchmd.Ms(benchmd.Mean(l)))
	}
	p("\nRatios to none: **egress / none = %s (p50), %s (mean)**; **egress, pool off / none = %s (p50), %s (mean)**.\n",
		benchmd.DRatio(benchmd.Median(egress), benchmd.Median(none)), benchmd.DRatio(benchmd.Mean(egress), benchmd.Mean(none)),
		benchmd.DRatio(benchmd.Median(nopool), benchmd.Median(none)), benchmd.DRatio(benchmd.Mean(nopool), benchmd.Mean(none)))
	p("In time: egress adds %s at p50 (%s in the mean), egress without the pool %s (%s).\n",
		signedMs(benchmd.Median(egress)-benchmd.Median(none)), signedMs(benchmd.Mean(egress)-benchmd.Mean(none)),
		signedMs(benchmd.Median(nopool)-benchmd.Median(none)), signedMs(benchmd.Mean(nopool)-benchmd.Mean(none)))
	p("p99 is the %s of %d cold starts.\n\n", ordinal(int(math.Ceil(0.99*float64(len(none))))), len(none))
	p("Differences of the means, ± two standard errors (the noise of this run):\n\n")
	for _, x := range []struct {
		name string
		l    []time.Duration
	}{{"egress − none", egress}, {"egress, pool off − none", nopool}} {
		d, se := benchmd.Mean(x.l)-benchmd.Mean(none), stdErr(x.l, none)
		verdict := "within the noise"
		if d > 2*se || d < -2*se {
			verdict = "beyond the noise"
		}
		p("- %s: %s ± %s (%s)\n", x.name, signedMs(d), benchmd.Ms(2*se), verdict)
	}
	p("\n")
	if in != nil {
		pool, nopoolE := benchmd.Median(in.egress["pool, policy"]), benchmd.Median(in.egress["no pool, policy"])
		p("For scale, `Egress` alone (in-process, below) takes %s with the pool and %s without: %.1f %% and\n",
			benchmd.Us(pool), benchmd.Us(nopoolE), 100*float64(pool)/float64(benchmd.Median(none)))
		p("%.1f %% of the p50 of a `none` cold start.\n\n", 100*float64(nopoolE)/float64(benchmd.Median(none)))
	}
	p("p50 per round (each round a fresh daemon per mode):\n\n")
	p("| Round | none | egress | egress, pool off |\n| ---: | ---: | ---: | ---: |\n")
	for r := range b.o.rounds {
		p("| %d |", r+1)
		for i := range ms3 {
			var l []time.Duration
			for _, c := range cr.calls[i] {
				if c.round == r {
					l = append(l, c.Total)
				}
			}
			p(" %s |", benchmd.Ms(benchmd.Median(l)))
		}
		p("\n")
	}

	p("\n### Where the difference goes\n\n")
	p("Medians of the phases of each cold start, as the daemon reports them in `Figures.cold_start`\n")
	p("(medians need not add up): **scope** = the invocation's receipt to the worker's start (checks, the\n")
	p("scope's cgroups); **network** = the worker's network (`netns.Manager.Egress`); **sandbox** = worker\n")
	p("cgroup, rootfs, libcontainer create and run; **handshake** = the worker's own start up to its\n")
	p("handshake and the gRPC connection; **reply** = the rest of the client's time (gRPC to and from the\n")
	p("daemon, Dispense, the call).\n\n")
	p("| Mode | scope | network | sandbox | handshake | reply | `Figures.queued` |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for i, m := range ms3 {
		med := func(f func(coldCall) time.Duration) string { return benchmd.Ms(benchmd.Median(phase(cr.calls[i], f))) }
		netCol := med(func(c coldCall) time.Duration { return c.Network })
		if m.network == "none" {
			netCol = "–"
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", m.name, med(func(c coldCall) time.Duration { return c.Scope }), netCol,
			med(func(c coldCall) time.Duration { return c.Sandbox }), med(func(c coldCall) time.Duration { return c.Handshake }),
			med(func(c coldCall) time.Duration { return c.Reply }), med(func(c coldCall) time.Duration { return c.Queued }))
	}
	p("\nWhat `Egress` does for a new egress scope, all before its sandbox starts:\n\n")
	p("1. **A namespace**: with the pool, a ready one is taken (a channel receive; the filler makes its\n")
	p("   successor in the background); without, it is made now: `unshare(CLONE_NEWNET)` on a locked\n")
	p("   thread, a veth pair whose one end moves into the namespace as `eth0` and whose other end joins\n")
	p("   scoped's bridge as an isolated port, links up, `lo` up, the scope's address on `eth0`, a default\n")
	p("   route via the bridge, each a netlink round trip.\n")
	p("2. **The allow-list**: the scope's entries in the policy's LPM map (one rule: one entry).\n")
	p("3. **eBPF attach ×5**: `connect4`, `connect6`, `sendmsg4`, `sendmsg6` and `cgroup_skb/egress` linked to the\n")
	p("   scope's cgroup (`BPF_LINK_CREATE` each; the kernel rebuilds the cgroup's effective program arrays).\n")
	p("4. **tc qdiscs**: a TBF on each end of the veth (the ingress cap on the host's end, the egress cap\n")
	p("   on `eth0`, through a netlink handle opened in the scope's namespace).\n\n")
	p("The sandbox then joins that namespace instead of having libcontainer make an empty one with only\n")
	p("loopback, as it does for a `none` scope; that saves the sandbox's start about what a bare\n")
	p("`unshare(CLONE_NEWNET)` costs (below). With the pool, what is left to add is mostly the five\n")
	p("attachments")
	if in != nil {
		pool, noise := benchmd.Median(in.egress["pool, policy"]), 2*stdErr(egress, none)
		if pool < noise {
			p(": %s for all of `Egress`, below this run's noise (± %s)", benchmd.Us(pool), benchmd.Ms(noise))
		} else {
			p(": %s for all of `Egress` (this run's noise: ± %s)", benchmd.Us(pool), benchmd.Ms(noise))
		}
	}
	p(".\n")

	if in != nil {
		b.reportInproc(p, in)
	}
	return w.End()
}

// reportInproc renders the in-process Egress timings.
func (b *bench) reportInproc(p func(string, ...any), in *inprocResult) {
	p("\n### In-process: `netns.Manager.Egress` alone\n\n")
	p("The benchmark's own process opens two `netns.Manager`s, each in a host namespace of its own made as\n")
	p("above (uplink `%s` into a test-host namespace): one with a pool of %d namespaces, one without. It\n", uplink, b.o.poolSize)
	p("times `Egress` on a fresh cgroup at the daemon's scope depth, then `Net.Close`, %d times per\n", b.o.inprocN)
	p("variant, round-robin, after a %s pause each (the pool had at least %d ready before each pooled\n", b.o.inprocPace, in.minReady)
	p("`Egress`). **policy** = the egress tier's: one allow-list rule and both caps; **no policy** = no\n")
	p("rule and no caps (no qdisc).\n\n")
	p("| Variant | Egress p50 | Egress p90 | Egress mean | Close p50 |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, v := range inprocVariants {
		e, c := in.egress[v.name], in.close[v.name]
		p("| %s | %s | %s | %s | %s |\n", v.name, benchmd.Us(benchmd.Median(e)), benchmd.Us(benchmd.Percentile(e, 90)), benchmd.Us(benchmd.Mean(e)), benchmd.Us(benchmd.Median(c)))
	}
	med := func(name string) time.Duration { return benchmd.Median(in.egress[name]) }
	p("\nBy difference of medians: a ready namespace + the allow-list + 5 attachments (pool, no policy)\n")
	p("%s; the rule and the two TBF qdiscs %s (pool: policy − no policy; %s without the pool); making\n",
		benchmd.Us(med("pool, no policy")), benchmd.Us(med("pool, policy")-med("pool, no policy")),
		benchmd.Us(med("no pool, policy")-med("no pool, no policy")))
	p("the namespace %s (no pool − pool, with policy; %s without). `Close` (detach ×5, the map entries,\n",
		benchmd.Us(med("no pool, policy")-med("pool, policy")), benchmd.Us(med("no pool, no policy")-med("pool, no policy")))
	p("deleting the veth, closing the namespace) runs when a scope is removed, not at its start. For\n")
	p("scale: `unshare(CLONE_NEWNET)` alone, on a locked thread of the benchmark, takes %s (median of %d).\n",
		benchmd.Us(benchmd.Median(in.bare)), len(in.bare))
}

func signedMs(d time.Duration) string {
	if d < 0 {
		return "−" + benchmd.Ms(-d)
	}
	return "+" + benchmd.Ms(d)
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix + " fastest"
}

func discarded(n int) string {
	switch n {
	case 0:
		return "None is discarded"
	case 1:
		return "The first of each daemon is discarded"
	}
	return fmt.Sprintf("The first %d of each daemon are discarded", n)
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
