// Command netbench measures what network egress adds to a scope's cold
// start: the first invocation of whoami in a new scope with the tier's
// network "none", "egress" with a namespace pool, and "egress" without,
// side by side on three daemons taking turns; then netns.Manager.Egress
// alone in this process. Everything runs in network namespaces the
// benchmark makes: no packet leaves the machine, and the host's network is
// checked untouched.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	vnetns "github.com/vishvananda/netns"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("netbench: ", false)

const (
	daemonCgroupRoot = "/scoped-bench-net"
	inprocCgroupRoot = "/scoped-bench-net-inproc"
	cgroupMark       = "scoped-bench-net"
	extName          = "whoami"
	environment      = "production"
	// The daemons' scopes take host id ranges of 65536 ids from idBase,
	// far from the daemon's default (1048576) and the other benchmarks'.
	idBase = 5 << 28
)

type options struct {
	rounds, scopes, warmup, poolSize, rate, inprocN int
	pace, inprocPace                                time.Duration
	daemonLog                                       string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each starts a fresh daemon per mode")
	flag.IntVar(&o.scopes, "scopes", 20, "measured cold starts (new scopes) per mode and round")
	flag.IntVar(&o.warmup, "warmup", 1, "discarded cold starts at the start of each daemon")
	flag.DurationVar(&o.pace, "pace", 150*time.Millisecond, "one cold start every this long (start to start), the modes taking turns")
	flag.IntVar(&o.poolSize, "pool", 4, "[network] pool_size of the egress mode")
	flag.IntVar(&o.rate, "rate", 1_000_000, "the egress tier's egress_rate and ingress_rate, bytes/s")
	flag.IntVar(&o.inprocN, "inproc-n", 40, "in-process Egress timings per variant (0: skip)")
	flag.DurationVar(&o.inprocPace, "inproc-pace", 40*time.Millisecond, "in-process: pause before each Egress")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("netbench", true, func(ctx context.Context, args string) (_ []string, retErr error) {
		switch {
		case o.rounds < 1 || o.scopes < 1:
			return nil, errors.New("-rounds and -scopes must be at least 1")
		case o.warmup < 0 || o.inprocN < 0 || o.pace < 0 || o.inprocPace < 0:
			return nil, errors.New("-warmup, -inproc-n, -pace and -inproc-pace must not be negative")
		case o.poolSize < 1 || o.poolSize > 64:
			return nil, errors.New("-pool must be in 1..64 (the pool-off mode is always measured)")
		case o.rate < 1000:
			return nil, errors.New("-rate must be at least 1000 bytes/s")
		}
		b := &bench{o: o, host: vnetns.None()}
		defer func() { retErr = errors.Join(retErr, b.close()) }()
		if err := b.setup(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		cold, err := b.measureCold(ctx)
		if err != nil {
			return nil, err
		}
		var in *inprocResult
		if o.inprocN > 0 {
			if in, err = b.measureInproc(ctx); err != nil {
				return nil, err
			}
		}
		b.elapsed = time.Since(t0)
		// Clean up before writing, so that the report can say it worked.
		if err := b.close(); err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		return []string{b.report(args, cold, in)}, nil
	})
}

// bench is the benchmark's world: the kit, the modes' namespaces, and what
// it checks at the end.
type bench struct {
	o     options
	kit   *benchmd.Kit
	files *scopedv1.Bundle
	modes []*mode
	seq   int // tenants made

	host      vnetns.NsHandle // the real host's network namespace, while it is checked
	hostStart []string        // its netState at the start
	bpfStart  []ebpf.ProgramID
	bpfListed bool          // bpfStart was read
	baseline  time.Duration // the machine's busy CPU time per 100 ms before the run
	elapsed   time.Duration // the measurements, build excluded
	bpfNote   string        // what close found of BPF programs
}

// scopedName picks what scoped makes in a host: its bridge and nftables
// table (scoped0), its scopes' veths, and the benchmark's uplink.
func scopedName(n string) bool {
	return strings.HasPrefix(n, "scoped") || strings.HasPrefix(n, scopeVeth) || n == uplink
}

func (b *bench) setup() error {
	var err error
	if b.host, err = vnetns.Get(); err != nil {
		return err
	}
	if b.hostStart, err = netState(b.host, scopedName); err != nil {
		return fmt.Errorf("the host's network: %w", err)
	}
	if b.bpfStart, err = benchmd.BPFPrograms(); err != nil {
		return err
	}
	b.bpfListed = true
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return err
	}
	b.kit.Logs.Path = b.o.daemonLog
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return err
	}
	if err := b.newModes(); err != nil {
		return err
	}
	// What the rest of the machine uses: the median busy CPU time per
	// 100 ms before the benchmark runs anything.
	w := make([]time.Duration, 9)
	for i := range w {
		w[i] = benchmd.BusyWindow()
	}
	b.baseline = benchmd.Median(w)
	logf("the machine's baseline: %s busy per 100 ms of %d CPUs", b.baseline, runtime.NumCPU())
	return nil
}

// close removes everything the benchmark created and checks that nothing
// of it is left. It is safe on a partly built bench and twice.
func (b *bench) close() error {
	var errs []error
	if b.kit != nil {
		errs = append(errs, b.kit.Close())
	}
	for _, m := range b.modes {
		m.tn.close()
	}
	if b.host.IsOpen() && b.hostStart != nil {
		now, err := netState(b.host, scopedName)
		if err == nil && !slices.Equal(now, b.hostStart) {
			err = fmt.Errorf("the host's network changed from %q to %q", b.hostStart, now)
		}
		errs = append(errs, err)
		b.host.Close()
		b.host = vnetns.None()
	}
	if b.bpfListed {
		b.bpfNote, b.bpfListed = b.checkBPF(), false
	}
	return errors.Join(errs...)
}

// checkBPF waits up to 10 s for the BPF programs loaded since the start to
// be freed (the kernel frees them after an RCU grace period) and says what
// it found.
func (b *bench) checkBPF() string {
	var extra []ebpf.ProgramID
	gone, err := benchmd.Poll(10*time.Second, 100*time.Millisecond, func() (bool, error) {
		now, err := benchmd.BPFPrograms()
		extra = slices.DeleteFunc(now, func(id ebpf.ProgramID) bool { return slices.Contains(b.bpfStart, id) })
		return len(extra) == 0, err
	})
	if err != nil {
		return "BPF programs not checked: " + err.Error()
	} else if gone {
		return "no BPF program loaded during the run was left"
	}
	note := fmt.Sprintf("%d BPF programs loaded during the run were still loaded 10 s after it (ids %v; another process may have loaded them)", len(extra), extra)
	logf("warning: %s", note)
	return note
}
