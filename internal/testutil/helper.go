package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// helperEnv names the helper that a test binary started by HelperCommand
// runs instead of its tests.
const helperEnv = "SCOPED_TEST_HELPER"

// helpers are the registered helper functions by name.
var helpers = map[string]func(args []string) int{}

// Helper registers fn as the helper process called name and returns name,
// so that a package declares its helpers beside the tests that start them:
//
//	var spinHelper = testutil.Helper("spin", func(args []string) int { ... })
//
// A helper runs in a fresh test binary (HelperCommand) before any test or
// flag parsing; args are those given to HelperCommand, and its result is
// the process's exit code. The package's TestMain must call HelperMain (or
// RunHelper). Two helpers of one name panic at start-up.
func Helper(name string, fn func(args []string) int) string {
	if _, dup := helpers[name]; dup || name == "" || fn == nil {
		panic(fmt.Sprintf("testutil.Helper: helper %q registered twice or empty", name))
	}
	helpers[name] = fn
	return name
}

// HelperMain is a TestMain's whole body in a package with helpers: it runs
// the helper the process was started for (see RunHelper), or the tests.
func HelperMain(m *testing.M) {
	RunHelper()
	os.Exit(m.Run())
}

// RunHelper runs the registered helper named by the environment and exits
// with its result; in a test binary started as usual it returns at once.
// A TestMain that does more than HelperMain calls it first thing (after
// what its helpers need too).
func RunHelper() {
	name, ok := os.LookupEnv(helperEnv)
	if !ok {
		return
	}
	fn := helpers[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "testutil: no helper %q in this test binary\n", name)
		os.Exit(2)
	}
	var args []string
	if i := slices.Index(os.Args, "--"); i >= 0 {
		args = os.Args[i+1:]
	}
	os.Exit(fn(args))
}

// HelperEnv is the environment entry that makes the test binary run the
// helper name, for starting the binary some other way (a sandbox, with an
// environment of its own).
func HelperEnv(name string) string {
	if helpers[name] == nil {
		panic(fmt.Sprintf("testutil.HelperEnv: no helper %q registered", name))
	}
	return helperEnv + "=" + name
}

// HelperArgs are the command-line arguments (after the program's name) that
// hand args to a helper, for starting the test binary some other way; the
// environment names the helper (HelperEnv).
func HelperArgs(args ...string) []string {
	// -test.run matches nothing: a TestMain that forgot RunHelper runs no
	// test rather than every test in the child.
	return append([]string{"-test.run=^$", "--"}, args...)
}

// HelperCommand is the test binary re-run as the registered helper name
// with args, in the test's environment; the caller sets its I/O, SysProcAttr
// or environment before starting it.
func HelperCommand(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	return HelperCommandContext(context.Background(), t, name, args...)
}

// HelperCommandContext is HelperCommand, killed when ctx is done.
func HelperCommandContext(ctx context.Context, t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	env := HelperEnv(name)
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("helper %s: %v", name, err)
	}
	cmd := exec.CommandContext(ctx, self, HelperArgs(args...)...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, helperEnv+"=")
	}), env)
	return cmd
}
