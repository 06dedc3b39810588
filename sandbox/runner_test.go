package sandbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/sandbox"
)

var testHandshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SCOPED_SANDBOX_TEST_PLUGIN",
	MagicCookieValue: "sandbox-runner-test",
}

// nopPlugin is a gRPC plugin with no service of its own: go-plugin's
// health check (Ping) is all the test needs.
type nopPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (nopPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (nopPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

var testPlugins = plugin.PluginSet{"nop": nopPlugin{}}

// servePlugin is the worker side.
func servePlugin() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: testHandshake,
		Plugins:         testPlugins,
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}

// TestRunner starts a go-plugin worker in a sandbox through Runner, pings
// it over gRPC through the translated socket, and kills it.
func TestRunner(t *testing.T) {
	e := newEnv(t)
	scope, err := e.tree.Node(cgroups.Limits{}, "t", "plugins")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := e.ids.Acquire("plugins")
	if err != nil {
		t.Fatal(err)
	}
	defer e.ids.Release("plugins")
	socketBase := t.TempDir()

	var r *sandbox.Runner
	args, helperEnv := insideArgs("plugin")
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  testHandshake,
		Plugins:          testPlugins,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     20 * time.Second,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: socketBase},
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}),
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, dir string) (runner.Runner, error) {
			var err error
			r, err = sandbox.NewRunner(sandbox.Config{
				ID:       "plugin1",
				StateDir: e.state,
				Cgroup:   scope.Path() + "/plugin1",
				IDs:      ids,
				Binary:   e.self,
				Args:     args,
				Env:      []string{helperEnv},
				Launcher: sandbox.Launcher(*launcher),
			}, cmd, dir)
			return r, err
		},
	})
	defer client.Kill()

	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("go-plugin client: %v", err)
	}
	if err := rpc.Ping(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if !strings.HasPrefix(client.ReattachConfig().Addr.String(), socketBase) {
		t.Errorf("plugin address %s is not under the host socket dir %s", client.ReattachConfig().Addr, socketBase)
	}
	if r.Started().IsZero() || time.Since(r.Started()) < 0 {
		t.Errorf("Started = %v after the handshake", r.Started())
	}
	pid := r.Sandbox().Pid()
	if uid := hostUID(t, pid); uid != int(ids.Base) {
		t.Errorf("worker runs as host uid %d, want %d", uid, ids.Base)
	}
	client.Kill()
	if !client.Exited() {
		t.Error("the client does not see the worker as exited after Kill")
	}
	if _, err := os.Stat(scope.UnifiedDir() + "/plugin1"); err == nil {
		t.Error("the worker's cgroup survives Kill")
	}
}

func TestRunnerRefusesForeignAddresses(t *testing.T) {
	r, err := sandbox.NewRunner(sandbox.Config{IDs: sandbox.IDRange{Base: uint32(os.Getuid()), Size: 1}}, exec.Command(""), t.TempDir())
	if os.Getuid() == 0 {
		// NewRunner refuses host root as the sandbox's id range.
		if err == nil {
			t.Fatal("NewRunner accepted host root as the id range")
		}
		r, err = sandbox.NewRunner(sandbox.Config{IDs: sandbox.IDRange{Base: 1 << 20, Size: 1}}, exec.Command(""), t.TempDir())
	}
	if err != nil {
		t.Skipf("cannot hand the socket dir to another uid: %v", err)
	}
	defer r.Kill(context.Background()) // closes its handle on the socket dir
	for _, addr := range []string{"/plugin/../etc/x", "/etc/passwd", "/plugin/", "/plugin/a/b"} {
		if _, _, err := r.PluginToHost("unix", addr); err == nil {
			t.Errorf("PluginToHost(%q) accepted", addr)
		}
	}
	if _, _, err := r.PluginToHost("tcp", "127.0.0.1:1234"); err == nil {
		t.Error("PluginToHost accepted tcp")
	}
}

// FuzzPluginToHost: whatever a worker announces, a translated address stays
// a direct child of the socket directory.
func FuzzPluginToHost(f *testing.F) {
	for _, s := range []string{"/plugin/plugin123", "/plugin/../x", "/plugin/a/b", "/plugin/", "/x", "/plugin/.."} {
		f.Add(s)
	}
	dir := "/run/scoped/sockets/plugin-dir1"
	r := sandbox.NewRunnerForTest(dir)
	f.Fuzz(func(t *testing.T, addr string) {
		_, host, err := r.PluginToHost("unix", addr)
		if err != nil {
			return
		}
		if filepath.Dir(host) != dir || filepath.Base(host) == ".." || filepath.Base(host) == "." {
			t.Fatalf("PluginToHost(%q) = %q, outside %s", addr, host, dir)
		}
	})
}
