package supervisor

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// A worker's output is the tenant's, not the daemon's. It is kept whole in
// the scope's log ring (scopectl logs) and copied into the daemon's log
// only as "worker output" at one fixed level (workerOutputLevel), cut to
// workerLogLineMax bytes and rate-limited per scope, and never parsed: a
// worker writing "[ERROR] …" or an hclog JSON line with "@level":"error"
// cannot raise a line of the daemon's log, fake one of its messages, or
// flood it.
//
// go-plugin would otherwise log every line of a worker's stderr through
// the host's hclog logger, Named after the worker's binary, at the level
// the line claims; pluginLogger takes that sub-logger away and passes
// go-plugin's own messages (start, handshake, exit) through.

// workerOutputLevel is the level of worker output in the daemon's log.
// Debug: at the usual info level a tenant's output never competes with the
// daemon's own lines for the journal's per-service rate limit; an operator
// debugging a scope turns it on (or reads the ring).
const workerOutputLevel = slog.LevelDebug

const (
	workerLogRate    = 20.0             // lines per second per scope into the daemon's log
	workerLogBurst   = 100.0            // lines a quiet scope may log at once
	workerLogEvery   = 10 * time.Second // at most one "worker output suppressed" line per scope per this
	workerLogLineMax = 512              // bytes of one line in the daemon's log (the ring keeps maxLineLen)
)

// workerLog copies one scope's worker output into the daemon's log, under
// a token bucket; the lines over it are counted and reported as one
// "worker output suppressed" line per workerLogEvery.
type workerLog struct {
	log *slog.Logger // with the scope's tenant and key
	now func() time.Time

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
	pending    bool // a report of suppressed lines is scheduled
}

func newWorkerLog(log *slog.Logger, tenant, scope string) *workerLog {
	return &workerLog{log: log.With("tenant", tenant, "scope", scope), now: time.Now, tokens: workerLogBurst}
}

// line logs one line of worker output, or counts it when the scope is over
// its rate. It never blocks on anything the worker controls.
func (l *workerLog) line(worker, ext, stream, text string) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, workerOutputLevel) {
		return
	}
	now := l.now()
	l.mu.Lock()
	if d := now.Sub(l.last); !l.last.IsZero() && d > 0 {
		l.tokens = min(workerLogBurst, l.tokens+d.Seconds()*workerLogRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		schedule := !l.pending
		l.pending = true
		l.mu.Unlock()
		if schedule {
			time.AfterFunc(workerLogEvery, l.report)
		}
		return
	}
	l.tokens--
	l.mu.Unlock()
	l.log.Log(ctx, workerOutputLevel, "worker output", "worker", worker, "extension", ext, "stream", stream,
		"line", cutLine(text, workerLogLineMax))
}

// report logs how many lines were suppressed since the last report.
func (l *workerLog) report() {
	l.mu.Lock()
	n := l.suppressed
	l.suppressed, l.pending = 0, false
	l.mu.Unlock()
	if n > 0 {
		l.log.Log(context.Background(), workerOutputLevel, "worker output suppressed", "lines", n,
			"rate", workerLogRate, "burst", workerLogBurst)
	}
}

// cutLine bounds s to n bytes, at a rune boundary, marking a cut with "…".
func cutLine(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// workerLog returns the scope's copier into the daemon's log, made on first
// use; every worker of the scope shares it, and so its rate.
func (r *logRing) workerLog(log *slog.Logger, tenant, scope string) *workerLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out == nil {
		r.out = newWorkerLog(log, tenant, scope)
	}
	return r.out
}

// offLogger is a logger at level Off: go-plugin checks the level and then
// neither parses nor logs a worker's stderr.
var offLogger = hclog.New(&hclog.LoggerOptions{Name: "worker", Level: hclog.Off, Output: io.Discard})

// pluginLogger is the logger go-plugin gets for one worker: go-plugin's own
// messages reach base at their levels, but the sub-logger it names after
// the worker's binary (plugin) to log the worker's stderr is offLogger.
// (A worker binary named like one of go-plugin's own sub-loggers, "stdio",
// silences that one too for this worker: nothing a worker needs.)
type pluginLogger struct {
	hclog.Logger
	plugin string // filepath.Base of the worker's binary
}

// newPluginLogger wraps base for a worker whose binary's base name is
// plugin.
func newPluginLogger(base hclog.Logger, plugin string) hclog.Logger {
	return pluginLogger{Logger: base, plugin: plugin}
}

func (l pluginLogger) Named(name string) hclog.Logger {
	if name == l.plugin {
		return offLogger
	}
	return pluginLogger{Logger: l.Logger.Named(name), plugin: l.plugin}
}

func (l pluginLogger) ResetNamed(name string) hclog.Logger {
	if name == l.plugin {
		return offLogger
	}
	return pluginLogger{Logger: l.Logger.ResetNamed(name), plugin: l.plugin}
}

func (l pluginLogger) With(args ...any) hclog.Logger {
	return pluginLogger{Logger: l.Logger.With(args...), plugin: l.plugin}
}

// logEvery lets one log line through per interval and counts the others,
// for errors that could otherwise repeat once per invocation.
type logEvery struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

// allow reports whether a line may be logged at now, and how many were
// held back since the last one that was.
func (e *logEvery) allow(now time.Time, every time.Duration) (bool, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.last.IsZero() && now.Sub(e.last) < every {
		e.skipped++
		return false, 0
	}
	n := e.skipped
	e.last, e.skipped = now, 0
	return true, n
}
