package fleet

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/etcdtest"
)

// testTTL is the lease TTL of the tests' members.
const testTTL = 2 * time.Second

// fixture is a real etcd and what a test made on it; at the end it checks
// that no fleet goroutine and no lease is left.
type fixture struct {
	t    *testing.T
	etcd *etcdtest.Server
	keys record.Keys
	logs *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, etcd: etcdtest.Start(t), keys: record.Keys{Prefix: "/test"}, logs: &syncBuffer{}}
	t.Cleanup(f.checkLeaks) // runs after the cleanups registered later
	return f
}

// client is a new etcd client, closed when the test ends.
func (f *fixture) client() *clientv3.Client {
	c, err := Dial(&Config{Endpoints: f.etcd.Endpoints()})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func (f *fixture) log() *slog.Logger { return slog.New(slog.NewTextHandler(f.logs, nil)) }

func (f *fixture) node(name string) record.Node {
	return record.Node{Name: name, Addr: "127.0.0.1:7443", Slots: 64, CPUs: 2, Version: "test"}
}

// member starts a member of node name on its own client; stopped at the
// end.
func (f *fixture) member(name string, o MemberOptions) (*Member, *clientv3.Client) {
	f.t.Helper()
	c := f.client()
	o.Client, o.Keys, o.TTL, o.Log = c, f.keys, testTTL, f.log()
	if o.Node.Name == "" {
		o.Node = f.node(name)
	}
	m := NewMember(o)
	if err := m.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = m.Stop() })
	return m, c
}

// state starts a State of node name on its own client; stopped at the end.
func (f *fixture) state(name string, o StateOptions) *State {
	f.t.Helper()
	if o.Client == nil {
		o.Client = f.client()
	}
	o.Keys, o.Node, o.Log, o.Probe, o.Timeout = f.keys, name, f.log(), 100*time.Millisecond, 2*time.Second
	s := NewState(o)
	if err := s.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = s.Stop() })
	return s
}

// checkLeaks fails the test when a fleet goroutine runs on or a lease is
// left in etcd.
func (f *fixture) checkLeaks() {
	t := f.t
	if t.Failed() {
		return
	}
	ours := func(stacks string) bool {
		return strings.Contains(stacks, "fleet.(*Member).run") || strings.Contains(stacks, "fleet.(*State).loop")
	}
	var stacks string
	for range 100 {
		buf := make([]byte, 4<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !ours(stacks) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ours(stacks) {
		t.Errorf("fleet goroutines left:\n%s", stacks)
	}
	if err := f.etcd.Restart(); err != nil { // a test may have left it stopped
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: f.etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A lease of a member that died without revoking expires within its
	// TTL (after a restart, TTL plus an election timeout).
	var leases []clientv3.LeaseStatus
	for deadline := time.Now().Add(3 * testTTL); ; time.Sleep(100 * time.Millisecond) {
		r, err := c.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if leases = r.Leases; len(leases) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(leases) > 0 {
		t.Errorf("%d leases left in etcd", len(leases))
	}
}

// waitFor polls cond until it holds (failing after a bound meant only to
// end a hung test, not to measure) and returns how long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%s: not after %s", what, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func clientOpPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

// day and month are the current UTC day's and month's starts.
func day() time.Time {
	n := time.Now().UTC()
	return time.Date(n.Year(), n.Month(), n.Day(), 0, 0, 0, 0, time.UTC)
}

func month() time.Time {
	n := time.Now().UTC()
	return time.Date(n.Year(), n.Month(), 1, 0, 0, 0, 0, time.UTC)
}
