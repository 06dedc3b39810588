package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/internal/testutil"
)

// TestExecReapsOrphans: a worker that is the reaper of its programs'
// orphans (as scoped-exec is, pid 1 of its sandbox) leaves no zombie
// behind, and never takes a program's exit status from os/exec.
func TestExecReapsOrphans(t *testing.T) {
	cmd := testutil.HelperCommand(t, reaperHelper)
	out, err := cmd.CombinedOutput()
	t.Logf("helper:\n%s", out)
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// reaperHelper is TestExecReapsOrphans's child process (the reaper is
// process-wide, and the child becomes a subreaper).
var reaperHelper = testutil.Helper("plugins-reaper", func([]string) int {
	if err := reapOrphans(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("no orphan left")
	return 0
})

func reapOrphans() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	// Orphans by a double fork and by setsid, which outlive the program
	// briefly; then exit 3 or succeed.
	const body = `( (sleep 0.05) </dev/null >/dev/null 2>&1 & )
setsid sh -c 'sleep 0.05' </dev/null >/dev/null 2>&1 &
read x
[ "$x" = fail ] && exit 3
echo ok`
	h := ExecWith(ExecOptions{Reap: true, Stderr: io.Discard}, "/bin/sh", "-c", body)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				fail := (g+i)%2 == 0
				payload := "ok\n"
				if fail {
					payload = "fail\n"
				}
				out, err := h.Invoke(context.Background(), &Request{InvocationID: fmt.Sprint(g, i), Payload: []byte(payload)})
				switch {
				case fail && (!errors.Is(err, ErrExit) || !strings.Contains(err.Error(), "exit status 3")):
					errs <- fmt.Errorf("fail: %v, want exit status 3", err)
				case !fail && (err != nil || string(out) != "ok\n"):
					errs <- fmt.Errorf("ok: %q, %v", out, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		return errors.Join(failed...)
	}
	// The last orphans exit after the last program: SIGCHLD reaps them.
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left = childrenOf(os.Getpid())
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("children left (pid state): %v", left)
		}
	}
}

// childrenOf lists the child processes of pid, zombies included, as
// "pid state".
func childrenOf(pid int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name()+" "+f[0])
		}
	}
	return out
}
