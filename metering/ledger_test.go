package metering

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

// t0 is a window boundary for every window that divides a day.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func openT(t *testing.T, dir string, window time.Duration) *Ledger {
	t.Helper()
	l, err := Open(dir, window)
	if err != nil {
		t.Fatalf("Open(%s, %v): %v", dir, window, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func commitT(t *testing.T, l *Ledger, cursors map[string][]byte, ds ...Delta) {
	t.Helper()
	if err := l.Commit(ds, cursors); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func sumT(t *testing.T, l *Ledger, tenant ident.Tenant, meter string) float64 {
	t.Helper()
	v, err := l.Sum(tenant, meter, t0.Add(-48*time.Hour), t0.Add(48*time.Hour))
	if err != nil {
		t.Fatalf("Sum(%s, %s): %v", tenant, meter, err)
	}
	return v
}

// rawDB opens the ledger file with the driver directly, as an operator's
// sqlite3 shell would.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// allRecords returns every record, sealed or not, keyed by id.
func allRecords(t *testing.T, dir string) map[string]Record {
	t.Helper()
	rows, err := rawDB(t, dir).Query(`SELECT id, tenant, meter, scope, environment, extension, window_start, window_s, value, coalesce(seq, 0) FROM records`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]Record{}
	for rows.Next() {
		var r Record
		var s, w int64
		if err := rows.Scan(&r.ID, &r.Tenant, &r.Meter, &r.Dims.Scope, &r.Dims.Environment, &r.Dims.Extension, &s, &w, &r.Value, &r.Seq); err != nil {
			t.Fatal(err)
		}
		r.WindowStart, r.Window = time.Unix(s, 0).UTC(), time.Duration(w)*time.Second
		m[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "metering")
	l := openT(t, dir, 0)
	if l.Window() != DefaultWindow {
		t.Errorf("Window = %v, want %v", l.Window(), DefaultWindow)
	}
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: CPUSeconds, At: t0, Value: 1})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	for _, name := range []string{FileName, FileName + "-wal", FileName + "-shm", lockName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	db := rawDB(t, dir)
	var mode string
	var app, ver, metaVer, window int64
	for q, p := range map[string]any{
		"PRAGMA journal_mode":                                 &mode,
		"PRAGMA application_id":                               &app,
		"PRAGMA user_version":                                 &ver,
		"SELECT value FROM meta WHERE key = 'schema_version'": &metaVer,
		"SELECT value FROM meta WHERE key = 'window_s'":       &window,
	} {
		if err := db.QueryRow(q).Scan(p); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if mode != "wal" || app != appID || ver != schemaVersion || metaVer != schemaVersion || window != 60 {
		t.Errorf("journal_mode %q, application_id %#x, user_version %d, meta schema_version %d, window_s %d", mode, app, ver, metaVer, window)
	}
	// The writer's connection runs with synchronous=FULL and no foreign keys.
	var sync, fk int
	if err := l.w.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if err := l.w.QueryRow("PRAGMA foreign_keys").Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if sync != 2 || fk != 0 {
		t.Errorf("synchronous %d (want 2, FULL), foreign_keys %d (want 0)", sync, fk)
	}
	if err := l.Check(); err != nil {
		t.Error(err)
	}
}

func TestOpenTightensMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	openT(t, dir, 0)
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere.db")
	if err := os.Symlink(target, filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(dir, 0); err == nil {
		l.Close()
		t.Fatal("Open followed a symlinked ledger.db")
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the symlink's target was created: %v", err)
	}
}

func TestOpenInvalid(t *testing.T) {
	for _, w := range []time.Duration{-time.Second, time.Millisecond, 7 * time.Second, 48 * time.Hour} {
		if _, err := Open(t.TempDir(), w); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(window %v) = %v, want ErrInvalid", w, err)
		}
	}
	if _, err := Open("", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open(\"\") = %v, want ErrInvalid", err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	if l2, err := Open(dir, 0); !errors.Is(err, ErrLocked) {
		if err == nil {
			l2.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	// A reader may open beside the writer.
	r, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatalf("OpenReadOnly beside the writer: %v", err)
	}
	r.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	openT(t, dir, 0)
}

func TestClosed(t *testing.T) {
	l, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	d := Delta{Tenant: "acme", Meter: CPUSeconds, At: t0, Value: 1}
	errs := map[string]error{
		"Commit":           l.Commit([]Delta{d}, nil),
		"DeleteCursor":     l.DeleteCursor("k"),
		"SaveExportCursor": l.SaveExportCursor("e", 0),
	}
	_, errs["Cursors"] = l.Cursors()
	_, errs["Seal"] = l.Seal(t0)
	_, errs["Sealed"] = l.Sealed(0, 1)
	_, errs["LoadExportCursor"] = l.LoadExportCursor("e")
	_, errs["Usage"] = l.Usage(Query{})
	_, errs["Sum"] = l.Sum("acme", CPUSeconds, t0, t0.Add(time.Hour))
	for name, err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	l.Close()
	if _, err := rawDB(t, dir).Exec("PRAGMA user_version = 7"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, 0)
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "version 7") {
		t.Fatalf("Open = %v, want ErrSchemaTooNew naming version 7", err)
	}
	if _, err := OpenReadOnly(dir); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("OpenReadOnly = %v, want ErrSchemaTooNew", err)
	}
	// The refusal changed nothing.
	var v int
	if err := rawDB(t, dir).QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != 7 {
		t.Errorf("user_version %d, %v after refusal", v, err)
	}
}

func TestOpenRefusesForeign(t *testing.T) {
	dir := t.TempDir()
	db := rawDB(t, dir)
	if _, err := db.Exec("CREATE TABLE accounts (id INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); !errors.Is(err, ErrNotLedger) {
		t.Fatalf("Open of a database with other tables = %v, want ErrNotLedger", err)
	}
	dir2 := t.TempDir()
	if _, err := rawDB(t, dir2).Exec("PRAGMA application_id = 42"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir2, 0); !errors.Is(err, ErrNotLedger) {
		t.Fatalf("Open of another application's database = %v, want ErrNotLedger", err)
	}
}

func TestLedgerNodeIDs(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	dims := Dimensions{Scope: "acme.prod", Environment: "prod", Extension: "hook"}
	d := Delta{Tenant: "acme", Meter: CPUSeconds, Dims: dims, At: t0, Value: 1}
	commitT(t, l, nil, d)
	l.SetNode("node-a")
	commitT(t, l, nil, d, d)
	recs := allRecords(t, dir)
	host := RecordID("acme", CPUSeconds, t0, time.Minute, dims)
	node := NodeRecordID("node-a", "acme", CPUSeconds, t0, time.Minute, dims)
	if len(recs) != 2 || recs[host].Value != 1 || recs[node].Value != 2 {
		t.Fatalf("records %v, want %s = 1 (single host) and %s = 2 (node-a)", recs, host, node)
	}
	// The sums count both.
	if v := sumT(t, l, "acme", CPUSeconds); v != 3 {
		t.Errorf("sum %g, want 3", v)
	}
}

func TestCommitAddsUp(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	dims := Dimensions{Scope: "acme.prod", Environment: "prod", Extension: "hook"}
	d := func(at time.Duration, v float64) Delta {
		return Delta{Tenant: "acme", Meter: CPUSeconds, Dims: dims, At: t0.Add(at), Value: v}
	}
	commitT(t, l, nil, d(0, 0.25), d(59*time.Second+999*time.Millisecond, 0.5))
	commitT(t, l, nil, d(30*time.Second, 1), d(60*time.Second, 8))
	commitT(t, l, nil, d(10*time.Second, 2), d(0, 0)) // 0 is ignored
	recs := allRecords(t, dir)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2: %v", len(recs), recs)
	}
	id0 := RecordID("acme", CPUSeconds, t0, time.Minute, dims)
	id1 := RecordID("acme", CPUSeconds, t0.Add(time.Minute), time.Minute, dims)
	if r := recs[id0]; r.Value != 3.75 || !r.WindowStart.Equal(t0) || r.Window != time.Minute || r.Seq != 0 {
		t.Errorf("first window %+v, want 3.75 at %v", r, t0)
	}
	if r := recs[id1]; r.Value != 8 || !r.WindowStart.Equal(t0.Add(time.Minute)) {
		t.Errorf("second window %+v, want 8 at %v", r, t0.Add(time.Minute))
	}
	// Other dimensions, meters and tenants are other records.
	commitT(t, l, nil,
		Delta{Tenant: "acme", Meter: CPUSeconds, At: t0, Value: 1},
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: Dimensions{Scope: "acme.prod"}, At: t0, Value: 1},
		Delta{Tenant: "acme", Meter: InvocationSeconds, Dims: dims, At: t0, Value: 1},
		Delta{Tenant: "beta", Meter: CPUSeconds, At: t0, Value: 1},
	)
	if n := len(allRecords(t, dir)); n != 6 {
		t.Errorf("%d records, want 6", n)
	}
	if v := sumT(t, l, "acme", CPUSeconds); v != 13.75 {
		t.Errorf("Sum = %v, want 13.75", v)
	}
}

func TestWindowAlignment(t *testing.T) {
	for _, w := range []time.Duration{time.Second, 10 * time.Second, 5 * time.Minute, time.Hour, 24 * time.Hour} {
		dir := t.TempDir()
		l := openT(t, dir, w)
		at := t0.Add(7*time.Hour + 13*time.Minute + 17*time.Second + 300*time.Millisecond)
		commitT(t, l, nil, Delta{Tenant: "acme", Meter: ColdStarts, At: at.In(time.FixedZone("east", 5*3600)), Value: 1})
		for _, r := range allRecords(t, dir) {
			want := at.Truncate(w)
			if !r.WindowStart.Equal(want) || r.Window != w || r.ID != RecordID("acme", ColdStarts, want, w, Dimensions{}) {
				t.Errorf("window %v: record %+v, want start %v", w, r, want)
			}
		}
		l.Close()
	}
}

func TestWindowChange(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, At: t0.Add(90 * time.Second), Value: 1})
	l.Close()
	l = openT(t, dir, 5*time.Minute)
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, At: t0.Add(90 * time.Second), Value: 2})
	recs := allRecords(t, dir)
	if len(recs) != 2 {
		t.Fatalf("%d records, want one per window length: %v", len(recs), recs)
	}
	if v := sumT(t, l, "acme", Invocations); v != 3 {
		t.Errorf("Sum = %v, want 3", v)
	}
	// Seal closes each by its own end.
	if n, err := l.Seal(t0.Add(2 * time.Minute)); err != nil || n != 1 {
		t.Errorf("Seal at 2m = %d, %v; want the 1m record only", n, err)
	}
	if n, err := l.Seal(t0.Add(5 * time.Minute)); err != nil || n != 1 {
		t.Errorf("Seal at 5m = %d, %v; want the 5m record", n, err)
	}
}

