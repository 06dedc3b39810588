// Package parallel runs independent cleanup work a bounded number at a
// time: removing thousands of scopes, sandboxes or cgroups mostly waits on
// the kernel, so it overlaps well, but unbounded it would open thousands of
// files and start thousands of goroutines at once.
package parallel

import (
	"errors"
	"sync"
)

// ForEach calls f on every item, at most n calls at once (n < 1 counts as
// 1), waits for them all and returns their errors joined, in the order of
// items.
func ForEach[T any](items []T, n int, f func(T) error) error {
	errs := make([]error, len(items))
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for i, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(it)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
