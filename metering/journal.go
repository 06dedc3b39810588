package metering

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// The invocation journal keeps the invocation counters the daemon holds in
// memory between two flushes, so that a kill of the daemon (not of the
// host: nothing is fsynced) loses none of them. Each finished invocation
// appends one record, with one write(2) on a file opened O_APPEND, holding
// the cumulative counters of one extension in one scope after it; the
// records of a scope are appended in the order of its counters. A flush
// rotates the journal before it reads the counters and releases the older
// files once the ledger has committed them; the next start after a crash
// charges what the journal holds beyond the cursors. Records are
// cumulative, so replaying one twice charges nothing twice.

// errJournalCorrupt: a journal record failed its checks (magic, length,
// checksum, fields); replay of that file stops there. It is ErrCorrupt.
var errJournalCorrupt = fmt.Errorf("%w: invocation journal", ErrCorrupt)

// JournalEntry is one record of the journal: the cumulative counters of one
// extension (Dims.Extension) in the scope whose cgroup is Key with cgroup
// id CgID (0: unknown), after one invocation.
type JournalEntry struct {
	Key    string // the scope's cgroup path: its cursor's key
	CgID   uint64
	Tenant string
	Dims   Dimensions
	// Cumulative for the scope's life: invocations, cold starts, and
	// invocation wall time in microseconds.
	Invocations, ColdStarts, Micros int64
}

// Journal record layout, little endian:
//
//	magic u16 | n u16 | payload (n bytes) | crc32c(payload) u32
//	payload: cgid u64 | invocations u64 | cold u64 | µs u64 |
//	         5 × (len u16 | bytes): key, tenant, scope, environment, extension
const (
	journalMagic  = 0x4a53 // "SJ"
	journalHeader = 4
	journalFixed  = 4 * 8
	// MaxJournalRecord is the longest record (header and checksum too).
	MaxJournalRecord = 4096
	journalExt       = ".journal"
	journalPrefix    = "invocations-"
	// maxJournalFiles bounds the files one replay reads.
	maxJournalFiles = 4096
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// AppendJournalEntry appends the encoding of e to dst. It fails, appending
// nothing, when e does not fit in MaxJournalRecord or has negative counters.
func AppendJournalEntry(dst []byte, e *JournalEntry) ([]byte, error) {
	strs := [5]string{e.Key, e.Tenant, e.Dims.Scope, e.Dims.Environment, e.Dims.Extension}
	n := journalFixed
	for _, s := range strs {
		n += 2 + len(s)
	}
	if journalHeader+n+4 > MaxJournalRecord {
		return dst, fmt.Errorf("%w: %w: journal record of %d bytes", ErrInvalid, ErrTooLarge, journalHeader+n+4)
	}
	if e.Invocations < 0 || e.ColdStarts < 0 || e.Micros < 0 {
		return dst, fmt.Errorf("%w: negative counter in a journal record", ErrInvalid)
	}
	dst = binary.LittleEndian.AppendUint16(dst, journalMagic)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	start := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, e.CgID)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Invocations))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.ColdStarts))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Micros))
	for _, s := range strs {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
		dst = append(dst, s...)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable)), nil
}

