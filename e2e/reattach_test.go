package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestReattachToDaemon: an application using go-plugin reattaches to the
// daemon through the file it publishes (plugins/reattach), pings it,
// invokes through the dispensed client, gets InvalidArgument for a bad id,
// and its Kill leaves the daemon serving.
func TestReattachToDaemon(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)

	rc, err := client.LoadReattach(filepath.Join(d.runtime, "reattach.json"))
	if err != nil {
		t.Fatal(err)
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  client.Handshake,
		Plugins:          plugin.PluginSet{client.PluginName: &client.Plugin{}},
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
	})
	rpc, err := pc.Client()
	if err != nil {
		pc.Kill()
		t.Fatal(err)
	}
	if err := rpc.Ping(); err != nil {
		t.Errorf("Ping: %v", err)
	}
	raw, err := rpc.Dispense(client.PluginName)
	if err != nil {
		pc.Kill()
		t.Fatal(err)
	}
	api := raw.(scopedv1.ScopedClient)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := api.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "whoami", Payload: []byte("x")}); err != nil {
		t.Errorf("Invoke through the reattached client: %v", err)
	}
	_, err = api.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "../acme", Environment: "production", Extension: "whoami"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Invoke with tenant ../acme: %v, want InvalidArgument", err)
	}
	pc.Kill()
	if _, err := invoke(c, "acme", "production", "whoami", "after kill"); err != nil {
		t.Errorf("the daemon after the application's Kill: %v", err)
	}
}
