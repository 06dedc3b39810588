package cgroups

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/internal/testutil"
)

// TestMemoryShares puts two tenants under memory pressure, a parent whose
// memory.max is below what they read, each protected by memory.low in the
// ratio 1:2, and checks that they keep memory in about that ratio: the one
// over its protection is reclaimed first. Then it swaps the protections and
// checks that the split follows. The pages are a regular file system's
// page cache, the memory the kernel can reclaim without swap.
func TestMemoryShares(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresUnifiedController(t, "memory")
	testutil.CheckLeaks(t, testRoot)

	const (
		mib   = int64(1 << 20)
		small = 24 * mib
		large = 48 * mib
		// The pressure: room for both protections and a little more (the
		// processes' own memory, which is not reclaimable without swap).
		budget = small + large + 8*mib
		// Each tenant reads more than the whole budget, over and over.
		perTenant = budget + 32*mib
	)
	sets := pageCacheFiles(t, 2, perTenant)

	tree := openTree(t)
	parent := node(t, tree, Limits{MemoryMax: budget}, "pressure")
	a := node(t, tree, Limits{MemoryLow: small}, "pressure", "a")
	b := node(t, tree, Limits{MemoryLow: large}, "pressure", "b")

	readers := make([]*reader, 2)
	for i, n := range []*Node{a, b} {
		readers[i] = startReader(t, sets[i])
		join(t, n, readers[i].child)
		readers[i].child.release()
	}
	cur := func(n *Node) int64 { return int64(stats(t, n).MemoryCurrent) }

	// phase waits until each reader has read its files twice more, then
	// averages the tenants' memory.current over 20 samples.
	phase := func(name string, lowA, lowB int64) {
		t.Helper()
		start := []int{readers[0].passes(), readers[1].passes()}
		eventually(t, 5*time.Minute, name+": both readers through their files twice", func() bool {
			for _, r := range readers {
				select {
				case <-r.done:
					t.Fatalf("%s: reader pid %d ended: %v", name, r.pid(), r.err)
				default:
				}
			}
			return readers[0].passes() >= start[0]+2 && readers[1].passes() >= start[1]+2
		})
		var sumA, sumB, sumP int64
		const samples = 20
		for range samples {
			sumA += cur(a)
			sumB += cur(b)
			sumP += cur(parent)
			time.Sleep(100 * time.Millisecond)
		}
		ma, mb, mp := sumA/samples, sumB/samples, sumP/samples
		t.Logf("%s: memory.low a %d MiB, b %d MiB; memory.current a %.1f MiB, b %.1f MiB, parent %.1f MiB of %d MiB (events %s)",
			name, lowA/mib, lowB/mib, float64(ma)/float64(mib), float64(mb)/float64(mib), float64(mp)/float64(mib), budget/mib, memoryEvents(t, parent))
		if mp < budget*3/4 {
			t.Fatalf("%s: the parent holds %d MiB of %d MiB: no pressure", name, mp/mib, budget/mib)
		}
		// The less protected tenant keeps less, in about the protections'
		// ratio (within 25 %).
		lo, hi, want := ma, mb, float64(lowB)/float64(lowA)
		if lowA > lowB {
			lo, hi, want = mb, ma, float64(lowA)/float64(lowB)
		}
		got := float64(hi) / float64(max(lo, 1))
		if got < want*0.75 || got > want*1.25 {
			t.Errorf("%s: memory split %.2f : 1, want %.2f : 1 within 25 %%", name, got, want)
		}
		// Neither tenant lost much of its protection, and the less
		// protected one was the one reclaimed below what it read.
		for _, c := range []struct {
			name     string
			cur, low int64
		}{{"a", ma, lowA}, {"b", mb, lowB}} {
			if c.cur < c.low*3/4 {
				t.Errorf("%s: tenant %s holds %.1f MiB, below its protection %d MiB", name, c.name, float64(c.cur)/float64(mib), c.low/mib)
			}
		}
	}
	phase("1:2", small, large)

	// The protections swap: b is now the one over its share, and the one
	// reclaimed.
	if err := a.Set(Limits{MemoryLow: large}); err != nil {
		t.Fatal(err)
	}
	if err := b.Set(Limits{MemoryLow: small}); err != nil {
		t.Fatal(err)
	}
	phase("2:1", large, small)
}

// memoryEvents is n's memory.events on one line.
func memoryEvents(t *testing.T, n *Node) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.UnifiedDir(), "memory.events"))
	if err != nil {
		return err.Error()
	}
	return strings.Join(strings.Fields(string(raw)), " ")
}

// pageCacheFiles picks n disjoint sets of regular files, each of at least
// size bytes, from file systems whose page cache the kernel can reclaim
// (not tmpfs or ramfs), and drops their pages from the cache, so that they
// are charged to whoever reads them next. It skips t where there are not
// enough.
func pageCacheFiles(t *testing.T, n int, size int64) [][]string {
	t.Helper()
	sets := make([][]string, n)
	sizes := make([]int64, n)
	full := func() bool {
		for _, s := range sizes {
			if s < size {
				return false
			}
		}
		return true
	}
	for _, root := range []string{runtime.GOROOT(), "/usr/lib", "/usr/bin", "/usr/libexec"} {
		var st unix.Statfs_t
		if root == "" || unix.Statfs(root, &st) != nil || st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
			continue
		}
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || full() {
				if full() {
					return filepath.SkipAll
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() < 1<<20 {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer f.Close()
			if unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) != nil {
				return nil
			}
			i := 0
			for j := range sizes {
				if sizes[j] < sizes[i] {
					i = j
				}
			}
			sets[i] = append(sets[i], p)
			sizes[i] += info.Size()
			return nil
		})
	}
	if !full() {
		t.Skipf("needs %d × %d MiB of files on a disk-backed file system, found %v bytes", n, size>>20, sizes)
	}
	t.Logf("page cache files: %d and %d files, %v bytes", len(sets[0]), len(sets[1]), sizes)
	return sets
}

// reader is a shell that reads its files into the page cache in a loop,
// printing a line after each pass.
type reader struct {
	*child
	out *testutil.SyncBuffer
}

func startReader(t *testing.T, files []string) *reader {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `read _; while :; do cat "$@" >/dev/null || exit 1; echo pass; done`, "reader"}, files...)...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout = out
	return &reader{child: start(t, cmd), out: out}
}

// passes is how often the reader went through its files.
func (r *reader) passes() int {
	return strings.Count(r.out.String(), "pass\n")
}
