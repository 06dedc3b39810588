package client_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/client/clienttest"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/plugins/reattach"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func TestMain(m *testing.M) { testutil.HelperMain(m) }

// serveHelper makes the test binary a fake daemon serving on the socket it
// is given, until its stdin closes: a separate process that a wrong Kill
// could really kill.
var serveHelper = testutil.Helper("client-daemon", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	lis, err := net.Listen("unix", args[0])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 3
	}
	go (&clienttest.Server{}).GRPCServer().Serve(lis)
	io.Copy(io.Discard, os.Stdin)
	return 0
})

// startDaemon runs the fake daemon in a child process and returns it and its
// socket.
func startDaemon(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "scoped.sock")
	cmd := testutil.HelperCommand(t, serveHelper, sock)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // closed when the test ends: the child exits
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return cmd, sock
		}
		if time.Now().After(deadline) {
			t.Fatal("fake daemon did not start")
		}
	}
}

// alive reports whether the child is still running (not even a zombie).
func alive(cmd *exec.Cmd) bool {
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	return err == nil && !strings.Contains(string(st), ") Z ")
}

func pluginClient(t *testing.T, rc *plugin.ReattachConfig, logs io.Writer) *plugin.Client {
	return plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  client.Handshake,
		Plugins:          plugin.PluginSet{client.PluginName: &client.Plugin{}},
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		GRPCDialOptions:  []grpc.DialOption{grpc.WithPerRPCCredentials(client.TokenCredentials("t"))},
	})
}

func invokeVia(t *testing.T, pc *plugin.Client) {
	t.Helper()
	rpc, err := pc.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Ping(); err != nil {
		t.Errorf("Ping (health service %q): %v", plugin.GRPCServiceName, err)
	}
	raw, err := rpc.Dispense(client.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	api, ok := raw.(scopedv1.ScopedClient)
	if !ok {
		t.Fatalf("Dispense returned %T, want scopedv1.ScopedClient", raw)
	}
	resp, err := api.Invoke(ctx(t), &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "shout", Payload: []byte("via plugin")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetResult()) != "VIA PLUGIN" {
		t.Errorf("result %q", resp.GetResult())
	}
}

// TestReattachKillLeavesDaemonAlive is the contract of LoadReattach: an
// application that reattaches through go-plugin and kills its client closes
// its connection, and the daemon process lives on and serves others.
func TestReattachKillLeavesDaemonAlive(t *testing.T) {
	daemon, sock := startDaemon(t)

	file := filepath.Join(t.TempDir(), "reattach.json")
	if err := reattach.Write(file, reattach.Info{Protocol: "grpc", ProtocolVersion: 1, Network: "unix", Addr: sock}); err != nil {
		t.Fatal(err)
	}
	rc, err := client.LoadReattach(file)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Pid != 0 || rc.ReattachFunc == nil || rc.Test {
		t.Fatalf("ReattachConfig{Pid: %d, ReattachFunc set: %v, Test: %v}, want Pid 0 and our ReattachFunc", rc.Pid, rc.ReattachFunc != nil, rc.Test)
	}

	var logs bytes.Buffer
	pc := pluginClient(t, rc, &logs)
	invokeVia(t, pc)
	if pc.Exited() {
		t.Error("Exited() before Kill")
	}

	_ = pc.ID() // an ID() outside Kill must not release the client
	if pc.Exited() {
		t.Error("Exited() after ID()")
	}
	start := time.Now()
	pc.Kill()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Kill() took %v: the fast path (daemonRunner.ID called by Kill) is gone; go-plugin log:\n%s", d, logs.String())
	}
	if strings.Contains(logs.String(), "failed to exit gracefully") {
		t.Errorf("Kill() logged a warning:\n%s", logs.String())
	}
	if !pc.Exited() {
		t.Error("Exited() false after Kill")
	}
	time.Sleep(200 * time.Millisecond) // give a wrong signal time to land
	if !alive(daemon) {
		t.Fatalf("Kill() of a reattached client killed the daemon; go-plugin log:\n%s", logs.String())
	}
	// It still serves, a new client included.
	c, err := client.Dial(ctx(t), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Invoke(ctx(t), &scopedv1.InvokeRequest{Payload: []byte("x")}); err != nil {
		t.Fatalf("daemon does not serve after Kill: %v", err)
	}
	// And a second reattach from the same file works.
	pc2 := pluginClient(t, rc, io.Discard)
	invokeVia(t, pc2)
	pc2.Kill()
	if !alive(daemon) {
		t.Fatal("second Kill() killed the daemon")
	}
	t.Logf("go-plugin log of the first client:\n%s", logs.String())
}

// TestReattachWithDaemonPidKillsIt shows what LoadReattach protects
// against, and that TestReattachKillLeavesDaemonAlive would notice: a
// ReattachConfig naming the daemon's pid (go-plugin's default runner) makes
// Kill() SIGKILL the daemon.
func TestReattachWithDaemonPidKillsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for go-plugin's 2 s grace period")
	}
	daemon, sock := startDaemon(t)
	pc := pluginClient(t, &plugin.ReattachConfig{
		Protocol: plugin.ProtocolGRPC, ProtocolVersion: 1,
		Addr: &net.UnixAddr{Net: "unix", Name: sock}, Pid: daemon.Process.Pid,
	}, io.Discard)
	invokeVia(t, pc)
	pc.Kill()
	for deadline := time.Now().Add(5 * time.Second); alive(daemon); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a ReattachConfig with the daemon's pid did not kill it: the Kill test proves nothing")
		}
	}
}

