package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// DefaultAddr is where the endpoint listens unless configured otherwise:
// loopback only, since the series name every tenant of the host.
const DefaultAddr = "127.0.0.1:9477"

// Path is the URL path of the exposition.
const Path = "/metrics"

// Errors of Serve.
var (
	ErrAddrInUse = errors.New("address already in use")
	ErrListen    = errors.New("cannot listen")
)

// shutdownGrace bounds how long Serve waits for scrapes in flight.
const shutdownGrace = 5 * time.Second

// Disabled reports whether addr turns the endpoint off ("" or "off").
func Disabled(addr string) bool {
	addr = strings.TrimSpace(addr)
	return addr == "" || strings.EqualFold(addr, "off")
}

// Serve exposes r at http://addr/metrics until ctx is done, then shuts the
// server down (scrapes in flight get a few seconds) and returns nil. When
// addr is "" or "off" it serves nothing and just waits for ctx, so that it
// can run in a run group like any other actor. Any host is allowed; an
// address that is not loopback is logged as a warning, because the series
// name tenants and their usage and the endpoint has no authentication (put
// it behind a proxy or a firewall). A port already taken fails at once with
// an error that wraps ErrAddrInUse; other listen errors wrap ErrListen.
func Serve(ctx context.Context, addr string, r *Registry, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if Disabled(addr) {
		log.Info("metrics endpoint off")
		<-ctx.Done()
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("metrics: listen on %s: %w (another scoped or exporter holds the port?); configure another metrics address, or \"off\"", addr, ErrAddrInUse)
		}
		return fmt.Errorf("metrics: %w on %q: %w", ErrListen, addr, err)
	}
	bound := ln.Addr().String()
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("metrics endpoint is reachable beyond this host; it exposes every tenant's usage without authentication", "addr", bound)
	}

	mux := http.NewServeMux()
	mux.Handle(Path, r.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("metrics endpoint listening", "addr", bound, "path", Path)

	select {
	case err := <-done:
		// Serve returned by itself: the listener failed.
		return fmt.Errorf("metrics: serving on %s: %w", bound, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-done // http.ErrServerClosed
	log.Info("metrics endpoint stopped", "addr", bound)
	return nil
}
