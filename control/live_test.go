package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
)

// recordEnv names the file TestRecordTrace writes; unset, it is skipped.
//
//	sudo SCOPED_CONTROL_RECORD=$PWD/control/testdata/live-trace.json \
//	    go test -run TestRecordTrace -v ./control/
const recordEnv = "SCOPED_CONTROL_RECORD"

// liveRoot is the cgroup root of TestRecordTrace.
const liveRoot = "/scoped-test-control"

func TestMain(m *testing.M) { testutil.HelperMain(m) }

// loadHelper makes the test binary run a load instead of the tests: its
// argument is the mode (see helper).
var loadHelper = testutil.Helper("control-load", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	return helper(args[0])
})

// helper is a load pinned to CPU 0. It says "ready" and waits for a line
// on stdin (the test moves it into its cgroup meanwhile), then runs until
// killed or for a minute at most.
//
//	spin   a busy loop
//	serve  1 ms of work, then 1 ms of sleep, over and over: a service
//	       that needs half a CPU and is hurt by waiting
func helper(mode string) int {
	if mode == "gospin" {
		return goSpin()
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		fmt.Fprintln(os.Stderr, "sched_setaffinity:", err)
		return 2
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 0
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		switch mode {
		case "spin":
			for i := 0; i < 1<<20; i++ {
			}
		case "serve":
			for t := time.Now(); time.Since(t) < time.Millisecond; {
			}
			time.Sleep(time.Millisecond)
		default:
			return 2
		}
	}
	return 0
}

// load is a helper process, moved into node and then started.
type load struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
}

