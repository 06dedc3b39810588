package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/testutil"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestFailedStartLeavesNothing: a daemon whose start fails part way (its
// metering ledger cannot be opened: state_dir/metering is a file, after the
// sandboxes' cleanup and with the cgroup root made) exits with the error
// and stops what it had started: no cgroup below its root, no sandbox or
// socket directory.
func TestFailedStartLeavesNothing(t *testing.T) {
	requireBins(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "r")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "metering"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustFailToStart(t, dir, state, run, "[metering]\nenabled = true\n", "scoped started without its ledger")
	if !strings.Contains(out, "metering ledger") {
		t.Errorf("the failure does not name the ledger:\n%s", out)
	}
	for _, d := range []string{filepath.Join(run, "sandboxes"), filepath.Join(run, "sockets")} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("the failed daemon left %s", d)
		}
	}
	// CheckLeaks looks for cgroups below root once the test is over.
}

// TestRefusesUnreachableRuntimeDir: a runtime_dir below a directory the
// sandboxes' uids cannot search (0700) makes scoped refuse to start with a
// message that names that directory and the mode it needs, instead of
// failing every worker start later; nothing is left behind.
func TestRefusesUnreachableRuntimeDir(t *testing.T) {
	requireBins(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	closed := filepath.Join(dir, "c") // short: worker socket paths under it are bounded
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(closed, "r")
	out := mustFailToStart(t, dir, filepath.Join(dir, "state"), run, "", "scoped started with runtime_dir below a 0700 directory")
	for _, want := range []string{closed + " is mode 0700", "o+x", "runtime_dir"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(run); err == nil {
		t.Errorf("the refused daemon made %s", run)
	}
}

// TestWorkerOutputNeverTheDaemons: a worker floods its stderr (the raw
// fd go-plugin reads and go-plugin's stdio stream) with lines claiming to
// be errors. The daemon's log (at debug) has them only as "worker output"
// at DEBUG, no more than the per-scope burst and rate allow, and counts the
// rest in "worker output suppressed" lines; the scope's ring keeps its
// size of them.
func TestWorkerOutputNeverTheDaemons(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "misbehave", bins.misbehave)
	start := time.Now()
	if r, err := invoke(c, "acme", "production", "misbehave", "logflood"); err != nil || string(r.GetResult()) != "flooded" {
		t.Fatalf("logflood: %v", err)
	}
	const written = 3 * 1500
	linesRe := regexp.MustCompile(` lines=(\d+)`)
	var logged, suppressed int
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		elapsed := time.Since(start)
		logged, suppressed = 0, 0
		for _, l := range strings.Split(d.logs.String(), "\n") {
			switch {
			case strings.Contains(l, `msg="worker output suppressed"`):
				if !strings.Contains(l, "level=DEBUG") || !strings.Contains(l, "scope=acme.production") {
					t.Fatalf("suppressed line: %s", l)
				}
				m := linesRe.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("suppressed line without a count: %s", l)
				}
				n, _ := strconv.Atoi(m[1])
				suppressed += n
			case strings.Contains(l, `msg="worker output"`):
				if !strings.Contains(l, "level=DEBUG") || !strings.Contains(l, "tenant=acme") || !strings.Contains(l, "worker=w") {
					t.Fatalf("worker output line: %s", l)
				}
				logged++
			case strings.Contains(l, "forged"):
				t.Fatalf("worker output in the daemon's log as its own: %s", l)
			}
		}
		// The bucket: 100 at once, then 20 per second (+1 s of slack).
		if most := 100 + int(20*(elapsed.Seconds()+1)); logged > most {
			t.Fatalf("%d worker lines logged in %s, the rate allows %d", logged, elapsed, most)
		}
		if logged+suppressed >= written {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lines logged and %d reported suppressed, want at least the %d written", logged, suppressed, written)
		}
	}
	t.Logf("daemon log: %d worker lines, %d reported suppressed", logged, suppressed)

	stream, err := c.Logs(context.Background(), &scopedv1.LogsRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for {
		e, err := stream.Recv()
		if err != nil {
			break
		}
		if strings.Contains(e.GetLine(), "forged") {
			kept++
		}
	}
	if kept != 1000 {
		t.Errorf("the ring keeps %d of the flood, want its size 1000", kept)
	}
}

// TestWatchdogPings: with systemd's watchdog on, the serving daemon pings
// it (its health probe answers: the loops beat, the locks are free).
func TestWatchdogPings(t *testing.T) {
	requireBins(t)
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A 4 s watchdog: pings (and health probes of at most 1 s) every
	// second. A shorter one made the probe's deadline 100 ms, which the
	// emulated VM missed once in a while on a healthy daemon.
	d := startDaemon(t, options{env: []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=4000000"}})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	if _, err := invoke(c, "acme", "production", "whoami", "x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	pings := 0
	_ = ln.SetReadDeadline(time.Now().Add(30 * time.Second))
	for pings < 3 {
		n, _, err := ln.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("%d watchdog pings: %v\n%s", pings, err, d.logs.String())
		}
		if string(buf[:n]) == "WATCHDOG=1" {
			pings++
		}
	}
	if strings.Contains(d.logs.String(), "not pinging systemd") {
		t.Errorf("the watchdog skipped a ping of a healthy daemon:\n%s", d.logs.String())
	}
}

// mustFailToStart runs scoped on a configuration of its own in dir (state
// and runtime directories, a fresh cgroup root whose leaks are checked once
// the test is over, extra appended), expects it to exit with an error
// within 30 s — else the test fails with started — and returns its output.
func mustFailToStart(t *testing.T, dir, state, run, extra, started string) string {
	t.Helper()
	root := fmt.Sprintf("/scoped-e2e-%d-%d", os.Getpid(), daemonSeq.Add(1))
	testutil.CheckLeaks(t, root)
	cfg := fmt.Sprintf("socket = %q\nstate_dir = %q\nruntime_dir = %q\ncgroup_root = %q\n[metrics]\nlisten = \"off\"\n%s",
		filepath.Join(dir, "scoped.sock"), state, run, root, extra)
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.scoped, "--config", config)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("%s:\n%s", started, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("scoped did not fail to start:\n%s", out.String())
	}
	t.Logf("scoped refused to start: %s", strings.TrimSpace(out.String()))
	return out.String()
}