// decodeJournalPayload decodes a payload whose checksum matched.
func decodeJournalPayload(p []byte) (JournalEntry, error) {
	var e JournalEntry
	if len(p) < journalFixed {
		return e, fmt.Errorf("%w: payload of %d bytes", errJournalCorrupt, len(p))
	}
	e.CgID = binary.LittleEndian.Uint64(p)
	inv, cold, us := binary.LittleEndian.Uint64(p[8:]), binary.LittleEndian.Uint64(p[16:]), binary.LittleEndian.Uint64(p[24:])
	if inv > MaxValue || cold > inv || us > 1<<62 {
		return e, fmt.Errorf("%w: counters out of range", errJournalCorrupt)
	}
	e.Invocations, e.ColdStarts, e.Micros = int64(inv), int64(cold), int64(us)
	p = p[journalFixed:]
	var strs [5]string
	for i := range strs {
		if len(p) < 2 {
			return e, fmt.Errorf("%w: field %d cut short", errJournalCorrupt, i)
		}
		l := int(binary.LittleEndian.Uint16(p))
		p = p[2:]
		if len(p) < l {
			return e, fmt.Errorf("%w: field %d of %d bytes cut short", errJournalCorrupt, i, l)
		}
		strs[i] = string(p[:l])
		p = p[l:]
	}
	if len(p) != 0 {
		return e, fmt.Errorf("%w: %d bytes after the fields", errJournalCorrupt, len(p))
	}
	e.Key, e.Tenant = strs[0], strs[1]
	e.Dims = Dimensions{Scope: strs[2], Environment: strs[3], Extension: strs[4]}
	if err := checkKey("journal key", e.Key); err != nil {
		return e, fmt.Errorf("%w: %w", errJournalCorrupt, err)
	}
	if err := checkTenant(e.Tenant); err != nil {
		return e, fmt.Errorf("%w: %w", errJournalCorrupt, err)
	}
	if err := checkDims(e.Tenant, e.Dims); err != nil {
		return e, fmt.Errorf("%w: %w", errJournalCorrupt, err)
	}
	return e, nil
}

// DecodeJournal reads the records of r in order, calling fn for each. A
// record cut short at the end (a torn last write) ends the replay without
// an error; a damaged record ends it with one wrapping ErrCorrupt
// and its offset, after fn had the records before it. An error of fn or r
// ends it too. Memory is bounded by MaxJournalRecord whatever r holds.
func DecodeJournal(r io.Reader, fn func(JournalEntry) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf [MaxJournalRecord]byte
	var off int64
	for {
		h := buf[:journalHeader]
		if _, err := io.ReadFull(br, h); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil // the end, or a torn header
			}
			return err
		}
		if m := binary.LittleEndian.Uint16(h); m != journalMagic {
			return fmt.Errorf("%w: bad magic %#04x at offset %d", errJournalCorrupt, m, off)
		}
		n := int(binary.LittleEndian.Uint16(h[2:]))
		if n < journalFixed+10 || journalHeader+n+4 > MaxJournalRecord {
			return fmt.Errorf("%w: record length %d at offset %d", errJournalCorrupt, n, off)
		}
		body := buf[journalHeader : journalHeader+n+4]
		if _, err := io.ReadFull(br, body); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil // a torn last record
			}
			return err
		}
		p := body[:n]
		if sum := binary.LittleEndian.Uint32(body[n:]); sum != crc32.Checksum(p, crcTable) {
			return fmt.Errorf("%w: checksum mismatch at offset %d", errJournalCorrupt, off)
		}
		e, err := decodeJournalPayload(p)
		if err != nil {
			return fmt.Errorf("%w (record at offset %d)", err, off)
		}
		if err := fn(e); err != nil {
			return err
		}
		off += int64(journalHeader + n + 4)
	}
}

// Journal is the invocation journal of a ledger directory: numbered files
// invocations-<seq>.journal, the highest one current. Open it only while
// holding the directory's Ledger (whose lock keeps other writers out).
// Append is safe for concurrent use with itself and with Rotate.
type Journal struct {
	dir string

	mu  sync.RWMutex // held shared by Append, exclusively to swap cur
	cur *os.File
	seq uint64 // cur's number

	size atomic.Int64 // bytes appended to cur
}

