package metering

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite" // registers the "sqlite" driver
)

// File names under the directory given to Open.
const (
	// FileName is the ledger database. SQLite keeps FileName-wal and
	// FileName-shm beside it.
	FileName = "ledger.db"
	// lockName is the file a writing Ledger holds an exclusive flock on.
	lockName = "ledger.lock"
)

// busyTimeout is how long a statement waits for a lock another connection
// holds (an operator's sqlite3 shell, a checkpoint) before it fails.
const busyTimeout = 5 * time.Second

// pruneChunk is how many records one transaction of Prune deletes, so that
// Commit never waits long behind it.
const pruneChunk = 10_000

// maxCursorTotal bounds the bytes of all the cursors of one Commit.
const maxCursorTotal = 64 << 20

// Primary SQLite result codes that name a damaged or foreign file.
const (
	sqliteCorrupt = 11 // SQLITE_CORRUPT
	sqliteNotADB  = 26 // SQLITE_NOTADB
)

// classify adds ErrCorrupt or ErrNotLedger to an SQLite error that means
// the file is damaged or not a database at all.
func classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqliteCorrupt:
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case sqliteNotADB:
		return fmt.Errorf("%w (or damaged beyond recognition): %w", ErrNotLedger, err)
	}
	return err
}

// commitHook, when set by a test, runs inside Commit's transaction after the
// records are written and before the cursors are; an error from it rolls
// the transaction back like any other failure.
var commitHook func() error

// Ledger is the metering ledger of one directory. Its methods are safe for
// concurrent use. A Ledger from Open is the only writer of its directory (an
// flock on ledger.lock); reads run on their own connections, so a long
// Usage query does not hold up Commit.
type Ledger struct {
	dir      string
	window   time.Duration
	readOnly bool

	mu     sync.RWMutex // guards closed against Close; held shared by every call
	closed bool

	wmu          sync.Mutex // serialises writes; guards the fields below
	sealedBefore int64      // meta sealed_before
	node         string     // the fleet node whose records' ids these are ("": a single host)
	lastSeq      int64      // meta last_seq

	w    *sql.DB  // the one writing connection; nil when read-only
	r    *sql.DB  // reading connections
	lock *os.File // holds the flock; nil when read-only
}

// Open opens the ledger in dir/ledger.db for writing, creating dir (0700)
// and the ledger (0600) when missing and migrating an older schema. New
// records use window (0 means DefaultWindow): whole seconds, from 1s to a
// day, dividing a day. Records already stored keep the window they were
// made with, so the window can change between runs.
//
// Open refuses a ledger of a newer schema (ErrSchemaTooNew), a file that
// is not a ledger (ErrNotLedger) and a directory another Ledger has open
// (ErrLocked).
func Open(dir string, window time.Duration) (*Ledger, error) {
	if window == 0 {
		window = DefaultWindow
	}
	if err := checkWindow(window); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty ledger directory", ErrInvalid)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Ledger{dir: dir, window: window, lock: lock}
	if err := l.open(); err != nil {
		l.closeAll()
		return nil, classify(err)
	}
	return l, nil
}

// OpenReadOnly opens an existing ledger for reading only, for tools that
// run beside the daemon (scopectl usage). It takes no lock, never migrates
// and never creates anything; writes return ErrReadOnly. Window reports the
// window of the last Open.
func OpenReadOnly(dir string) (*Ledger, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(filepath.Join(dir, FileName))
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrNotLedger, filepath.Join(dir, FileName))
	}
	l := &Ledger{dir: dir, readOnly: true}
	if err := l.open(); err != nil {
		l.closeAll()
		return nil, classify(err)
	}
	return l, nil
}

// lockDir takes the writer's lock of dir.
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another writer", ErrLocked, dir)
		}
		return nil, fmt.Errorf("ledger lock %s: %w", p, err)
	}
	return f, nil
}

