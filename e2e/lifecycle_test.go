package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestPoolRecycleAndIdle: a worker is replaced after recycle_after calls;
// idle workers stop and an idle scope goes away with its cgroup.
func TestPoolRecycleAndIdle(t *testing.T) {
	d := startDaemon(t, options{extra: "", poolExtra: "recycle_after = 2\nidle_timeout = \"1s\"\n"})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	var workers []string
	for range 3 {
		r, err := invoke(c, "acme", "production", "whoami", "x")
		if err != nil {
			t.Fatal(err)
		}
		workers = append(workers, r.GetFigures().GetWorker())
	}
	if workers[0] != workers[1] || workers[1] == workers[2] {
		t.Errorf("workers %v: want the same worker twice, then a new one", workers)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := c.ListScopes(context.Background(), &scopedv1.ListScopesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(s.GetScopes()) == 0 && len(processesIn(d.root)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle scope is still there: %v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := cgroupDirs(d.root + "/default/acme/production"); len(left) > 0 {
		t.Errorf("the idle scope's cgroups remain: %v", left)
	}
}

// TestReloadAndNotify: the daemon tells systemd READY=1 once it serves and
// STOPPING=1 when it stops; SIGHUP applies new scope limits to live scopes.
func TestReloadAndNotify(t *testing.T) {
	requireBins(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	d := startDaemon(t, options{env: []string{"NOTIFY_SOCKET=" + sock}})
	waitMsg := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s from the daemon", want)
			}
		}
	}
	waitMsg("READY=1")

	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	if _, err := invoke(c, "acme", "production", "whoami", "x"); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	newCfg := strings.Replace(string(cfg), "memory_max = 268435456", "memory_max = 134217728", 1)
	if newCfg == string(cfg) {
		t.Fatal("test set-up: memory_max not found in the config")
	}
	if err := os.WriteFile(d.config, []byte(newCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMsg("READY=1")
	s, err := c.InspectScope(context.Background(), &scopedv1.InspectScopeRequest{Scope: "acme.production"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.GetLimits().GetMemoryMax(); got != 128<<20 {
		t.Errorf("memory max after SIGHUP: %d, want %d", got, 128<<20)
	}
	d.stop()
	waitMsg("STOPPING=1")
}
