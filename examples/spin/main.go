// Command spin is an example extension (Go SDK) for CPU fairness demos: the
// payload is a number of CPU milliseconds (decimal text, at most 60000); spin
// burns that much CPU time, measured on the CPU clock of the thread that
// burns it (so a throttled scope takes longer in wall time, not less CPU),
// and returns the number.
package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/plugins"
)

// maxMillis caps one invocation's CPU time.
const maxMillis = 60000

var errBadPayload = errors.New("spin: the payload must be a whole number of CPU milliseconds")

func main() {
	plugins.Serve(plugins.HandlerFunc(spin))
}

func spin(ctx context.Context, req *plugins.Request) ([]byte, error) {
	ms, err := strconv.ParseInt(strings.TrimSpace(string(req.Payload)), 10, 64)
	if err != nil || ms < 0 || ms > maxMillis {
		return nil, fmt.Errorf("%w between 0 and %d, got %.40q", errBadPayload, maxMillis, req.Payload)
	}
	if err := burn(ctx, time.Duration(ms)*time.Millisecond); err != nil {
		return nil, err
	}
	return []byte(strconv.FormatInt(ms, 10)), nil
}

// burn spins on one locked OS thread until that thread has used d of CPU
// time, or ctx is done.
func burn(ctx context.Context, d time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, err := threadCPU()
	if err != nil {
		return err
	}
	x := uint64(1)
	for {
		for range 10000 { // ≈ tens of µs between clock reads
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		now, err := threadCPU()
		if err != nil {
			return err
		}
		if x == 0 { // never true (xorshift); keeps the work from being dropped
			runtime.Gosched()
		}
		if now-start >= d {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("spin: stopped after %v of CPU: %w", (now - start).Round(time.Millisecond), err)
		}
	}
}

func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("spin: thread CPU clock: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
