package main

import (
	"maps"
	"math"
	"runtime"
	"slices"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/fleet/route"
)

// verdict is "met" or "missed".
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (b *bench) report(args string, res *results) string {
	o := b.o
	ms := func(d time.Duration) string { return benchmd.MsP(d, 0) }
	r := benchmd.NewReport("fleetbench", "## A fleet on etcd: scopes moved when a node leaves, balance, kill -9 failover, [fleet] on vs off (issue 15)")
	r.P("Real daemons on loopback, each a fleet node with its TLS API on 127.0.0.1, sharing a real etcd embedded in the\n")
	r.P("benchmark (one member, on 127.0.0.1); applications' calls go through `client.DialFleet` (rendezvous hashing with\n")
	r.P("bounded load, `fleet/route`, bound %.2f) unless said otherwise. No packet leaves loopback.\n\n", route.Bound)
	r.P("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/fleetbench", args))
	r.P("- Load average (1, 5, 15 min) at the start: %s (the machine is shared; see the CPU others used below).\n", b.loadAvg)
	r.P("- Versions: %s, etcd %s (embedded), grpc %s\n", runtime.Version(),
		benchmd.ModuleVersion("", "go.etcd.io/etcd/server/v3"), benchmd.ModuleVersion("", "google.golang.org/grpc"))
	r.P("- Nodes: %d daemons n1…n%d, each with `[fleet] lease_ttl = \"%s\"`, its TLS API on a loopback port (certificates of\n", o.nodes, o.nodes, o.leaseTTL)
	r.P("  a CA the benchmark made with internal/tlstest), %d id slots of its own, cgroup root `/%s-<node>` and its own\n", idSlots, cgroupMark)
	r.P("  state and runtime directories; `[isolation] by = [\"user\"]` (a scope per user), `[pool] max_workers = 4,\n")
	r.P("  max_concurrent = 16, idle_timeout = \"1h\"`, `[accounting] mode = \"cgroupfs\"`, `[metrics] listen = \"off\"`; the\n")
	r.P("  fleet client authenticates with a `[[client]]` token.\n")
	r.P("- Worker: `examples/whoami`, deployed once through n1's socket (the fleet registers it; the other nodes fetch it\n")
	r.P("  from a holder over mutual TLS, sha256-checked, on their first call); %d bytes of payload in every invocation.\n", o.payload)
	r.P("- Cleanup: every daemon stopped with SIGTERM (the killed ones after their restart) and left no cgroup; then etcd\n")
	r.P("  stopped and its data removed; afterwards no cgroup named `*%s*` and no process of the benchmark was left.\n\n", cgroupMark)

	r.P("### Scopes moved when a node leaves (goal ≈ 1/N, and none of the other nodes' scopes)\n\n")
	r.P("%d scope keys (tenant `%s`, users u000…) ranked by the fleet client (`FleetClient.Route`, the ranking its `Invoke`\n", o.scopes, tenant)
	r.P("uses) before a node left and again once the client no longer listed it. Down to three nodes they leave with SIGTERM\n")
	r.P("(the lease is revoked) before any scope is live; the last row is the first kill -9 below, with every scope live.\n\n")
	r.P("| Nodes | How the node left | Keys ranked on it before | Moved | Moved / keys | 1/N ± σ | Other keys moved (goal 0) |\n")
	r.P("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	allOK := true
	for _, m := range res.moves {
		share := float64(m.moved) / float64(m.total)
		allOK = allOK && m.movedOthers == 0 && m.moved == m.onLeaving
		r.P("| %d → %d | %s | %d | %d | %.3f | %.3f ± %.3f | %d |\n", m.n, m.n-1, m.how, m.onLeaving, m.moved, share,
			1/float64(m.n), stddevShare(m.total, m.n), m.movedOthers)
	}
	r.P("\nOnly the leaving node's keys moved: %s. The moved share differs from 1/N by the hash's spread over %d keys\n", verdict(allOK), o.scopes)
	r.P("(± one standard deviation of a fair share, as a binomial count).\n\n")

	f := res.fill
	r.P("### Balance (goal: max/avg live scopes per node ≤ %.2f)\n\n", route.Bound)
	r.P("%d scopes invoked through `DialFleet`, %d callers at a time, in %s (each a first call: a cold start, and on each\n", o.scopes, o.fillCallers, benchmd.Secs(f.wall))
	r.P("node's first the bundle's fetch); then each daemon's `ListScopes` counted the live scopes.\n\n")
	r.P("| Node | Live scopes |\n| --- | ---: |\n")
	names := slices.Sorted(maps.Keys(f.perNode))
	most, sum := 0, 0
	for _, n := range names {
		r.P("| %s | %d |\n", n, f.perNode[n])
		most, sum = max(most, f.perNode[n]), sum+f.perNode[n]
	}
	avg := float64(sum) / float64(len(names))
	r.P("\nmax/avg = %.3f (%s). %d of %d scopes live on the node the client ranked first when it called, %d on more than\n",
		float64(most)/avg, verdict(float64(most)/avg <= route.Bound), f.placed, o.scopes, f.twice)
	r.P("one node; %d of the %d first calls started a worker. First calls p50 / p90 / p99: %s.\n", f.cold, o.scopes, benchmd.Pcts(f.first, 1))
	r.P("A second call of every scope: %d of %d found a warm worker (the same node), p50 / p90 / p99 %s.\n\n",
		f.warm, o.scopes, benchmd.Pcts(f.second, 2))

	r.P("### kill -9 of a node → the first successful call of one of its scopes (lease_ttl %s)\n\n", o.leaseTTL)
	r.P("Each repetition takes a node in turn, makes two fresh scopes ranked first on it live there, and kills it with\n")
	r.P("SIGKILL. From the SIGKILL: **idempotent**: one call of the first scope marked `client.Idempotent`, which the\n")
	r.P("client retries on the next ranked node when its node went away; **plain**: calls of the second scope, not marked,\n")
	r.P("which fail `UNAVAILABLE` while the client still ranks the dead node first; the caller repeats one every %s\n", retryGap)
	r.P("until one succeeds; **gone**: the fleet client no longer lists the node (its lease expired in etcd, the watch\n")
	r.P("told the client). Then the node is started again on what it left and rejoins (**rejoined**: from its restart\n")
	r.P("until the client lists it), and the scopes lost with it are invoked again (**lost**), which gives it back its share.\n")
	r.P("**Away** counts the live scopes that the client ranks first on another node than theirs (their next call would\n")
	r.P("start cold there): right after the rejoin, and again once the rejoined node's record showed its new scopes.\n\n")
	r.P("| # | Node | Its live scopes | Idempotent call | Plain call | Failed plain attempts | Gone | Plain's worker start | Rejoined | Away after the rejoin | Lost | Away after those |\n")
	r.P("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var idem, plain, gone, start, plainGone []time.Duration
	var idemErrs []error
	awayMax := 0
	for i, k := range res.kills {
		is := ms(k.idem)
		if k.idemErr != nil {
			is = "failed"
			idemErrs = append(idemErrs, k.idemErr)
		} else {
			idem = append(idem, k.idem)
		}
		st := "warm"
		if k.plainCold {
			st = ms(k.plainQueued)
			start = append(start, k.plainQueued)
		}
		plain, gone, plainGone = append(plain, k.plain), append(gone, k.gone), append(plainGone, k.plain-k.gone)
		awayMax = max(awayMax, k.away)
		r.P("| %d | %s | %d | %s | %s | %d | %s | %s | %s | %d of %d | %d | %d |\n", i+1, k.node, k.scopes, is, ms(k.plain), k.plainFails,
			ms(k.gone), st, ms(k.rejoin), k.away, k.live, k.lost, k.awayAfter)
	}
	mx := func(ds []time.Duration) time.Duration { return benchmd.Percentile(ds, 100) }
	r.P("\nMedian / max: idempotent %s / %s", ms(benchmd.Median(idem)), ms(mx(idem)))
	if len(idemErrs) > 0 {
		r.P(" (%d failed: %v)", len(idemErrs), idemErrs[0])
	}
	r.P("; plain %s / %s; gone %s / %s. A plain caller's first success within the lease TTL: %s.\n",
		ms(benchmd.Median(plain)), ms(mx(plain)), ms(benchmd.Median(gone)), ms(mx(gone)), verdict(mx(plain) <= o.leaseTTL))
	r.P("Where the time goes: a node refreshes its lease every %s, so its record expires %s to %s after the kill,\n",
		min(2*time.Second, o.leaseTTL/4), o.leaseTTL-min(2*time.Second, o.leaseTTL/4), o.leaseTTL)
	r.P("plus etcd's expiry check and the watch to the client (gone); the plain call then succeeds after at most one\n")
	r.P("retry gap and a cold start on the next node (median worker start %s; plain − gone, median %s). The idempotent\n",
		ms(benchmd.Median(start)), ms(benchmd.Median(plainGone)))
	r.P("call does not wait for the lease: the broken connection sends it to the next node at once.\n")
	if awayMax > 0 {
		r.P("A node that rejoins empty pulls other nodes' scopes: with bounded load the others, above %.2f × the average\n", route.Bound)
		r.P("that the empty node brings down, rank after it for every key, so up to %d live scopes would have started cold on\n", awayMax)
		r.P("it had they been called before it took back its share (the benchmark called only the lost ones meanwhile).\n")
	}
	r.P("\n")

	r.P("### Warm calls with [fleet] on vs off (goal: on/off invocations/s ≥ 0.98)\n\n")
	oo := res.onOff
	r.P("Three daemons side by side with the same settings: a fleet node (on) and two without `[fleet]` (off, and a\n")
	r.P("control that shows how far two like daemons differ here), each with one warm scope of whoami (tenant `%s`).\n", warmTenant)
	r.P("%d rounds; in each, on, off and the control run %s each with %d callers back to back, off in the middle and on\n", len(oo.rounds), o.slice, o.callers)
	r.P("and the control first in every other round, then the fourth variant; %s of warm-up per variant before. On,\n", o.warmup)
	r.P("off and the control are called with `client.Dial` on their unix sockets (one connection each): the same client,\n")
	r.P("extension and request. The fourth variant calls the fleet node through `DialFleet` (TLS 1.3 on loopback TCP,\n")
	r.P("bearer token), for reference.\n\n")
	r.P("| Variant | Calls | p50 | p99 | Invocations/s | Daemon CPU per call | Worker CPU per call | Workers |\n")
	r.P("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	tot := map[string]*load{}
	for _, v := range variants {
		t := &load{}
		for _, rd := range oo.rounds {
			t.add(rd[v])
		}
		tot[v] = t
		per := func(d time.Duration) string { return benchmd.Us(d / time.Duration(max(t.calls, 1))) }
		r.P("| %s | %d | %s | %s | %.0f | %s | %s | %d |\n", v, t.calls, benchmd.Us(benchmd.Median(t.lat)),
			benchmd.Us(benchmd.Percentile(t.lat, 99)), t.perSecond(), per(t.daemon), per(t.worker), oo.workers[v])
	}
	var ratios, ctls []float64
	r.P("\n| Round | On, calls/s | Off, calls/s | Control, calls/s | On / off | Control / off | Others' CPU during on / off / control |\n")
	r.P("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for i, rd := range oo.rounds {
		on, off, ctl := rd[vOn], rd[vOff], rd[vCtl]
		ratios, ctls = append(ratios, on.perSecond()/off.perSecond()), append(ctls, ctl.perSecond()/off.perSecond())
		r.P("| %d | %.0f | %.0f | %.0f | %.3f | %.3f | %.0f%% / %.0f%% / %.0f%% |\n", i+1, on.perSecond(), off.perSecond(), ctl.perSecond(),
			ratios[i], ctls[i], 100*on.others(), 100*off.others(), 100*ctl.others())
	}
	sorted, sortedCtl := slices.Sorted(slices.Values(ratios)), slices.Sorted(slices.Values(ctls))
	med := medianF(sorted)
	r.P("\nOn / off invocations/s: median of the rounds %.3f (%s), range %.3f–%.3f; pooled %.3f. p50 latency on / off: %s.\n",
		med, verdict(med >= 0.98), sorted[0], sorted[len(sorted)-1], tot[vOn].perSecond()/tot[vOff].perSecond(),
		benchmd.DRatio(benchmd.Median(tot[vOn].lat), benchmd.Median(tot[vOff].lat)))
	r.P("Control / off, two daemons without `[fleet]`: median %.3f, range %.3f–%.3f; pooled %.3f.\n",
		medianF(sortedCtl), sortedCtl[0], sortedCtl[len(sortedCtl)-1], tot[vCtl].perSecond()/tot[vOff].perSecond())
	perCall := func(v string) float64 { return float64(tot[v].daemon+tot[v].worker) / float64(max(tot[v].calls, 1)) }
	part := func(v string, d time.Duration) float64 { return float64(d) / float64(max(tot[v].calls, 1)) }
	r.P("CPU per call (daemon + worker) on / off: %.3f (daemon %s, worker %s); control / off: %.3f (daemon %s, worker %s).\n",
		perCall(vOn)/perCall(vOff), benchmd.Ratio(part(vOn, tot[vOn].daemon), part(vOff, tot[vOff].daemon)),
		benchmd.Ratio(part(vOn, tot[vOn].worker), part(vOff, tot[vOff].worker)),
		perCall(vCtl)/perCall(vOff), benchmd.Ratio(part(vCtl, tot[vCtl].daemon), part(vOff, tot[vOff].daemon)),
		benchmd.Ratio(part(vCtl, tot[vCtl].worker), part(vOff, tot[vOff].worker)))
	r.P("What a fleet node adds to an invocation is its extension lookup (`fleetLink.extension`: the fleet's registry in\n")
	r.P("memory, then the local store): about 1%% of its daemon's CPU samples in a `perf record` of the on and off daemons\n")
	r.P("under this load (taken by hand when this benchmark was written). The worker does the same work under every\n")
	r.P("daemon: a difference in its CPU per call, like the control's, is the machine's, not the daemon's.\n")
	r.P("Through DialFleet / on the socket: invocations/s %s, p50 %s.\n",
		benchmd.Ratio(tot[vFleet].perSecond(), tot[vOn].perSecond()), benchmd.DRatio(benchmd.Median(tot[vFleet].lat), benchmd.Median(tot[vOn].lat)))
	r.P("Idle, before the rounds, the fleet node's daemon used %s of CPU over %s (keeping its lease and record,\n", ms(oo.idle[vOn]), idleWindow)
	r.P("watching the fleet), the other %s. CPU times are from /proc at 10 ms resolution; the benchmark's own (callers,\n", ms(oo.idle[vOff]))
	r.P("the fleet client and etcd) is left out of the per-call figures.\n")
	return r.End()
}

func stddevShare(n, nodes int) float64 {
	p := 1 / float64(nodes)
	return math.Sqrt(p * (1 - p) / float64(n))
}

func medianF(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
