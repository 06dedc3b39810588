package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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

// ReattachInfo is what the daemon publishes (as JSON) so that applications
// using go-plugin can reattach to it. It deliberately has no pid: go-plugin
// signals the pid of a reattached plugin when the application calls Kill.
type ReattachInfo struct {
	Protocol        string `json:"protocol"`         // "grpc"
	ProtocolVersion int    `json:"protocol_version"` // Handshake.ProtocolVersion
	Network         string `json:"network"`          // "unix"
	Addr            string `json:"addr"`             // the daemon's socket path
}

// WriteReattach publishes info at path atomically (a temporary file in the
// same directory, synced, renamed over path) with mode 0644. Empty fields
// take their defaults: "grpc", Handshake.ProtocolVersion, "unix". The daemon
// calls it once it serves, and removes the file when it stops.
func WriteReattach(path string, info ReattachInfo) error {
	if info.Protocol == "" {
		info.Protocol = string(plugin.ProtocolGRPC)
	}
	if info.ProtocolVersion == 0 {
		info.ProtocolVersion = int(Handshake.ProtocolVersion)
	}
	if info.Network == "" {
		info.Network = "unix"
	}
	if err := info.validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("client: write reattach file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (info ReattachInfo) validate() error {
	switch {
	case info.Protocol != string(plugin.ProtocolGRPC):
		return fmt.Errorf("client: reattach protocol %q: only %q is supported", info.Protocol, plugin.ProtocolGRPC)
	case info.ProtocolVersion != int(Handshake.ProtocolVersion):
		return fmt.Errorf("client: the daemon speaks scoped API version %d, this client version %d", info.ProtocolVersion, Handshake.ProtocolVersion)
	case info.Network != "unix":
		return fmt.Errorf("client: reattach network %q: only \"unix\" is supported", info.Network)
	case !filepath.IsAbs(info.Addr):
		return fmt.Errorf("client: reattach address %q is not an absolute socket path", info.Addr)
	}
	return nil
}

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
	if err := info.validate(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
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

// RegisterReattachServices registers on the daemon's gRPC server what a
// go-plugin client expects besides the scoped API: the gRPC health service
// reporting plugin.GRPCServiceName ("plugin") and the scoped.v1.Scoped
// service as SERVING; ClientProtocol.Ping checks "plugin". It returns the
// health server so that the daemon can report NOT_SERVING while it drains
// (Shutdown).
//
// go-plugin's other services are deliberately left out, and a client that
// finds them Unimplemented carries on: the broker (plugin.GRPCBroker) only
// carries extra streams, which the scoped API does not use; the stdio stream
// (plugin.GRPCStdio) forwards a plugin process's stdout and stderr, which the
// daemon does not have. The controller (plugin.GRPCController) must never be
// served: go-plugin sends its Shutdown when an application kills its client,
// which would let any application stop the daemon.
func RegisterReattachServices(s *grpc.Server) *health.Server {
	h := health.NewServer()
	h.SetServingStatus(plugin.GRPCServiceName, healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(scopedv1.Scoped_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return h
}
