package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	vnetns "github.com/vishvananda/netns"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/netns"
)

// inprocVariant is one way of calling netns.Manager.Egress in the
// benchmark's own process.
type inprocVariant struct {
	name   string
	pool   bool // the manager keeps a pool (else every Egress makes its namespace)
	policy bool // one allow-list rule and both caps (else none)
}

var inprocVariants = []inprocVariant{
	{"pool, policy", true, true},
	{"pool, no policy", true, false},
	{"no pool, policy", false, true},
	{"no pool, no policy", false, false},
}

// inprocResult is the Egress and Close times of each variant.
type inprocResult struct {
	egress, close map[string][]time.Duration
	minReady      int             // the fewest namespaces ready in the pool before a pooled Egress
	bare          []time.Duration // unshare(CLONE_NEWNET) alone, on a locked thread
}

// manager is an in-process netns.Manager in a host namespace of its own.
type manager struct {
	tn *testNet
	m  *netns.Manager
}

// measureInproc opens two netns.Managers in namespaces of their own (one
// with a pool of -pool namespaces, one without), and times Egress and
// Net.Close on a fresh cgroup at the daemon's scope depth, round-robin over
// the variants, after a pause of -inproc-pace each.
func (b *bench) measureInproc(ctx context.Context) (_ *inprocResult, retErr error) {
	res := &inprocResult{egress: map[string][]time.Duration{}, close: map[string][]time.Duration{}, minReady: b.o.poolSize}
	tree, err := benchmd.OpenCgroupRoot(inprocCgroupRoot, logf)
	if err != nil {
		return res, err
	}
	defer func() { retErr = errors.Join(retErr, benchmd.RemoveCgroupRoot(tree)) }()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Scopes sit at <root>/<tier>/<tenant>/<scope>, as the daemon's.
	const level = 4
	mgrs := map[bool]*manager{}
	defer func() {
		for _, mg := range mgrs {
			if mg.m != nil {
				retErr = errors.Join(retErr, mg.m.Close())
				retErr = errors.Join(retErr, mg.tn.leftovers())
			}
			mg.tn.close()
		}
	}()
	for _, pool := range []bool{true, false} {
		tn, err := newTestNet()
		if err != nil {
			return res, fmt.Errorf("in-process namespaces: %w", err)
		}
		mg := &manager{tn: tn}
		mgrs[pool] = mg
		size := -1
		if pool {
			size = b.o.poolSize
		}
		state := filepath.Join(b.kit.Work, "inproc-pool-"+strconv.FormatBool(pool))
		if mg.m, err = netns.Open(netns.Config{Host: tn.host, Uplink: uplink, PoolSize: size, ScopeLevel: level, StateDir: state}, log); err != nil {
			return res, err
		}
	}
	if err := waitVeths(mgrs[true].tn, b.o.poolSize); err != nil {
		return res, err
	}
	rule, err := netns.ParseRule(allowRule)
	if err != nil {
		return res, err
	}
	full := netns.Policy{Allow: []netns.Rule{rule}, Caps: netns.Caps{Egress: uint64(b.o.rate), Ingress: uint64(b.o.rate)}}
	seq := 0
	for i := range b.o.inprocN {
		for k := range inprocVariants {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("interrupted: %w", err)
			}
			v := inprocVariants[(i+k)%len(inprocVariants)]
			mg := mgrs[v.pool]
			seq++
			node, err := tree.Node(cgroups.Limits{}, "tier", "tenant", "s"+strconv.Itoa(seq))
			if err != nil {
				return res, err
			}
			pol := netns.Policy{}
			if v.policy {
				pol = full
			}
			time.Sleep(b.o.inprocPace)
			if v.pool {
				n, err := mg.tn.scopeVeths()
				if err != nil {
					return res, err
				}
				res.minReady = min(res.minReady, n)
			}
			t0 := time.Now()
			nt, err := mg.m.Egress(node.UnifiedDir(), pol)
			t1 := time.Now()
			if err != nil {
				return res, fmt.Errorf("Egress (%s): %w", v.name, err)
			}
			if !nt.Addr().IsValid() {
				return res, fmt.Errorf("Egress (%s): no address", v.name)
			}
			t2 := time.Now()
			err = nt.Close()
			t3 := time.Now()
			if err != nil {
				return res, fmt.Errorf("Close (%s): %w", v.name, err)
			}
			res.egress[v.name] = append(res.egress[v.name], t1.Sub(t0))
			res.close[v.name] = append(res.close[v.name], t3.Sub(t2))
			if err := node.Remove(); err != nil {
				return res, err
			}
		}
		time.Sleep(b.o.inprocPace)
		d, err := bareNamespace()
		if err != nil {
			return res, err
		}
		res.bare = append(res.bare, d)
	}
	for _, pool := range []bool{true, false} {
		mg := mgrs[pool]
		err := mg.m.Close()
		mg.m = nil
		if err != nil {
			return res, err
		}
		if err := mg.tn.leftovers(); err != nil {
			return res, err
		}
	}
	logf("in-process Egress: %d per variant", b.o.inprocN)
	return res, nil
}

// waitVeths waits until tn has n scope veths (a full pool).
func waitVeths(tn *testNet, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := tn.scopeVeths()
		if err != nil {
			return err
		}
		if v >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the namespace pool has %d of %d namespaces after 20 s", v, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bareNamespace times unshare(CLONE_NEWNET) of a locked thread (what
// making a namespace costs before any link is in it), puts the thread back
// and closes the namespace.
func bareNamespace() (time.Duration, error) {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer orig.Close()
	t0 := time.Now()
	ns, nerr := vnetns.New()
	d := time.Since(t0)
	if err := vnetns.Set(orig); err != nil {
		// Left locked: the thread dies with its goroutine.
		return 0, fmt.Errorf("back to the benchmark's network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	if nerr != nil {
		return 0, nerr
	}
	ns.Close()
	return d, nil
}
