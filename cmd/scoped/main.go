// Command scoped is the scoped daemon: `scoped --config FILE` serves the
// API; `scoped config default` prints the commented default configuration.
// The main only wires flags, configuration, logging, signals and systemd
// notifications around the supervisor.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"

	"github.com/scoped-io/scoped/api"
	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/internal/journal"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/plugins/reattach"
	"github.com/scoped-io/scoped/sandbox"
	"github.com/scoped-io/scoped/supervisor"
)

func main() {
	sandbox.Init() // never returns when started as a sandbox's init
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "scoped:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("scoped", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file (TOML); the embedded defaults when empty")
	grace := fs.Duration("grace", 30*time.Second, "how long a stop waits for invocations in flight")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: scoped [--config FILE] [--grace D]\n       scoped config default\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 2 && fs.Arg(0) == "config" && fs.Arg(1) == "default" {
		fmt.Print(supervisor.DefaultConfigTOML)
		return nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	load := func() (supervisor.Config, error) {
		if *configPath == "" {
			c := supervisor.DefaultConfig()
			return c, c.Validate()
		}
		return supervisor.LoadConfig(*configPath)
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (try: sudo make run)")
	}

	// Signals are caught from here on: a SIGTERM while the daemon starts
	// (the API may already answer before it says ready) stops it cleanly
	// once it serves, instead of killing it with its cgroups left behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	s, err := supervisor.New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Recover(); err != nil {
		// Recover stopped what it started; Stop closes the rest.
		return errors.Join(err, s.Stop(0))
	}
	l, err := api.Listen(s.Config())
	if err != nil {
		_ = s.Stop(0)
		return err
	}
	srv := api.NewServer(s, log)
	health := reattach.RegisterServices(srv)
	servers := []server{srv}
	listeners := []interface{ Close() error }{l}
	// With [fleet], the same API over TCP with TLS (and the bundle service
	// for other nodes), stopped with the socket's server.
	var tlsSrv *grpc.Server
	var tl net.Listener
	if fc := &s.Config().Fleet; fc.Enabled() {
		if tlsSrv, tl, err = listenFleet(s, fc, log); err != nil {
			_ = l.Close()
			_ = s.Stop(0)
			return err
		}
		servers, listeners = append(servers, tlsSrv), append(listeners, tl)
		log.Info("fleet TLS API listening", "listen", tl.Addr().String(), "advertise", fc.Advertise)
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(l) }()
	if tlsSrv != nil {
		go func() {
			if err := tlsSrv.Serve(tl); err != nil {
				serveErr <- fmt.Errorf("TLS API: %w", err)
			}
		}()
	}
	if cfg.ReattachFile != "" {
		if err := reattach.Write(cfg.ReattachFile, reattach.Info{Network: "unix", Addr: cfg.Socket}); err != nil {
			log.Warn("reattach file not written", "path", cfg.ReattachFile, "err", err)
		}
	}
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	metricsErr := make(chan error, 1)
	go func() { metricsErr <- metrics.Serve(metricsCtx, cfg.Metrics.Listen, s.Metrics(), log) }()
	log.Info("scoped ready", "socket", cfg.Socket, "cgroup_root", s.CgroupRoot(), "isolation", cfg.Isolation.By,
		"metrics", cfg.Metrics.Listen)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)

	stopWatchdog := watchdog(log, s.Health)
	defer stopWatchdog()

	for {
		select {
		case err := <-serveErr:
			_ = s.Stop(0)
			return fmt.Errorf("API server: %w", err)
		case err := <-metricsErr:
			if err != nil {
				// The API keeps serving; the operator sees why metrics are off.
				log.Error("metrics endpoint stopped", "err", err)
			}
			metricsErr = nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
				if c, err := load(); err != nil {
					log.Error("reload failed, keeping the configuration in force", "err", err)
				} else if err := s.Reload(c); err != nil {
					log.Error("reload failed", "err", err)
				} else {
					log.Info("configuration reloaded")
				}
				_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
				continue
			}
			log.Info("stopping", "signal", sig.String(), "grace", *grace)
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			stopWatchdog() // the loops stop now: their silence is no hang
			health.Shutdown()
			return stop(s, servers, listeners, *grace, log)
		}
	}
}

// stop refuses new calls, drains the ones in flight for up to grace, and
// removes everything the daemon made.
func stop(s *supervisor.Supervisor, srvs []server, ls []interface{ Close() error }, grace time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	stopErr := make(chan error, 1)
	go func() { stopErr <- s.Stop(grace) }()
	var wg sync.WaitGroup
	for _, srv := range srvs { // every server refuses new calls at once
		wg.Go(srv.GracefulStop)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, srv := range srvs {
			srv.Stop()
		}
		<-done
	}
	for _, l := range ls {
		_ = l.Close()
	}
	err := <-stopErr
	s.RemoveRuntimeDir()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("stopped")
	return nil
}

// server is a gRPC server as stop stops it.
type server interface {
	GracefulStop()
	Stop()
}

// listenFleet opens the fleet's TLS API ([fleet] listen, tls_*).
func listenFleet(s *supervisor.Supervisor, fc *fleet.Config, log *slog.Logger) (*grpc.Server, net.Listener, error) {
	conf, err := api.TLSConfig(fc)
	if err != nil {
		return nil, nil, err
	}
	l, err := api.ListenTCP(fc)
	if err != nil {
		return nil, nil, err
	}
	return api.NewTLSServer(s, log, conf), l, nil
}

// watchdog pings systemd's watchdog, when enabled, at a quarter of its
// interval, but only while the supervisor's health probe (health) answers
// nil within that quarter: a daemon whose core hangs stops pinging and
// systemd restarts it. A skipped ping is logged (the first of a run of
// them, then once a minute). The returned function stops it; it may be
// called more than once.
func watchdog(log *slog.Logger, health func(context.Context) error) func() {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return func() {}
	}
	period := max(every/4, time.Millisecond)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(period)
		defer t.Stop()
		skipped := 0
		var logged time.Time
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), period)
			err := health(ctx)
			cancel()
			if err == nil {
				if skipped > 0 {
					log.Warn("watchdog: the supervisor answers again, pinging systemd", "skipped", skipped)
					skipped = 0
				}
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
				continue
			}
			skipped++
			if skipped == 1 || time.Since(logged) >= time.Minute {
				logged = time.Now()
				log.Error("watchdog: not pinging systemd, the supervisor does not answer (systemd restarts it after WatchdogSec)",
					"err", err, "skipped", skipped, "interval", every)
			}
		}
	}()
	log.Debug("systemd watchdog enabled", "interval", every, "probe", period)
	var once sync.Once
	return func() { once.Do(func() { close(done); <-stopped }) }
}

// newLogger makes the daemon's logger for [log] format: "auto" logs to
// journald natively when stderr is the journal's stream (JOURNAL_STREAM)
// and its socket is there, else text on stderr.
func newLogger(c supervisor.LogConfig) (*slog.Logger, error) {
	h, err := logHandler(c, journal.StderrIsJournal(), journal.Available)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

func logHandler(c supervisor.LogConfig, stderrIsJournal bool, available func() error) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	switch c.Format {
	case "json":
		return slog.NewJSONHandler(os.Stderr, opts), nil
	case "journal":
		if err := available(); err != nil {
			return nil, fmt.Errorf("log.format journal: %w", err)
		}
		return journal.New(journal.Options{Level: c.SlogLevel()}), nil
	case "auto":
		if stderrIsJournal && available() == nil {
			return journal.New(journal.Options{Level: c.SlogLevel()}), nil
		}
	}
	return slog.NewTextHandler(os.Stderr, opts), nil
}
