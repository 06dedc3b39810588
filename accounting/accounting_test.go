package accounting

import (
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/scoped-io/scoped/cgroups"
)

func TestHistogramQuantile(t *testing.T) {
	var h Histogram
	if q := h.Quantile(0.5); q != 0 {
		t.Errorf("empty: p50 = %s, want 0", q)
	}
	// 100 waits in [1024, 2048) ns, 100 in [1 ms, 2 ms).
	h.Buckets[10] = 100
	h.Buckets[20] = 100
	h.Count = 200
	h.Sum = 100*1500 + 100*1500*time.Microsecond
	for _, c := range []struct {
		q      float64
		lo, hi time.Duration
	}{
		{0, 1024, 1024},
		{0.25, 1500, 1600},
		{0.5, 2047, 2048},
		{0.75, 1_572_864 - 1, 1_572_864 + 1},
		{0.99, 2_000_000, 2_097_152},
		{1, 2_097_152, 2_097_152},
		{7, 2_097_152, 2_097_152},
	} {
		if got := h.Quantile(c.q); got < c.lo || got > c.hi {
			t.Errorf("Quantile(%g) = %d, want %d..%d", c.q, got, c.lo, c.hi)
		}
	}
	if m := h.Mean(); m != (1500+1500*time.Microsecond)/2 {
		t.Errorf("Mean = %s", m)
	}
	// Bucket 0 holds 0 and 1 ns.
	if got := (Histogram{Buckets: [HistogramBuckets]uint64{0: 2}, Count: 2}).Quantile(0.5); got != 1 {
		t.Errorf("bucket 0: p50 = %d, want 1", got)
	}
}

func TestCountersSub(t *testing.T) {
	prev := Counters{CPU: time.Second, Preemptions: 3, PreemptedBy: map[uint64]uint64{7: 2, 8: 1}, NetTxBytes: 100}
	prev.RunqDelay.Buckets[3] = 4
	prev.RunqDelay.Count = 4
	prev.RunqDelay.Sum = 40
	cur := Counters{CPU: 3 * time.Second, Preemptions: 5, PreemptedBy: map[uint64]uint64{7: 2, 8: 2, 9: 1}, NetTxBytes: 150, NetRxBytes: 9}
	cur.RunqDelay.Buckets[3] = 5
	cur.RunqDelay.Buckets[4] = 1
	cur.RunqDelay.Count = 6
	cur.RunqDelay.Sum = 70
	d := cur.Sub(prev)
	if d.CPU != 2*time.Second || d.Preemptions != 2 || d.NetTxBytes != 50 || d.NetRxBytes != 9 {
		t.Errorf("Sub = %+v", d)
	}
	if len(d.PreemptedBy) != 2 || d.PreemptedBy[8] != 1 || d.PreemptedBy[9] != 1 {
		t.Errorf("PreemptedBy delta = %v, want map[8:1 9:1]", d.PreemptedBy)
	}
	if d.RunqDelay.Count != 2 || d.RunqDelay.Sum != 30 || d.RunqDelay.Buckets[3] != 1 || d.RunqDelay.Buckets[4] != 1 {
		t.Errorf("RunqDelay delta = %+v", d.RunqDelay)
	}
	// A restarted source: counters shrank, the delta counts from zero.
	if d := prev.Sub(cur); d.CPU != time.Second || d.NetTxBytes != 100 || d.RunqDelay.Count != 4 {
		t.Errorf("after a reset: %+v", d)
	}
}

func TestOpenOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	// No root id (pure v1): the fallback, saying why.
	s, err := Open(Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != SourceCgroupfs {
		t.Errorf("Open without a root id: source %s, want %s", s.Name(), SourceCgroupfs)
	}
	var nse *NotSupportedError
	if r := s.Stats().Reason; !errors.Is(r, ErrNotSupported) || !errors.As(r, &nse) {
		t.Errorf("Reason = %v, want a NotSupportedError", r)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Read(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	for _, o := range []Options{
		{RootID: 1, ScopeLevel: 1},
		{RootID: 1, RootLevel: 2, ScopeLevel: 2},
		{RootID: 1, RootLevel: 1, ScopeLevel: 18},
		{RootID: 1, ScopeLevel: 4, MaxScopes: -1},
		{RootID: 1, ScopeLevel: 4, MaxPairs: 1 << 30},
	} {
		if s, err := Open(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v) = %v, %v; want ErrInvalidOptions", o, s, err)
		}
	}
	if o, err := (Options{RootID: 1, ScopeLevel: 4}).withDefaults(); err != nil || o.RootLevel != 1 ||
		o.MaxScopes != DefaultMaxScopes || o.MaxPairs != DefaultMaxPairs {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	// The typed error unwraps to the kernel's.
	err = notSupported("kernel BTF", os.ErrNotExist)
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v: does not match both ErrNotSupported and its cause", err)
	}
}

func TestLevel(t *testing.T) {
	e := newEnv(t)
	scope, workers, id := e.scope(t, "level", "w1")
	if l, err := Level(scope.UnifiedDir()); err != nil || l != e.opts.ScopeLevel {
		t.Errorf("Level(%s) = %d, %v; want %d", scope.UnifiedDir(), l, err, e.opts.ScopeLevel)
	}
	chain, err := ancestors(workers[0].UnifiedDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != e.opts.ScopeLevel+2 || chain[e.opts.ScopeLevel] != id || chain[e.opts.RootLevel] != e.opts.RootID {
		t.Errorf("ancestors of %s = %v; want scope %d at %d, root %d at %d", workers[0].UnifiedDir(), chain, id, e.opts.ScopeLevel, e.opts.RootID, e.opts.RootLevel)
	}
	if _, err := Level(t.TempDir()); !errors.Is(err, ErrInvalidScope) {
		t.Errorf("Level of a plain directory = %v, want ErrInvalidScope", err)
	}
}

// TestCPUTime compares the eBPF CPU time of a spinner with its cgroup's own
// CPU usage: of a spinner that ran for a second and exited (so that both are
// read after the fact, whatever the test's own scheduling delays), and of
// one that runs while they are read.
func TestCPUTime(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	scope, workers, id := e.scope(t, "cpu", "w1")
	track(t, s, id, scope)

	c := startHelper(t, "spin")
	join(t, workers[0], c)
	c.release("1s")
	if !c.wait(30 * time.Second) {
		t.Fatal("the spinner failed")
	}
	bpf, cg := readScope(t, s, id).CPU, cpuUsage(t, scope)
	diff := (float64(bpf) - float64(cg)) / float64(cg)
	t.Logf("spinner of 1 s: eBPF %s, cgroup %s: %+.3f%%", bpf, cg, 100*diff)
	if cg < 200*time.Millisecond {
		t.Errorf("the spinner used only %s of CPU in a second", cg)
	}
	if math.Abs(diff) > 0.02 {
		t.Errorf("eBPF CPU %s is %+.2f%% off the cgroup's %s, want within 2%%", bpf, 100*diff, cg)
	}

	// While a task runs, Read adds the slice in progress: the cgroup's
	// figure (which lags by up to a tick per CPU) lies between two eBPF
	// reads around it, give or take a tick or 2 %.
	c = startHelper(t, "spin")
	join(t, workers[0], c)
	c.release()
	time.Sleep(300 * time.Millisecond)
	b1 := readScope(t, s, id).CPU
	g := cpuUsage(t, scope)
	b2 := readScope(t, s, id).CPU
	t.Logf("running: eBPF %s, cgroup %s, eBPF %s", b1, g, b2)
	slack := max(10*time.Millisecond, g/50)
	if g < b1-slack || g > b2+slack {
		t.Errorf("running: cgroup %s not between eBPF reads %s and %s (±%s)", g, b1, b2, slack)
	}
}

// TestNetBytes sends 8 MiB over loopback TCP from scope A to scope B, then
// within A.
//
// On loopback both ends are on this host: every byte leaves one socket
// (egress of the sender's cgroup) and arrives at another (ingress of the
// receiver's cgroup). Between two scopes the payload is A's tx and B's rx,
// and the acknowledgements B's tx and A's rx; within one scope it is both
// its tx and its rx. skb->len counts from the IP header, and TCP hands the
// hooks super-packets (GSO, 64 KiB or more on loopback), each with one IPv4
// header (20–60 bytes) and one TCP header (20–60). So the bytes are at least
// payload + 40 per packet, and at most that plus the 2 % the brief allows
// for headers (≤ 120 per packet, here about 0.1 %) and retransmits (a busy
// host does drop on loopback: the per-CPU backlog overflows).
func TestNetBytes(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	a, aw, aid := e.scope(t, "neta", "w1", "w2")
	b, bw, bid := e.scope(t, "netb", "w1")
	track(t, s, aid, a)
	track(t, s, bid, b)
	const payload = 8 << 20

	// transfer sends the payload from a process in one cgroup to one in
	// another and returns the data bytes each end's TCP sent, resends
	// included (the receiver sends none: ACKs only).
	transfer := func(from, to *cgroups.Node) (sender, receiver uint64) {
		t.Helper()
		defer func() {
			t.Logf("TCP sent %d data bytes for the %d-byte payload (%d resent), the receiver %d", sender, payload, int64(sender)-payload, receiver)
		}()
		recv := startHelper(t, "recv")
		join(t, to, recv)
		recv.release()
		port := recv.line()
		send := startHelper(t, "send")
		join(t, from, send)
		send.release("127.0.0.1:"+port, strconv.Itoa(payload))
		if got := recv.line(); got != strconv.Itoa(payload) {
			t.Fatalf("received %s bytes, want %d", got, payload)
		}
		receiver, err1 := strconv.ParseUint(recv.line(), 10, 64)
		sender, err2 := strconv.ParseUint(send.line(), 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if !send.wait(10*time.Second) || !recv.wait(10*time.Second) {
			t.Fatal("a helper failed")
		}
		return sender, receiver
	}
	// check compares a counted direction with what TCP sent in it: data
	// bytes plus one IPv4+TCP header (40 bytes, 52 with the timestamps
	// option, 60 with a SYN's options, more with SACK blocks) per packet.
	// Loopback packets are not segmented, so a packet may carry up to
	// 64 KiB of data.
	check := func(what string, n, pkts, data uint64) {
		t.Helper()
		hdr := float64(int64(n)-int64(data)) / float64(max(pkts, 1))
		t.Logf("%s: %d bytes in %d packets = %d data bytes sent + %.1f header bytes per packet", what, n, pkts, data, hdr)
		if pkts == 0 || hdr < 40 || hdr > 80 {
			t.Errorf("%s: %d bytes in %d packets for %d data bytes: want 40..80 header bytes per packet, got %.1f", what, n, pkts, data, hdr)
		}
		if data == 0 {
			return
		}
		// The acceptance figure: counted data bytes (bytes less 52 per
		// packet) within 2 % of what TCP sent.
		if off := math.Abs(float64(n)-52*float64(pkts)-float64(data)) / float64(data); off > 0.02 {
			t.Errorf("%s: %.2f%% off the %d data bytes sent", what, 100*off, data)
		}
	}

	a0, b0 := readScope(t, s, aid), readScope(t, s, bid)
	snd, rcv := transfer(aw[0], bw[0])
	da, db := readScope(t, s, aid).Sub(a0), readScope(t, s, bid).Sub(b0)
	if snd < payload {
		t.Fatalf("TCP_INFO says %d bytes sent, less than the %d payload", snd, payload)
	}
	check("A→B: A tx", da.NetTxBytes, da.NetTxPackets, snd)
	check("A→B: B rx", db.NetRxBytes, db.NetRxPackets, snd)
	check("A→B: A rx", da.NetRxBytes, da.NetRxPackets, rcv)
	check("A→B: B tx", db.NetTxBytes, db.NetTxPackets, rcv)

	a0, b0 = readScope(t, s, aid), readScope(t, s, bid)
	snd, rcv = transfer(aw[0], aw[1])
	da, db = readScope(t, s, aid).Sub(a0), readScope(t, s, bid).Sub(b0)
	if snd < payload {
		t.Fatalf("TCP_INFO says %d bytes sent, less than the %d payload", snd, payload)
	}
	// Within A, its tx and rx each hold the payload and the other end's
	// acknowledgements.
	check("A→A: A tx", da.NetTxBytes, da.NetTxPackets, snd+rcv)
	check("A→A: A rx", da.NetRxBytes, da.NetRxPackets, snd+rcv)
	if db.NetRxBytes+db.NetTxBytes != 0 {
		t.Errorf("B saw %d+%d bytes of a transfer within A", db.NetRxBytes, db.NetTxBytes)
	}
}

// TestRunqDelayAndPreemption runs a spinner of scope A on CPU 0, alone and
// then against a spinner of scope B.
func TestRunqDelayAndPreemption(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	a, aw, aid := e.scope(t, "runqa", "w1")
	b, bw, bid := e.scope(t, "runqb", "w1")
	track(t, s, aid, a)
	track(t, s, bid, b)

	measure := func() Counters {
		r0 := readScope(t, s, aid)
		time.Sleep(1500 * time.Millisecond)
		return readScope(t, s, aid).Sub(r0)
	}
	sa := startHelper(t, "spin-cpu0")
	join(t, aw[0], sa)
	sa.release()
	time.Sleep(300 * time.Millisecond)
	alone := measure()

	sb := startHelper(t, "spin-cpu0")
	join(t, bw[0], sb)
	sb.release()
	time.Sleep(300 * time.Millisecond)
	contended := measure()

	for _, c := range []struct {
		name string
		c    Counters
	}{{"alone", alone}, {"contended", contended}} {
		h := c.c.RunqDelay
		t.Logf("%-9s cpu %s, run-queue waits %d, p50 %s, p99 %s, mean %s; preempted by other scopes %d %v",
			c.name, c.c.CPU, h.Count, h.Quantile(0.5), h.Quantile(0.99), h.Mean(), c.c.Preemptions, c.c.PreemptedBy)
	}
	if contended.RunqDelay.Count == 0 {
		t.Fatal("no run-queue waits measured under contention")
	}
	if contended.RunqDelay.Quantile(0.5) <= alone.RunqDelay.Quantile(0.5) ||
		contended.RunqDelay.Mean() <= alone.RunqDelay.Mean() {
		t.Errorf("run-queue delay not higher under contention: p50 %s vs %s alone, mean %s vs %s",
			contended.RunqDelay.Quantile(0.5), alone.RunqDelay.Quantile(0.5), contended.RunqDelay.Mean(), alone.RunqDelay.Mean())
	}
	if contended.RunqDelay.Quantile(0.5) < 100*time.Microsecond {
		t.Errorf("contended p50 %s: want at least a scheduler slice's worth", contended.RunqDelay.Quantile(0.5))
	}
	if alone.Preemptions != 0 || len(alone.PreemptedBy) != 0 {
		t.Errorf("alone, A was preempted by other scopes: %d %v", alone.Preemptions, alone.PreemptedBy)
	}
	if contended.PreemptedBy[bid] == 0 || len(contended.PreemptedBy) != 1 {
		t.Errorf("contended, PreemptedBy = %v; want only B (%d)", contended.PreemptedBy, bid)
	}
	if got := contended.PreemptedBy[bid]; got > contended.Preemptions || got < contended.Preemptions*9/10 {
		t.Errorf("preempted by B %d times, of %d preemptions", got, contended.Preemptions)
	}
	if rb := readScope(t, s, bid); rb.PreemptedBy[aid] == 0 {
		t.Errorf("B's PreemptedBy = %v, want A (%d)", rb.PreemptedBy, aid)
	}
	// Each spinner gets about half of CPU 0.
	if share := float64(contended.CPU) / float64(1500*time.Millisecond); share < 0.3 || share > 0.7 {
		t.Errorf("contended, A used %.2f of CPU 0, want about half", share)
	}
	st := s.Stats()
	t.Logf("source stats: %+v", st)
	if st.Maps["acct_pairs"].Entries != 2 || st.Maps["acct_scopes"].Entries != 2 {
		t.Errorf("map entries %+v, want 2 scopes, 2 pairs", st.Maps)
	}
	if sw := st.Programs["acct_switch"]; s.statsFD != nil && (sw.RunCount == 0 || sw.RunTime == 0) {
		t.Errorf("acct_switch stats %+v, want runs counted", sw)
	}
}

// TestUntrackDeletesEntries checks that a scope leaves no map entry and no
// attached program behind once untracked, with its tasks still running.
func TestUntrackDeletesEntries(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	a, aw, aid := e.scope(t, "untracka", "w1")
	b, bw, bid := e.scope(t, "untrackb", "w1")
	track(t, s, aid, a)
	track(t, s, bid, b)
	for _, w := range []*cgroups.Node{aw[0], bw[0]} {
		c := startHelper(t, "spin-cpu0")
		join(t, w, c)
		c.release()
	}
	time.Sleep(500 * time.Millisecond)
	if n := pairsNaming(t, s, aid); n != 2 {
		t.Fatalf("%d pairs name A after contention, want 2", n)
	}
	if !attached(t, s, a.UnifiedDir()) {
		t.Error("no program of the source attached to A's directory")
	}

	before := readScope(t, s, aid)
	if err := s.Untrack(aid); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // A's task keeps preempting B's
	if err := s.objs.AcctScopes.Lookup(aid, new([]acctScopeStats)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("acct_scopes entry of A after Untrack: %v", err)
	}
	if attached(t, s, a.UnifiedDir()) {
		t.Error("a program of the source still attached to A's directory")
	}
	if _, err := s.Read(aid); !errors.Is(err, ErrNotTracked) {
		t.Errorf("Read after Untrack = %v, want ErrNotTracked", err)
	}
	if err := s.Untrack(aid); !errors.Is(err, ErrNotTracked) {
		t.Errorf("second Untrack = %v, want ErrNotTracked", err)
	}
	if c := readScope(t, s, bid); c.PreemptedBy[aid] != 0 {
		t.Errorf("B's PreemptedBy still names A: %v", c.PreemptedBy)
	}
	// Untrack leaves A's pair entries to the next sweep of acct_pairs
	// (finding them walks the whole map): gone once a Read or Stats has
	// re-read the pairs.
	sweep(s)
	if n := pairsNaming(t, s, aid); n != 0 {
		t.Errorf("%d pairs name A after Untrack and a sweep", n)
	}

	if err := s.Untrack(bid); err != nil {
		t.Fatal(err)
	}
	if n := entries(t, s.objs.AcctScopes); n != 0 {
		t.Errorf("%d acct_scopes entries left", n)
	}
	sweep(s)
	if n := entries(t, s.objs.AcctPairs); n != 0 {
		t.Errorf("%d acct_pairs entries left", n)
	}
	if st := s.Stats(); st.Scopes != 0 || st.Maps["acct_pairs"].Entries != 0 {
		t.Errorf("Stats after Untrack: %+v", st)
	}
	// Tracked again, a scope starts from zero (its spinner goes on).
	track(t, s, aid, a)
	if c := readScope(t, s, aid); c.Preemptions != 0 || c.CPU >= before.CPU || c.RunqDelay.Count >= before.RunqDelay.Count {
		t.Errorf("re-tracked scope starts at %+v; it had %s, %d waits", c, before.CPU, before.RunqDelay.Count)
	}
}

// sweep makes s re-read (and sweep) acct_pairs, as the next Stats does once
// pairRefresh has passed since the last read.
func sweep(s *ebpfSource) {
	time.Sleep(pairRefresh)
	s.Stats()
}

func pairsNaming(t *testing.T, s *ebpfSource, id uint64) int {
	t.Helper()
	var (
		k acctPairKey
		v uint64
		n int
	)
	it := s.objs.AcctPairs.Iterate()
	for it.Next(&k, &v) {
		if k.Victim == id || k.Preemptor == id {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func entries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var (
		k   []byte
		n   int
		err error
	)
	for k, err = m.NextKeyBytes(nil); err == nil && k != nil; k, err = m.NextKeyBytes(k) {
		n++
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	return n
}

// attached reports whether either cgroup_skb program of s is attached to
// the cgroup directory dir.
func attached(t *testing.T, s *ebpfSource, dir string) bool {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range []struct {
		at   ebpf.AttachType
		prog *ebpf.Program
	}{{ebpf.AttachCGroupInetIngress, s.objs.AcctSkbIn}, {ebpf.AttachCGroupInetEgress, s.objs.AcctSkbOut}} {
		info, err := p.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := info.ID()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: p.at})
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range res.Programs {
			if ap.ID == want {
				return true
			}
		}
	}
	return false
}

// TestOpenTwiceCloseTwice opens two sources that track the same scope, and
// checks that closing them (twice) leaves none of their objects.
func TestOpenTwiceCloseTwice(t *testing.T) {
	e := newEnv(t)
	requireEBPF(t)
	scope, workers, id := e.scope(t, "twice", "w1")
	var (
		srcs []Source
		objs []objects
	)
	for range 2 {
		s, err := Open(e.opts)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != SourceEBPF {
			t.Fatalf("Open gave %s: %v", s.Name(), s.Stats().Reason)
		}
		track(t, s, id, scope)
		srcs = append(srcs, s)
		objs = append(objs, kernelObjects(t, s.(*ebpfSource)))
	}
	c := startHelper(t, "spin")
	join(t, workers[0], c)
	c.release()
	time.Sleep(100 * time.Millisecond)
	if err := srcs[0].Close(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, objs[0])
	// The other one goes on counting.
	r0 := readScope(t, srcs[1], id).CPU
	time.Sleep(100 * time.Millisecond)
	if r1 := readScope(t, srcs[1], id).CPU; r1-r0 < 50*time.Millisecond {
		t.Errorf("the second source counted %s of 100 ms of spinning after the first closed", r1-r0)
	}
	for _, s := range srcs {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	wantGone(t, objs[1])
	if err := srcs[1].Track(id, scope); !errors.Is(err, ErrClosed) {
		t.Errorf("Track after Close = %v, want ErrClosed", err)
	}
	if st := srcs[1].Stats(); st.Scopes != 0 {
		t.Errorf("Stats after Close: %+v", st)
	}
}

func TestTrackValidates(t *testing.T) {
	e := newEnv(t)
	o := e.opts
	o.MaxScopes = 1
	s := openSource(t, o)
	scope, workers, id := e.scope(t, "valid", "w1")
	other, _, oid := e.scope(t, "valid2")
	for _, c := range []struct {
		what string
		id   uint64
		n    Scope
	}{
		{"a worker below the scope", id, workers[0]},
		{"another scope's id", oid, scope},
		{"a tenant", id, mustLoad(t, filepath.Dir(scope.Path()))},
		{"no unified directory", id, noDir{}},
	} {
		if err := s.Track(c.id, c.n); !errors.Is(err, ErrInvalidScope) {
			t.Errorf("Track of %s = %v, want ErrInvalidScope", c.what, err)
		}
	}
	track(t, s, id, scope)
	if err := s.Track(id, scope); !errors.Is(err, ErrTracked) {
		t.Errorf("second Track = %v, want ErrTracked", err)
	}
	if err := s.Track(oid, other); !errors.Is(err, ErrFull) {
		t.Errorf("Track beyond MaxScopes = %v, want ErrFull", err)
	}
	if err := s.Untrack(oid); !errors.Is(err, ErrNotTracked) {
		t.Errorf("Untrack of an untracked scope = %v, want ErrNotTracked", err)
	}
}

type noDir struct{}

func (noDir) UnifiedDir() string            { return "" }
func (noDir) Stats() (cgroups.Stats, error) { return cgroups.Stats{}, nil }

func mustLoad(t *testing.T, p string) *cgroups.Node {
	t.Helper()
	n, err := cgroups.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFallbackCPU checks the cgroupfs source: forced, it reads the CPU time
// from the cgroup's files, and nothing else.
func TestFallbackCPU(t *testing.T) {
	e := newEnv(t)
	o := e.opts
	o.ForceFallback = true
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if s.Name() != SourceCgroupfs {
		t.Fatalf("ForceFallback: source %s, want %s", s.Name(), SourceCgroupfs)
	}
	if r := s.Stats().Reason; !errors.Is(r, ErrNotSupported) {
		t.Errorf("Reason = %v, want ErrNotSupported", r)
	}
	scope, workers, id := e.scope(t, "fallback", "w1")
	track(t, s, id, scope)
	c := startHelper(t, "spin")
	join(t, workers[0], c)
	c.release()
	time.Sleep(300 * time.Millisecond)
	got := readScope(t, s, id)
	cg := cpuUsage(t, scope)
	t.Logf("fallback: CPU %s, cgroup total %s", got.CPU, cg)
	if got.CPU < 200*time.Millisecond || got.CPU > cg {
		t.Errorf("fallback CPU %s, want about 300 ms and at most the cgroup's %s", got.CPU, cg)
	}
	if got.RunqDelay.Count != 0 || got.Preemptions != 0 || got.NetTxBytes != 0 || got.PreemptedBy != nil {
		t.Errorf("fallback measured more than CPU: %+v", got)
	}
	if err := s.Untrack(id); err != nil {
		t.Error(err)
	}
	if st := s.Stats(); st.Source != SourceCgroupfs || st.Scopes != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestConcurrentUse tracks, reads and untracks scopes from several
// goroutines at once, as the supervisor and the metrics scrape do (run it
// with -race).
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	s := openSource(t, e.opts)
	type sc struct {
		n  *cgroups.Node
		id uint64
	}
	var scopes []sc
	for i := range 4 {
		n, _, id := e.scope(t, "conc"+strconv.Itoa(i))
		scopes = append(scopes, sc{n, id})
	}
	done := make(chan error)
	for _, c := range scopes {
		go func() {
			for range 20 {
				if err := s.Track(c.id, c.n); err != nil {
					done <- err
					return
				}
				if _, err := s.Read(c.id); err != nil {
					done <- err
					return
				}
				_ = s.Stats()
				if err := s.Untrack(c.id); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range scopes {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if n := entries(t, s.objs.AcctScopes); n != 0 {
		t.Errorf("%d acct_scopes entries left", n)
	}
}
