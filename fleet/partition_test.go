package fleet

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/fleet/record"
)

// proxy forwards loopback TCP to etcd until cut: then it drops every
// connection and refuses new ones until healed.
type proxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		l.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(u, c); u.Close(); c.Close() })
		p.wg.Go(func() { io.Copy(c, u); u.Close(); c.Close() })
	}
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// A node cut off from etcd while the others go on serves its last state,
// refuses writes, and once reconnected catches up, even past a compaction
// (its watch cannot resume: it lists afresh and notifies what changed).
func TestStatePartitionCompacted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := f.state("b", StateOptions{})
	if err := other.SetTenant(ctx, "gone", record.Tenant{Tier: "pro"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.RegisterExtension(ctx, "acme", "prod", "hook", digestOf(1), manifest); err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, strings.TrimPrefix(f.etcd.Endpoints()[0], "http://"))
	c, err := Dial(&Config{Endpoints: []string{p.endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var seen changes
	a := f.state("a", StateOptions{Client: c, OnChange: seen.add})
	if _, ok := a.Tenant("gone"); !ok {
		t.Fatal("a did not list tenant gone")
	}

	p.setCut(true)
	waitFor(t, "a degraded", func() bool { _, d := a.Degraded(); return d })
	if err := a.SetTenant(ctx, "acme", record.Tenant{Tier: "gold"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("write while cut off: %v", err)
	}
	// Meanwhile the fleet goes on: a tenant suspended, one removed, a new
	// version; then the history is compacted past a's revision.
	if err := other.SetTenant(ctx, "acme", record.Tenant{Tier: "suspended"}); err != nil {
		t.Fatal(err)
	}
	direct := f.client()
	if _, err := direct.Delete(ctx, f.keys.Tenant("gone")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.RegisterExtension(ctx, "acme", "prod", "hook", digestOf(2), manifest); err != nil {
		t.Fatal(err)
	}
	r, err := direct.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if r, ok := a.Tenant("gone"); !ok || r.Tier != "pro" {
		t.Errorf("cut-off read: %+v %v", r, ok)
	}

	p.setCut(false)
	took := waitFor(t, "a caught up", func() bool {
		_, d := a.Degraded()
		r, _ := a.Tenant("acme")
		_, gone := a.Tenant("gone")
		x, _ := a.Extension("acme", "prod", "hook")
		return !d && r.Tier == "suspended" && !gone && x.Version == 2
	})
	t.Logf("caught up %s after the partition healed", took)
	for _, want := range []Change{
		{Kind: KindTenant, Tenant: "acme"},
		{Kind: KindTenant, Tenant: "gone", Deleted: true},
		{Kind: KindExtension, Tenant: "acme", Env: "prod", Name: "hook"},
	} {
		if !seen.has(want) {
			t.Errorf("not notified: %+v", want)
		}
	}
	// Watching again: a later change arrives.
	if err := other.SetTenant(ctx, "acme", record.Tenant{Tier: "pro"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a watches again", func() bool { r, _ := a.Tenant("acme"); return r.Tier == "pro" })
}

// A bundle dropped while etcd cannot be reached is deleted once it can
// (the lease outlives the cut); one held again meanwhile stays held.
func TestMemberDropBundleWhileCut(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	watcher := f.state("watcher", StateOptions{})
	p := newProxy(t, strings.TrimPrefix(f.etcd.Endpoints()[0], "http://"))
	c, err := Dial(&Config{Endpoints: []string{p.endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := NewMember(MemberOptions{Client: c, Keys: f.keys, TTL: 30 * time.Second, Node: f.node("a"), Log: f.log(),
		Refresh: 100 * time.Millisecond})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	dA, dB := digestOf(1), digestOf(2)
	for _, d := range []string{dA, dB} {
		if err := m.HoldBundle(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if h := m.HeldBundles(); !slices.Equal(h, []string{dA, dB}) {
		t.Errorf("held %v", h)
	}
	waitFor(t, "both held", func() bool { return len(watcher.BundleHolders(dA)) == 1 && len(watcher.BundleHolders(dB)) == 1 })

	p.setCut(true)
	cut, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	for _, d := range []string{dA, dB} {
		if err := m.DropBundle(cut, d); !errors.Is(err, ErrUnavailable) {
			t.Errorf("drop %s while cut off: %v, want ErrUnavailable", d, err)
		}
	}
	if err := m.HoldBundle(cut, dB); !errors.Is(err, ErrUnavailable) { // held again: kept, written when back
		t.Errorf("hold while cut off: %v", err)
	}
	if h := m.HeldBundles(); !slices.Equal(h, []string{dB}) {
		t.Errorf("held %v after dropping %s", h, dA)
	}
	p.setCut(false)
	waitFor(t, "the dropped bundle deleted once etcd answers", func() bool { return len(watcher.BundleHolders(dA)) == 0 })
	if h := watcher.BundleHolders(dB); !slices.Equal(h, []string{"a"}) {
		t.Errorf("holders of the bundle held again: %v", h)
	}
}
