package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/scoped-io/scoped/plugins/reattach"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// PluginName is the key of Plugin in plugin.ClientConfig.Plugins and the
// name to Dispense.
const PluginName = "scoped"

// DefaultReattachFile is where the daemon publishes its ReattachInfo.
const DefaultReattachFile = "/run/scoped/reattach.json"

// Handshake is the go-plugin handshake of the scoped API. go-plugin checks
// the magic cookie only when it starts a plugin process; on reattach it is
// not sent, but a plugin.ClientConfig still names it.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SCOPED_API",
	MagicCookieValue: "7f1c1f0e-scoped-supervisor-api",
}

// Plugin is the scoped API as a go-plugin GRPCPlugin. Dispense(PluginName)
// returns a scopedv1.ScopedClient. Only the client side exists: the daemon
// serves the API itself, an application never does.
//
//	rc, err := client.LoadReattach(client.DefaultReattachFile)
//	pc := plugin.NewClient(&plugin.ClientConfig{
//		HandshakeConfig:  client.Handshake,
//		Plugins:          plugin.PluginSet{client.PluginName: &client.Plugin{}},
//		Reattach:         rc,
//		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
//	})
//	// With a token: GRPCDialOptions: []grpc.DialOption{
//	//	grpc.WithPerRPCCredentials(client.TokenCredentials(token))},
//	defer pc.Kill() // closes the connection; never signals the daemon
//	rpc, err := pc.Client()
//	raw, err := rpc.Dispense(client.PluginName)
//	api := raw.(scopedv1.ScopedClient)
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer always fails: the daemon serves the scoped API, not a plugin
// process started by the application.
func (*Plugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("client: the scoped API is served by the scoped daemon; reattach to it instead of serving it")
}

// GRPCClient returns a scopedv1.ScopedClient on the reattached connection.
func (*Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return scopedv1.NewScopedClient(c), nil
}

// ReattachInfo is what the daemon publishes at DefaultReattachFile (the
// daemon writes it with package plugins/reattach).
type ReattachInfo = reattach.Info

// LoadReattach reads the ReattachInfo the daemon published at path
// (DefaultReattachFile when empty) and returns the plugin.ReattachConfig to
// put in plugin.ClientConfig.Reattach.
//
// The config can never harm the daemon: Pid is 0 and ReattachFunc attaches a
// runner that stands for the daemon without any power over it, so the
// application's plugin.Client.Kill (and plugin.CleanupClients) only closes
// the application's connection. (Pid 0 with go-plugin's default runner
// would not signal either, as Go refuses to signal pid 0, but that runner
// reports the plugin exited after a second, after which a first Client()
// fails with Canceled.) A config may be used for several clients.
func LoadReattach(path string) (*plugin.ReattachConfig, error) {
	if path == "" {
		path = DefaultReattachFile
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w no reattach file at %s", ErrNotRunning, path)
	}
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var info ReattachInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("client: reattach file %s: %w", path, err)
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("client: %w (in %s)", err, path)
	}
	addr := &net.UnixAddr{Net: "unix", Name: info.Addr}
	return &plugin.ReattachConfig{
		Protocol:        plugin.Protocol(info.Protocol),
		ProtocolVersion: info.ProtocolVersion,
		Addr:            addr,
		Pid:             0,
		ReattachFunc: func() (runner.AttachedRunner, error) {
			// Fail here, inside Start, with the same clear error as Dial.
			if err := probe(context.Background(), info.Addr); err != nil {
				return nil, err
			}
			return &daemonRunner{id: "scoped@" + info.Addr, stop: make(chan struct{})}, nil
		},
	}, nil
}

// daemonRunner is the runner.AttachedRunner of a reattached client. It
// stands for the daemon without any power over it: it holds no pid and sends
// no signal. Its Wait returns once the application kills its client, which
// is what go-plugin reports as Exited; a daemon that restarts is not an exit,
// since gRPC reconnects to the same socket by itself.
type daemonRunner struct {
	id   string
	once sync.Once
	stop chan struct{}
}

func (r *daemonRunner) release() { r.once.Do(func() { close(r.stop) }) }

func (r *daemonRunner) Wait(ctx context.Context) error {
	select {
	case <-r.stop:
	case <-ctx.Done():
	}
	return nil
}

// Kill is what go-plugin calls after its grace period; it only releases Wait.
func (r *daemonRunner) Kill(context.Context) error {
	r.release()
	return nil
}

// ID is called by plugin.Client.Kill before it closes the connection and
// waits up to 2 s for the "process" to exit, then logs "plugin failed to exit
// gracefully". When the caller is Kill, ID releases Wait so that Kill returns
// at once, quietly. Other callers (plugin.Client.ID) change nothing: releasing
// Wait before the application's first Client() would make it fail. If a
// go-plugin release renames Kill, Kill is slow again, never unsafe.
func (r *daemonRunner) ID() string {
	if calledBy(goPluginKill) {
		r.release()
	}
	return r.id
}

const goPluginKill = "github.com/hashicorp/go-plugin.(*Client).Kill"

// calledBy reports whether fn called its caller.
func calledBy(fn string) bool {
	var pcs [1]uintptr
	if runtime.Callers(3, pcs[:]) == 0 {
		return false
	}
	f, _ := runtime.CallersFrames(pcs[:]).Next()
	return f.Function == fn
}

func (r *daemonRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *daemonRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
