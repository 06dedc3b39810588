package etcdtest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A value written survives a stop and a restart; while stopped, calls fail.
func TestStopRestart(t *testing.T) {
	s := Start(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if _, err := c.Get(short, "/k"); err == nil {
		t.Error("Get succeeded while the server was stopped")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Errorf("after restart: %v", r.Kvs)
	}
}

// A second listener on a taken port is recognised as "in use", so Start
// picks other ports rather than failing.
func TestInUse(t *testing.T) {
	ports := freePorts(t, "127.0.0.1", 2)
	if ports[0] == ports[1] {
		t.Fatalf("the same port twice: %v", ports)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = net.Listen("tcp", l.Addr().String())
	if err == nil || !inUse(err) {
		t.Errorf("second listen: %v, want address in use", err)
	}
	if inUse(errors.New("other")) {
		t.Error("any error counted as in use")
	}
}

// Stop is an outage, not a drain: a key under a lease that its holder
// cannot keep alive while the server is down is not deleted while the
// server stops (a graceful close alone keeps the server, its lease expiry
// and the open watches going for etcd's request timeout, 7 s, while
// refusing new streams, so leases kept alive as a fleet node keeps its own
// expired, and watchers saw their keys deleted).
func TestStopExpiresNoLease(t *testing.T) {
	s := Start(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := c.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/leased", "v", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	go func() { // as a fleet node keeps its lease (fleet.Member)
		for ctx.Err() == nil {
			kctx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = c.KeepAliveOnce(kctx, l.ID)
			cancel()
			time.Sleep(500 * time.Millisecond)
		}
	}()
	w := c.Watch(ctx, "/leased")
	start := time.Now()
	go s.Stop()
	for open := true; open; {
		select {
		case r, ok := <-w:
			for _, ev := range r.Events {
				t.Errorf("a watcher saw %s of %s %s after the stop began", ev.Type, ev.Kv.Key, time.Since(start).Round(time.Millisecond))
			}
			open = ok && r.Err() == nil && !r.Canceled
		case <-time.After(5 * time.Second): // longer than the lease
			open = false
		}
	}
}
