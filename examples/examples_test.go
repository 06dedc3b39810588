// Package examples_test builds the example extensions and runs each as a
// real go-plugin worker process, the way the supervisor does (without a
// sandbox): whoami and spin with the Go SDK, shout through cmd/scoped-exec.
package examples_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/plugins"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// binDir holds the binaries, built once for all tests (see build).
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	buildSkip string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// build returns the directory with the binaries of whoami, spin and
// scoped-exec, built as bundles are built: CGO_ENABLED=0 go build.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildSkip = "needs the go tool on PATH to build the examples: " + err.Error()
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "scoped-examples-"); buildErr != nil {
			return
		}
		cmd := exec.Command(gobin, "build", "-o", binDir+"/", "./whoami", "./spin", "../cmd/scoped-exec")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildSkip != "" {
		t.Skip(buildSkip)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// worker starts cmd as a go-plugin worker and dispenses its client.
func worker(t *testing.T, cmd *exec.Cmd) (workerv1.WorkerClient, *plugin.Client, *testutil.SyncBuffer) {
	t.Helper()
	stderr := &testutil.SyncBuffer{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		Plugins:          plugins.PluginSet(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Stderr:           stderr,
		StartTimeout:     20 * time.Second,
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}),
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	raw, err := rpc.Dispense(plugins.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(workerv1.WorkerClient), client, stderr
}

func call(t *testing.T, w workerv1.WorkerClient, req *workerv1.InvokeRequest) *workerv1.InvokeResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := w.Invoke(ctx, req)
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return resp
}

func TestWhoami(t *testing.T) {
	bin := build(t)
	w, client, _ := worker(t, exec.Command(filepath.Join(bin, "whoami")))
	resp := call(t, w, &workerv1.InvokeRequest{InvocationId: "who-1", Extension: "whoami", Payload: []byte(`héllo "there"`)})
	if resp.GetError() != "" {
		t.Fatalf("handler error: %s", resp.GetError())
	}
	var got struct {
		Hostname     string `json:"hostname"`
		PID          int    `json:"pid"`
		UIDMap       string `json:"uid_map"`
		Cgroup       string `json:"cgroup"`
		Payload      string `json:"payload"`
		InvocationID string `json:"invocation_id"`
	}
	if err := json.Unmarshal(resp.GetResult(), &got); err != nil {
		t.Fatalf("result %q: %v", resp.GetResult(), err)
	}
	if got.Payload != `héllo "there"` || got.InvocationID != "who-1" {
		t.Errorf("payload %q, invocation %q", got.Payload, got.InvocationID)
	}
	if got.PID != client.ReattachConfig().Pid || got.Hostname == "" || got.UIDMap == "" || got.Cgroup == "" {
		t.Errorf("whoami says %+v (worker pid %d)", got, client.ReattachConfig().Pid)
	}
}

// cpuTime is the user+system CPU time of pid, from /proc (in clock ticks of
// 10 ms, the Linux USER_HZ).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	// After "pid (comm) ": state is field 0, utime 11, stime 12.
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func TestSpin(t *testing.T) {
	bin := build(t)
	w, client, _ := worker(t, exec.Command(filepath.Join(bin, "spin")))
	pid := client.ReattachConfig().Pid

	before := cpuTime(t, pid)
	resp := call(t, w, &workerv1.InvokeRequest{InvocationId: "spin-1", Payload: []byte("50")})
	used := cpuTime(t, pid) - before
	if resp.GetError() != "" || string(resp.GetResult()) != "50" {
		t.Fatalf("result %q, error %q", resp.GetResult(), resp.GetError())
	}
	// The clock ticks are coarse: 50 ms burnt reads as 40 ms or more.
	if used < 40*time.Millisecond {
		t.Errorf("the worker used %v of CPU for 50 ms", used)
	}

	for _, bad := range []string{"", "abc", "-1", "60001", "1.5"} {
		if resp := call(t, w, &workerv1.InvokeRequest{Payload: []byte(bad)}); resp.GetError() == "" {
			t.Errorf("payload %q: result %q, no error", bad, resp.GetResult())
		}
	}

	// A deadline stops the burn: the caller gets DEADLINE_EXCEEDED at once,
	// and the worker goes back to serving instead of burning for a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := w.Invoke(ctx, &workerv1.InvokeRequest{Payload: []byte("60000")}); err == nil {
		t.Error("60 s of CPU within 200 ms")
	}
	resp = call(t, w, &workerv1.InvokeRequest{Payload: []byte("1")})
	if string(resp.GetResult()) != "1" || time.Since(start) > 10*time.Second {
		t.Errorf("after a deadline: %q %q after %v", resp.GetResult(), resp.GetError(), time.Since(start))
	}
}

