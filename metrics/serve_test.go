package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recorder is a slog.Handler that hands every record to a channel.
type recorder struct{ ch chan slog.Record }

func (h recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h recorder) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Clone():
	default:
	}
	return nil
}
func (h recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recorder) WithGroup(string) slog.Handler      { return h }

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// startServe runs Serve and returns the address it listens on and its
// result channel.
func startServe(t *testing.T, ctx context.Context, addr string, r *Registry) (string, <-chan error) {
	t.Helper()
	rec := recorder{ch: make(chan slog.Record, 16)}
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, addr, r, slog.New(rec)) }()
	for {
		select {
		case rec := <-rec.ch:
			if rec.Message == "metrics endpoint listening" {
				return attr(rec, "addr"), errc
			}
		case err := <-errc:
			t.Fatalf("Serve returned early: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not start")
		}
	}
}

func TestServe(t *testing.T) {
	r := New()
	populate(r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, errc := startServe(t, ctx, "127.0.0.1:0", r)

	resp, err := http.Get("http://" + addr + Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	parseExposition(t, string(body)).one(t, mCPU, labelsOf(acme))

	if resp, err := http.Get("http://" + addr + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("other path: %v %v", resp, err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after shutdown")
	}
}

func TestServePortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	err = Serve(context.Background(), addr, New(), slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("err = %v, want ErrAddrInUse", err)
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		t.Log("(wraps the errno too)")
	}
	for _, want := range []string{addr, "already in use", `"off"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("error: %v", err)

	err = Serve(context.Background(), "127.0.0.1", New(), slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrListen) {
		t.Fatalf("address without port: %v", err)
	}
}

func TestServeOff(t *testing.T) {
	for _, addr := range []string{"", "off", " OFF "} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- Serve(ctx, addr, New(), nil) }()
		select {
		case err := <-errc:
			t.Fatalf("%q: returned before ctx was done: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
	}
	if !Disabled("off") || Disabled(DefaultAddr) {
		t.Fatal("Disabled")
	}
}
