package sandbox_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

const testRoot = "/scoped-test-sandbox"

var seq atomic.Int64

// env is one test's world: a cgroup tree, a state directory and an id
// allocator, all removed (and checked) when the test ends.
type env struct {
	t      *testing.T
	tree   *cgroups.Tree
	state  string
	bundle string
	ids    *sandbox.IDAllocator
	self   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.CheckLeaks(t, testRoot)
	tree, err := cgroups.Open(testRoot)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	// The sandbox's root user, a high host uid, must traverse to its rootfs.
	for _, d := range []string{filepath.Dir(state), state} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bundle := filepath.Join(state, "bundle")
	if err := os.Mkdir(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "manifest"), []byte("name = \"test\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ids, err := sandbox.NewIDAllocator(sandbox.DefaultIDBase, sandbox.DefaultIDSize, 16)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tree: tree, state: state, bundle: bundle, ids: ids, self: self}
	t.Cleanup(func() {
		if _, err := tree.Cleanup(); err != nil {
			t.Errorf("cgroup cleanup: %v", err)
		}
		if err := tree.Close(); err != nil {
			t.Errorf("cgroup close: %v", err)
		}
	})
	return e
}

// box is a started sandbox with its captured output.
type box struct {
	*sandbox.Sandbox
	scope  *cgroups.Node
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
}

// start runs the test binary in a new sandbox of scope in the given mode.
func (e *env) start(scope string, l cgroups.Limits, mode string, extra ...string) *box {
	e.t.Helper()
	return e.startWith(sandbox.Launcher(*launcher), scope, l, mode, extra...)
}

// startWith is start with the given launcher.
func (e *env) startWith(launcher sandbox.Launcher, scope string, l cgroups.Limits, mode string, extra ...string) *box {
	e.t.Helper()
	n := seq.Add(1)
	node, err := e.tree.Node(l, "t", scope)
	if err != nil {
		e.t.Fatal(err)
	}
	ids, err := e.ids.Acquire(scope)
	if err != nil {
		e.t.Fatal(err)
	}
	b := &box{scope: node, stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}}
	args, helperEnv := insideArgs(mode)
	id := fmt.Sprintf("w%d", n)
	b.Sandbox, err = sandbox.Start(sandbox.Config{
		ID:       id,
		StateDir: e.state,
		Cgroup:   node.Path() + "/" + id,
		Hostname: scope,
		IDs:      ids,
		Binary:   e.self,
		Bundle:   e.bundle,
		Args:     args,
		Env:      append([]string{helperEnv}, extra...),
		TmpSize:  4 << 20,
		Launcher: launcher,
		Stdout:   b.stdout,
		Stderr:   b.stderr,
	})
	if err != nil {
		e.t.Fatalf("start sandbox: %v", err)
	}
	e.t.Cleanup(func() {
		if err := b.Destroy(); err != nil {
			e.t.Errorf("destroy: %v", err)
		}
		e.ids.Release(scope)
	})
	return b
}

// wait waits for the sandbox's process and returns its stdout.
func (b *box) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-waitCh(b.Sandbox):
	case <-time.After(30 * time.Second):
		t.Fatalf("sandbox did not exit; stderr: %s", b.stderr.String())
	}
	return strings.TrimSpace(b.stdout.String())
}

func waitCh(s *sandbox.Sandbox) <-chan struct{} {
	go func() { _, _ = s.Wait() }()
	return s.Done()
}
