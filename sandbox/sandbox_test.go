package sandbox_test

import (
	"strings"
	"testing"

	"github.com/scoped-io/scoped/cgroups"
)

func TestHello(t *testing.T) {
	e := newEnv(t)
	b := e.start("alpha", cgroups.Limits{}, "hello")
	out := b.wait(t)
	t.Log(out)
	lines := strings.Split(out, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "hello from alpha pid 1 ") {
		t.Fatalf("stdout %q, stderr %q", out, b.stderr.String())
	}
	// Network: loopback only, and up.
	if lines[1] != "interfaces lo:true" {
		t.Errorf("%s, want loopback only", lines[1])
	}
	// Cgroup namespace: the sandbox sees its own cgroup as the root.
	if strings.Contains(lines[2], b.scope.Path()) {
		t.Errorf("%s: the sandbox sees the host's cgroup path %s", lines[2], b.scope.Path())
	}
	if cgroups.HostMode() != cgroups.V1 && !strings.Contains(lines[2], `0::/\n`) {
		t.Errorf("%s: want 0::/ (the namespace root)", lines[2])
	}
}
