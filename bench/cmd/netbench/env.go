package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// The daemons' scopes take host id ranges of 65536 ids from idBase, far
// from the daemon's default (1048576) and from the other benchmarks'.
const idBase = 5 << 28

// bench is the benchmark's world: the binaries it built, the namespaces
// its daemons run in, and what it checks at the end.
type bench struct {
	o        options
	kit      *benchmd.Kit
	files    *scopedv1.Bundle
	workerSz int64

	envs []*modeEnv // the modes' namespaces
	seq  int        // tenants made

	hostStart realHost
	bpfStart  []ebpf.ProgramID
	bpfListed bool          // bpfStart was read
	baseline  time.Duration // the machine's busy CPU time per 100 ms before the run
	elapsed   time.Duration // the measurements, build excluded
	bpfNote   string        // what close found of BPF programs
}

func newBench(o options) (_ *bench, retErr error) {
	b := &bench{o: o}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, b.close())
		}
	}()
	var err error
	if b.hostStart, err = readRealHost(); err != nil {
		return nil, fmt.Errorf("the host's network: %w", err)
	}
	if b.bpfStart, err = bpfPrograms(); err != nil {
		return nil, err
	}
	b.bpfListed = true
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs.Path = o.daemonLog
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	b.workerSz = int64(len(b.files.Files[1].Content))
	if err := b.newModeEnvs(); err != nil {
		return nil, err
	}
	b.baseline = measureBaseline()
	logf("the machine's baseline: %s busy per 100 ms of %d CPUs", b.baseline, runtime.NumCPU())
	return b, nil
}

// close removes everything the benchmark created and checks that nothing
// of it is left. It is safe on a partly built bench.
func (b *bench) close() error {
	var errs []error
	for _, e := range b.envs {
		e.tn.close()
	}
	b.envs = nil
	if b.kit != nil {
		errs = append(errs, b.kit.Close())
	}
	if b.hostStart.forward != "" {
		now, err := readRealHost()
		switch {
		case err != nil:
			errs = append(errs, err)
		case now.forward != b.hostStart.forward:
			errs = append(errs, fmt.Errorf("the host's ip_forward changed from %s to %s", b.hostStart.forward, now.forward))
		case !slices.Equal(now.links, b.hostStart.links):
			errs = append(errs, fmt.Errorf("the host's scoped links changed from %q to %q", b.hostStart.links, now.links))
		}
	}
	if b.bpfListed {
		b.bpfNote = b.checkBPF()
	}
	return errors.Join(errs...)
}

// checkBPF waits up to 10 s for the BPF programs loaded since the start to
// be freed (the kernel frees them after an RCU grace period) and says what
// it found.
func (b *bench) checkBPF() string {
	var extra []ebpf.ProgramID
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		now, err := bpfPrograms()
		if err != nil {
			return "BPF programs not checked: " + err.Error()
		}
		extra = extra[:0]
		for _, id := range now {
			if !slices.Contains(b.bpfStart, id) {
				extra = append(extra, id)
			}
		}
		if len(extra) == 0 {
			return "no BPF program loaded during the run was left"
		}
		if time.Now().After(deadline) {
			break
		}
	}
	note := fmt.Sprintf("%d BPF programs loaded during the run were still loaded 10 s after it (ids %v; another process may have loaded them)", len(extra), extra)
	logf("warning: %s", note)
	return note
}

func bpfPrograms() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing BPF programs: %w", err)
		}
		ids = append(ids, next)
		id = next
	}
}

// measureBaseline is the median busy CPU time per 100 ms of the machine
// before the benchmark runs anything: what the rest of the machine uses.
func measureBaseline() time.Duration {
	w := make([]time.Duration, 9)
	for i := range w {
		w[i] = benchmd.BusyWindow()
	}
	return benchmd.Median(w)
}