// dsn is the data source name of the ledger file with the given query.
func (l *Ledger) dsn(q url.Values) string {
	u := url.URL{Path: filepath.Join(l.dir, FileName)}
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// open opens the connections, checks or creates the schema and loads the
// writer's state.
func (l *Ledger) open() error {
	busy := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())
	if !l.readOnly {
		if err := prepareFiles(l.dir); err != nil {
			return err
		}
		// synchronous=FULL: every commit fsyncs the WAL, so what Commit
		// returned survives a power cut, not only a kill of the process
		// (NORMAL would keep it consistent but could lose the last
		// commits, and the counters they came from die with the host).
		// Commits come once per flush interval, so the fsync is cheap.
		q := url.Values{
			"_pragma": {busy, "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(0)",
				"journal_size_limit(67108864)"},
			"_txlock": {"immediate"},
		}
		w, err := sql.Open("sqlite", l.dsn(q))
		if err != nil {
			return err
		}
		l.w = w
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		w.SetConnMaxIdleTime(0)
		var mode string
		if err := w.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
			return fmt.Errorf("open ledger %s: %w", l.dir, err)
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("open ledger %s: journal mode is %q, WAL is needed", l.dir, mode)
		}
		if err := l.migrate(); err != nil {
			return err
		}
	}
	q := url.Values{"_pragma": {busy, "foreign_keys(0)", "query_only(1)"}}
	if l.readOnly {
		q.Set("mode", "ro")
	}
	r, err := sql.Open("sqlite", l.dsn(q))
	if err != nil {
		return err
	}
	l.r = r
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(2)
	if l.readOnly {
		return l.checkReadOnly()
	}
	return nil
}

// prepareFiles creates the ledger file with mode 0600 (SQLite gives its
// -wal and -shm the mode of the database) and tightens the mode of files a
// previous run left.
func prepareFiles(dir string) error {
	p := filepath.Join(dir, FileName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	err = f.Chmod(0o600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	for _, s := range []string{"-wal", "-shm"} {
		fi, err := os.Lstat(p + s)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrNotLedger, p+s)
		}
		if fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(p+s, 0o600); err != nil {
				return fmt.Errorf("ledger: %w", err)
			}
		}
	}
	return nil
}

// header is what identifies a ledger and its version.
type header struct{ app, version int64 }

func readHeader(q interface {
	QueryRow(string, ...any) *sql.Row
}) (h header, err error) {
	if err := q.QueryRow("PRAGMA application_id").Scan(&h.app); err != nil {
		return h, err
	}
	err = q.QueryRow("PRAGMA user_version").Scan(&h.version)
	return h, err
}

// checkHeader refuses what is not a ledger this build can read.
func (l *Ledger) checkHeader(h header) error {
	switch {
	case h.app != 0 && h.app != appID:
		return fmt.Errorf("%w: %s has application id %#x", ErrNotLedger, l.dir, h.app)
	case h.app == 0 && h.version != 0:
		return fmt.Errorf("%w: %s has user_version %d but no application id", ErrNotLedger, l.dir, h.version)
	case h.version > schemaVersion:
		return fmt.Errorf("%w: %s has schema version %d, this build understands up to %d: run a newer scoped, or restore an older ledger",
			ErrSchemaTooNew, filepath.Join(l.dir, FileName), h.version, schemaVersion)
	}
	return nil
}