func startLoad(t *testing.T, mode string, node *cgroups.Node) *load {
	t.Helper()
	cmd := testutil.HelperCommand(t, loadHelper, mode)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &load{cmd: cmd, stdin: in}
	t.Cleanup(l.stop)
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("helper %s: %q, %v", mode, line, err)
	}
	if err := node.Join(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := cgroups.VerifyUnified(cmd.Process.Pid, node.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *load) stop() {
	if l.cmd.ProcessState == nil {
		_ = l.cmd.Process.Kill()
		_ = l.cmd.Wait()
	}
}

// recorded is the file TestRecordTrace writes and TestReplayTrace reads.
type recorded struct {
	Note      string
	Config    Config
	Snapshots []Snapshot
	Decisions []string // as trace.log has them
}

// TestRecordTrace runs a real noisy neighbour under a live Controller and
// records what it saw and did: a service (acme.prod, half a CPU in 1 ms
// bursts) alone on CPU 0, then with four spinners of another tenant
// (evil.prod) on the same CPU, which the controller must step down and
// cap, let go a level when the service has recovered, and cap again; then
// alone again once the spinners stop, when the controller lets them go. Root, eBPF accounting and a unified
// hierarchy are needed; it runs only when SCOPED_CONTROL_RECORD names the
// file to write.
func TestRecordTrace(t *testing.T) {
	file := os.Getenv(recordEnv)
	if file == "" {
		t.Skip("records a trace only when " + recordEnv + " names the file")
	}
	tree, acct, log := openLive(t)

	nodes := map[string]*cgroups.Node{}
	var infos []ScopeInfo
	for _, key := range []string{victim, antagonist} {
		tenant, name, _ := strings.Cut(key, ".")
		n, err := tree.Node(cgroups.Limits{CPUWeight: 100, CPUMax: -1}, "free", tenant, name)
		if err != nil {
			t.Fatal(err)
		}
		id, err := n.ID()
		if err != nil {
			t.Fatal(err)
		}
		if err := acct.Track(id, n); err != nil {
			t.Fatal(err)
		}
		defer acct.Untrack(id)
		nodes[key] = n
		infos = append(infos, ScopeInfo{Key: key, Tenant: tenant, ID: id, UnifiedDir: n.UnifiedDir(), Weight: 100})
	}

	cfg := DefaultConfig()
	cfg.Interval.Duration = 500 * time.Millisecond
	cfg.Cooldown.Duration = 3 * time.Second
	cfg.DetectTicks = 3
	cfg.RecoverTicks = 4
	rec := recorded{
		Note: fmt.Sprintf("recorded by TestRecordTrace on %s, kernel %s, %d CPUs, cgroup mode %s; all loads on CPU 0",
			time.Now().UTC().Format(time.DateOnly), kernelRelease(), runtime.NumCPU(), tree.Mode()),
		Config: cfg,
	}
	var mu sync.Mutex
	live := AccountingSource(acct, func() []ScopeInfo { return infos })
	src := SourceFunc(func() (Snapshot, error) {
		snap, err := live.Snapshot()
		snap.At = snap.At.Round(0) // wall clock only, as the replay has it
		mu.Lock()
		rec.Snapshots = append(rec.Snapshots, snap)
		mu.Unlock()
		return snap, err
	})
	var applied []string
	act := Actuators{Scope: func(key string, weight uint64, cpuMax float64) error {
		applied = append(applied, fmt.Sprintf("%s %d %g", key, weight, cpuMax))
		l := cgroups.Limits{CPUWeight: weight, CPUMax: cpuMax}
		if cpuMax == 0 {
			l.CPUMax = -1
		}
		return nodes[key].Set(l)
	}}
	c, err := New(cfg, src, act, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	startLoad(t, "serve", nodes[victim])
	time.Sleep(3 * time.Second)
	var spinners []*load
	for range 4 {
		spinners = append(spinners, startLoad(t, "spin", nodes[antagonist]))
	}
	// waitFor waits for the controller's events to be want so far.
	waitFor := func(limit time.Duration, want ...string) bool {
		t.Helper()
		for end := time.Now().Add(limit); !slices.Equal(kinds(c.Events(time.Time{})), want); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(end) {
				t.Errorf("not within %s: events %v, want %v", limit, kinds(c.Events(time.Time{})), want)
				return false
			}
		}
		return true
	}
	// Stepped down, capped; the victim recovers under the cap, so the cap
	// is lifted, the victim suffers again, and the cap comes back.
	want := []string{"detected evil.prod", "stepped_down evil.prod"}
	ok := waitFor(15*time.Second, want...)
	for _, step := range []string{"capped evil.prod", "stepped_up evil.prod", "capped evil.prod"} {
		if !ok {
			break
		}
		want = append(want, step)
		ok = waitFor(20*time.Second, want...)
	}
	// The spinners stop: the antagonist is calm and let go.
	for _, s := range spinners {
		s.stop()
	}
	if ok {
		waitFor(40*time.Second, append(want, "stepped_up evil.prod", "restored evil.prod")...)
	}
	time.Sleep(time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	for _, e := range c.Events(time.Time{}) {
		t.Logf("%s %s %s level %d victims %v: %s", e.At.Format("15:04:05.000"), e.Kind, e.Scope, e.Level, e.Victims, e.Reason)
	}
	mu.Lock()
	defer mu.Unlock()
	tr := replay(t, rec)
	rec.Decisions = tr.log
	var set []string
	for _, a := range tr.acts {
		set = append(set, fmt.Sprintf("%s %d %g", a.Key, a.Weight, a.CPUMax))
	}
	if !slices.Equal(set, applied) {
		t.Errorf("the replay sets %v, the live controller set %v", set, applied)
	}
	b, err := json.MarshalIndent(rec, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		file += ".failed"
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d snapshots written to %s", len(rec.Snapshots), file)
}

// replay feeds a recorded trace to Decide.
func replay(t *testing.T, rec recorded) *trace {
	t.Helper()
	tr := newTrace(t, rec.Config)
	for _, s := range rec.Snapshots {
		tr.feed(s)
	}
	return tr
}

// TestReplayTrace replays a trace recorded on a real kernel by
// TestRecordTrace: Decide must make the decisions the live controller
// made, and those must be the expected ones.
func TestReplayTrace(t *testing.T) {
	b, err := os.ReadFile("testdata/live-trace.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec recorded
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	t.Log(rec.Note)
	tr := replay(t, rec)
	if !slices.Equal(tr.log, rec.Decisions) {
		t.Errorf("decisions:\n  %s\nrecorded:\n  %s", strings.Join(tr.log, "\n  "), strings.Join(rec.Decisions, "\n  "))
	}
	var got []string
	for _, e := range tr.evs {
		got = append(got, e.Kind+" "+e.Scope)
		if e.Scope != antagonist || (e.Kind != EventRestored && !slices.Equal(e.Victims, []string{victim})) {
			t.Errorf("event %+v", e)
		}
	}
	want := []string{"detected evil.prod", "stepped_down evil.prod", "capped evil.prod", "stepped_up evil.prod",
		"capped evil.prod", "stepped_up evil.prod", "restored evil.prod"}
	if !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}

	// The default thresholds (with the default cool-down) find the same
	// antagonist, and never blame the service.
	rec.Config = DefaultConfig()
	tr = replay(t, rec)
	if k := kinds(tr.evs); len(k) < 2 || k[0] != "detected evil.prod" || k[1] != "stepped_down evil.prod" {
		t.Errorf("with the defaults: %v", k)
	}
	for _, a := range tr.acts {
		if a.Key != antagonist {
			t.Errorf("with the defaults: %+v", a)
		}
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// openLive is the set-up of a recording: root, a unified hierarchy, the
// tree at liveRoot (removed at the end) and eBPF accounting of it, with a
// logger to the test's output; it skips where any is missing.
func openLive(t *testing.T) (*cgroups.Tree, accounting.Source, *slog.Logger) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresUnified(t)
	testutil.CheckLeaks(t, liveRoot)
	tree, err := cgroups.Open(liveRoot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := tree.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		if err := tree.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	root, err := cgroups.Load(liveRoot)
	if err != nil {
		t.Fatal(err)
	}
	rootID, err := root.ID()
	if err != nil {
		t.Fatal(err)
	}
	level, err := accounting.Level(root.UnifiedDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	acct, err := accounting.Open(accounting.Options{RootID: rootID, RootLevel: level, ScopeLevel: level + 3, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = acct.Close() })
	if acct.Name() != accounting.SourceEBPF {
		t.Skipf("needs eBPF accounting: %v", acct.Stats().Reason)
	}
	return tree, acct, log
}
