// Package reattach is how applications using go-plugin reattach to the
// running daemon: the file the daemon publishes (Info, written by Write) and
// the go-plugin services it serves beside the scoped API
// (RegisterServices). Write and RegisterServices are the daemon's side;
// the application's side, reading the file into a plugin.ReattachConfig, is
// package client (client.LoadReattach), which shares Info and its Validate.
package reattach

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// ProtocolVersion is the go-plugin protocol version of the scoped API
// (client.Handshake's).
const ProtocolVersion = 1

// Info is what the daemon publishes (as JSON) so that applications using
// go-plugin can reattach to it. It deliberately has no pid: go-plugin
// signals the pid of a reattached plugin when the application calls Kill.
type Info struct {
	Protocol        string `json:"protocol"`         // "grpc"
	ProtocolVersion int    `json:"protocol_version"` // ProtocolVersion
	Network         string `json:"network"`          // "unix"
	Addr            string `json:"addr"`             // the daemon's socket path
}

// Validate reports whether info is one this version speaks: gRPC, this
// ProtocolVersion, on a unix socket at an absolute path.
func (info Info) Validate() error {
	switch {
	case info.Protocol != string(plugin.ProtocolGRPC):
		return fmt.Errorf("reattach protocol %q: only %q is supported", info.Protocol, plugin.ProtocolGRPC)
	case info.ProtocolVersion != ProtocolVersion:
		return fmt.Errorf("the daemon speaks scoped API version %d, this client version %d", info.ProtocolVersion, ProtocolVersion)
	case info.Network != "unix":
		return fmt.Errorf("reattach network %q: only \"unix\" is supported", info.Network)
	case !filepath.IsAbs(info.Addr):
		return fmt.Errorf("reattach address %q is not an absolute socket path", info.Addr)
	}
	return nil
}

// Write publishes info at path atomically (a temporary file in the same
// directory, synced, renamed over path) with mode 0644. Empty fields take
// their defaults: "grpc", ProtocolVersion, "unix". The daemon calls it once
// it serves, and removes the file when it stops.
func Write(path string, info Info) error {
	if info.Protocol == "" {
		info.Protocol = string(plugin.ProtocolGRPC)
	}
	if info.ProtocolVersion == 0 {
		info.ProtocolVersion = ProtocolVersion
	}
	if info.Network == "" {
		info.Network = "unix"
	}
	if err := info.Validate(); err != nil {
		return fmt.Errorf("reattach: %w", err)
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("reattach: write reattach file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// RegisterServices registers on the daemon's gRPC server what a go-plugin
// client expects besides the scoped API: the gRPC health service reporting
// plugin.GRPCServiceName ("plugin") and the scoped.v1.Scoped service as
// SERVING; ClientProtocol.Ping checks "plugin". It returns the health server
// so that the daemon can report NOT_SERVING while it drains (Shutdown).
//
// go-plugin's other services are deliberately left out, and a client that
// finds them Unimplemented carries on: the broker (plugin.GRPCBroker) only
// carries extra streams, which the scoped API does not use; the stdio stream
// (plugin.GRPCStdio) forwards a plugin process's stdout and stderr, which the
// daemon does not have. The controller (plugin.GRPCController) must never be
// served: go-plugin sends its Shutdown when an application kills its client,
// which would let any application stop the daemon.
func RegisterServices(s *grpc.Server) *health.Server {
	h := health.NewServer()
	h.SetServingStatus(plugin.GRPCServiceName, healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(scopedv1.Scoped_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return h
}
