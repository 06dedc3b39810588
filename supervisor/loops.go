package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// component is a part of the daemon that runs from Recover to Stop: a
// background loop, or what the loops and scopes need open (the ledger,
// the network, accounting). Start's ctx bounds the start only; what
// Start started runs until Stop, which waits for it to end. Stop returns
// what closing failed at.
type component interface {
	Start(ctx context.Context) error
	Stop() error
}

// part is a component of functions; a nil start starts nothing, a nil stop
// stops nothing.
type part struct {
	start func(ctx context.Context) error
	stop  func() error
}

func (p part) Start(ctx context.Context) error {
	if p.start == nil {
		return nil
	}
	return p.start(ctx)
}

func (p part) Stop() error {
	if p.stop == nil {
		return nil
	}
	return p.stop()
}

// goLoop is a component running run in a goroutine from Start until Stop
// cancels its context; Stop waits for run to return. It may be started
// again once stopped.
type goLoop struct {
	run func(ctx context.Context)

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func newGoLoop(run func(ctx context.Context)) *goLoop { return &goLoop{run: run} }

func (g *goLoop) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel != nil {
		return errors.New("loop already running")
	}
	ctx, g.cancel = context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	g.done = done
	go func() {
		defer close(done)
		g.run(ctx)
	}()
	return nil
}

func (g *goLoop) Stop() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel == nil {
		return nil
	}
	g.cancel()
	<-g.done
	g.cancel, g.done = nil, nil
	return nil
}

// loops starts its components in the order they were added and stops
// them in reverse. A start that fails stops the components started before
// it, in reverse, so that a failed start leaves nothing running. Its zero
// value has no components.
type loops struct {
	log     *slog.Logger // nil: none
	mu      sync.Mutex
	names   []string
	all     []component
	started int // all[:started] run
}

// add appends c to the components started after those added before.
// Components are added before Start.
func (l *loops) add(name string, c component) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names = append(l.names, name)
	l.all = append(l.all, c)
}

// len is the number of components.
func (l *loops) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// Start starts the components that do not run yet, in order. When one
// fails it stops those started, in reverse, and returns the start's error
// (joined with the stops' errors; the errors are the components' own,
// which name what failed).
func (l *loops) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.started < len(l.all) {
		i := l.started
		if err := l.all[i].Start(ctx); err != nil {
			return errors.Join(err, l.stopLocked())
		}
		l.started++
		l.debug("started", i)
	}
	return nil
}

func (l *loops) debug(msg string, i int) {
	if l.log != nil {
		l.log.Debug(msg, "component", l.names[i])
	}
}

// Stop stops the components that run, in reverse order, each after the
// later ones are stopped. It returns their errors; calling it again stops
// nothing.
func (l *loops) Stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopLocked()
}

func (l *loops) stopLocked() error {
	var errs []error
	for l.started > 0 {
		l.started--
		if err := l.all[l.started].Stop(); err != nil {
			errs = append(errs, err)
		}
		l.debug("stopped", l.started)
	}
	return errors.Join(errs...)
}
