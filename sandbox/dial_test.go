package sandbox_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

// socketDir makes a socket directory and a Runner on it, as go-plugin and
// the supervisor do.
func socketDir(t *testing.T) (string, *sandbox.Runner) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "plugin-dir1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := sandbox.NewRunner(sandbox.Config{IDs: sandbox.IDRange{Base: 1 << 20, Size: 1}}, exec.Command(""), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Kill(context.Background()) })
	return dir, r
}

// listenIn listens on dir/name and accepts (and closes) connections.
func listenIn(t *testing.T, dir, name string) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// TestDialRefusesUnsafeSockets: whatever a worker plants under the name it
// announces, the runner connects only to a socket inside its directory.
func TestDialRefusesUnsafeSockets(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.CheckLeaks(t)
	tw := testutil.NewTripwire(t)
	dir, r := socketDir(t)
	listenIn(t, dir, "real")
	ctx := context.Background()

	mk := map[string]func(p string) error{
		"outside":  func(p string) error { return os.Symlink(tw.Path, p) },
		"inside":   func(p string) error { return os.Symlink("real", p) },
		"absolute": func(p string) error { return os.Symlink(filepath.Join(dir, "real"), p) },
		"magic":    func(p string) error { return os.Symlink("/proc/self/fd/0", p) },
		"file":     func(p string) error { return os.WriteFile(p, nil, 0o600) },
		"fifo":     func(p string) error { return unix.Mkfifo(p, 0o600) },
		"dir":      func(p string) error { return os.Mkdir(p, 0o700) },
		"mount": func(p string) error {
			// The tripwire's own inode, bound into the directory.
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				return err
			}
			if err := unix.Mount(tw.Path, p, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
			return nil
		},
	}
	for _, tc := range []struct{ name, want string }{
		{"outside", "/plugin/outside is a symlink"},
		{"inside", "/plugin/inside is a symlink"},
		{"absolute", "/plugin/absolute is a symlink"},
		{"magic", "/plugin/magic is a symlink"},
		{"file", "/plugin/file is a regular file"},
		{"fifo", "/plugin/fifo is a FIFO"},
		{"dir", "/plugin/dir is a directory"},
		{"mount", "/plugin/mount is a mount point"},
		{"missing", "/plugin/missing does not exist"},
	} {
		if f := mk[tc.name]; f != nil {
			if err := f(filepath.Join(dir, tc.name)); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		if _, _, err := r.PluginToHost("unix", "/plugin/"+tc.name); err != nil {
			t.Fatalf("PluginToHost(%s): %v", tc.name, err)
		}
		c, err := r.Dial(ctx)
		if err == nil {
			c.Close()
			t.Errorf("%s: Dial connected", tc.name)
			continue
		}
		if !errors.Is(err, sandbox.ErrUnsafeSocket) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Dial: %v, want ErrUnsafeSocket naming %q", tc.name, err, tc.want)
		}
	}

	// Names that PluginToHost refuses are refused by the dialer too.
	dirFD, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirFD)
	if err := os.Symlink(filepath.Dir(tw.Path), filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"..", ".", "", "up/s", "../plugin-dir1/real", "/" + tw.Path, "real\x00"} {
		c, err := sandbox.DialBeneathForTest(ctx, dirFD, name)
		if err == nil {
			c.Close()
			t.Errorf("dial %q connected", name)
		} else if !errors.Is(err, sandbox.ErrUnsafeSocket) {
			t.Errorf("dial %q: %v, want ErrUnsafeSocket", name, err)
		}
	}

	// A socket in the directory is reached.
	if _, _, err := r.PluginToHost("unix", "/plugin/real"); err != nil {
		t.Fatal(err)
	}
	c, err := r.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial of a real socket: %v", err)
	}
	c.Close()

	if n := tw.Strays(t); n != 0 {
		t.Errorf("the socket outside the directory accepted %d connections", n)
	}
	// Once the worker is stopped, Dial fails.
	if err := r.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := r.Dial(ctx); !errors.Is(err, net.ErrClosed) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Dial after Kill: %v, want net.ErrClosed", err)
	}
}

// TestDialRace: the worker swaps its socket's name between a real socket
// and a symlink to a socket outside while the runner dials; no dial reaches
// the outside one.
func TestDialRace(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.CheckLeaks(t)
	tw := testutil.NewTripwire(t)
	dir, r := socketDir(t)
	listenIn(t, dir, "real")
	if _, _, err := r.PluginToHost("unix", "/plugin/s"); err != nil {
		t.Fatal(err)
	}
	s := filepath.Join(dir, "s")
	if err := os.Link(filepath.Join(dir, "real"), s); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var swaps atomic.Int64
	swapped := make(chan error, 1)
	go func() {
		for !stop.Load() {
			// rename(2) replaces s atomically with each in turn.
			_ = os.Remove(s + ".a")
			if err := os.Link(filepath.Join(dir, "real"), s+".a"); err != nil {
				swapped <- err
				return
			}
			if err := os.Rename(s+".a", s); err != nil {
				swapped <- err
				return
			}
			_ = os.Remove(s + ".b")
			if err := os.Symlink(tw.Path, s+".b"); err != nil {
				swapped <- err
				return
			}
			if err := os.Rename(s+".b", s); err != nil {
				swapped <- err
				return
			}
			swaps.Add(1)
		}
		swapped <- nil
	}()
	var ok, refused int
	for range 2000 {
		c, err := r.Dial(context.Background())
		switch {
		case err == nil:
			ok++
			c.Close()
		case errors.Is(err, sandbox.ErrUnsafeSocket):
			refused++
		default:
			t.Fatalf("Dial: %v", err)
		}
	}
	stop.Store(true)
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	t.Logf("2000 dials during %d swaps: %d reached the socket in the directory, %d refused", swaps.Load(), ok, refused)
	if n := tw.Strays(t); n != 0 {
		t.Errorf("the socket outside the directory accepted %d connections", n)
	}
}
