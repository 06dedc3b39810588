package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// topRow is one scope's rates between two snapshots.
type topRow struct {
	Scope      string  `json:"scope"`
	Tenant     string  `json:"tenant"`
	Source     string  `json:"source"`
	CPUPercent float64 `json:"cpu_percent"`
	RunqP99    float64 `json:"runq_p99_seconds"` // of the waits between the snapshots
	Memory     uint64  `json:"memory_bytes"`
	NetIn      float64 `json:"net_in_bytes_per_second"`
	NetOut     float64 `json:"net_out_bytes_per_second"`
	InvPerSec  float64 `json:"invocations_per_second"`
	Workers    int     `json:"workers"`
}

var topSortKeys = []string{"cpu", "runq", "memory", "net", "inv", "scope"}

func runTop(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "top")
	tenant := f.String("tenant", "", "only this tenant")
	interval := f.Duration("interval", 2*time.Second, "time between refreshes (and the window of the rates)")
	sortKey := f.String("sort", "cpu", "sort by "+strings.Join(topSortKeys, ", "))
	iterations := f.Int("n", 0, "stop after this many refreshes (0: until interrupted)")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	if !slices.Contains(topSortKeys, *sortKey) {
		return usagef("top: --sort must be one of %s", strings.Join(topSortKeys, ", "))
	}
	if *interval < 100*time.Millisecond {
		return usagef("top: --interval must be at least 100ms")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	snapshot := func() (map[string]*scopedv1.Scope, error) {
		cctx, cancel := g.callCtx(ctx)
		defer cancel()
		resp, err := c.ListScopes(cctx, &scopedv1.ListScopesRequest{Tenant: *tenant})
		if err != nil {
			return nil, err
		}
		out := map[string]*scopedv1.Scope{}
		for _, s := range resp.GetScopes() {
			out[s.GetKey()] = s
		}
		return out, nil
	}
	prev, err := snapshot()
	if err != nil {
		return err
	}
	for i := 0; *iterations == 0 || i < *iterations; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
		cur, err := snapshot()
		if err != nil {
			return err
		}
		rows := topRows(prev, cur)
		sortTop(rows, *sortKey)
		if g.output == "json" {
			// One snapshot: a JSON array, then stop.
			return printTopJSON(g, rows)
		}
		fmt.Fprint(g.stdout, "\x1b[H\x1b[2J") // clear the screen, like top
		fmt.Fprintf(g.stdout, "scoped top — %d scopes, every %s, sorted by %s\n\n", len(rows), *interval, *sortKey)
		t := newTable(g.stdout, "SCOPE", "TENANT", "CPU%", "RUNQ-P99", "MEMORY", "NET-IN/s", "NET-OUT/s", "INV/s", "WORKERS", "SOURCE")
		for _, r := range rows {
			t.row(r.Scope, r.Tenant, strconv.FormatFloat(r.CPUPercent, 'f', 1, 64), seconds(r.RunqP99), size(r.Memory),
				size(uint64(r.NetIn)), size(uint64(r.NetOut)), strconv.FormatFloat(r.InvPerSec, 'f', 1, 64),
				strconv.Itoa(r.Workers), r.Source)
		}
		if err := t.flush(); err != nil {
			return err
		}
		prev = cur
	}
	return nil
}

// topRows computes rates for the scopes present in both snapshots.
func topRows(prev, cur map[string]*scopedv1.Scope) []topRow {
	var rows []topRow
	for key, s := range cur {
		p, ok := prev[key]
		if !ok {
			continue
		}
		u, pu := s.GetUsage(), p.GetUsage()
		dt := u.GetTime().AsTime().Sub(pu.GetTime().AsTime()).Seconds()
		if dt <= 0 {
			continue
		}
		rate := func(a, b uint64) float64 {
			if a < b {
				return 0
			}
			return float64(a-b) / dt
		}
		row := topRow{
			Scope: key, Tenant: s.GetTenant(), Source: u.GetSource(),
			CPUPercent: 100 * (u.GetCpu().AsDuration() - pu.GetCpu().AsDuration()).Seconds() / dt,
			Memory:     s.GetStats().GetMemoryCurrent(),
			NetIn:      rate(u.GetNetRxBytes(), pu.GetNetRxBytes()),
			NetOut:     rate(u.GetNetTxBytes(), pu.GetNetTxBytes()),
			InvPerSec:  rate(u.GetInvocations(), pu.GetInvocations()),
			Workers:    len(s.GetWorkers()),
			RunqP99:    quantile(deltaBuckets(u.GetRunqBuckets(), pu.GetRunqBuckets()), 0.99),
		}
		rows = append(rows, row)
	}
	return rows
}

func deltaBuckets(cur, prev []uint64) []uint64 {
	out := make([]uint64, len(cur))
	for i := range cur {
		if i < len(prev) && cur[i] >= prev[i] {
			out[i] = cur[i] - prev[i]
		} else if i >= len(prev) {
			out[i] = cur[i]
		}
	}
	return out
}

// quantile of a log2 histogram (bucket i: [2^i, 2^(i+1)) ns), in seconds,
// interpolated inside the bucket; NaN when empty.
func quantile(b []uint64, q float64) float64 {
	var total uint64
	for _, n := range b {
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range b {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo := math.Ldexp(1, i)
			frac := (rank - seen) / float64(n)
			return (lo + frac*lo) / 1e9
		}
		seen += float64(n)
	}
	return math.Ldexp(1, len(b)) / 1e9
}

func seconds(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

func sortTop(rows []topRow, key string) {
	slices.SortFunc(rows, func(a, b topRow) int {
		var x, y float64
		switch key {
		case "cpu":
			x, y = a.CPUPercent, b.CPUPercent
		case "runq":
			x, y = nan0(a.RunqP99), nan0(b.RunqP99)
		case "memory":
			x, y = float64(a.Memory), float64(b.Memory)
		case "net":
			x, y = a.NetIn+a.NetOut, b.NetIn+b.NetOut
		case "inv":
			x, y = a.InvPerSec, b.InvPerSec
		default:
			return strings.Compare(a.Scope, b.Scope)
		}
		if x != y {
			if x > y {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Scope, b.Scope)
	})
}

func nan0(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

func printTopJSON(g *globals, rows []topRow) error {
	for i := range rows {
		if math.IsNaN(rows[i].RunqP99) {
			rows[i].RunqP99 = 0
		}
	}
	b, err := jsonMarshalIndent(rows)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, string(b))
	return err
}

func jsonMarshalIndent(v any) ([]byte, error) {
	if v == nil {
		return []byte("[]"), nil
	}
	return json.MarshalIndent(v, "", "  ")
}
