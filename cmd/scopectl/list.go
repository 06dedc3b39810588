package main

import (
	"context"
	"fmt"
	"strconv"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func runLs(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "ls")
	tenant := f.String("tenant", "", "only this tenant (default: every tenant you may act for)")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := c.ListExtensions(cctx, &scopedv1.ListExtensionsRequest{Tenant: *tenant})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	t := newTable(g.stdout, "TENANT", "ENV", "NAME", "VERSION", "RUNTIME", "SIZE", "CREATED", "DIGEST")
	for _, e := range resp.GetExtensions() {
		t.row(e.GetTenant(), e.GetEnvironment(), e.GetName(), e.GetVersion(), e.GetRuntime(),
			size(e.GetSize()), when(e.GetCreated()), shortDigest(e.GetDigest()))
	}
	return t.flush()
}

func runScopes(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "scopes")
	tenant := f.String("tenant", "", "only this tenant")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := c.ListScopes(cctx, &scopedv1.ListScopesRequest{Tenant: *tenant})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	t := newTable(g.stdout, "SCOPE", "TENANT", "ENV", "USER", "EXTENSION", "WORKERS", "IN-FLIGHT", "CPU", "MEMORY", "PIDS")
	for _, s := range resp.GetScopes() {
		var inFlight int32
		for _, w := range s.GetWorkers() {
			inFlight += w.GetInFlight()
		}
		st := s.GetStats()
		t.row(s.GetKey(), s.GetTenant(), s.GetEnvironment(), s.GetUser(), s.GetExtension(),
			strconv.Itoa(len(s.GetWorkers())), strconv.Itoa(int(inFlight)),
			dur(st.GetCpuUsage()), size(st.GetMemoryCurrent()), strconv.FormatUint(st.GetPidsCurrent(), 10))
	}
	return t.flush()
}

func runInspect(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "inspect")
	pos, err := g.parse(f, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	s, err := c.InspectScope(cctx, &scopedv1.InspectScopeRequest{Scope: pos[0]})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, s)
	}
	st, lim := s.GetStats(), s.GetLimits()
	kv := newTable(g.stdout, "Scope:", s.GetKey())
	kv.row("Tenant:", s.GetTenant())
	kv.row("Environment:", s.GetEnvironment())
	kv.row("User:", s.GetUser())
	kv.row("Extension:", s.GetExtension())
	kv.row("Tier:", s.GetTier())
	kv.row("Cgroup:", s.GetCgroup())
	if a := s.GetNetworkAddr(); a != "" {
		kv.row("Network:", "egress from "+a)
	}
	if lvl := s.GetThrottleLevel(); lvl > 0 {
		kv.row("Throttled:", fmt.Sprintf("level %d by the noisy-neighbour controller (scopectl events)", lvl))
	}
	kv.row("Host uid:", strconv.FormatUint(uint64(s.GetHostUid()), 10))
	kv.row("CPU:", fmt.Sprintf("%s used, %s throttled; weight %d, max %s",
		dur(st.GetCpuUsage()), dur(st.GetCpuThrottled()), lim.GetCpuWeight(), cpuMax(lim.GetCpuMax())))
	kv.row("Memory:", fmt.Sprintf("%s now, %s peak, max %s; %d OOM kills",
		size(st.GetMemoryCurrent()), size(st.GetMemoryPeak()), limit(lim.GetMemoryMax(), true), st.GetOomKills()))
	kv.row("Pids:", fmt.Sprintf("%d, max %s", st.GetPidsCurrent(), limit(lim.GetPidsMax(), false)))
	if err := kv.flush(); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout)
	t := newTable(g.stdout, "WORKER", "EXTENSION", "VERSION", "PID", "STARTED", "INVOCATIONS", "IN-FLIGHT", "CGROUP")
	for _, w := range s.GetWorkers() {
		t.row(w.GetId(), w.GetExtension(), w.GetVersion(), strconv.Itoa(int(w.GetPid())), when(w.GetStarted()),
			strconv.FormatInt(w.GetInvocations(), 10), strconv.Itoa(int(w.GetInFlight())), w.GetCgroup())
	}
	return t.flush()
}

func cpuMax(v float64) string {
	if v <= 0 {
		return "none"
	}
	if v == 1 {
		return "1 CPU"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + " CPUs"
}

func limit(v int64, bytes bool) string {
	switch {
	case v <= 0:
		return "none"
	case bytes:
		return size(v)
	}
	return strconv.FormatInt(v, 10)
}

func runRm(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "rm")
	tenant := f.String("tenant", "", "tenant id (required)")
	env := f.String("env", "", "environment (required)")
	pos, err := g.parse(f, args, 1, 1)
	if err != nil {
		return err
	}
	if err := required("tenant", *tenant, "env", *env); err != nil {
		return err
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := c.RemoveExtension(cctx, &scopedv1.RemoveExtensionRequest{Tenant: *tenant, Environment: *env, Name: pos[0]})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	_, err = fmt.Fprintf(g.stdout, "removed %s/%s/%s\n", *tenant, *env, pos[0])
	return err
}
