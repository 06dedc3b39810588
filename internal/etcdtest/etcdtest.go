// Package etcdtest runs a real etcd server for tests: embedded in the test
// binary (go.etcd.io/etcd/server/v3/embed), on loopback or an address the
// test chooses, with its data in a temporary directory. It can be stopped
// and started again on the same address and data, for outage tests.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running (or stopped) single-member etcd.
type Server struct {
	dir          string
	host         string
	client, peer int

	mu sync.Mutex
	e  *embed.Etcd
}

// Start starts an etcd listening on 127.0.0.1, stopped when the test ends.
func Start(t testing.TB) *Server { return StartOn(t, "127.0.0.1") }

// StartOn starts an etcd listening on host (an IP address of this
// machine, e.g. a test bridge's), stopped when the test ends.
func StartOn(t testing.TB, host string) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), host: host}
	// The ports are free when picked, but another test process may take
	// one before etcd binds it: pick again then.
	var err error
	for range 5 {
		ports := freePorts(t, host, 2)
		s.client, s.peer = ports[0], ports[1]
		if err = s.Restart(); err == nil || !inUse(err) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Endpoints are the client URLs ("http://host:port").
func (s *Server) Endpoints() []string { return []string{s.url(s.client).String()} }

func (s *Server) url(port int) *url.URL {
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(s.host, strconv.Itoa(port))}
}

// Stop stops the server, keeping its data; clients see it unreachable. It
// is an outage, not a drain: the server stops at once (no lease expires
// while it stops; restarted, etcd extends the leases), then its listeners
// close. (A graceful close alone keeps the server and its open watches
// going for etcd's request timeout, 7 s, while refusing keepalives: leases
// expire and watchers see their keys deleted.)
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		s.e.Server.HardStop()
		s.e.Close()
		s.e = nil
	}
}

// Restart starts a stopped server again on the same address and data.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cu, pu := s.url(s.client), s.url(s.peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // a test's data need not survive a power cut
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcdtest: not ready after 30s")
	}
	s.e = e
	return nil
}

// inUse reports whether err is a listener's "address already in use" (etcd
// does not always wrap the errno).
func inUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// freePorts picks n distinct ports on host that nothing listens on now
// (all held open until all are picked, so none is picked twice).
func freePorts(t testing.TB, host string, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
