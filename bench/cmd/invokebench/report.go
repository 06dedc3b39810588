package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// report renders the section, markers included.
func (b *bench) report(cr coldResult, warm []warmResult, acct, meter *acctResult) string {
	cold := cr.series
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }

	p("%s\n%s\n\n", markStart, sectionTitle)
	p("(a) The first invocation of a new scope through the daemon, against the same worker started by\n")
	p("go-plugin without a sandbox and against `runc run` of `%s`, interleaved round-robin in one\n", truePath)
	p("run; (b) warm invocations through the daemon against direct go-plugin calls to the same worker\n")
	p("binary, with 1, 8 and 64 concurrent callers; (c) warm invocations through daemons with eBPF\n")
	p("accounting on and off; (d) with metering on and off.\n\n")
	p("%s", benchmd.Facts(baseCommand, b.o.argsString))
	var other, wall time.Duration
	for _, r := range warm {
		other += r.daemon.cpuOther + r.direct.cpuOther
		wall += r.daemon.elapsed + r.direct.elapsed
	}
	p("- Load average (1, 5, 15 min) at the start: %s. While the warm calls were measured, everything\n", b.kit.LoadAvg)
	p("  but the benchmark, its daemon and workers (other processes, kernel threads, the hypervisor's\n")
	p("  steal) used %.0f%% of the machine's CPU time; a busy machine inflates the daemon's path more.\n",
		100*float64(other)/float64(wall)/float64(runtime.NumCPU()))
	p("- Versions: %s, go-plugin %s, grpc %s, libcontainer %s (in the daemon), runc %s\n",
		runtime.Version(), benchmd.ModuleVersion("github.com/hashicorp/go-plugin"), benchmd.ModuleVersion("google.golang.org/grpc"),
		b.libcontainer, benchmd.ToolVersion(b.o.runc))
	p("- Worker: `examples/whoami` (Go SDK), built with `CGO_ENABLED=0 go build` as the e2e tests do (%.1f MB);\n",
		float64(b.workerSz)/1e6)
	p("  it answers with JSON holding its hostname, pid, uid map, cgroups and the payload.\n")
	p("- Payload: %d bytes of ASCII in every invocation (cold and warm).\n", b.o.payload)
	p("- Daemon: `scoped` built with `-tags seccomp`, started with a private configuration: isolation by\n")
	p("  tenant + environment; `[pool] max_workers = %d, max_concurrent = %d, warm_min = 0, idle_timeout = \"1h\"`;\n",
		b.o.maxWorkers, b.o.maxConcurrent)
	p("  cgroup root `%s`; everything else at its default. One daemon serves the cold starts, a fresh\n", daemonCgroupRoot)
	p("  one the warm calls, both with `[log] level = \"info\"` (nothing logged per invocation). The benchmark calls\n")
	p("  them as root over their unix sockets with `client.Dial` (one connection each).\n")
	p("- Cleanup: each daemon stopped with SIGTERM and left no cgroup; direct workers killed, runc state\n")
	p("  and temporary directories removed; afterwards no cgroup named `*%s*` was left.\n\n", cgroupMark)

	// --- cold -------------------------------------------------------------
	p("### Cold start\n\n")
	p("%d measured rounds of each variant, after %d discarded warm-up %s; %s idle before each timed run.\n\n",
		b.o.n, b.o.warmup, benchmd.Plural(b.o.warmup, "round"), b.o.gap)
	p("| Variant | Median | p90 |\n| --- | ---: | ---: |\n")
	for _, s := range []string{sScoped, sPlugin, sRunc} {
		p("| %s | %s | %s |\n", s, benchmd.Ms(benchmd.Median(cold[s])), benchmd.Ms(benchmd.Percentile(cold[s], 90)))
	}
	sc, pl, rc := benchmd.Median(cold[sScoped]), benchmd.Median(cold[sPlugin]), benchmd.Median(cold[sRunc])
	target := "not met"
	if float64(sc) < float64(rc)/3 {
		target = "met"
	}
	p("\nRatios of medians: scoped / go-plugin = %s; scoped / runc run = %s (DESIGN.md's target: below 0.33; %s).\n\n",
		benchmd.DRatio(sc, pl), benchmd.DRatio(sc, rc), target)
	p("Where the time goes, medians of each phase (medians need not add up to the median of the whole):\n\n")
	p("- scoped, from its `Figures`: %s waiting for a worker (`queued`: scope, sandbox, worker start,\n", benchmd.Ms(benchmd.Median(cold[pScopedQueued])))
	p("  handshake), %s for the first call (`duration` − `queued`), %s outside the daemon's invocation\n",
		benchmd.Ms(benchmd.Median(cold[pScopedCall])), benchmd.Ms(benchmd.Median(cold[pScopedEdge])))
	p("  code (client latency − `duration`: gRPC on the unix socket, the API edge).\n")
	p("- scoped, from its `Figures.cold_start` (measured in the daemon): %s from the invocation's receipt\n", benchmd.Ms(benchmd.Median(cold[phScope])))
	p("  to the worker's start (checks, extension lookup, the scope's cgroup nodes in every hierarchy); %s more\n", benchmd.Ms(benchmd.Median(cold[phSandbox])))
	p("  until the sandbox runs (worker cgroup leaf, rootfs, libcontainer create and run); %s more until\n", benchmd.Ms(benchmd.Median(cold[phHandshake])))
	p("  go-plugin has the handshake and the gRPC connection (the worker's own start inside the sandbox);\n")
	p("  %s of the client's time remain (gRPC to and from the daemon, Dispense, the first call, the reply).\n", benchmd.Ms(benchmd.Median(cold[phReply])))
	p("- go-plugin: %s from `NewClient` until `Client()` returns (fork/exec, the worker's start, the\n", benchmd.Ms(benchmd.Median(cold[pPluginStart])))
	p("  handshake, the gRPC connection), %s for `Dispense` and the first call.\n\n", benchmd.Ms(benchmd.Median(cold[pPluginCall])))
	p("Variants:\n\n")
	p("- **scoped**: `Deploy` of whoami for a fresh tenant (`bench<i>`, untimed), then the time of its\n")
	p("  first `Invoke` as the client sees it; `Figures.cold` is checked. Afterwards (untimed) the\n")
	p("  extension is removed and the benchmark waits until the worker has exited.\n")
	p("- **go-plugin**: `plugin.NewClient` with `Cmd: exec.Command(<whoami>)`, the scoped handshake, gRPC,\n")
	p("  then `Client()`, `Dispense` and one `Invoke` of the worker protocol; `Kill` afterwards (untimed).\n")
	p("- **runc run**: sandboxbench's variant: `runc --root <tmp> run --bundle <tmp> <unique id>` with a\n")
	p("  bundle changed to match a scoped sandbox (pid, net, ipc, uts, mount, user and cgroup namespaces,\n")
	p("  no capabilities, read-only /usr, private /proc, /dev, /tmp, a fresh cgroup leaf; no seccomp).\n\n")

	// --- warm -------------------------------------------------------------
	p("### Warm calls\n\n")
	p("Per caller count and path: %s of discarded warm-up, then %s measured in %d alternating slices\n",
		b.o.warmWarmup, b.o.warmDur, b.o.slices)
	p("(daemon, direct, direct, daemon, …). Each caller calls back to back; latency is the client's,\n")
	p("per call; invocations/s is calls over the measured time.\n\n")
	p("- **daemon**: `Invoke` of whoami in one warm scope (tenant `%s`), all callers sharing one\n", warmTenant)
	p("  `client.Client`; the pool grows to at most %d workers of %d concurrent invocations each\n", b.o.maxWorkers, b.o.maxConcurrent)
	p("  (\"workers\" below: how many the scope had at the end of the setting).\n")
	p("- **direct**: `workerv1.WorkerClient.Invoke` on one unsandboxed whoami worker started by the\n")
	p("  benchmark with go-plugin (one worker, one gRPC connection: gRPC multiplexes the callers), with the\n")
	p("  request the daemon would send (invocation id, extension, payload, deadline).\n\n")
	p("| Callers | Path | Calls | p50 | p99 | Invocations/s | Workers |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range warm {
		p("| %d | daemon | %d | %s | %s | %.0f | %d |\n", r.callers, r.daemon.calls,
			benchmd.Us(benchmd.Median(r.daemon.lat)), benchmd.Us(benchmd.Percentile(r.daemon.lat, 99)), r.daemon.perSecond(), r.workers)
		p("| %d | direct | %d | %s | %s | %.0f | 1 |\n", r.callers, r.direct.calls,
			benchmd.Us(benchmd.Median(r.direct.lat)), benchmd.Us(benchmd.Percentile(r.direct.lat, 99)), r.direct.perSecond())
	}
	p("\nRatios daemon / direct (DESIGN.md's target for a warm call: p50 at most 1.5):\n\n")
	p("| Callers | p50 | p99 | Invocations/s |\n| ---: | ---: | ---: | ---: |\n")
	for _, r := range warm {
		p("| %d | %s | %s | %s |\n", r.callers,
			benchmd.DRatio(benchmd.Median(r.daemon.lat), benchmd.Median(r.direct.lat)),
			benchmd.DRatio(benchmd.Percentile(r.daemon.lat, 99), benchmd.Percentile(r.direct.lat, 99)),
			benchmd.Ratio(r.daemon.perSecond(), r.direct.perSecond()))
	}
	p("\nWhere the daemon's time goes, medians per call from its `Figures`: ")
	p("edge = client latency − `duration` (gRPC\n")
	p("to the daemon and back, the API edge); queued = `queued` (checks, extension lookup, scope, a\n")
	p("worker slot); worker call = `duration` − `queued` (the daemon's gRPC call to its worker and back).\n\n")
	p("| Callers | edge | queued | worker call (daemon) | direct call p50 |\n| ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range warm {
		call := make([]time.Duration, len(r.daemon.duration))
		for i := range call {
			call[i] = r.daemon.duration[i] - r.daemon.queued[i]
		}
		p("| %d | %s | %s | %s | %s |\n", r.callers, benchmd.Us(benchmd.Median(r.daemon.edge)), benchmd.Us(benchmd.Median(r.daemon.queued)),
			benchmd.Us(benchmd.Median(call)), benchmd.Us(benchmd.Median(r.direct.lat)))
	}
	if len(warm) > 0 {
		r := warm[0]
		call := make([]time.Duration, len(r.daemon.duration))
		for i := range call {
			call[i] = r.daemon.duration[i] - r.daemon.queued[i]
		}
		p("\nWith %d %s, the daemon's p50 is %s above a direct call's: %s at the edge, %s queued, and its\n",
			r.callers, benchmd.Plural(r.callers, "caller"), benchmd.Us(benchmd.Median(r.daemon.lat)-benchmd.Median(r.direct.lat)),
			benchmd.Us(benchmd.Median(r.daemon.edge)), benchmd.Us(benchmd.Median(r.daemon.queued)))
		p("call to the sandboxed worker takes %s where the benchmark's direct call takes %s. The daemon's path\n",
			benchmd.Us(benchmd.Median(call)), benchmd.Us(benchmd.Median(r.direct.lat)))
		p("has two gRPC hops and three processes where the direct one has one hop and two, on %d CPUs.\n", runtime.NumCPU())
	}
	p("\nCPU time per invocation (user + system, from getrusage and /proc/<pid>/stat at 10 ms resolution,\n")
	p("divided by the calls): the callers in the benchmark process, the daemon, the worker(s).\n\n")
	p("| Callers | Path | callers | daemon | worker | total |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
	for _, r := range warm {
		for _, x := range []struct {
			name string
			l    *load
		}{{"daemon", &r.daemon}, {"direct", &r.direct}} {
			l := x.l
			daemon := "–"
			if x.name == "daemon" {
				daemon = benchmd.Us(l.perCall(l.cpuDaemon))
			}
			p("| %d | %s | %s | %s | %s | %s |\n", r.callers, x.name, benchmd.Us(l.perCall(l.cpuClient)), daemon,
				benchmd.Us(l.perCall(l.cpuWorker)), benchmd.Us(l.perCall(l.cpuClient+l.cpuDaemon+l.cpuWorker)))
		}
	}
	if n := len(warm); n > 0 {
		r := warm[n-1]
		d := r.daemon.perCall(r.daemon.cpuClient + r.daemon.cpuDaemon + r.daemon.cpuWorker)
		x := r.direct.perCall(r.direct.cpuClient + r.direct.cpuDaemon + r.direct.cpuWorker)
		busy := func(l *load) float64 {
			return float64(l.cpuClient+l.cpuDaemon+l.cpuWorker) / float64(l.elapsed)
		}
		p("\nWith %d callers the processes measured kept %.1f (daemon) and %.1f (direct) of the %d CPUs busy.\n",
			r.callers, busy(&r.daemon), busy(&r.direct), runtime.NumCPU())
		p("The daemon's path costs %s of CPU per invocation, the direct one %s (%s×); where the CPUs are\n", benchmd.Us(d), benchmd.Us(x), benchmd.DRatio(d, x))
		p("the limit, that bounds the throughput ratio at about %s.\n", benchmd.DRatio(x, d))
	}
	coldCalls := 0
	for _, r := range warm {
		coldCalls += r.daemon.cold
	}
	if coldCalls > 0 {
		p("\n%d measured daemon %s started a worker (the pool grew after the warm-up).\n", coldCalls, benchmd.Plural(coldCalls, "call"))
	}
	if acct != nil {
		b.reportAccounting(p, acct)
	}
	if meter != nil {
		b.reportMetering(p, meter)
	}
	p("%s\n", markEnd)
	return w.String()
}