// bufPool holds encoding buffers, so that Append allocates nothing.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// OpenJournal opens the journal of dir (a directory Open made), starting a
// new current file after the files already there; those stay for Replay
// and Release.
func OpenJournal(dir string) (*Journal, error) {
	seqs, err := journalFiles(dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{dir: dir}
	if len(seqs) > 0 {
		j.seq = seqs[len(seqs)-1]
	}
	f, err := j.create(j.seq + 1)
	if err != nil {
		return nil, err
	}
	j.cur, j.seq = f, j.seq+1
	return j, nil
}

func (j *Journal) name(seq uint64) string {
	return filepath.Join(j.dir, fmt.Sprintf("%s%016x%s", journalPrefix, seq, journalExt))
}

func (j *Journal) create(seq uint64) (*os.File, error) {
	f, err := os.OpenFile(j.name(seq), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("invocation journal: %w", err)
	}
	return f, nil
}

// journalFiles lists the numbers of the journal files in dir, ascending.
func journalFiles(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("invocation journal: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), journalPrefix)
		if !ok {
			continue
		}
		if s, ok = strings.CutSuffix(s, journalExt); !ok || len(s) != 16 {
			continue
		}
		n, err := strconv.ParseUint(s, 16, 64)
		if err != nil || n == 0 || n == 1<<64-1 {
			continue
		}
		seqs = append(seqs, n)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// Append appends e to the current file with one write(2), no fsync.
func (j *Journal) Append(e *JournalEntry) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b, err := AppendJournalEntry((*bp)[:0], e)
	if err != nil {
		return err
	}
	*bp = b
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.cur == nil {
		return fmt.Errorf("invocation journal: %w", os.ErrClosed)
	}
	if _, err := j.cur.Write(b); err != nil {
		return fmt.Errorf("invocation journal: %w", err)
	}
	j.size.Add(int64(len(b)))
	return nil
}

// Size is the bytes appended to the current file.
func (j *Journal) Size() int64 { return j.size.Load() }

// Rotate starts a new current file and returns the number of the last
// file before it: every record appended before Rotate returned is in a file
// numbered up to that, and none appended after it is.
func (j *Journal) Rotate() (uint64, error) {
	f, err := j.create(j.seq + 1)
	if err != nil {
		return 0, err
	}
	j.mu.Lock()
	old, prev := j.cur, j.seq
	j.cur, j.seq = f, j.seq+1
	j.size.Store(0)
	j.mu.Unlock()
	if old != nil {
		_ = old.Close() // appends to it finished (Append holds mu)
	}
	return prev, nil
}

// Release removes the files numbered up to upTo (never the current one).
func (j *Journal) Release(upTo uint64) error {
	seqs, err := journalFiles(j.dir)
	if err != nil {
		return err
	}
	j.mu.RLock()
	cur := j.seq
	j.mu.RUnlock()
	var errs []error
	for _, s := range seqs {
		if s <= upTo && s != cur {
			if err := os.Remove(j.name(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Replay reads the files older than the current one in order, calling fn
// for each record (see DecodeJournal), and returns the number of the last
// file read (0: none) for Release. A damaged file is reported through bad,
// with the records before the damage given to fn; the others are read
// still.
func (j *Journal) Replay(fn func(JournalEntry) error, bad func(file string, err error)) (uint64, error) {
	seqs, err := journalFiles(j.dir)
	if err != nil {
		return 0, err
	}
	j.mu.RLock()
	cur := j.seq
	j.mu.RUnlock()
	var last uint64
	read := 0
	for _, s := range seqs {
		if s >= cur {
			break
		}
		last = s
		if read++; read > maxJournalFiles {
			bad(j.name(s), fmt.Errorf("%w: more than %d files; the rest are not read", errJournalCorrupt, maxJournalFiles))
			break
		}
		f, err := os.OpenFile(j.name(s), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if err != nil {
			bad(j.name(s), err)
			continue
		}
		err = DecodeJournal(f, fn)
		f.Close()
		if errors.Is(err, errStopReplay) {
			break
		}
		if err != nil {
			bad(j.name(s), err)
		}
	}
	return last, nil
}

// errStopReplay, returned by a Replay callback, ends the replay.
var errStopReplay = errors.New("replay stopped")

// StopReplay is what a Replay callback returns to end the replay early.
func StopReplay() error { return errStopReplay }

// Drop closes the journal and removes all its files, the current one too:
// for a clean stop, once the ledger holds every count.
func (j *Journal) Drop() error {
	err := j.Close()
	seqs, lerr := journalFiles(j.dir)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	for _, s := range seqs {
		if rerr := os.Remove(j.name(s)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Close closes the current file; Append fails from then on.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cur == nil {
		return nil
	}
	err := j.cur.Close()
	j.cur = nil
	return err
}
