package client_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/client/clienttest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDialInvoke(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)

	c, err := client.Dial(ctx(t), sock, client.WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	resp, err := c.Invoke(ctx(t), &scopedv1.InvokeRequest{
		Tenant: "acme", Environment: "production", Extension: "shout",
		Payload: []byte("hello"), Metadata: map[string]string{"k": "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetResult()) != "HELLO" {
		t.Errorf("result %q, want HELLO", resp.GetResult())
	}
	if got := resp.GetFigures().GetScope(); got != "acme.production" {
		t.Errorf("scope %q", got)
	}

	call, ok := srv.Last("Invoke")
	if !ok {
		t.Fatal("server saw no Invoke")
	}
	if got := call.Metadata.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Errorf("authorization metadata %q, want [Bearer s3cret]", got)
	}
	if got := call.Request.(*scopedv1.InvokeRequest).GetMetadata()["k"]; got != "v" {
		t.Errorf("request metadata k=%q", got)
	}
}

func TestDialWithoutTokenSendsNoAuthorization(t *testing.T) {
	srv := &clienttest.Server{}
	c, err := client.Dial(ctx(t), clienttest.Start(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListExtensions(ctx(t), &scopedv1.ListExtensionsRequest{}); err != nil {
		t.Fatal(err)
	}
	call, _ := srv.Last("ListExtensions")
	if got := call.Metadata.Get("authorization"); len(got) != 0 {
		t.Errorf("authorization %q sent without WithToken", got)
	}
}

func TestDialErrorCodesPassThrough(t *testing.T) {
	c, err := client.Dial(ctx(t), clienttest.Start(t, &clienttest.Server{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Invoke(ctx(t), &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: clienttest.FailExtension})
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != clienttest.FailMessage {
		t.Errorf("got %v, want FailedPrecondition %q", err, clienttest.FailMessage)
	}
}

func TestDialMissingSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nope.sock")
	start := time.Now()
	_, err := client.Dial(ctx(t), sock)
	if err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
	if !errors.Is(err, client.ErrNotRunning) {
		t.Errorf("error %v does not wrap ErrNotRunning", err)
	}
	if want := "scoped is not running? no socket at " + sock; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Dial took %v to fail", d)
	}
}

func TestDialStaleSocket(t *testing.T) {
	// A socket file nobody listens on, as a crashed daemon leaves it.
	sock := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	_, err = client.Dial(ctx(t), sock)
	if !errors.Is(err, client.ErrNotRunning) || !strings.Contains(err.Error(), "nothing listens on "+sock) {
		t.Errorf("got %v, want ErrNotRunning: nothing listens on %s", err, sock)
	}
}

func TestDialNotASocket(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := client.Dial(ctx(t), f)
	if err == nil || !strings.Contains(err.Error(), "is not a unix socket") {
		t.Errorf("got %v, want 'is not a unix socket'", err)
	}
}

func TestWithMaxMessageSize(t *testing.T) {
	c, err := client.Dial(ctx(t), clienttest.Start(t, &clienttest.Server{}), client.WithMaxMessageSize(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Invoke(ctx(t), &scopedv1.InvokeRequest{Payload: bytes.Repeat([]byte("x"), 2048)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("2 KiB payload with a 1 KiB cap: %v, want ResourceExhausted", err)
	}
	if _, err := c.Invoke(ctx(t), &scopedv1.InvokeRequest{Payload: []byte("small")}); err != nil {
		t.Errorf("small payload: %v", err)
	}
}