func TestCommitAtomic(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	good := Delta{Tenant: "acme", Meter: CPUSeconds, At: t0, Value: 1}
	commitT(t, l, map[string][]byte{"src": []byte("1")}, good)
	before := allRecords(t, dir)

	check := func(what string) {
		t.Helper()
		if got := allRecords(t, dir); !reflect.DeepEqual(got, before) {
			t.Errorf("%s: records changed:\n got %v\nwant %v", what, got, before)
		}
		c, err := l.Cursors()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, map[string][]byte{"src": []byte("1")}) {
			t.Errorf("%s: cursors changed: %q", what, c)
		}
	}

	// An invalid delta at the end: nothing of the batch is stored.
	bad := good
	bad.Value = -1
	other := Delta{Tenant: "beta", Meter: NetBytesIn, At: t0, Value: 100}
	err := l.Commit([]Delta{good, other, bad}, map[string][]byte{"src": []byte("2")})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "delta 2") {
		t.Errorf("Commit with a bad last delta = %v, want ErrInvalid naming delta 2", err)
	}
	check("invalid delta")

	// An invalid cursor.
	err = l.Commit([]Delta{good}, map[string][]byte{"src": []byte("2"), "bad key": {}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Commit with a bad cursor key = %v, want ErrInvalid", err)
	}
	err = l.Commit([]Delta{good}, map[string][]byte{"src": make([]byte, MaxCursorBytes+1)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Commit with a huge cursor = %v, want ErrTooLarge", err)
	}
	err = l.Commit(make([]Delta, MaxDeltas+1), nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Commit with too many deltas = %v, want ErrTooLarge", err)
	}
	check("invalid cursor")

	// A failure inside the transaction, after the records were written
	// and before the cursors: all of it rolls back.
	boom := errors.New("disk on fire")
	commitHook = func() error { return boom }
	err = l.Commit([]Delta{good, other}, map[string][]byte{"src": []byte("2"), "new": []byte("x")})
	commitHook = nil
	if !errors.Is(err, boom) {
		t.Errorf("Commit with a failing hook = %v", err)
	}
	check("failure mid-transaction")

	// And the ledger works on afterwards.
	commitT(t, l, map[string][]byte{"src": []byte("2")}, good, other)
	if v := sumT(t, l, "acme", CPUSeconds); v != 2 {
		t.Errorf("Sum after recovery = %v, want 2", v)
	}
}

func TestCursors(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	big := bytes.Repeat([]byte{0xff, 0}, MaxCursorBytes/2)
	commitT(t, l, map[string][]byte{"a": []byte("1"), "b": big, "empty": {}})
	commitT(t, l, map[string][]byte{"a": []byte("2"), "b": nil}) // nil deletes
	want := map[string][]byte{"a": []byte("2"), "empty": {}}
	got, err := l.Cursors()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Cursors = %q, %v; want %q", got, err, want)
	}
	if err := l.DeleteCursor("a"); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteCursor("missing"); err != nil {
		t.Errorf("DeleteCursor of a missing key = %v", err)
	}
	if err := l.DeleteCursor(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("DeleteCursor(\"\") = %v, want ErrInvalid", err)
	}
	l.Close()
	l = openT(t, dir, 0)
	got, err = l.Cursors()
	if err != nil || !reflect.DeepEqual(got, map[string][]byte{"empty": {}}) {
		t.Fatalf("Cursors after reopen = %q, %v", got, err)
	}
}

