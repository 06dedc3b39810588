package metering

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/testutil"
)

// crashHelper makes the test binary the child of TestCrash: it commits
// batches to the ledger in the directory it is given until it is killed.
var crashHelper = testutil.Helper("metering-crash", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	crashChild(args[0])
	return 3 // not reached
})

// crashWindow is the window of the crash test's ledger.
const crashWindow = 10 * time.Second

func TestMain(m *testing.M) { testutil.HelperMain(m) }

// crashBatch is batch n of the crash test: whole values (so that sums are
// exact), several tenants, meters and dimensions, some stamped in windows
// that are sealed by then, and every fourth batch large enough that a kill
// often lands inside its transaction.
func crashBatch(n int64) []Delta {
	at := t0.Add(time.Duration(n) * 300 * time.Millisecond)
	var ds []Delta
	extra := int64(0)
	if n%4 == 0 {
		extra = 400
	}
	for i := int64(0); i < 8+extra; i++ {
		tn := "t" + strconv.FormatInt((n+i)%3, 10)
		ds = append(ds, Delta{
			Tenant: tn,
			Meter:  Meters()[(n*3+i)%7],
			Dims: Dimensions{
				Scope:       tn + ".s" + strconv.FormatInt(i%2, 10),
				Environment: "e" + strconv.FormatInt(i%2, 10),
				Extension:   "x" + strconv.FormatInt(i%50, 10),
			},
			At:    at.Add(-time.Duration(i%8) * 2 * time.Second),
			Value: float64((n*31+i*7)%97 + 1),
		})
	}
	return ds
}

// crashChild commits batches after the one the cursor names, reporting each
// number on fd 3 once Commit has returned, and seals now and then. It gives
// up after 20 s or when the parent is gone.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	report := os.NewFile(3, "report")
	l, err := Open(dir, crashWindow)
	if err != nil {
		fail(err)
	}
	c, err := l.Cursors()
	if err != nil {
		fail(err)
	}
	var n int64
	if b, ok := c["src"]; ok {
		if n, err = strconv.ParseInt(string(b), 10, 64); err != nil {
			fail(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n++
		if err := l.Commit(crashBatch(n), map[string][]byte{"src": []byte(strconv.FormatInt(n, 10))}); err != nil {
			fail(err)
		}
		if _, err := fmt.Fprintf(report, "%d\n", n); err != nil {
			fail(err)
		}
		if n%5 == 0 {
			if _, err := l.Seal(t0.Add(time.Duration(n)*300*time.Millisecond - 3*time.Second)); err != nil {
				fail(err)
			}
		}
	}
	fail(errors.New("not killed in time"))
}

// TestCrash kills a process that commits in a loop with SIGKILL at random
// moments and checks, each time, that the ledger opens cleanly and holds
// exactly the batches its cursor names: those whose Commit returned, and
// at most the one whose Commit was under way.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for a few seconds")
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	dir := t.TempDir()
	var committed int64 // batches 1..committed are in the ledger
	exp := &crashSums{want: map[[2]string]float64{}}
	const rounds = 24
	for round := range rounds {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := testutil.HelperCommand(t, crashHelper, dir)
		cmd.ExtraFiles = []*os.File{w}
		out := &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		first := make(chan struct{})
		lines := make(chan []int64, 1)
		go func() {
			var got []int64
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				n, err := strconv.ParseInt(sc.Text(), 10, 64)
				if err != nil {
					n = -1
				}
				if len(got) == 0 {
					close(first)
				}
				got = append(got, n)
			}
			lines <- got
		}()
		// Even rounds kill at any moment from the start (during Open and
		// recovery too); odd ones some time after the first commit.
		delay := time.Duration(rng.IntN(250)) * time.Millisecond
		if round%2 == 1 {
			select {
			case <-first:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: no commit in 10 s; child said: %s", round, out)
			}
			delay = time.Duration(rng.IntN(100)) * time.Millisecond
		}
		time.Sleep(delay)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatalf("round %d: kill: %v; child said: %s", round, err, out)
		}
		err = cmd.Wait()
		printed := <-lines
		r.Close()
		if ws, ok := cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended on its own (%v); it said: %s", round, err, out)
		}

		// What the child reported must follow on from the last round.
		last := committed
		for _, n := range printed {
			if n != last+1 {
				t.Fatalf("round %d: child reported batch %d after %d", round, n, last)
			}
			last = n
		}

		l, err := Open(dir, crashWindow)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := l.Check(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c, err := l.Cursors()
		if err != nil {
			t.Fatal(err)
		}
		var m int64
		if b, ok := c["src"]; ok {
			m, _ = strconv.ParseInt(string(b), 10, 64)
		}
		if m != last && m != last+1 {
			t.Fatalf("round %d: cursor says batch %d, child reported up to %d", round, m, last)
		}
		checkCrashLedger(t, l, exp, m)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		unreported := ""
		if m == last+1 {
			unreported = " (the last one committed, killed before it was reported)"
		}
		t.Logf("round %d: killed after %v, %d batches reported, ledger holds 1..%d%s", round, delay, len(printed), m, unreported)
		committed = m
	}
	if committed == 0 {
		t.Fatal("no batch was ever committed")
	}
}

// crashSums are the sums of batches 1..n by tenant and meter.
type crashSums struct {
	n    int64
	want map[[2]string]float64
}

// checkCrashLedger checks that the ledger holds exactly batches 1..m, and
// that the sealed records have seqs 1..LastSeq.
func checkCrashLedger(t *testing.T, l *Ledger, exp *crashSums, m int64) {
	t.Helper()
	for ; exp.n < m; exp.n++ {
		for _, d := range crashBatch(exp.n + 1) {
			exp.want[[2]string{d.Tenant, d.Meter}] += d.Value
		}
	}
	want := exp.want
	rows, err := l.Usage(Query{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]float64{}
	for _, r := range rows {
		got[[2]string{r.Tenant, r.Meter}] = r.Value
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("after batch %d: %s %s = %v, want %v", m, k[0], k[1], got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("after batch %d: %d tenant/meter pairs, want %d", m, len(got), len(want))
	}
	last, err := l.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	var seq int64
	for {
		recs, err := l.Sealed(seq, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Seq != seq+1 {
				t.Fatalf("seq %d follows %d", r.Seq, seq)
			}
			seq = r.Seq
		}
	}
	if seq != last {
		t.Errorf("sealed records end at seq %d, LastSeq is %d", seq, last)
	}
}
