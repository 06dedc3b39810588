package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/fleet/record"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// results is what the benchmark measured.
type results struct {
	moves []move
	fill  fillResult
	kills []kill
	onOff onOffResult
}

// move is what one node's leave did to the ranking of the scope keys.
type move struct {
	n                  int    // nodes before the leave
	how                string // how it left, with the fleet's load
	leaving            string
	total, onLeaving   int // keys; keys ranked first on the leaving node before
	moved, movedOthers int // keys whose first node changed; those not on the leaving node
}

// fillResult is the scopes invoked through the fleet client, twice.
type fillResult struct {
	wall          time.Duration   // of the first calls
	first, second []time.Duration // the calls' times, as the client saw them
	cold, warm    int             // first calls that started a worker, second calls that did not
	perNode       map[string]int  // the tenant's live scopes on each node
	placed        int             // scopes live on the node the client ranked first when it called
	twice         int             // scopes live on more than one node
}

// kill is one kill -9 of a node, times from the SIGKILL (see the report).
type kill struct {
	node                        string
	scopes, plainFails          int
	idem, plain, gone, rejoin   time.Duration
	idemErr                     error
	plainCold                   bool
	plainQueued                 time.Duration // the plain call's Figures.queued, its worker's start
	live, away, lost, awayAfter int
}

// retryGap is how long a plain caller waits between attempts.
const retryGap = 50 * time.Millisecond

// user is the i-th scope's user (isolation by user: one scope each).
func user(i int) string { return fmt.Sprintf("u%03d", i) }

func (b *bench) request(tenant, user string) *scopedv1.InvokeRequest {
	return &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, User: user, Payload: b.payload}
}

// call invokes user's scope through the fleet client within timeout,
// marked idempotent when idem is set, and checks the reply.
func (b *bench) call(ctx context.Context, user string, idem bool, timeout time.Duration) (*scopedv1.InvokeResponse, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if idem {
		cctx = client.Idempotent(cctx)
	}
	t0 := time.Now()
	resp, err := b.fc.Invoke(cctx, b.request(tenant, user))
	took := time.Since(t0)
	if err == nil {
		err = benchmd.CheckWhoami(resp.GetResult(), string(b.payload))
	}
	if err != nil {
		return nil, took, fmt.Errorf("invoke for %s through the fleet client: %w", user, err)
	}
	return resp, took, nil
}

// rankAll is the node the fleet client ranks first for each scope key; it
// notes the keys, by user, in b.keys.
func (b *bench) rankAll() (map[string]string, error) {
	m := map[string]string{}
	b.keys = make([]string, b.o.scopes)
	for i := range b.o.scopes {
		key, ns, err := b.fc.Route(tenant, environment, user(i), extName)
		if err != nil {
			return nil, err
		}
		m[key], b.keys[i] = ns[0].Name, key
	}
	return m, nil
}

// routedAway counts the scope keys live somewhere but ranked first on a
// node where they are not: their next call would start them cold.
func (b *bench) routedAway(ctx context.Context) (int, map[string][]string, error) {
	where, err := b.liveOn(ctx)
	if err != nil {
		return 0, nil, err
	}
	ranks, err := b.rankAll()
	if err != nil {
		return 0, nil, err
	}
	away := 0
	for key, first := range ranks {
		if ns := where[key]; len(ns) > 0 && !slices.Contains(ns, first) {
			away++
		}
	}
	return away, where, nil
}

func compare(n int, how, leaving string, before, after map[string]string) move {
	m := move{n: n, how: how, leaving: leaving, total: len(before)}
	for k, first := range before {
		if first == leaving {
			m.onLeaving++
		}
		if after[k] != first {
			m.moved++
			if first != leaving {
				m.movedOthers++
			}
		}
	}
	logf("%d → %d nodes (%s left): %d of %d keys moved (%d were on it, %d others)", n, n-1, leaving, m.moved, m.total, m.onLeaving, m.movedOthers)
	return m
}

// measureFleet starts the fleet, measures the moves as nodes leave down to
// three, fills the scopes, and kills nodes in turn; it stops the fleet.
func (b *bench) measureFleet(ctx context.Context, res *results) error {
	for i := range b.o.nodes {
		n, err := b.startNode(ctx, fmt.Sprintf("n%d", i+1), i, true)
		if err != nil {
			return err
		}
		b.nodes = append(b.nodes, n)
	}
	if err := b.nodes[0].d.Deploy(ctx, tenant, environment, extName, b.files); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if b.fc, err = client.DialFleet(dctx, client.FleetOptions{Endpoints: []string{b.endpoint}, CA: b.ca.CertFile(), Token: token}); err != nil {
		return err
	}
	if _, err := b.waitView(b.nodes); err != nil {
		return err
	}
	// Nodes leave one by one (SIGTERM: the lease is revoked) before any
	// scope is live: rendezvous hashing alone.
	for len(b.nodes) > 3 {
		before, err := b.rankAll()
		if err != nil {
			return err
		}
		last := b.nodes[len(b.nodes)-1]
		if _, err := b.kit.StopDaemon(last.d, 0); err != nil {
			return err
		}
		b.nodes = b.nodes[:len(b.nodes)-1]
		if _, err := b.waitView(b.nodes); err != nil {
			return err
		}
		after, err := b.rankAll()
		if err != nil {
			return err
		}
		res.moves = append(res.moves, compare(len(b.nodes)+1, "SIGTERM, no live scope", last.name, before, after))
	}
	if err := b.fill(ctx, &res.fill); err != nil {
		return err
	}
	for rep := range b.o.kills {
		k, err := b.killOne(ctx, rep, res)
		if err != nil {
			return fmt.Errorf("kill %d: %w", rep+1, err)
		}
		res.kills = append(res.kills, k)
	}
	for _, n := range b.nodes {
		if _, err := b.kit.StopDaemon(n.d, 0); err != nil {
			return err
		}
	}
	b.nodes = nil
	return nil
}

