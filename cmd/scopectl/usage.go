package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// runUsage is `usage --tenant T [--from F] [--to T] [--by KEY] [--meter M]
// [--per-window]`, printed as a table, csv or json.
func runUsage(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "usage")
	tenant := f.String("tenant", "", "the tenant (required)")
	from := f.String("from", "-24h", "start: RFC 3339 time, or a negative duration before now")
	to := f.String("to", "", "end (exclusive): RFC 3339 time or a negative duration (default: now)")
	by := f.String("by", "", "group by scope, extension or environment")
	meter := f.String("meter", "", "only this meter (e.g. cpu_seconds)")
	perWindow := f.Bool("per-window", false, "one row per window instead of sums over the range")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	if err := required("--tenant", *tenant); err != nil {
		return err
	}
	now := time.Now()
	start, err := parseWhen(*from, now)
	if err != nil {
		return usagef("usage: --from: %v", err)
	}
	end := now
	if *to != "" {
		if end, err = parseWhen(*to, now); err != nil {
			return usagef("usage: --to: %v", err)
		}
	}
	switch *by {
	case "", "scope", "extension", "environment":
	default:
		return usagef("usage: --by must be scope, extension or environment")
	}
	switch g.output {
	case "table", "json", "csv":
	default:
		return usagef("usage: -o must be table, csv or json")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := c.GetUsage(cctx, &scopedv1.GetUsageRequest{
		Tenant: *tenant, From: timestamppb.New(start), To: timestamppb.New(end), By: *by, Meter: *meter, PerWindow: *perWindow,
	})
	if err != nil {
		return err
	}
	header := []string{"TENANT", "METER", "GROUP", "WINDOW", "VALUE"}
	row := func(r *scopedv1.UsageRow) []string {
		w := ""
		if r.GetWindowStart() != nil {
			w = r.GetWindowStart().AsTime().UTC().Format(time.RFC3339)
		}
		return []string{r.GetTenant(), r.GetMeter(), r.GetGroup(), w, strconv.FormatFloat(r.GetValue(), 'g', -1, 64)}
	}
	switch g.output {
	case "json":
		return printJSON(g.stdout, resp)
	case "csv":
		w := csv.NewWriter(g.stdout)
		_ = w.Write([]string{"tenant", "meter", "group", "window_start", "value"})
		for _, r := range resp.GetRows() {
			_ = w.Write(row(r))
		}
		w.Flush()
		return w.Error()
	}
	t := newTable(g.stdout, header...)
	for _, r := range resp.GetRows() {
		t.row(row(r)...)
	}
	return t.flush()
}

// when2 parses an RFC 3339 time or a negative duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if strings.HasPrefix(s, "-") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a negative duration", s)
	}
	return t, nil
}
