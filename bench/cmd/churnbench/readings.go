package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/mountinfo"
)

// daemonReading is what the daemon holds at one moment.
type daemonReading struct {
	rss        int64          // bytes, VmRSS
	heap       int64          // bytes, the Go heap in use
	stacks     int64          // bytes, goroutine stacks
	goroutines int            // from its /metrics
	threads    int            // of the process
	fds        int            // open file descriptors
	fdKinds    map[string]int // fds by kind: socket, pipe, pidfd, …
	acct       string         // its accounting source
	cpu        float64        // CPUs it used while read (readLeast)
	numGC      int64          // garbage collections so far
	collected  bool           // readLeast saw a collection
}

// read reads the daemon's process and its /metrics.
func (dm *daemon) read(ctx context.Context) (daemonReading, error) {
	pid := dm.Pid()
	r := daemonReading{fdKinds: map[string]int{}}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			r.rss = n << 10
		case "Threads":
			r.threads = int(n)
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return r, err
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		r.fds++
		r.fdKinds[fdKind(target)]++
	}
	m, err := dm.scrape(ctx)
	if err != nil {
		return r, err
	}
	r.goroutines = int(m["go_goroutines"])
	for _, src := range []string{"ebpf", "cgroupfs"} {
		if m[`scoped_accounting_source{source="`+src+`"}`] == 1 {
			r.acct = src
		}
	}
	r.heap = int64(m["go_memstats_heap_inuse_bytes"])
	r.stacks = int64(m["go_memstats_stack_inuse_bytes"])
	r.numGC = int64(m["go_gc_duration_seconds_count"])
	return r, nil
}

// fdKind names what an fd's /proc link points at.
func fdKind(target string) string {
	switch {
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "net:["), strings.HasPrefix(target, "mnt:["), strings.HasPrefix(target, "user:["):
		return "namespace"
	case strings.HasPrefix(target, "/sys/fs/cgroup"):
		return "cgroup file"
	case strings.HasPrefix(target, "/"):
		return "file"
	}
	return "other"
}

// scraper keeps no connection to the daemon between scrapes, which would
// count among its file descriptors and goroutines.
var scraper = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// goMem is the Go memory the daemon uses: heap in use and goroutine stacks.
func (r daemonReading) goMem() int64 { return r.heap + r.stacks }

// readLeast reads the daemon every 500 ms for 10 s, and on until it saw a
// garbage collection (at most 90 s), and keeps the reading of the least Go
// memory, with the least RSS: the heap in use holds garbage until the next
// collection, and the RSS pages the runtime has not given back.
func (dm *daemon) readLeast(ctx context.Context) (best daemonReading, _ error) {
	c0, t0 := benchmd.ProcCPU(dm.Pid()), time.Now()
	defer func() { best.cpu = float64(benchmd.ProcCPU(dm.Pid())-c0) / float64(time.Since(t0)) }()
	var first int64
	for i := 0; ; i++ {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		r, err := dm.read(ctx)
		if err != nil {
			return r, err
		}
		if i == 0 {
			first = r.numGC
		}
		rss := min(r.rss, best.rss)
		if i == 0 || r.goMem() < best.goMem() {
			best = r
		}
		if i > 0 {
			best.rss = rss
		}
		best.collected = best.collected || r.numGC > first
		if i >= 20 && (best.collected || time.Since(t0) > 90*time.Second) {
			return best, nil
		}
	}
}

// scrape reads the daemon's unlabelled series from its /metrics.
func (dm *daemon) scrape(ctx context.Context) (map[string]float64, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+dm.metrics+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := scraper.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", dm.metrics, resp.Status)
	}
	out := map[string]float64{}
	s := bufio.NewScanner(io.LimitReader(resp.Body, 1<<30))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") && !strings.HasPrefix(line, "scoped_accounting_source{") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			out[name] = f
		}
	}
	return out, s.Err()
}

// cgroupMemory is the memory the cgroup root's tree uses (0 if it is
// not there).
func cgroupMemory(root string) (uint64, error) {
	if dirs, err := benchmd.CgroupDirs(root); err != nil || len(dirs) == 0 {
		return 0, err
	}
	n, err := cgroups.Load(root)
	if err != nil {
		return 0, err
	}
	st, err := n.Stats()
	if err != nil {
		return 0, err
	}
	return st.MemoryCurrent, nil
}

// cgroupProcesses counts the processes below the cgroup path root (its
// pids hierarchy, or the unified one on v2).
func cgroupProcesses(root string) (int, error) {
	base := "/sys/fs/cgroup/pids"
	if cgroups.HostMode() == cgroups.V2 {
		base = "/sys/fs/cgroup"
	}
	n := 0
	err := filepath.WalkDir(filepath.Join(base, root), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err == nil {
				n += len(strings.Fields(string(b)))
			}
		}
		return nil
	})
	return n, err
}

// hostReading is what the host holds that a daemon might leak.
type hostReading struct {
	mounts    int // in the benchmark's (the daemons') mount namespace
	nsfs      int // of them, namespaces kept by a bind mount
	netns     int // distinct network namespaces of all processes
	processes int
}

func readHost() (hostReading, error) {
	var h hostReading
	mounts, err := mountinfo.Self()
	if err != nil {
		return h, err
	}
	for _, m := range mounts {
		h.mounts++
		if m.FSType == "nsfs" {
			h.nsfs++
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return h, err
	}
	var nets []uint64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		h.processes++
		fi, err := os.Stat(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil {
			continue // gone meanwhile
		}
		if ino, ok := inode(fi); ok {
			nets = append(nets, ino)
		}
	}
	slices.Sort(nets)
	h.netns = len(slices.Compact(nets))
	return h, nil
}

func inode(fi os.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}