func TestSeal(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	var ds []Delta
	// Three windows, several tenants and dimensions, in scrambled order.
	for _, w := range []int{2, 0, 1} {
		for _, tn := range []string{"zeta", "acme"} {
			for _, sc := range []string{"b", "a"} {
				ds = append(ds, Delta{Tenant: tn, Meter: Invocations, Dims: Dimensions{Scope: tn + "." + sc},
					At: t0.Add(time.Duration(w)*time.Minute + 10*time.Second), Value: float64(w + 1)})
			}
		}
	}
	commitT(t, l, nil, ds...)

	if n, err := l.Seal(t0.Add(time.Minute - time.Second)); err != nil || n != 0 {
		t.Fatalf("Seal before the first window ends = %d, %v; want 0", n, err)
	}
	n, err := l.Seal(t0.Add(2*time.Minute + 30*time.Second)) // windows 0 and 1 are closed, 2 is not
	if err != nil || n != 8 {
		t.Fatalf("Seal = %d, %v; want 8", n, err)
	}
	if n, err := l.Seal(t0.Add(2*time.Minute + 30*time.Second)); err != nil || n != 0 {
		t.Fatalf("Seal again = %d, %v; want 0", n, err)
	}
	recs, err := l.Sealed(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 8 {
		t.Fatalf("Sealed = %d records, want 8", len(recs))
	}
	for i, r := range recs {
		if r.Seq != int64(i+1) {
			t.Errorf("record %d has seq %d", i, r.Seq)
		}
		if !r.WindowStart.Add(r.Window).After(t0) || r.WindowStart.Add(r.Window).After(t0.Add(2*time.Minute)) {
			t.Errorf("sealed a window that is not closed: %+v", r)
		}
		if r.ID != RecordID(r.Tenant, r.Meter, r.WindowStart, r.Window, r.Dims) {
			t.Errorf("record %+v has a wrong id", r)
		}
		if i > 0 {
			p := recs[i-1]
			if key(p) >= key(r) {
				t.Errorf("seal order: %s before %s", key(p), key(r))
			}
		}
	}
	if recs[0].Tenant != "acme" || recs[0].Dims.Scope != "acme.a" || !recs[0].WindowStart.Equal(t0) {
		t.Errorf("first sealed %+v", recs[0])
	}
	// Paging.
	page, err := l.Sealed(3, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 4 || page[1].Seq != 5 {
		t.Errorf("Sealed(3, 2) = %+v, %v", page, err)
	}
	if page, err := l.Sealed(8, 10); err != nil || len(page) != 0 {
		t.Errorf("Sealed(8, 10) = %+v, %v; want none", page, err)
	}
	for _, lim := range []int{0, -1, MaxBatch + 1} {
		if _, err := l.Sealed(0, lim); !errors.Is(err, ErrInvalid) {
			t.Errorf("Sealed(0, %d) = %v, want ErrInvalid", lim, err)
		}
	}
	if _, err := l.Seal(time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Seal(zero) = %v, want ErrInvalid", err)
	}

	// Late usage for a sealed window goes to the first open one, and the
	// sealed records never change.
	sealedBefore := allRecords(t, dir)
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, Dims: Dimensions{Scope: "acme.a"}, At: t0.Add(5 * time.Second), Value: 100})
	for id, r := range allRecords(t, dir) {
		if old, ok := sealedBefore[id]; ok && old.Seq != 0 && old != r {
			t.Errorf("sealed record changed: %+v → %+v", old, r)
		}
	}
	late := allRecords(t, dir)[RecordID("acme", Invocations, t0.Add(2*time.Minute), time.Minute, Dimensions{Scope: "acme.a"})]
	if late.Value != 103 || late.Seq != 0 {
		t.Errorf("open window got %+v, want 3 + 100 unsealed", late)
	}
	if v := sumT(t, l, "acme", Invocations); v != 2*(1+2+3)+100 {
		t.Errorf("Sum = %v, want %v: late usage is kept", v, 2*(1+2+3)+100)
	}

	// Seqs go on after a reopen and never repeat.
	l.Close()
	l = openT(t, dir, time.Minute)
	if n, err := l.Seal(t0.Add(time.Hour)); err != nil || n != 4 {
		t.Fatalf("Seal after reopen = %d, %v; want 4", n, err)
	}
	recs, err = l.Sealed(8, 100)
	if err != nil || len(recs) != 4 || recs[0].Seq != 9 || recs[3].Seq != 12 {
		t.Fatalf("Sealed after reopen = %+v, %v", recs, err)
	}
	if last, err := l.LastSeq(); err != nil || last != 12 {
		t.Errorf("LastSeq = %d, %v; want 12", last, err)
	}
}