// migrate creates or upgrades the schema and loads the writer's state, all
// in one transaction.
func (l *Ledger) migrate() error {
	tx, err := l.w.Begin()
	if err != nil {
		return fmt.Errorf("open ledger %s: %w", l.dir, err)
	}
	defer tx.Rollback()
	h, err := readHeader(tx)
	if err != nil {
		return fmt.Errorf("open ledger %s: %w", l.dir, err)
	}
	if err := l.checkHeader(h); err != nil {
		return err
	}
	if h.app == 0 {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\_%' ESCAPE '\'`).Scan(&n); err != nil {
			return fmt.Errorf("open ledger %s: %w", l.dir, err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %s holds %d tables or indexes of something else", ErrNotLedger, l.dir, n)
		}
	}
	for v := h.version; v < schemaVersion; v++ {
		if _, err := tx.Exec(migrations[v]); err != nil {
			return fmt.Errorf("migrate ledger %s from version %d: %w", l.dir, v, err)
		}
	}
	if h.version < schemaVersion {
		stmts := []string{
			fmt.Sprintf("PRAGMA application_id = %d", appID),
			fmt.Sprintf("PRAGMA user_version = %d", schemaVersion),
		}
		for _, s := range stmts {
			if _, err := tx.Exec(s); err != nil {
				return fmt.Errorf("migrate ledger %s: %w", l.dir, err)
			}
		}
		if _, err := tx.Exec(`UPDATE meta SET value = ? WHERE key = 'schema_version'`, schemaVersion); err != nil {
			return fmt.Errorf("migrate ledger %s: %w", l.dir, err)
		}
	}
	if err := l.loadMeta(tx); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE meta SET value = ? WHERE key = 'window_s'`, int64(l.window/time.Second)); err != nil {
		return fmt.Errorf("open ledger %s: %w", l.dir, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("open ledger %s: %w", l.dir, err)
	}
	return nil
}

// loadMeta reads the meta table into l and checks it against the header.
func (l *Ledger) loadMeta(q interface {
	Query(string, ...any) (*sql.Rows, error)
}) error {
	rows, err := q.Query(`SELECT key, value FROM meta`)
	if err != nil {
		return fmt.Errorf("ledger %s: meta: %w", l.dir, err)
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var k string
		var v any
		if err := rows.Scan(&k, &v); err != nil {
			return fmt.Errorf("ledger %s: meta: %w", l.dir, err)
		}
		if n, ok := v.(int64); ok {
			m[k] = n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger %s: meta: %w", l.dir, err)
	}
	for _, k := range []string{"schema_version", "window_s", "sealed_before", "last_seq"} {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("%w: %s: meta has no integer %s", ErrCorrupt, l.dir, k)
		}
	}
	if m["schema_version"] != schemaVersion {
		return fmt.Errorf("%w: %s: meta says schema version %d, the header %d", ErrCorrupt, l.dir, m["schema_version"], schemaVersion)
	}
	l.sealedBefore, l.lastSeq = m["sealed_before"], m["last_seq"]
	if l.readOnly {
		l.window = time.Duration(m["window_s"]) * time.Second
	}
	return nil
}

// checkReadOnly checks the header and reads meta of a read-only ledger.
func (l *Ledger) checkReadOnly() error {
	h, err := readHeader(l.r)
	if err != nil {
		return fmt.Errorf("open ledger %s: %w", l.dir, err)
	}
	if err := l.checkHeader(h); err != nil {
		return err
	}
	if h.version < schemaVersion {
		return fmt.Errorf("%w: %s has schema version %d, older than %d: open it for writing once to migrate it",
			ErrReadOnly, l.dir, h.version, schemaVersion)
	}
	return l.loadMeta(l.r)
}

// closeAll releases whatever is open.
func (l *Ledger) closeAll() error {
	var errs []error
	if l.r != nil {
		errs = append(errs, l.r.Close())
	}
	if l.w != nil {
		errs = append(errs, l.w.Close()) // checkpoints the WAL
	}
	if l.lock != nil {
		errs = append(errs, l.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

// SetNode makes the ids of the records this ledger makes from now on
// those of the fleet node named node (NodeRecordID), so that exporters
// deduplicate across nodes; "" (the default) is a single host's RecordID.
// Records already made keep their ids.
func (l *Ledger) SetNode(node string) {
	l.wmu.Lock()
	l.node = node
	l.wmu.Unlock()
}

// Close closes the ledger. Calls after it return ErrClosed.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	return l.closeAll()
}

// Dir is the directory of the ledger.
func (l *Ledger) Dir() string { return l.dir }

// Window is the length of the windows Commit makes.
func (l *Ledger) Window() time.Duration { return l.window }

// begin takes the shared lock against Close and, for writes, the writer's
// lock; end releases them.
func (l *Ledger) begin(write bool) error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	if write {
		if l.readOnly {
			l.mu.RUnlock()
			return ErrReadOnly
		}
		l.wmu.Lock()
	}
	return nil
}

func (l *Ledger) end(write bool) {
	if write {
		l.wmu.Unlock()
	}
	l.mu.RUnlock()
}

// pending is the sum of the deltas of one record in one Commit.
type pending struct {
	id            string
	tenant, meter string
	dims          Dimensions
	start         int64 // Unix seconds
	value         float64
}

// Commit adds the deltas to the records of their windows (a record is made
// on first use) and stores the cursors, in one transaction: when Commit
// returns nil all of it is durable, otherwise none of it is. A nil cursor
// value deletes that cursor in the same transaction (a source that is
// gone); an empty non-nil value stores an empty cursor.
//
// A delta goes to the window that contains At, or, when that window is
// already sealed (At before the last Seal's before), to the window that
// contains that before: the first one still open. Deltas of value 0 are
// checked and otherwise ignored. Every delta and cursor is checked before
// anything is written: at most MaxDeltas deltas and MaxCursors cursors,
// keys as for DeleteCursor, values up to MaxCursorBytes (64 MiB in all);
// see Delta.Validate.
func (l *Ledger) Commit(deltas []Delta, cursors map[string][]byte) error {
	if len(deltas) > MaxDeltas {
		return fmt.Errorf("%w: %w: %d deltas, at most %d", ErrInvalid, ErrTooLarge, len(deltas), MaxDeltas)
	}
	if len(cursors) > MaxCursors {
		return fmt.Errorf("%w: %w: %d cursors, at most %d", ErrInvalid, ErrTooLarge, len(cursors), MaxCursors)
	}
	for i, d := range deltas {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("delta %d: %w", i, err)
		}
	}
	keys := make([]string, 0, len(cursors))
	total := 0
	for k, v := range cursors {
		if err := checkKey("cursor key", k); err != nil {
			return err
		}
		if len(v) > MaxCursorBytes {
			return fmt.Errorf("%w: %w: cursor %q is %d bytes, at most %d", ErrInvalid, ErrTooLarge, k, len(v), MaxCursorBytes)
		}
		if total += len(v); total > maxCursorTotal {
			return fmt.Errorf("%w: %w: cursors of more than %d bytes in one commit", ErrInvalid, ErrTooLarge, maxCursorTotal)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(deltas) == 0 && len(cursors) == 0 {
		return nil
	}
	if err := l.begin(true); err != nil {
		return err
	}
	defer l.end(true)

	w := int64(l.window / time.Second)
	var recs []*pending
	byID := map[string]*pending{}
	for _, d := range deltas {
		if d.Value == 0 {
			continue
		}
		at := d.At.Unix()
		if at < l.sealedBefore {
			at = l.sealedBefore
		}
		start := alignUnix(at, w)
		id := NodeRecordID(l.node, d.Tenant, d.Meter, time.Unix(start, 0), l.window, d.Dims)
		if p := byID[id]; p != nil {
			p.value += d.Value
			continue
		}
		p := &pending{id: id, tenant: d.Tenant, meter: d.Meter, dims: d.Dims, start: start, value: d.Value}
		byID[id] = p
		recs = append(recs, p)
	}

	tx, err := l.w.Begin()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer tx.Rollback()
	if len(recs) > 0 {
		st, err := tx.Prepare(`INSERT INTO records (id, tenant, meter, scope, environment, extension, window_start, window_s, value)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET value = value + excluded.value WHERE seq IS NULL`)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		defer st.Close()
		for _, p := range recs {
			res, err := st.Exec(p.id, p.tenant, p.meter, p.dims.Scope, p.dims.Environment, p.dims.Extension,
				p.start, w, p.value)
			if err != nil {
				return fmt.Errorf("commit: record %s: %w", p.id, err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("commit: %w: record %s (%s %s at %d)", ErrSealed, p.id, p.tenant, p.meter, p.start)
			}
		}
	}
	if commitHook != nil {
		if err := commitHook(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	now := time.Now().Unix()
	for _, k := range keys {
		v := cursors[k]
		if v == nil {
			_, err = tx.Exec(`DELETE FROM cursors WHERE key = ?`, k)
		} else {
			_, err = tx.Exec(`INSERT INTO cursors (key, value, updated) VALUES (?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated`, k, v, now)
		}
		if err != nil {
			return fmt.Errorf("commit: cursor %q: %w", k, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Cursors returns the cursors as the last Commit left them, by key.
func (l *Ledger) Cursors() (map[string][]byte, error) {
	if err := l.begin(false); err != nil {
		return nil, err
	}
	defer l.end(false)
	rows, err := l.r.Query(`SELECT key, value FROM cursors`)
	if err != nil {
		return nil, fmt.Errorf("cursors: %w", err)
	}
	defer rows.Close()
	m := map[string][]byte{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("cursors: %w", err)
		}
		if v == nil {
			v = []byte{}
		}
		m[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cursors: %w", err)
	}
	return m, nil
}

// DeleteCursor removes a cursor; a missing one is not an error. A key is 1
// to MaxKeyLen bytes of printable ASCII without spaces.
func (l *Ledger) DeleteCursor(key string) error {
	if err := checkKey("cursor key", key); err != nil {
		return err
	}
	if err := l.begin(true); err != nil {
		return err
	}
	defer l.end(true)
	if _, err := l.w.Exec(`DELETE FROM cursors WHERE key = ?`, key); err != nil {
		return fmt.Errorf("delete cursor %q: %w", key, err)
	}
	return nil
}

// Seal closes every window that ends at or before before: each of its
// records without a Seq gets the next one, in the order window start,
// tenant, meter, scope, environment, extension. From then on those records
// never change, and usage stamped before before goes to the window that
// contains before. before should trail the clock by a grace period for
// usage still in flight; sealing the future would push all usage into it.
// Seal returns how many records it sealed.
func (l *Ledger) Seal(before time.Time) (int, error) {
	if err := checkTime("seal time", before); err != nil {
		return 0, err
	}
	if err := l.begin(true); err != nil {
		return 0, err
	}
	defer l.end(true)
	b := before.Unix()
	tx, err := l.w.Begin()
	if err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.Exec(`UPDATE records SET seq = ? + r.n
		FROM (SELECT id, row_number() OVER (ORDER BY window_start, tenant, meter, scope, environment, extension) AS n
			FROM records WHERE seq IS NULL AND window_start < ? AND window_start + window_s <= ?) AS r
		WHERE records.id = r.id`, l.lastSeq, b, b)
	if err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	last, sealed := l.lastSeq+n, max(l.sealedBefore, b)
	if _, err := tx.Exec(`UPDATE meta SET value = CASE key WHEN 'last_seq' THEN ? ELSE ? END
		WHERE key IN ('last_seq', 'sealed_before')`, last, sealed); err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	l.lastSeq, l.sealedBefore = last, sealed
	return int(n), nil
}

// Sealed returns up to limit (1 to MaxBatch) sealed records with a Seq
// above afterSeq, in Seq order.
func (l *Ledger) Sealed(afterSeq int64, limit int) ([]Record, error) {
	if afterSeq < 0 {
		return nil, fmt.Errorf("%w: seq %d is negative", ErrInvalid, afterSeq)
	}
	if limit < 1 || limit > MaxBatch {
		return nil, fmt.Errorf("%w: limit %d: want 1 to %d", ErrInvalid, limit, MaxBatch)
	}
	if err := l.begin(false); err != nil {
		return nil, err
	}
	defer l.end(false)
	rows, err := l.r.Query(`SELECT id, tenant, meter, scope, environment, extension, window_start, window_s, value, seq
		FROM records WHERE seq > ? ORDER BY seq LIMIT ?`, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var start, w int64
		if err := rows.Scan(&r.ID, &r.Tenant, &r.Meter, &r.Dims.Scope, &r.Dims.Environment, &r.Dims.Extension,
			&start, &w, &r.Value, &r.Seq); err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
		r.WindowStart, r.Window = time.Unix(start, 0).UTC(), time.Duration(w)*time.Second
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	return out, nil
}

// LastSeq is the highest Seq given so far (0 before the first Seal).
func (l *Ledger) LastSeq() (int64, error) {
	if err := l.begin(false); err != nil {
		return 0, err
	}
	defer l.end(false)
	if !l.readOnly {
		l.wmu.Lock()
		defer l.wmu.Unlock()
		return l.lastSeq, nil
	}
	var n int64
	if err := l.r.QueryRow(`SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("last seq: %w", err)
	}
	return n, nil
}

