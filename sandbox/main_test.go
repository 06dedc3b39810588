package sandbox_test

import (
	"flag"
	"testing"

	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

// launcher is the launcher the tests start sandboxes with: make test runs
// them with the default (native) and again with -launcher libcontainer.
var launcher = flag.String("launcher", "", "sandbox launcher: native, libcontainer (empty: the default)")

func TestMain(m *testing.M) {
	sandbox.Init()
	// The native launcher's init lives in a memfd for the process's life:
	// made here, before any test checks for leaked descriptors.
	_, _ = sandbox.DefaultLauncher()
	testutil.HelperMain(m)
}

// insideHelper is what the test binary runs when a test starts it inside a
// sandbox (or on the host, to compare): its argument is the mode (see
// inside).
var insideHelper = testutil.Helper("sandbox-inside", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	return inside(args[0])
})

// insideArgs are the sandbox's Args and Env entry that run inside(mode).
func insideArgs(mode string) ([]string, string) {
	return append([]string{sandbox.WorkerPath}, testutil.HelperArgs(mode)...), testutil.HelperEnv(insideHelper)
}
