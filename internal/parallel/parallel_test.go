package parallel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// Every item is done exactly once, never more than n at a time, and the
// errors come back joined.
func TestForEach(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 3, 16, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			items := make([]int, 200)
			for i := range items {
				items[i] = i
			}
			var mu sync.Mutex
			seen := map[int]int{}
			var now, most atomic.Int64
			errA, errB := errors.New("a"), errors.New("b")
			err := ForEach(items, n, func(i int) error {
				in := now.Add(1)
				for {
					m := most.Load()
					if in <= m || most.CompareAndSwap(m, in) {
						break
					}
				}
				defer now.Add(-1)
				mu.Lock()
				seen[i]++
				mu.Unlock()
				switch i {
				case 7:
					return errA
				case 150:
					return errB
				}
				return nil
			})
			if !errors.Is(err, errA) || !errors.Is(err, errB) {
				t.Errorf("err = %v, want both errors joined", err)
			}
			if len(seen) != len(items) {
				t.Errorf("%d items done, want %d", len(seen), len(items))
			}
			for i, c := range seen {
				if c != 1 {
					t.Errorf("item %d done %d times", i, c)
				}
			}
			if limit := int64(max(n, 1)); most.Load() > limit {
				t.Errorf("%d calls at once, the bound is %d", most.Load(), limit)
			}
		})
	}
}

func TestForEachEmpty(t *testing.T) {
	if err := ForEach(nil, 4, func(int) error { return errors.New("called") }); err != nil {
		t.Fatal(err)
	}
}
