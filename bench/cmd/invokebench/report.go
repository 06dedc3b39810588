package main

import (
	"fmt"
	"runtime"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

func (b *bench) report(args string, cold map[string][]time.Duration, warm []warmResult, acct, meter *pairResult) string {
	us, p50, p99 := benchmd.Us, benchmd.Median, func(ds []time.Duration) time.Duration { return benchmd.Percentile(ds, 99) }
	r := benchmd.NewReport("invokebench", "## Invocations: cold start and warm calls (issue 3), accounting (issue 4) and metering (issue 6) on vs off")
	r.P("(a) The first invocation of a new scope through the daemon (its sandboxes started by the native launcher, and by\n")
	r.P("libcontainer as before it), against the same worker started by go-plugin without a sandbox and against `runc run`\n")
	r.P("and bubblewrap of `%s`, round-robin in one run; (b) warm invocations through the daemon\n", truePath)
	r.P("against direct go-plugin calls to the same worker binary at several caller counts; (c) warm invocations through\n")
	r.P("daemons with eBPF accounting on and off; (d) with metering on and off.\n\n")
	r.P("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/invokebench", args))
	var other, wall time.Duration
	for _, w := range warm {
		other += w.daemon.cpuOther + w.direct.cpuOther
		wall += w.daemon.elapsed + w.direct.elapsed
	}
	r.P("- Load average (1, 5, 15 min) at the start: %s. While the warm calls were measured, everything but the benchmark,\n", b.kit.LoadAvg)
	r.P("  its daemon and workers used %.0f%% of the machine's CPU time; a busy machine inflates the daemon's path more.\n",
		100*float64(other)/float64(wall)/float64(runtime.NumCPU()))
	r.P("- Versions: %s, go-plugin %s, grpc %s, libcontainer %s (in the daemon), runc %s\n",
		runtime.Version(), benchmd.ModuleVersion("", "github.com/hashicorp/go-plugin"), benchmd.ModuleVersion("", "google.golang.org/grpc"),
		b.libcontainer, benchmd.ToolVersion(b.o.runc))
	r.P("- Worker: `examples/whoami` (Go SDK, %.1f MB), which answers with JSON holding its hostname, pid, uid map, cgroups\n",
		float64(len(b.files.Files[1].Content))/1e6)
	r.P("  and the payload: %d bytes of ASCII in every invocation.\n", b.o.payload)
	r.P("- Daemon: isolation by tenant + environment; `[pool] max_workers = %d, max_concurrent = %d, warm_min = 0`; cgroup\n", b.o.maxWorkers, b.o.maxConcurrent)
	r.P("  root `%s`; `[log] level = \"info\"`; the rest at its default. Two daemons serve the cold starts (the second\n", daemonCgroupRoot)
	r.P("  with `[scope] launcher = \"libcontainer\"`, its own cgroup root and id range), a fresh one the warm calls, each\n")
	r.P("  called over its unix socket with `client.Dial` (one connection).\n")
	r.P("- Cleanup: each daemon stopped with SIGTERM and left no cgroup; direct workers killed, runc state and temporary\n")
	r.P("  directories removed; afterwards no cgroup named `*%s*` was left.\n\n", cgroupMark)

	r.P("### Cold start\n\n")
	b.reportCold(r, cold)
	r.P("### Warm calls\n\n")
	r.P("Per caller count and path: %s of discarded warm-up, then %s measured in %d alternating slices (daemon,\n", b.o.warmWarmup, b.o.warmDur, b.o.slices)
	r.P("direct, direct, daemon, …). Each caller calls back to back; latency is the client's; invocations/s is calls over\n")
	r.P("the measured time. **daemon**: `Invoke` of whoami in one warm scope (tenant `%s`), the callers sharing one\n", warmTenant)
	r.P("`client.Client`; the pool grows to at most %d workers (\"Workers\": the scope's at the end). **direct**:\n", b.o.maxWorkers)
	r.P("`workerv1.WorkerClient.Invoke` on one unsandboxed worker started with go-plugin (one gRPC connection), with the\n")
	r.P("request the daemon would send.\n\n")
	r.P("| Callers | Path | Calls | p50 | p99 | Invocations/s | Workers |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, w := range warm {
		r.P("| %d | daemon | %d | %s | %s | %.0f | %d |\n", w.callers, w.daemon.calls(), us(p50(w.daemon.lat)), us(p99(w.daemon.lat)), w.daemon.perSecond(), w.workers)
		r.P("| %d | direct | %d | %s | %s | %.0f | 1 |\n", w.callers, w.direct.calls(), us(p50(w.direct.lat)), us(p99(w.direct.lat)), w.direct.perSecond())
	}
	r.P("\nRatios daemon / direct (DESIGN.md's target for a warm call: p50 at most 1.5):\n\n")
	r.P("| Callers | p50 | p99 | Invocations/s |\n| ---: | ---: | ---: | ---: |\n")
	for _, w := range warm {
		r.P("| %d | %s | %s | %s |\n", w.callers, benchmd.DRatio(p50(w.daemon.lat), p50(w.direct.lat)),
			benchmd.DRatio(p99(w.daemon.lat), p99(w.direct.lat)), benchmd.Ratio(w.daemon.perSecond(), w.direct.perSecond()))
	}
	r.P("\nWhere the daemon's time goes, medians per call from its `Figures`: edge = client latency − `duration` (gRPC\n")
	r.P("to the daemon and back, the API edge); queued = `queued` (checks, extension lookup, scope, a\n")
	r.P("worker slot); worker call = `duration` − `queued` (the daemon's gRPC call to its worker and back).\n\n")
	r.P("| Callers | edge | queued | worker call (daemon) | direct call p50 |\n| ---: | ---: | ---: | ---: | ---: |\n")
	for _, w := range warm {
		r.P("| %d | %s | %s | %s | %s |\n", w.callers, us(p50(w.daemon.edge)), us(p50(w.daemon.queued)), us(p50(w.daemon.call)), us(p50(w.direct.lat)))
	}
	if len(warm) > 0 {
		w := warm[0]
		r.P("\nWith %d %s, the daemon's p50 is %s above a direct call's: %s at the edge, %s queued, and its\n",
			w.callers, benchmd.Plural(w.callers, "caller"), us(p50(w.daemon.lat)-p50(w.direct.lat)), us(p50(w.daemon.edge)), us(p50(w.daemon.queued)))
		r.P("call to the sandboxed worker takes %s where the benchmark's direct call takes %s. The daemon's path\n", us(p50(w.daemon.call)), us(p50(w.direct.lat)))
		r.P("has two gRPC hops and three processes where the direct one has one hop and two, on %d CPUs.\n", runtime.NumCPU())
	}
	r.P("\nCPU time per invocation (user + system, from getrusage and /proc/<pid>/stat at 10 ms resolution,\n")
	r.P("divided by the calls): the callers in the benchmark process, the daemon, the worker(s).\n\n")
	r.P("| Callers | Path | callers | daemon | worker | total |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
	total := func(l load) time.Duration { return l.cpuClient + l.cpuDaemon + l.cpuWorker }
	coldCalls := 0
	for _, w := range warm {
		coldCalls += w.daemon.cold
		r.P("| %d | daemon | %s | %s | %s | %s |\n", w.callers, us(w.daemon.perCall(w.daemon.cpuClient)), us(w.daemon.perCall(w.daemon.cpuDaemon)),
			us(w.daemon.perCall(w.daemon.cpuWorker)), us(w.daemon.perCall(total(w.daemon))))
		r.P("| %d | direct | %s | – | %s | %s |\n", w.callers, us(w.direct.perCall(w.direct.cpuClient)),
			us(w.direct.perCall(w.direct.cpuWorker)), us(w.direct.perCall(total(w.direct))))
	}
	if n := len(warm); n > 0 {
		w := warm[n-1]
		d, x := w.daemon.perCall(total(w.daemon)), w.direct.perCall(total(w.direct))
		r.P("\nWith %d callers the processes measured kept %.1f (daemon) and %.1f (direct) of the %d CPUs busy.\n",
			w.callers, float64(total(w.daemon))/float64(w.daemon.elapsed), float64(total(w.direct))/float64(w.direct.elapsed), runtime.NumCPU())
		r.P("The daemon's path costs %s of CPU per invocation, the direct one %s (%s×); where the CPUs are\n", us(d), us(x), benchmd.DRatio(d, x))
		r.P("the limit, that bounds the throughput ratio at about %s.\n", benchmd.DRatio(x, d))
	}
	if coldCalls > 0 {
		r.P("\n%d measured daemon %s started a worker (the pool grew after the warm-up).\n", coldCalls, benchmd.Plural(coldCalls, "call"))
	}
	pair := func(p *pairResult, title, about, column, on, off string) {
		r.P("\n### %s\n\n%s", title, about)
		r.P("| %s | Calls | p50 | p99 | Invocations/s |\n| --- | ---: | ---: | ---: | ---: |\n", column)
		for _, x := range []struct {
			name string
			l    load
		}{{on, p.on}, {off, p.off}} {
			r.P("| %s | %d | %s | %s | %.0f |\n", x.name, x.l.calls(), us(p50(x.l.lat)), us(p99(x.l.lat)), x.l.perSecond())
		}
		r.P("\nRatio on / off: invocations/s %s, p50 %s, p99 %s.\n", benchmd.Ratio(p.on.perSecond(), p.off.perSecond()),
			benchmd.DRatio(p50(p.on.lat), p50(p.off.lat)), benchmd.DRatio(p99(p.on.lat), p99(p.off.lat)))
	}
	if acct != nil {
		pair(acct, "Warm calls with eBPF accounting on and off (issue 4)", ""+
			fmt.Sprintf("%d rounds; each starts a fresh daemon per mode (alternating which goes first), deploys whoami for a new\n", b.o.acctRounds)+
			fmt.Sprintf("tenant, warms its scope for %s and measures %s with %d callers. **on**: `[accounting] mode = \"ebpf\"`\n", b.o.warmWarmup, b.o.acctDur, b.o.acctCallers)+
			"(sched_switch and cgroup_skb programs attached, the scope tracked; the kernel's BPF\n"+
			"statistics off, the default `bpf_stats = false`); **off**: `mode = \"cgroupfs\"` (no programs: usage read from cgroup files). Both with\n"+
			"`[metrics] listen = \"off\"`, otherwise as the warm calls above.\n\n", "Accounting", "on (eBPF)", "off (cgroup files)")
	}
	if meter != nil {
		pair(meter, "Warm calls with metering on and off (issue 6)", ""+
			"As (c), with the default accounting: **on**: `[metering] enabled = true, flush = \"1s\"` (every\n"+
			"invocation counted per scope and extension; every second each scope's usage committed to the\n"+
			"SQLite ledger with its cursor, in WAL mode with synchronous=FULL); **off**: `enabled = false`.\n\n", "Metering", "on (ledger, 1 s flush)", "off")
	}
	return r.End()
}

// reportCold is the cold start's part of a report.
func (b *bench) reportCold(r *benchmd.Report, cold map[string][]time.Duration) {
	med := func(s string) string { return benchmd.Ms(benchmd.Median(cold[s])) }
	p50 := benchmd.Median
	r.P("%d measured rounds of each variant, after %d discarded warm-up %s; %s idle before each timed run.\n\n",
		b.o.n, b.o.warmup, benchmd.Plural(b.o.warmup, "round"), b.o.gap)
	r.P("| Variant | Median | p90 |\n| --- | ---: | ---: |\n")
	for _, s := range []string{sScoped, sScopedLC, sPlugin, sRunc, sBwrap} {
		r.P("| %s | %s | %s |\n", s, med(s), benchmd.Ms(benchmd.Percentile(cold[s], 90)))
	}
	sc, lc, pl, rc, bw := p50(cold[sScoped]), p50(cold[sScopedLC]), p50(cold[sPlugin]), p50(cold[sRunc]), p50(cold[sBwrap])
	target := "not met"
	if float64(sc) <= 0.3*float64(rc) {
		target = "met"
	}
	r.P("\nRatios of medians: scoped / runc run = %s (issue 18's target: at most 0.3; %s); scoped / bwrap = %s;\n",
		benchmd.DRatio(sc, rc), target, benchmd.DRatio(sc, bw))
	r.P("scoped / go-plugin = %s; scoped / scoped with libcontainer = %s; scoped with libcontainer / runc run = %s.\n\n",
		benchmd.DRatio(sc, pl), benchmd.DRatio(sc, lc), benchmd.DRatio(lc, rc))
	r.P("Phases of the daemon's cold start, medians, native launcher against libcontainer (before) in the same rounds:\n\n")
	r.P("| Phase | native | libcontainer |\n| --- | ---: | ---: |\n")
	for _, ph := range []struct{ name, s string }{{"scope (checks, lookup, the scope's cgroup nodes)", phScope},
		{"sandbox (worker cgroup leaf, launcher)", phSandbox}, {"handshake (the worker's start, go-plugin)", phHandshake},
		{"reply (first call, gRPC to the client)", phReply}, {"whole (client's view)", ""}} {
		s := ph.s
		if s == "" {
			r.P("| %s | %s | %s |\n", ph.name, med(sScoped), med(sScopedLC))
			continue
		}
		r.P("| %s | %s | %s |\n", ph.name, med(s), med(lcPrefix+s))
	}
	r.P("\n")
	r.P("Where the time goes, medians of each phase (medians need not add up to the median of the whole):\n\n")
	r.P("- scoped, from its `Figures`: %s waiting for a worker (`queued`: scope, sandbox, worker start,\n", med(pScopedQueued))
	r.P("  handshake), %s for the first call (`duration` − `queued`), %s outside the daemon's invocation\n", med(pScopedCall), med(pScopedEdge))
	r.P("  code (client latency − `duration`: gRPC on the unix socket, the API edge).\n")
	r.P("- scoped, from its `Figures.cold_start` (measured in the daemon): %s from the invocation's receipt\n", med(phScope))
	r.P("  to the worker's start (checks, extension lookup, the scope's cgroup nodes in every hierarchy); %s more\n", med(phSandbox))
	r.P("  until the sandbox runs (worker cgroup leaf, the native launcher); %s more until\n", med(phHandshake))
	r.P("  go-plugin has the handshake and the gRPC connection (the worker's own start inside the sandbox);\n")
	r.P("  %s of the client's time remain (gRPC to and from the daemon, Dispense, the first call, the reply).\n", med(phReply))
	r.P("- go-plugin: %s from `NewClient` until `Client()` returns (fork/exec, the worker's start, the\n", med(pPluginStart))
	r.P("  handshake, the gRPC connection), %s for `Dispense` and the first call.\n\n", med(pPluginCall))
	r.P("Variants: **scoped**: `Deploy` of whoami for a fresh tenant (untimed), then its first `Invoke` as the client sees\n")
	r.P("it (`Figures.cold` checked); afterwards the extension is removed and its worker awaited (untimed). **go-plugin**:\n")
	r.P("`plugin.NewClient` of the worker with scoped's handshake, then `Client()`, `Dispense` and one `Invoke`; `Kill`\n")
	r.P("afterwards (untimed). **runc run**, **bwrap**: sandboxbench's variants (runc's bundle changed to match a scoped\n")
	r.P("sandbox; bubblewrap with no cgroup and no seccomp filter), each after the same idle gap.\n\n")
}

// reportFavorDynMods is the section of a -favordynmods run: the cold
// start only.
func (b *bench) reportFavorDynMods(args string, cold map[string][]time.Duration) string {
	r := benchmd.NewReport("invokebench-favordynmods", "## Cold start with cgroup2 favordynmods on (issue 18)")
	r.P("The cold start of the section above, with the host's cgroup2 mount option `favordynmods` turned on for the run\n")
	r.P("(what the daemon's opt-in `cgroup_favordynmods = true` does while it runs) and off again afterwards; the same\n")
	r.P("daemons, variants and rounds. Warm calls, accounting and metering are not measured in this run.\n\n")
	r.P("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/invokebench", args))
	r.P("- Load average (1, 5, 15 min) at the start: %s\n", b.kit.LoadAvg)
	r.P("- Versions: %s, go-plugin %s, libcontainer %s (in the daemon), runc %s, %s\n\n",
		runtime.Version(), benchmd.ModuleVersion("", "github.com/hashicorp/go-plugin"), b.libcontainer,
		benchmd.ToolVersion(b.o.runc), benchmd.ToolVersion(b.o.bwrap))
	b.reportCold(r, cold)
	return r.End()
}
