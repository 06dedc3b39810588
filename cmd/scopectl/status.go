package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// runStatus is `status`: the daemon's live scopes and, on a fleet node,
// the fleet as that node sees it (degraded or not, its members).
func runStatus(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "status")
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
	st, err := c.GetStatus(cctx, &scopedv1.GetStatusRequest{})
	if err != nil {
		return err
	}
	if g.output == "json" {
		return printJSON(g.stdout, st)
	}
	return printStatus(g, st, time.Now())
}

// printStatus writes st as lines and, on a fleet node, a table of the
// members; now dates how long it has been degraded.
func printStatus(g *globals, st *scopedv1.Status, now time.Time) error {
	fmt.Fprintf(g.stdout, "scopes:  %d\n", st.GetScopes())
	fs := st.GetFleet()
	if fs == nil {
		fmt.Fprintln(g.stdout, "fleet:   off (a single host)")
		return nil
	}
	fmt.Fprintf(g.stdout, "node:    %s\n", fs.GetNode())
	if fs.GetDegraded() {
		since := fs.GetDegradedSince().AsTime()
		fmt.Fprintf(g.stdout, "fleet:   DEGRADED since %s (%s): etcd unreachable; serving with the last fleet state seen (revision %d), "+
			"deploys, removals and tier changes refused\n", when(fs.GetDegradedSince()), now.Sub(since).Round(time.Second), fs.GetRevision())
		fmt.Fprintf(g.stderr, "scopectl: fleet node %s is degraded (etcd unreachable) since %s\n", fs.GetNode(), when(fs.GetDegradedSince()))
	} else {
		fmt.Fprintf(g.stdout, "fleet:   ok (revision %d)\n", fs.GetRevision())
	}
	if n := fs.GetSplitNodes(); n > 0 {
		fmt.Fprintf(g.stdout, "limits:  rate, burst and max_concurrent split between %d nodes\n", n)
	}
	fmt.Fprintf(g.stdout, "members: %d\n", len(fs.GetMembers()))
	t := newTable(g.stdout, "NODE", "ADDRESS", "LABELS", "SLOTS", "CPUS", "SCOPES", "BUSY")
	for _, n := range fs.GetMembers() {
		name := n.GetName()
		if name == fs.GetNode() {
			name += " (this)"
		}
		t.row(name, n.GetAddr(), strings.Join(n.GetLabels(), ","), strconv.Itoa(int(n.GetSlots())), strconv.Itoa(int(n.GetCpus())),
			strconv.Itoa(int(n.GetScopes())), strconv.FormatFloat(n.GetBusyCpus(), 'f', 2, 64))
	}
	return t.flush()
}