// liveOn lists the tenant's live scopes on each node, by key.
func (b *bench) liveOn(ctx context.Context) (map[string][]string, error) {
	where := map[string][]string{}
	for _, n := range b.nodes {
		l, err := n.d.C.ListScopes(ctx, &scopedv1.ListScopesRequest{Tenant: tenant})
		if err != nil {
			return nil, fmt.Errorf("list scopes on %s: %w", n.name, err)
		}
		for _, s := range l.GetScopes() {
			where[s.GetKey()] = append(where[s.GetKey()], n.name)
		}
	}
	return where, nil
}

// fill invokes every scope through the fleet client (noting the node it
// ranked first), counts the live scopes per node, then invokes each once
// more.
func (b *bench) fill(ctx context.Context, f *fillResult) error {
	n := b.o.scopes
	routed, keys := make([]string, n), make([]string, n)
	f.first, f.second = make([]time.Duration, n), make([]time.Duration, n)
	// callAll calls every scope and counts the calls that started a worker.
	callAll := func(took []time.Duration) (int, error) {
		var cold atomic.Int64
		err := benchmd.Parallel(ctx, b.o.fillCallers, n, func(ctx context.Context, i int) error {
			if routed[i] == "" {
				key, ns, err := b.fc.Route(tenant, environment, user(i), extName)
				if err != nil {
					return err
				}
				routed[i], keys[i] = ns[0].Name, key
			}
			resp, d, err := b.call(ctx, user(i), false, callTimeout)
			if err == nil && resp.GetFigures().GetCold() {
				cold.Add(1)
			}
			took[i] = d
			return err
		})
		return int(cold.Load()), err
	}
	logf("invoking %d scopes through the fleet client, %d at a time", n, b.o.fillCallers)
	t0 := time.Now()
	var err error
	if f.cold, err = callAll(f.first); err != nil {
		return err
	}
	f.wall = time.Since(t0)
	where, err := b.liveOn(ctx)
	if err != nil {
		return err
	}
	f.perNode = map[string]int{}
	for _, nn := range b.nodes {
		f.perNode[nn.name] = 0
	}
	for _, ns := range where {
		for _, nn := range ns {
			f.perNode[nn]++
		}
		if len(ns) > 1 {
			f.twice++
		}
	}
	for i, r := range routed {
		if slices.Contains(where[keys[i]], r) {
			f.placed++
		}
	}
	logf("filled in %s: live scopes per node %v; %d placed where ranked", f.wall.Round(time.Millisecond), f.perNode, f.placed)
	cold, err := callAll(f.second)
	f.warm = n - cold
	return err
}

// probesOn makes two fresh scopes live on k that the fleet client ranks
// first there, and returns their users (fewer if 1000 fresh keys do not do).
func (b *bench) probesOn(ctx context.Context, rep int, k *node) ([]string, error) {
	var probes []string
	for j := 0; len(probes) < 2 && j < 1000; j++ {
		u := fmt.Sprintf("k%d-%s-%d", rep, k.name, j)
		key, ns, err := b.fc.Route(tenant, environment, u, extName)
		if err != nil {
			return nil, err
		}
		if ns[0].Name != k.name {
			continue
		}
		if _, _, err := b.call(ctx, u, false, callTimeout); err != nil {
			return nil, err
		}
		if _, err := k.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: key}); err != nil {
			return nil, fmt.Errorf("scope %s is not live on %s, where the client ranked it: %w", key, k.name, err)
		}
		probes = append(probes, u)
	}
	return probes, nil
}