func key(r Record) string {
	return r.WindowStart.Format(time.RFC3339) + "|" + r.Tenant + "|" + r.Meter + "|" + r.Dims.Scope + "|" + r.Dims.Environment + "|" + r.Dims.Extension
}

func TestExportCursor(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	if seq, err := l.LoadExportCursor("webhook"); err != nil || seq != 0 {
		t.Fatalf("LoadExportCursor of a new exporter = %d, %v", seq, err)
	}
	if err := l.SaveExportCursor("webhook", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("SaveExportCursor beyond the last seq = %v, want ErrInvalid", err)
	}
	commitT(t, l, nil,
		Delta{Tenant: "acme", Meter: Invocations, At: t0, Value: 1},
		Delta{Tenant: "beta", Meter: Invocations, At: t0, Value: 1},
		Delta{Tenant: "gamma", Meter: Invocations, At: t0, Value: 1})
	if _, err := l.Seal(t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		seq  int64
	}{{"webhook", 2}, {"file:/var/lib/scoped/usage.jsonl", 3}} {
		if err := l.SaveExportCursor(c.name, c.seq); err != nil {
			t.Fatalf("SaveExportCursor(%s, %d): %v", c.name, c.seq, err)
		}
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", MaxKeyLen+1)} {
		if err := l.SaveExportCursor(bad, 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("SaveExportCursor(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := l.SaveExportCursor("webhook", -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("SaveExportCursor(-1) = %v, want ErrInvalid", err)
	}
	l.Close()
	l = openT(t, dir, time.Minute)
	if seq, err := l.LoadExportCursor("webhook"); err != nil || seq != 2 {
		t.Errorf("LoadExportCursor after reopen = %d, %v; want 2", seq, err)
	}
	if seq, err := l.LoadExportCursor("file:/var/lib/scoped/usage.jsonl"); err != nil || seq != 3 {
		t.Errorf("LoadExportCursor after reopen = %d, %v; want 3", seq, err)
	}
	// Moving back, to deliver again, is allowed.
	if err := l.SaveExportCursor("webhook", 0); err != nil {
		t.Errorf("SaveExportCursor back to 0: %v", err)
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	for i := range 4 {
		commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, At: t0.Add(time.Duration(i) * time.Minute), Value: 1})
	}
	if _, err := l.Seal(t0.Add(3 * time.Minute)); err != nil { // seqs 1..3
		t.Fatal(err)
	}
	if err := l.SaveExportCursor("slow", 1); err != nil {
		t.Fatal(err)
	}
	if err := l.SaveExportCursor("fast", 3); err != nil {
		t.Fatal(err)
	}
	// Only what every exporter has delivered goes.
	if n, err := l.Prune(t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if err := l.DeleteExportCursor("slow"); err != nil {
		t.Fatal(err)
	}
	// Only windows that ended by before go.
	if n, err := l.Prune(t0.Add(2 * time.Minute)); err != nil || n != 1 {
		t.Fatalf("Prune to 2m = %d, %v; want 1", n, err)
	}
	// Open windows never go.
	if n, err := l.Prune(t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	recs := allRecords(t, dir)
	if len(recs) != 1 {
		t.Fatalf("%d records left, want the open one", len(recs))
	}
	for _, r := range recs {
		if r.Seq != 0 {
			t.Errorf("left %+v", r)
		}
	}
	// Seqs are not reused after a prune.
	if _, err := l.Seal(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if recs, err := l.Sealed(0, 10); err != nil || len(recs) != 1 || recs[0].Seq != 4 {
		t.Errorf("Sealed after prune = %+v, %v; want seq 4", recs, err)
	}
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenReadOnly(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly of an empty directory = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly created the ledger")
	}
	l := openT(t, dir, 5*time.Minute)
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, At: t0, Value: 1})
	r, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Window() != 5*time.Minute {
		t.Errorf("read-only Window = %v, want 5m", r.Window())
	}
	if v, err := r.Sum("acme", Invocations, t0, t0.Add(time.Hour)); err != nil || v != 1 {
		t.Errorf("read-only Sum = %v, %v", v, err)
	}
	// It sees later commits of the writer.
	commitT(t, l, nil, Delta{Tenant: "acme", Meter: Invocations, At: t0, Value: 2})
	if v, err := r.Sum("acme", Invocations, t0, t0.Add(time.Hour)); err != nil || v != 3 {
		t.Errorf("read-only Sum after a commit = %v, %v; want 3", v, err)
	}
	if err := r.Commit([]Delta{{Tenant: "acme", Meter: Invocations, At: t0, Value: 1}}, nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Commit = %v, want ErrReadOnly", err)
	}
	if _, err := r.Seal(t0.Add(time.Hour)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Seal = %v, want ErrReadOnly", err)
	}
	if err := r.SaveExportCursor("x", 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only SaveExportCursor = %v, want ErrReadOnly", err)
	}
}

func TestOpenRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), bytes.Repeat([]byte("not a database "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); !errors.Is(err, ErrNotLedger) {
		t.Fatalf("Open of a file that is no database = %v, want ErrNotLedger", err)
	}
}

func TestCommitSealedGuard(t *testing.T) {
	// Commit never writes to a sealed record; should a bug make it try,
	// the transaction fails whole.
	dir := t.TempDir()
	l := openT(t, dir, time.Minute)
	d := Delta{Tenant: "acme", Meter: Invocations, At: t0, Value: 1}
	commitT(t, l, map[string][]byte{"src": []byte("1")}, d)
	if _, err := rawDB(t, dir).Exec(`UPDATE records SET seq = 99`); err != nil {
		t.Fatal(err)
	}
	err := l.Commit([]Delta{{Tenant: "beta", Meter: Invocations, At: t0, Value: 1}, d}, map[string][]byte{"src": []byte("2")})
	if !errors.Is(err, ErrSealed) {
		t.Fatalf("Commit to a sealed record = %v, want ErrSealed", err)
	}
	recs := allRecords(t, dir)
	if len(recs) != 1 {
		t.Errorf("%d records, want the first commit's only", len(recs))
	}
	if c, err := l.Cursors(); err != nil || string(c["src"]) != "1" {
		t.Errorf("cursor %q, %v; want 1", c["src"], err)
	}
}

func TestConcurrent(t *testing.T) {
	l := openT(t, t.TempDir(), time.Second)
	const writers, commits = 4, 50
	errc := make(chan error, writers+2)
	done := make(chan struct{})
	for w := range writers {
		go func() {
			for i := range commits {
				at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
				if err := l.Commit([]Delta{{Tenant: "acme", Meter: Invocations, At: at, Value: 1}},
					map[string][]byte{"w" + string(rune('0'+w)): {byte(i)}}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	go func() { // seal behind the writers
		for i := 0; ; i++ {
			select {
			case <-done:
				errc <- nil
				return
			default:
			}
			if _, err := l.Seal(t0.Add(time.Duration(i) * 100 * time.Millisecond)); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() { // read beside them
		for {
			select {
			case <-done:
				errc <- nil
				return
			default:
			}
			if _, err := l.Usage(Query{Tenant: "acme", PerWindow: true}); err != nil {
				errc <- err
				return
			}
			if _, err := l.Sealed(0, 100); err != nil {
				errc <- err
				return
			}
		}
	}()
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if v := sumT(t, l, "acme", Invocations); v != writers*commits {
		t.Errorf("Sum = %v, want %d", v, writers*commits)
	}
}
