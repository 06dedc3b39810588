package e2e

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// programsLeft is the BPF programs that a daemon's log says its eBPF
// accounting loaded (each life's "program_ids=12,13,…"; none for the
// cgroupfs source) and that the kernel still has, after up to 10 s:
// programs are freed after an RCU grace period (and a dead cgroup's after
// its release work). Only the daemon's own ids are checked, not a diff of
// the machine's programs: other processes load and unload theirs.
func programsLeft(t *testing.T, log string) (loaded, left []ebpf.ProgramID) {
	t.Helper()
	for _, m := range regexp.MustCompile(`program_ids=([0-9,]+)`).FindAllStringSubmatch(log, -1) {
		for _, f := range strings.Split(m[1], ",") {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				t.Fatalf("program_ids %q: %v", m[1], err)
			}
			loaded = append(loaded, ebpf.ProgramID(n))
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		for _, id := range loaded {
			p, err := ebpf.NewProgramFromID(id)
			switch {
			case err == nil:
				p.Close()
				left = append(left, id)
			case !errors.Is(err, os.ErrNotExist):
				t.Errorf("BPF program %d: %v", id, err)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return loaded, left
		}
	}
}

// TestAccounting: a scope's usage comes from eBPF where it loads (CPU of a
// spinning extension counted), and two daemon lives leave no BPF program
// behind: the ids each life logged are gone from the kernel after its stop
// (not a diff of the machine's programs: other processes load theirs).
func TestAccounting(t *testing.T) {
	requireBins(t)
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
		loaded, leaked := programsLeft(t, d.logs.String())
		if u.GetSource() == "ebpf" && len(loaded) == 0 {
			t.Error("the eBPF source logged no program ids")
		}
		if len(leaked) > 0 {
			t.Errorf("life %d: BPF programs left after the daemon stopped: %v", life, leaked)
		}
	}
}
