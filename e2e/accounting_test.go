package e2e

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// bpfPrograms lists the ids of the BPF programs loaded on the machine.
func bpfPrograms(t *testing.T) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids
		}
		if err != nil {
			t.Skipf("cannot list BPF programs: %v", err)
		}
		ids = append(ids, next)
		id = next
	}
}

// TestAccounting: a scope's usage comes from eBPF where it loads (CPU of a
// spinning extension counted), and two daemon lives leave no BPF program
// behind.
func TestAccounting(t *testing.T) {
	requireBins(t)
	before := bpfPrograms(t)
	for life := range 2 {
		d := startDaemon(t, options{})
		c := d.client()
		deploy(t, c, "acme", "production", "spin", bins.spin)
		if _, err := invoke(c, "acme", "production", "spin", "200"); err != nil {
			t.Fatal(err)
		}
		s, err := c.InspectScope(context.Background(), &scopedv1.InspectScopeRequest{Scope: "acme.production"})
		if err != nil {
			t.Fatal(err)
		}
		u := s.GetUsage()
		t.Logf("life %d: source %s, cpu %s (cgroup %s), runq waits %d", life, u.GetSource(),
			u.GetCpu().AsDuration(), s.GetStats().GetCpuUsage().AsDuration(), u.GetRunqCount())
		if u.GetCpu().AsDuration().Milliseconds() < 150 {
			t.Errorf("accounted CPU %s, the extension burnt 200ms", u.GetCpu().AsDuration())
		}
		if u.GetSource() == "ebpf" && u.GetRunqCount() == 0 {
			t.Error("eBPF accounting saw no run-queue wait at all")
		}
		if u.GetSource() != "ebpf" && !strings.Contains(d.logs.String(), "accounting source") {
			t.Error("the daemon does not say which accounting source it uses")
		}
		d.stop()
	}
	var leaked []ebpf.ProgramID
	for _, id := range bpfPrograms(t) {
		if !slices.Contains(before, id) {
			leaked = append(leaked, id)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("BPF programs left after the daemon stopped: %v", leaked)
	}
}