// LoadExportCursor returns the last Seq the exporter name has delivered, 0
// when it has delivered none. name is 1 to MaxKeyLen bytes of printable
// ASCII without spaces.
func (l *Ledger) LoadExportCursor(name string) (int64, error) {
	if err := checkKey("export cursor name", name); err != nil {
		return 0, err
	}
	if err := l.begin(false); err != nil {
		return 0, err
	}
	defer l.end(false)
	var seq int64
	err := l.r.QueryRow(`SELECT seq FROM export_cursors WHERE name = ?`, name).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("export cursor %q: %w", name, err)
	}
	return seq, nil
}

// SaveExportCursor durably records that the exporter name has delivered
// every record up to seq, which must be from 0 to LastSeq. Moving it back
// is allowed (to deliver again; records keep their ids, so downstream
// sees the same records).
func (l *Ledger) SaveExportCursor(name string, seq int64) error {
	if err := checkKey("export cursor name", name); err != nil {
		return err
	}
	if err := l.begin(true); err != nil {
		return err
	}
	defer l.end(true)
	if seq < 0 || seq > l.lastSeq {
		return fmt.Errorf("%w: export cursor %q: seq %d, want 0 to %d", ErrInvalid, name, seq, l.lastSeq)
	}
	if _, err := l.w.Exec(`INSERT INTO export_cursors (name, seq, updated) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated = excluded.updated`,
		name, seq, time.Now().Unix()); err != nil {
		return fmt.Errorf("export cursor %q: %w", name, err)
	}
	return nil
}

