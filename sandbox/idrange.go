package sandbox

import (
	"errors"
	"fmt"
	"sync"
)

// IDRange is a range of host uids (and the same gids) mapped to 0..Size-1
// inside a sandbox's user namespace.
type IDRange struct {
	Base uint32 // first host id
	Size uint32 // number of ids
}

// Defaults of the id allocator: 1024 slots of 65536 ids from host id 2^20,
// far above the ids distributions hand out to people and services.
const (
	DefaultIDBase  = 1 << 20
	DefaultIDSize  = 65536
	DefaultIDSlots = 1024
)

// ErrNoIDs is returned when every id range is taken.
var ErrNoIDs = errors.New("no free host id range")

// IDAllocator hands out one host id range per key (a scope), so that no two
// scopes share a host uid. Ranges are reference-counted: every sandbox of a
// scope gets the same range, and the range is free again when the last one
// is released.
type IDAllocator struct {
	base, size, slots uint32

	mu    sync.Mutex
	byKey map[string]*slot
	used  map[uint32]bool
}

type slot struct {
	index uint32
	refs  int
}

// NewIDAllocator returns an allocator of slots ranges of size ids each,
// starting at host id base.
func NewIDAllocator(base, size, slots uint32) (*IDAllocator, error) {
	if size == 0 || slots == 0 || base == 0 {
		return nil, fmt.Errorf("id allocator: base, size and slots must be positive")
	}
	if uint64(base)+uint64(size)*uint64(slots) > 1<<32-2 {
		return nil, fmt.Errorf("id allocator: %d slots of %d ids from %d overflow 32-bit ids", slots, size, base)
	}
	return &IDAllocator{base: base, size: size, slots: slots, byKey: map[string]*slot{}, used: map[uint32]bool{}}, nil
}

// Acquire returns the range of key, taking a free one if key has none.
func (a *IDAllocator) Acquire(key string) (IDRange, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.byKey[key]; ok {
		s.refs++
		return a.rangeOf(s.index), nil
	}
	for i := range a.slots {
		if !a.used[i] {
			a.used[i] = true
			a.byKey[key] = &slot{index: i, refs: 1}
			return a.rangeOf(i), nil
		}
	}
	return IDRange{}, fmt.Errorf("%w: all %d ranges are in use", ErrNoIDs, a.slots)
}

// Release gives back one reference to key's range.
func (a *IDAllocator) Release(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.byKey[key]
	if !ok {
		return
	}
	if s.refs--; s.refs == 0 {
		delete(a.byKey, key)
		delete(a.used, s.index)
	}
}

// Free is the number of ranges no key holds.
func (a *IDAllocator) Free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int(a.slots) - len(a.used)
}

func (a *IDAllocator) rangeOf(i uint32) IDRange {
	return IDRange{Base: a.base + i*a.size, Size: a.size}
}
