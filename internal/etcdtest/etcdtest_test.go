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