// DeleteExportCursor forgets an exporter (one removed from the
// configuration), so that Prune no longer waits for it.
func (l *Ledger) DeleteExportCursor(name string) error {
	if err := checkKey("export cursor name", name); err != nil {
		return err
	}
	if err := l.begin(true); err != nil {
		return err
	}
	defer l.end(true)
	if _, err := l.w.Exec(`DELETE FROM export_cursors WHERE name = ?`, name); err != nil {
		return fmt.Errorf("export cursor %q: %w", name, err)
	}
	return nil
}

// Prune deletes the sealed records whose window ends at or before before
// and that every exporter with an export cursor has delivered, and returns
// how many. Open windows are never pruned. Keep at least as much as the
// spend guards sum over (a month or two). It deletes in small transactions.
func (l *Ledger) Prune(before time.Time) (int, error) {
	if err := checkTime("prune time", before); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, err := l.pruneChunk(before.Unix())
		total += n
		if err != nil || n < pruneChunk {
			return total, err
		}
	}
}

func (l *Ledger) pruneChunk(before int64) (int, error) {
	if err := l.begin(true); err != nil {
		return 0, err
	}
	defer l.end(true)
	res, err := l.w.Exec(`DELETE FROM records WHERE rowid IN (
		SELECT rowid FROM records
		WHERE seq IS NOT NULL AND window_start + window_s <= ?
			AND seq <= (SELECT coalesce(min(seq), 9223372036854775807) FROM export_cursors)
		LIMIT ?)`, before, pruneChunk)
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	return int(n), nil
}

// Check runs SQLite's integrity check over the whole ledger (it reads every
// page: seconds for a large one) and returns ErrCorrupt with what it found.
func (l *Ledger) Check() error {
	if err := l.begin(false); err != nil {
		return err
	}
	defer l.end(false)
	rows, err := l.r.QueryContext(context.Background(), `PRAGMA integrity_check(20)`)
	if err != nil {
		return fmt.Errorf("check: %w", classify(err))
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("check: %w", err)
		}
		msgs = append(msgs, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, l.dir, strings.Join(msgs, "; "))
	}
	return nil
}
