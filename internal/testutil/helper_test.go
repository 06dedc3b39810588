package testutil

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) { HelperMain(m) }

var echoHelper = Helper("echo", func(args []string) int {
	fmt.Println(strings.Join(args, "|"), os.Getenv("EXTRA"))
	return 3
})

// TestHelperCommand runs the test binary as a helper: it gets its args,
// the test's environment, and its result is the exit code.
func TestHelperCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	cmd := HelperCommand(t, echoHelper, "a b", "-test.v", "--")
	cmd.Env = append(cmd.Env, "EXTRA=x")
	out, err := cmd.Output()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("exit: %v (%s)", err, out)
	}
	if string(out) != "a b|-test.v|-- x\n" {
		t.Errorf("output %q", out)
	}
}

func TestHelperRegistration(t *testing.T) {
	if HelperEnv(echoHelper) != "SCOPED_TEST_HELPER=echo" {
		t.Errorf("HelperEnv: %q", HelperEnv(echoHelper))
	}
	for _, f := range []func(){
		func() { Helper(echoHelper, func([]string) int { return 0 }) },
		func() { HelperEnv("nope") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		}()
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if b.Len() != 800 || len(b.Bytes()) != 800 || strings.Count(b.String(), "x") != 800 {
		t.Errorf("len %d", b.Len())
	}
	b.Reset()
	if b.String() != "" {
		t.Error("Reset left", b.String())
	}
}
