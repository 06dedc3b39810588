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
	if !strings.HasPrefix(out, "hello from alpha pid 1 ") {
		t.Fatalf("stdout %q, stderr %q", out, b.stderr.String())
	}
	t.Log(out)
}
