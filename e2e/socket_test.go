package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/internal/testutil"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestWorkerSocketSymlink: a worker that makes its go-plugin socket a
// symlink to a root-only host socket and announces it does not get the root
// daemon to connect there: the invocation fails with UNAVAILABLE naming the
// cause, the daemon logs it, the worker is killed, and the tenant's other
// extensions keep working.
func TestWorkerSocketSymlink(t *testing.T) {
	d := startDaemon(t, options{})
	tw := testutil.NewTripwire(t) // after startDaemon: closed before its leak check
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	b := bundle(t, bins.sockjack)
	b.Files = append(b.Files, &scopedv1.File{Path: "target", Mode: 0o644, Content: []byte(tw.Path)})
	if _, err := c.Deploy(t.Context(), &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "sockjack", Bundle: b}); err != nil {
		t.Fatalf("deploy sockjack: %v", err)
	}

	refused := func(i int) {
		t.Helper()
		_, err := invoke(c, "acme", "production", "sockjack", "x")
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "/plugin/s is a symlink") {
			t.Errorf("invoking sockjack: %v, want UNAVAILABLE naming /plugin/s as a symlink", err)
		} else if i == 0 {
			t.Logf("invoking sockjack: %v", err)
		}
		waitFor(t, 20*time.Second, "the refused worker's processes to go", func() bool { return len(processesIn(d.root)) == 0 })
	}
	refused(0)
	if n := tw.Strays(t); n != 0 {
		t.Fatalf("the daemon connected %d times to the host socket the worker's symlink named", n)
	}
	refused(1) // and the next worker of it too
	if n := tw.Strays(t); n != 0 {
		t.Errorf("the daemon connected %d times to the host socket the worker's symlink named", n)
	}
	// The daemon keeps no handle on the refused workers' socket dirs.
	sockets := filepath.Join(d.runtime, "sockets") + "/"
	waitFor(t, 20*time.Second, "the daemon to close the socket dirs' handles", func() bool {
		return len(fdsUnder(t, d.cmd.Process.Pid, sockets)) == 0
	})
	var logged bool
	for _, line := range strings.Split(d.logs.String(), "\n") {
		if strings.Contains(line, "worker refused: unsafe socket") && strings.Contains(line, "tenant=acme") &&
			strings.Contains(line, "scope=acme.production") && strings.Contains(line, "worker=w") &&
			strings.Contains(line, "/plugin/s is a symlink") {
			logged = true
			t.Logf("daemon log: %s", line)
		}
	}
	if !logged {
		t.Error("the daemon log has no line on the refused socket")
	}
	if _, err := invoke(c, "acme", "production", "whoami", "x"); err != nil {
		t.Errorf("whoami of the same tenant after the refusal: %v", err)
	} else if len(fdsUnder(t, d.cmd.Process.Pid, sockets)) != 1 {
		t.Errorf("the daemon holds %v under %s for one live worker, want its socket dir: the check above proves nothing",
			fdsUnder(t, d.cmd.Process.Pid, sockets), sockets)
	}
}

// fdsUnder lists the descriptors of process pid that name a path under dir.
func fdsUnder(t *testing.T, pid int, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(target, dir) {
			out = append(out, target)
		}
	}
	return out
}