// killOne kills the next node with SIGKILL (one over its bound, that no
// fresh key ranks first, is passed over) and times, from then, an
// idempotent call of one of its scopes, a plain call of another repeated
// until it succeeds, and when the fleet client stops listing the node. It
// restarts the node and measures what is routed away. The first kill also
// measures the moves with every scope live.
func (b *bench) killOne(ctx context.Context, rep int, res *results) (kill, error) {
	var k *node
	var probes []string
	for c := range len(b.nodes) {
		k = b.nodes[(rep+c)%len(b.nodes)]
		var err error
		if probes, err = b.probesOn(ctx, rep, k); err != nil {
			return kill{}, err
		} else if len(probes) == 2 {
			break
		}
	}
	kl := kill{node: k.name}
	if len(probes) < 2 {
		return kl, fmt.Errorf("no two of 1000 keys rank any node first (the fleet client's nodes: %+v)", b.fc.Nodes())
	}
	l, err := k.d.C.ListScopes(ctx, &scopedv1.ListScopesRequest{})
	if err != nil {
		return kl, err
	}
	var before map[string]string
	kl.scopes = len(l.GetScopes())
	if rep == 0 {
		if before, err = b.rankAll(); err != nil {
			return kl, err
		}
	}
	firstLog := filepath.Join(b.work, "daemon-"+k.name+".log")
	b.kit.Forget(k.d)
	logf("kill -9 of %s (%d live scopes)", k.name, kl.scopes)
	t0 := time.Now()
	if err := k.d.Kill(); err != nil {
		return kl, err
	}
	var wg sync.WaitGroup
	var goneErr, plainErr error
	wg.Go(func() {
		ok, _ := benchmd.Poll(3*b.o.leaseTTL+30*time.Second, 2*time.Millisecond, func() (bool, error) {
			return !slices.ContainsFunc(b.fc.Nodes(), func(n record.Node) bool { return n.Name == k.name }), nil
		})
		kl.gone = time.Since(t0)
		if !ok {
			goneErr = fmt.Errorf("the fleet client still lists %s %s after its kill", k.name, kl.gone.Round(time.Second))
		}
	})
	wg.Go(func() {
		_, _, kl.idemErr = b.call(ctx, probes[0], true, callTimeout)
		kl.idem = time.Since(t0)
	})
	wg.Go(func() {
		for deadline := t0.Add(3*b.o.leaseTTL + 30*time.Second); ; {
			resp, _, err := b.call(ctx, probes[1], false, 5*time.Second)
			if err == nil {
				kl.plain = time.Since(t0)
				kl.plainCold, kl.plainQueued = resp.GetFigures().GetCold(), resp.GetFigures().GetQueued().AsDuration()
				return
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) || ctx.Err() != nil {
				plainErr = fmt.Errorf("attempt %d after the kill: %w", kl.plainFails+1, err)
				return
			}
			kl.plainFails++
			time.Sleep(retryGap)
		}
	})
	wg.Wait()
	if err := errors.Join(goneErr, plainErr); err != nil {
		return kl, err
	}
	logf("  idempotent call after %s (%v), plain call after %s (%d failed attempts), node gone after %s",
		kl.idem.Round(time.Millisecond), kl.idemErr, kl.plain.Round(time.Millisecond), kl.plainFails, kl.gone.Round(time.Millisecond))
	if rep == 0 {
		after, err := b.rankAll()
		if err != nil {
			return kl, err
		}
		res.moves = append(res.moves, compare(len(b.nodes), "kill -9, every scope live", k.name, before, after))
	}
	if err := b.kit.Logs.Keep(k.d.LogPath); err != nil {
		return kl, err
	}
	t1 := time.Now()
	if _, err := k.d.Restart(ctx, fmt.Sprintf("%s.restart%d", firstLog, rep+1), time.Minute); err != nil {
		return kl, err
	}
	b.kit.Adopt(k.d)
	rejoined, err := b.waitView(b.nodes)
	kl.rejoin = rejoined.Sub(t1)
	if err != nil {
		return kl, err
	}
	// The rejoined node has no scope: with bounded load, the others may
	// rank after it for every key until it has its share.
	away, where, err := b.routedAway(ctx)
	if err != nil {
		return kl, err
	}
	kl.live, kl.away = len(where), away
	var lost []string
	for i, key := range b.keys {
		if len(where[key]) == 0 {
			lost = append(lost, user(i))
		}
	}
	kl.lost = len(lost)
	if err := benchmd.Parallel(ctx, b.o.fillCallers, len(lost), func(ctx context.Context, i int) error {
		_, _, err := b.call(ctx, lost[i], false, callTimeout)
		return err
	}); err != nil {
		return kl, err
	}
	// Until the node's record shows its scopes (its next refresh).
	l, err = k.d.C.ListScopes(ctx, &scopedv1.ListScopesRequest{})
	if err != nil {
		return kl, err
	}
	benchmd.Poll(10*time.Second, 10*time.Millisecond, func() (bool, error) {
		ns := b.fc.Nodes()
		i := slices.IndexFunc(ns, func(n record.Node) bool { return n.Name == k.name })
		return i >= 0 && ns[i].Scopes >= len(l.GetScopes()), nil
	})
	if kl.awayAfter, _, err = b.routedAway(ctx); err != nil {
		return kl, err
	}
	logf("  rejoined after %s: %d of %d live scopes routed away from their node; %d lost scopes invoked again, then %d routed away",
		kl.rejoin.Round(time.Millisecond), kl.away, kl.live, kl.lost, kl.awayAfter)
	benchmd.Settle(5*time.Second, 0, 0.25)
	return kl, nil
}