// reportAccounting renders (c), accounting on vs off.
func (b *bench) reportAccounting(p func(string, ...any), r *acctResult) {
	p("\n### Warm calls with eBPF accounting on and off (issue 4)\n\n")
	p("%d rounds; each starts a fresh daemon per mode (alternating which goes first), deploys whoami for a new\n", b.o.acctRounds)
	p("tenant, warms its scope for %s and measures %s with %d callers. **on**: `[accounting] mode = \"ebpf\"`\n",
		b.o.warmWarmup, b.o.acctDur, b.o.acctCallers)
	p("(sched_switch, sched_wakeup and cgroup_skb programs attached, the scope tracked, the kernel's BPF\n")
	p("statistics on); **off**: `mode = \"cgroupfs\"` (no programs: usage read from cgroup files). Both with\n")
	p("`[metrics] listen = \"off\"`, otherwise as the warm calls above.\n\n")
	p("| Accounting | Calls | p50 | p99 | Invocations/s |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, x := range []struct {
		name string
		l    *load
	}{{"on (eBPF)", &r.on}, {"off (cgroup files)", &r.off}} {
		p("| %s | %d | %s | %s | %.0f |\n", x.name, x.l.calls, benchmd.Us(benchmd.Median(x.l.lat)), benchmd.Us(benchmd.Percentile(x.l.lat, 99)), x.l.perSecond())
	}
	p("\nRatio on / off: invocations/s %s, p50 %s, p99 %s.\n", benchmd.Ratio(r.on.perSecond(), r.off.perSecond()),
		benchmd.DRatio(benchmd.Median(r.on.lat), benchmd.Median(r.off.lat)), benchmd.DRatio(benchmd.Percentile(r.on.lat, 99), benchmd.Percentile(r.off.lat, 99)))
}

