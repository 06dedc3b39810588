package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/testutil"
)

// notifySocket stands in for systemd: NOTIFY_SOCKET and a 40 ms watchdog.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "40000")
	t.Setenv("WATCHDOG_PID", "")
	return conn
}

// pending returns the datagrams already queued on conn.
func pending(t *testing.T, conn *net.UnixConn) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 256)
	for {
		_ = conn.SetReadDeadline(time.Now())
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return got
			}
			t.Fatal(err)
		}
		got = append(got, string(buf[:n]))
	}
}

// TestWatchdogPingsOnlyWhileHealthy: no WATCHDOG=1 while the health probe
// errs, pings again once it answers, and none after the stop.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	conn := notifySocket(t)
	var healthy atomic.Bool
	calls := make(chan struct{}, 1024)
	health := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("health probed without a deadline")
		}
		defer func() {
			select {
			case calls <- struct{}{}:
			default:
			}
		}()
		if healthy.Load() {
			return nil
		}
		return errors.New("the scope registry lock did not answer")
	}
	var logBuf testutil.SyncBuffer
	stop := watchdog(slog.New(slog.NewTextHandler(&logBuf, nil)), health)
	defer stop()
	waitCalls := func(n int) {
		for range n {
			select {
			case <-calls:
			case <-time.After(30 * time.Second):
				t.Fatal("the watchdog stopped probing")
			}
		}
	}

	waitCalls(5)
	if got := pending(t, conn); len(got) > 0 {
		t.Fatalf("pinged while unhealthy: %q", got)
	}
	if n := strings.Count(logBuf.String(), "not pinging systemd"); n != 1 {
		t.Errorf("%d log lines for 5 skipped pings, want 1:\n%s", n, logBuf.String())
	}

	healthy.Store(true)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "WATCHDOG=1" {
		t.Fatalf("no ping once healthy: %q %v", buf[:n], err)
	}

	healthy.Store(false)
	for len(calls) > 0 { // the healthy phase's
		<-calls
	}
	waitCalls(2) // a probe under way may still have seen it healthy
	pending(t, conn)
	waitCalls(3)
	if got := pending(t, conn); len(got) > 0 {
		t.Fatalf("pinged after the supervisor stopped answering: %q", got)
	}

	stop() // waits for the loop to end
	stop() // twice is fine
}

func TestWatchdogOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	stop := watchdog(slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) error {
		t.Error("probed without a watchdog")
		return nil
	})
	stop()
}
