package sandbox_test

import (
	"os"
	"testing"

	"github.com/scoped-io/scoped/sandbox"
)

// modeEnv selects what the test binary does when a test starts it inside a
// sandbox (see hostile_test.go); without it the binary runs the tests.
const modeEnv = "SCOPED_SANDBOX_TEST_MODE"

func TestMain(m *testing.M) {
	sandbox.Init()
	if state := os.Getenv(crashOwnerEnv); state != "" {
		crashOwner(state)
	}
	if mode := os.Getenv(modeEnv); mode != "" {
		os.Exit(inside(mode))
	}
	os.Exit(m.Run())
}
