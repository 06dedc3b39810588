package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// runTenant is `tenant set TENANT [--tier TIER] [--allow RULE]...
// [--allow-none]`, `tenant ls` and `tenant get TENANT`.
func runTenant(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 {
		return usagef("tenant: want a subcommand: set, get or ls")
	}
	sub, args := args[0], args[1:]
	f := newFlags(g, "tenant")
	var tier *string
	var allow allowList
	var allowNone *bool
	var pos []string
	var err error
	switch sub {
	case "set":
		tier = f.String("tier", "", "the tier to place the tenant in (default: its tier now)")
		f.Var(&allow, "allow", "an egress destination, CIDR[:ports] (repeat; replaces the tenant's list)")
		allowNone = f.Bool("allow-none", false, "clear the tenant's own egress allow-list")
		if pos, err = g.parse(f, args, 1, 1); err != nil {
			return err
		}
		if *tier == "" && len(allow) == 0 && !*allowNone {
			return usagef("tenant set: want --tier, --allow or --allow-none")
		}
		if len(allow) > 0 && *allowNone {
			return usagef("tenant set: --allow and --allow-none exclude each other")
		}
	case "get":
		if pos, err = g.parse(f, args, 1, 1); err != nil {
			return err
		}
	case "ls":
		if _, err = g.parse(f, args, 0, 0); err != nil {
			return err
		}
	default:
		return usagef("tenant: unknown subcommand %q: want set, get or ls", sub)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	var tenants []*scopedv1.Tenant
	switch sub {
	case "set":
		req := &scopedv1.SetTenantRequest{Tenant: pos[0], Tier: *tier}
		if len(allow) > 0 || *allowNone {
			req.SetEgressAllow, req.EgressAllow = true, allow
		}
		if req.Tier == "" {
			cur, err := c.ListTenants(cctx, &scopedv1.ListTenantsRequest{Tenant: pos[0]})
			if err != nil {
				return err
			}
			if len(cur.GetTenants()) != 1 {
				return fmt.Errorf("tenant %s: not found", pos[0])
			}
			req.Tier = cur.GetTenants()[0].GetTier()
		}
		t, err := c.SetTenant(cctx, req)
		if err != nil {
			return err
		}
		if g.output == "json" {
			return printJSON(g.stdout, t)
		}
		tenants = []*scopedv1.Tenant{t}
	default:
		req := &scopedv1.ListTenantsRequest{}
		if sub == "get" {
			req.Tenant = pos[0]
		}
		resp, err := c.ListTenants(cctx, req)
		if err != nil {
			return err
		}
		if g.output == "json" {
			return printJSON(g.stdout, resp)
		}
		tenants = resp.GetTenants()
	}
	t := newTable(g.stdout, "TENANT", "TIER", "ASSIGNED", "SCOPES", "IN-FLIGHT", "CPU WEIGHT", "CPU MAX", "MEMORY", "RATE", "CONCURRENT", "TIMEOUT", "CPU TIME", "NETWORK")
	for _, tn := range tenants {
		s := tn.GetSettings()
		assigned := "default"
		if tn.GetAssigned() {
			assigned = when(tn.GetUpdated())
		}
		tierName := tn.GetTier()
		if s.GetSuspended() {
			tierName += " (suspended)"
		}
		t.row(tn.GetTenant(), tierName, assigned, strconv.Itoa(int(tn.GetScopes())), strconv.Itoa(int(tn.GetInFlight())),
			strconv.FormatUint(s.GetCpuWeight(), 10), cpuMax(s.GetCpuMax()), limit(s.GetMemoryMax(), true),
			rate(s.GetRate(), s.GetBurst()), unlimited(int64(s.GetMaxConcurrent())), durOrNone(s.GetTimeout().AsDuration()),
			durOrNone(s.GetCpuTime().AsDuration()), network(s, tn.GetEgressAllow()))
	}
	return t.flush()
}

// network sums up a tenant's network: the mode, and for egress the
// allow-list (the tier's, then the tenant's own).
func network(s *scopedv1.Tier, own []string) string {
	if s.GetNetwork() != "egress" {
		return "none"
	}
	all := append(append([]string(nil), s.GetEgressAllow()...), own...)
	if len(all) == 0 {
		return "egress (nothing allowed)"
	}
	return "egress to " + strings.Join(all, " ")
}

// allowList is a repeatable --allow flag.
type allowList []string

func (a *allowList) String() string { return strings.Join(*a, ",") }

func (a *allowList) Set(v string) error {
	*a = append(*a, v)
	return nil
}

func rate(r float64, burst int32) string {
	if r <= 0 {
		return "none"
	}
	if burst > 0 {
		return fmt.Sprintf("%g/s (burst %d)", r, burst)
	}
	return fmt.Sprintf("%g/s", r)
}

func unlimited(n int64) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(n, 10)
}

func durOrNone(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String()
}

// runEvents is `events [--tenant T] [--since D]`.
func runEvents(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "events")
	tenant := f.String("tenant", "", "only events about this tenant or its scopes")
	since := f.Duration("since", 0, "only events of the last D (0: all kept)")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	if *since < 0 {
		return usagef("events: --since must not be negative")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	req := &scopedv1.ListEventsRequest{Tenant: *tenant}
	if *since > 0 {
		req.Since = timestamppb.New(time.Now().Add(-*since))
	}
	resp, err := c.ListEvents(cctx, req)
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	if !resp.GetControllerEnabled() {
		fmt.Fprintln(g.stderr, "scopectl: the noisy-neighbour controller is off ([control] enabled = false)")
	}
	t := newTable(g.stdout, "TIME", "KIND", "SCOPE", "LEVEL", "VICTIMS", "REASON")
	for _, e := range resp.GetEvents() {
		scope := e.GetScope()
		if scope == "" {
			scope = "tenant " + e.GetTenant() // the fair-share rule acts on tenants
		}
		t.row(e.GetTime().AsTime().Local().Format("15:04:05.000"), e.GetKind(), scope, strconv.Itoa(int(e.GetLevel())),
			strings.Join(e.GetVictims(), ","), e.GetReason())
	}
	return t.flush()
}
