package plugins

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/scoped-io/scoped/internal/testutil"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// script writes a /bin/sh script to a temporary directory and returns the
// exec runtime for it (run as "/bin/sh script", which avoids ETXTBSY races
// with files just written).
func script(t *testing.T, opts ExecOptions, body string) Handler {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ext.sh")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.Stderr == nil {
		opts.Stderr = &testutil.SyncBuffer{}
	}
	return ExecWith(opts, "/bin/sh", path)
}

func invoke(h Handler, payload string, meta map[string]string) ([]byte, error) {
	return h.Invoke(context.Background(), &Request{InvocationID: "inv-1", Extension: "ext", Payload: []byte(payload), Metadata: meta})
}

func TestExecUpperCase(t *testing.T) {
	h := script(t, ExecOptions{}, `tr '[:lower:]' '[:upper:]'`)
	out, err := invoke(h, "hello, world\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "HELLO, WORLD\n" {
		t.Errorf("result %q", out)
	}
	// A program that ignores its stdin still succeeds.
	out, err = invoke(script(t, ExecOptions{}, `echo ok`), strings.Repeat("x", 1<<20), nil)
	if err != nil || string(out) != "ok\n" {
		t.Errorf("%q %v", out, err)
	}
}

func TestExecExitStatus(t *testing.T) {
	stderr := &testutil.SyncBuffer{}
	var body strings.Builder
	for i := range 20 {
		body.WriteString("echo line" + strconv.Itoa(i) + " >&2\n")
	}
	body.WriteString("printf 'no newline' >&2\nexit 3\n")
	_, err := invoke(script(t, ExecOptions{Stderr: stderr}, body.String()), "", nil)
	if !errors.Is(err, ErrExit) {
		t.Fatalf("error %v, want ErrExit", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "line19") || !strings.Contains(msg, "no newline") {
		t.Errorf("error %q lacks the status or the stderr tail", msg)
	}
	if strings.Contains(msg, "line5\n") {
		t.Errorf("error %q holds more than the tail", msg)
	}
	if !strings.HasPrefix(stderr.String(), "line0\nline1\n") || !strings.HasSuffix(stderr.String(), "line19\nno newline\n") {
		t.Errorf("stderr forwarded as %q", stderr.String())
	}
}

func TestExecResultTooLarge(t *testing.T) {
	start := time.Now()
	// yes never stops on its own: the runtime has to kill it.
	_, err := invoke(script(t, ExecOptions{MaxResult: 1000}, `exec yes`), "", nil)
	if !errors.Is(err, ErrResultTooLarge) {
		t.Fatalf("error %v, want ErrResultTooLarge", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v", el)
	}
	out, err := invoke(script(t, ExecOptions{MaxResult: 1000}, `head -c 1000 /dev/zero`), "", nil)
	if err != nil || len(out) != 1000 {
		t.Errorf("exactly MaxResult bytes: %d bytes, %v", len(out), err)
	}
}

// gone waits until pid has exited (or is a zombie awaiting its reaper).
func gone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
	}
	t.Errorf("process %d still runs", pid)
}

func TestExecDeadlineKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	h := script(t, ExecOptions{}, `sleep 30 & echo $! > `+pidFile+`; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := h.Invoke(ctx, &Request{InvocationID: "slow"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("returned after %v", el)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	gone(t, pid)
}

func TestExecKillsLeftovers(t *testing.T) {
	out, err := invoke(script(t, ExecOptions{}, `sleep 30 >/dev/null 2>&1 & echo $!`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	gone(t, pid)
}

func TestExecEnv(t *testing.T) {
	t.Setenv(Handshake.MagicCookieKey, Handshake.MagicCookieValue)
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", "/plugin")
	t.Setenv("SCOPED_META_STALE", "x")
	t.Setenv("SCOPED_TEST_KEEP", "kept")
	h := script(t, ExecOptions{}, `env | grep -e ^SCOPED -e ^PLUGIN | LC_ALL=C sort`)
	out, err := invoke(h, "", map[string]string{"trace-id": "abc", "Tenant.Name": "x y", "": "skipped", "ünï": "u"})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"SCOPED_EXTENSION=ext",
		"SCOPED_INVOCATION_ID=inv-1",
		"SCOPED_META_TENANT_NAME=x y",
		"SCOPED_META_TRACE_ID=abc",
		"SCOPED_META__N_=u",
		"SCOPED_TEST_KEEP=kept",
	}, "\n") + "\n"
	if string(out) != want {
		t.Errorf("environment:\n%s\nwant:\n%s", out, want)
	}

	// An explicit Env is the whole base environment.
	h = script(t, ExecOptions{Env: []string{"A=1"}}, `env | LC_ALL=C sort | grep -v -e ^PWD= -e ^SHLVL= -e ^_=`)
	out, err = invoke(h, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "A=1\nSCOPED_EXTENSION=ext\nSCOPED_INVOCATION_ID=inv-1\n" {
		t.Errorf("environment with Env set:\n%s", out)
	}

	_, err = invoke(h, "", map[string]string{"k": "a\x00b"})
	if !errors.Is(err, ErrInvalidMetadata) {
		t.Errorf("a NUL byte in metadata: %v", err)
	}
}

func TestExecDir(t *testing.T) {
	dir := t.TempDir()
	out, err := invoke(script(t, ExecOptions{Dir: dir}, `pwd`), "", nil)
	if err != nil || strings.TrimSpace(string(out)) != dir {
		t.Errorf("pwd %q %v, want %s", out, err, dir)
	}
}

func TestExecMissingProgram(t *testing.T) {
	_, err := invoke(Exec(filepath.Join(t.TempDir(), "nope")), "", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v, want not-exist", err)
	}
}

// TestExecThroughPlugin: the exec runtime behind the worker protocol; its
// failures are invocation errors, not gRPC errors.
func TestExecThroughPlugin(t *testing.T) {
	w := dial(t, script(t, ExecOptions{}, `case "$SCOPED_META_MODE" in fail) echo bad input >&2; exit 1;; esac; tr a-z A-Z`))
	resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "a", Payload: []byte("shout")})
	if err != nil || string(resp.GetResult()) != "SHOUT" {
		t.Errorf("%q %v", resp.GetResult(), err)
	}
	resp, err = w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "b", Metadata: map[string]string{"mode": "fail"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetError(), "exit status 1") || !strings.Contains(resp.GetError(), "bad input") {
		t.Errorf("error %q", resp.GetError())
	}
	start := time.Now()
	resp, err = w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "c", DeadlineMs: 200, Metadata: map[string]string{"mode": "x"}, Payload: nil})
	if err != nil || resp.GetError() != "" || time.Since(start) > 10*time.Second {
		t.Errorf("%v %q", err, resp.GetError())
	}
}

func TestLineWriterSplitsLongLines(t *testing.T) {
	out := &testutil.SyncBuffer{}
	w := &lineWriter{out: out}
	long := strings.Repeat("a", maxLine+10)
	_, _ = w.Write([]byte("x"))
	_, _ = w.Write([]byte(long + "\nb\n"))
	_, _ = w.Write([]byte("c"))
	w.flush()
	want := "x" + long[:maxLine-1] + "\n" + long[maxLine-1:] + "\nb\nc\n"
	if out.String() != want {
		t.Errorf("forwarded %d bytes, want %d", len(out.String()), len(want))
	}
	if len(w.tail) != 4 || len(w.tail[0]) != tailLineMax || w.tail[3] != "c" {
		t.Errorf("tail %q", w.tail)
	}
}

var envKeyRE = regexp.MustCompile(`^[A-Z0-9_]*$`)

func TestMetadataEnvKey(t *testing.T) {
	for in, want := range map[string]string{
		"trace-id": "TRACE_ID", "Tenant.Name": "TENANT_NAME", "a_b9": "A_B9", "ünï": "_N_", "": "", "\xff\xfe": "__",
	} {
		if got := MetadataEnvKey(in); got != want {
			t.Errorf("MetadataEnvKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzMetadataEnvKey: any key becomes [A-Z0-9_]*, one character per rune
// (or invalid byte), and sanitising twice changes nothing.
func FuzzMetadataEnvKey(f *testing.F) {
	for _, s := range []string{"trace-id", "Tenant.Name", "ünï", "", "a=b", "\x00", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		got := MetadataEnvKey(key)
		if !envKeyRE.MatchString(got) {
			t.Fatalf("MetadataEnvKey(%q) = %q", key, got)
		}
		if len(got) != utf8.RuneCountInString(key) {
			t.Fatalf("MetadataEnvKey(%q) = %q: %d characters for %d runes", key, got, len(got), utf8.RuneCountInString(key))
		}
		if again := MetadataEnvKey(got); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", key, got, again)
		}
	})
}

// TestSpareThreads: spareThreads leaves at least n OS threads in the
// process, idle in the runtime's pool, once the goroutines that made them
// have ended.
func TestSpareThreads(t *testing.T) {
	spareThreads(12)
	time.Sleep(50 * time.Millisecond)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	var n int
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 12 {
		t.Errorf("%d threads after spareThreads(12)", n)
	}
}
