package accounting

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PingPong is the workload of the context-switch micro benchmark: two
// threads of the calling process, both pinned to CPU cpu, wake each other
// through a pair of pipes for n round trips, so that every step is a
// context switch between them. It returns the wall time per switch (two per
// round trip), syscalls included. Run it in a process inside a tracked scope
// with an eBPF Source open, and with none, and compare: the difference is
// what accounting adds to a context switch (bench/ and bench_test.go do).
func PingPong(n, cpu int) (time.Duration, error) {
	if n <= 0 {
		return 0, fmt.Errorf("ping-pong: %d round trips", n)
	}
	var ab, ba [2]int
	if err := unix.Pipe2(ab[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("ping-pong: %w", err)
	}
	defer unix.Close(ab[0])
	defer unix.Close(ab[1])
	if err := unix.Pipe2(ba[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("ping-pong: %w", err)
	}
	defer unix.Close(ba[0])
	defer unix.Close(ba[1])

	var (
		pinned  sync.WaitGroup // both threads pinned
		done    sync.WaitGroup
		errs    [2]error
		elapsed time.Duration
	)
	pinned.Add(2)
	done.Add(2)
	side := func(i, in, out int) {
		defer done.Done()
		// The thread stays locked, and so exits with the goroutine: its
		// CPU affinity must not leak into the runtime's thread pool.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errs[i] = fmt.Errorf("ping-pong: pin to CPU %d: %w", cpu, err)
		}
		pinned.Done()
		pinned.Wait()
		if errs[0] != nil || errs[1] != nil {
			return
		}
		buf := []byte{0}
		start := time.Now()
		for r := 0; r < n; r++ {
			if i == 0 {
				if err := write(out, buf); err != nil {
					errs[i] = err
					return
				}
			}
			if err := read(in, buf); err != nil {
				errs[i] = err
				return
			}
			if i == 1 {
				if err := write(out, buf); err != nil {
					errs[i] = err
					return
				}
			}
		}
		if i == 0 {
			elapsed = time.Since(start)
		}
	}
	go side(0, ba[0], ab[1])
	go side(1, ab[0], ba[1])
	done.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return 0, err
	}
	return elapsed / time.Duration(2*n), nil
}

func read(fd int, b []byte) error {
	for {
		n, err := unix.Read(fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("ping-pong: read: %w", err)
		case n == 0:
			return errors.New("ping-pong: the other side went away")
		}
		return nil
	}
}

func write(fd int, b []byte) error {
	for {
		_, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ping-pong: write: %w", err)
		}
		return nil
	}
}