func TestShout(t *testing.T) {
	bin := build(t)
	entry, err := filepath.Abs("shout/shout.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "scoped-exec"))
	cmd.Env = append(os.Environ(), "SCOPED_EXEC_ENTRYPOINT="+entry)
	w, _, stderr := worker(t, cmd)
	resp := call(t, w, &workerv1.InvokeRequest{InvocationId: "shout-1", Extension: "shout", Payload: []byte("hello, tenant\n")})
	if resp.GetError() != "" || string(resp.GetResult()) != "HELLO, TENANT\n" {
		t.Fatalf("result %q, error %q", resp.GetResult(), resp.GetError())
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "shout: invocation shout-1 of shout\n"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's stderr line did not reach the worker's stderr:\n%s", stderr.String())
		}
	}
}

func TestScopedExecRefusesBadConfig(t *testing.T) {
	bin := build(t)
	for _, env := range []string{"SCOPED_EXEC_ENTRYPOINT=", "SCOPED_EXEC_ENTRYPOINT=shout/shout.sh", "SCOPED_EXEC_ENTRYPOINT=/nonexistent",
		"SCOPED_EXEC_ENTRYPOINT=/bin/sh\x00SCOPED_EXEC_ARGS=[1]"} {
		cmd := exec.Command(filepath.Join(bin, "scoped-exec"))
		cmd.Env = append([]string{plugins.Handshake.MagicCookieKey + "=" + plugins.Handshake.MagicCookieValue}, strings.Split(env, "\x00")...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.HasPrefix(string(out), "scoped-exec: ") {
			t.Errorf("%q: %v, %q", env, err, out)
		}
	}
}

var manifestLine = regexp.MustCompile(`^([a-z]+) = "([^"\\]*)"$`)

// TestManifests checks every example's manifest.toml: only the keys the
// supervisor knows, a known runtime, an entrypoint that the bundle has (an
// executable for exec, a main package of that name for go).
func TestManifests(t *testing.T) {
	dirs, err := filepath.Glob("*/manifest.toml")
	if err != nil || len(dirs) < 3 {
		t.Fatalf("manifests: %v %v", dirs, err)
	}
	for _, m := range dirs {
		dir := filepath.Dir(m)
		f, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		kv := map[string]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			mm := manifestLine.FindStringSubmatch(line)
			if mm == nil {
				t.Errorf("%s: line %q", m, line)
				continue
			}
			kv[mm[1]] = mm[2]
		}
		f.Close()
		for k := range kv {
			if k != "runtime" && k != "entrypoint" && k != "description" {
				t.Errorf("%s: unknown key %q", m, k)
			}
		}
		switch kv["runtime"] {
		case "go":
			if kv["entrypoint"] != dir {
				t.Errorf("%s: entrypoint %q, want the binary %q", m, kv["entrypoint"], dir)
			}
			if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
				t.Errorf("%s: %v", m, err)
			}
		case "exec":
			fi, err := os.Stat(filepath.Join(dir, kv["entrypoint"]))
			if err != nil || fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: entrypoint %q is not an executable in the bundle (%v)", m, kv["entrypoint"], err)
			}
		default:
			t.Errorf("%s: runtime %q", m, kv["runtime"])
		}
	}
}
