package sandbox_test

import (
	"testing"

	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Init()
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