func TestReattachDaemonNotRunning(t *testing.T) {
	dir := t.TempDir()
	if _, err := client.LoadReattach(filepath.Join(dir, "reattach.json")); !errors.Is(err, client.ErrNotRunning) {
		t.Errorf("missing reattach file: %v, want ErrNotRunning", err)
	}

	// A reattach file left behind, no daemon: Start fails with Dial's error.
	file := filepath.Join(dir, "reattach.json")
	sock := filepath.Join(dir, "gone.sock")
	if err := reattach.Write(file, reattach.Info{Addr: sock}); err != nil {
		t.Fatal(err)
	}
	rc, err := client.LoadReattach(file)
	if err != nil {
		t.Fatal(err)
	}
	pc := pluginClient(t, rc, io.Discard)
	defer pc.Kill()
	if _, err := pc.Client(); !errors.Is(err, client.ErrNotRunning) {
		t.Errorf("Client() with no daemon: %v, want ErrNotRunning", err)
	}
}

// TestLoadReattach reads what the daemon writes (reattach.Write) and
// refuses a file of another protocol version.
func TestLoadReattach(t *testing.T) {
	file := filepath.Join(t.TempDir(), "reattach.json")
	want := "/run/scoped/scoped.sock"
	if err := reattach.Write(file, reattach.Info{Addr: want}); err != nil {
		t.Fatal(err)
	}
	rc, err := client.LoadReattach(file)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Protocol != plugin.ProtocolGRPC || rc.ProtocolVersion != 1 || rc.Addr.Network() != "unix" || rc.Addr.String() != want {
		t.Errorf("ReattachConfig %+v", rc)
	}
	if err := os.WriteFile(file, []byte(`{"protocol":"grpc","protocol_version":2,"network":"unix","addr":"/s"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadReattach(file); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("LoadReattach of a version 2 file: %v", err)
	}
}

func TestPluginGRPCServerRefuses(t *testing.T) {
	if err := (&client.Plugin{}).GRPCServer(nil, grpc.NewServer()); err == nil {
		t.Error("GRPCServer succeeded")
	}
}

// TestReattachGoPluginServices records which of go-plugin's own services a
// reattached client calls on the daemon, and shows that their absence
// (Unimplemented) breaks neither Ping, Dispense, calls nor Kill.
func TestReattachGoPluginServices(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	g := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(stream)
		mu.Lock()
		seen[m] = true
		mu.Unlock()
		return status.Errorf(codes.Unimplemented, "unknown method %s", m)
	}))
	scopedv1.RegisterScopedServer(g, &clienttest.Server{})
	reattach.RegisterServices(g)
	sock := filepath.Join(t.TempDir(), "scoped.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	defer g.Stop()

	file := filepath.Join(t.TempDir(), "reattach.json")
	if err := reattach.Write(file, reattach.Info{Addr: sock}); err != nil {
		t.Fatal(err)
	}
	rc, err := client.LoadReattach(file)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	pc := pluginClient(t, rc, &logs)
	invokeVia(t, pc)
	time.Sleep(100 * time.Millisecond) // let the broker and stdio streams reach the server
	pc.Kill()

	mu.Lock()
	defer mu.Unlock()
	allowed := map[string]bool{
		"/plugin.GRPCBroker/StartStream":  true, // extra streams: unused by the scoped API
		"/plugin.GRPCStdio/StreamStdio":   true, // a plugin process's stdout/stderr: the daemon has none
		"/plugin.GRPCController/Shutdown": true, // sent by Kill; must stay unimplemented on the daemon
	}
	for m := range seen {
		if !allowed[m] {
			t.Errorf("go-plugin called %s, not known to be harmless when missing", m)
		}
	}
	t.Logf("go-plugin services called and answered Unimplemented: %v", seen)
	if strings.Contains(logs.String(), "[ERROR]") || strings.Contains(logs.String(), "[WARN]") {
		t.Errorf("go-plugin complained:\n%s", logs.String())
	}
}