// reportMetering renders (d), metering on vs off.
func (b *bench) reportMetering(p func(string, ...any), r *acctResult) {
	p("\n### Warm calls with metering on and off (issue 6)\n\n")
	p("As (c), with the default accounting: **on**: `[metering] enabled = true, flush = \"1s\"` (every\n")
	p("invocation counted per scope and extension; every second each scope's usage committed to the\n")
	p("SQLite ledger with its cursor, in WAL mode with synchronous=FULL); **off**: `enabled = false`.\n\n")
	p("| Metering | Calls | p50 | p99 | Invocations/s |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, x := range []struct {
		name string
		l    *load
	}{{"on (ledger, 1 s flush)", &r.on}, {"off", &r.off}} {
		p("| %s | %d | %s | %s | %.0f |\n", x.name, x.l.calls, benchmd.Us(benchmd.Median(x.l.lat)), benchmd.Us(benchmd.Percentile(x.l.lat, 99)), x.l.perSecond())
	}
	p("\nRatio on / off: invocations/s %s, p50 %s, p99 %s.\n", benchmd.Ratio(r.on.perSecond(), r.off.perSecond()),
		benchmd.DRatio(benchmd.Median(r.on.lat), benchmd.Median(r.off.lat)), benchmd.DRatio(benchmd.Percentile(r.on.lat, 99), benchmd.Percentile(r.off.lat, 99)))
}
