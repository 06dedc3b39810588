package supervisor

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// journal records the components' starts and stops in order.
type journal struct {
	mu sync.Mutex
	at []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.at = append(j.at, s)
}

func (j *journal) take() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.at
	j.at = nil
	return out
}

// recorded is a component that records its start and stop in j, and fails
// its start with startErr, its stop with stopErr.
func recorded(j *journal, name string, startErr, stopErr error) component {
	return part{
		start: func(context.Context) error { j.add("start " + name); return startErr },
		stop:  func() error { j.add("stop " + name); return stopErr },
	}
}

// TestUnitLoopsOrder: components start in the order they were added and
// stop in reverse; a second Stop stops nothing.
func TestUnitLoopsOrder(t *testing.T) {
	var j journal
	var l loops
	for _, n := range []string{"a", "b", "c"} {
		l.add(n, recorded(&j, n, nil, nil))
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := j.take(), []string{"start a", "start b", "start c"}; !slices.Equal(got, want) {
		t.Fatalf("start: %q, want %q", got, want)
	}
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := j.take(), []string{"stop c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("stop: %q, want %q", got, want)
	}
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := j.take(); len(got) > 0 {
		t.Fatalf("second Stop: %q, want nothing", got)
	}
}

// TestUnitLoopsUnwind: a start that fails stops the components started
// before it, in reverse, and not itself nor the later ones; Start returns
// its error with the stops'. Stop then stops nothing.
func TestUnitLoopsUnwind(t *testing.T) {
	var j journal
	var l loops
	errStart, errStop := errors.New("c will not start"), errors.New("a will not stop")
	l.add("a", recorded(&j, "a", nil, errStop))
	l.add("b", recorded(&j, "b", nil, nil))
	l.add("c", recorded(&j, "c", errStart, nil))
	l.add("d", recorded(&j, "d", nil, nil))
	err := l.Start(context.Background())
	if !errors.Is(err, errStart) || !errors.Is(err, errStop) {
		t.Fatalf("Start = %v, want both %v and %v", err, errStart, errStop)
	}
	if got, want := j.take(), []string{"start a", "start b", "start c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("failed start: %q, want %q", got, want)
	}
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := j.take(); len(got) > 0 {
		t.Fatalf("Stop after an unwound start: %q, want nothing", got)
	}
}

// TestUnitLoopsStopErrors: Stop stops every component though some fail,
// and returns their errors.
func TestUnitLoopsStopErrors(t *testing.T) {
	var j journal
	var l loops
	e1, e3 := errors.New("first"), errors.New("third")
	l.add("1", recorded(&j, "1", nil, e1))
	l.add("2", recorded(&j, "2", nil, nil))
	l.add("3", recorded(&j, "3", nil, e3))
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.take()
	if err := l.Stop(); !errors.Is(err, e1) || !errors.Is(err, e3) {
		t.Fatalf("Stop = %v, want both errors", err)
	}
	if got, want := j.take(), []string{"stop 3", "stop 2", "stop 1"}; !slices.Equal(got, want) {
		t.Fatalf("stop: %q, want %q", got, want)
	}
}

// TestUnitLoopsEmpty: a loops without components, or never started, starts
// and stops nothing.
func TestUnitLoopsEmpty(t *testing.T) {
	var l loops
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	var j journal
	var never loops
	never.add("a", recorded(&j, "a", nil, nil))
	if err := never.Stop(); err != nil || len(j.take()) > 0 {
		t.Fatalf("Stop of a loops never started: %v", err)
	}
}

// TestUnitGoLoop: the goroutine runs from Start until Stop, which cancels
// its context and waits for it; the ctx given to Start bounds the start
// only; a stopped loop starts again; a running one refuses a second Start.
func TestUnitGoLoop(t *testing.T) {
	running := make(chan struct{}, 1)
	var ended sync.WaitGroup
	g := newGoLoop(func(ctx context.Context) {
		defer ended.Done()
		running <- struct{}{}
		<-ctx.Done()
	})
	for range 2 {
		ended.Add(1)
		ctx, cancel := context.WithCancel(context.Background())
		if err := g.Start(ctx); err != nil {
			t.Fatal(err)
		}
		<-running
		if err := g.Start(context.Background()); err == nil {
			t.Fatal("a second Start of a running loop succeeded")
		}
		cancel() // not the loop's end
		if err := g.Stop(); err != nil {
			t.Fatal(err)
		}
		ended.Wait() // Stop returned: the goroutine ended
		if err := g.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnitGoLoopCancelNotStop: cancelling Start's ctx does not end the
// loop's context; only Stop does.
func TestUnitGoLoopCancelNotStop(t *testing.T) {
	loopCtx := make(chan context.Context, 1)
	g := newGoLoop(func(ctx context.Context) { loopCtx <- ctx; <-ctx.Done() })
	ctx, cancel := context.WithCancel(context.Background())
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	lc := <-loopCtx
	cancel()
	if err := lc.Err(); err != nil {
		t.Fatalf("the loop's context ended with Start's: %v", err)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if lc.Err() == nil {
		t.Fatal("Stop returned with the loop's context alive")
	}
}

// TestUnitStopWithoutRecover: Stop of a supervisor whose Recover never ran
// (or failed and unwound) has nothing to stop and returns at once; it then
// refuses invocations, and a second Stop does nothing.
func TestUnitStopWithoutRecover(t *testing.T) {
	s := unitSupervisor(t)
	if err := s.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := s.scopes.enter(); !errors.Is(err, ErrStopping) {
		t.Fatalf("enter after Stop: %v, want ErrStopping", err)
	}
	if err := s.Stop(0); err != nil {
		t.Fatal(err)
	}
}
