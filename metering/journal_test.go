package metering

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func testEntry(i int64) JournalEntry {
	return JournalEntry{Key: "/sys/fs/cgroup/scoped/free/acme/acme.s1", CgID: 4242, Tenant: "acme",
		Dims:        Dimensions{Scope: "acme.s1", Environment: "prod", Extension: "resize"},
		Invocations: i, ColdStarts: min(i, 2), Micros: i * 1500}
}

func decodeAll(t *testing.T, b []byte) ([]JournalEntry, error) {
	t.Helper()
	var out []JournalEntry
	err := DecodeJournal(bytes.NewReader(b), func(e JournalEntry) error { out = append(out, e); return nil })
	return out, err
}

func TestJournalEncodeDecode(t *testing.T) {
	var b []byte
	for i := int64(1); i <= 3; i++ {
		e := testEntry(i)
		var err error
		if b, err = AppendJournalEntry(b, &e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := decodeAll(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("decoded %d records, want 3", len(got))
	}
	for i, e := range got {
		if want := testEntry(int64(i + 1)); e != want {
			t.Errorf("record %d = %+v, want %+v", i, e, want)
		}
	}
}

func TestJournalEncodeRefuses(t *testing.T) {
	e := testEntry(1)
	e.Key = string(make([]byte, MaxJournalRecord))
	if b, err := AppendJournalEntry(nil, &e); !errors.Is(err, ErrTooLarge) || len(b) != 0 {
		t.Errorf("oversized record: %d bytes, %v; want none, ErrTooLarge", len(b), err)
	}
	e = testEntry(1)
	e.Micros = -1
	if b, err := AppendJournalEntry(nil, &e); !errors.Is(err, ErrInvalid) || len(b) != 0 {
		t.Errorf("negative counter: %d bytes, %v; want none, ErrInvalid", len(b), err)
	}
}

func TestJournalTornTail(t *testing.T) {
	e1, e2 := testEntry(1), testEntry(2)
	b, _ := AppendJournalEntry(nil, &e1)
	one := len(b)
	b, _ = AppendJournalEntry(b, &e2)
	for cut := one; cut < len(b); cut++ {
		got, err := decodeAll(t, b[:cut])
		if err != nil || len(got) != 1 || got[0] != e1 {
			t.Fatalf("cut at %d: %d records, %v; want the first, no error", cut, len(got), err)
		}
	}
}

func TestJournalCorrupt(t *testing.T) {
	e1, e2 := testEntry(1), testEntry(2)
	b, _ := AppendJournalEntry(nil, &e1)
	one := len(b)
	b, _ = AppendJournalEntry(b, &e2)
	for i := one; i < len(b); i++ {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		got, err := decodeAll(t, c)
		// A flipped length byte may look like a torn record; anything
		// else is corrupt. Never the second record, never a panic.
		if len(got) != 1 || got[0] != e1 {
			t.Fatalf("byte %d flipped: %d records; want only the first", i, len(got))
		}
		if err != nil && !errors.Is(err, errJournalCorrupt) {
			t.Fatalf("byte %d flipped: %v, want errJournalCorrupt", i, err)
		}
		if err == nil && i != one+2 && i != one+3 {
			t.Fatalf("byte %d flipped: no error", i)
		}
	}
	// Garbage with a valid checksum but bad fields.
	bad := testEntry(1)
	bad.Tenant = "Not A Tenant"
	c, _ := AppendJournalEntry(nil, &bad)
	if _, err := decodeAll(t, c); !errors.Is(err, errJournalCorrupt) {
		t.Errorf("bad tenant: %v, want errJournalCorrupt", err)
	}
	bad = testEntry(1)
	bad.ColdStarts = 5 // more cold starts than invocations
	c, _ = AppendJournalEntry(nil, &bad)
	if _, err := decodeAll(t, c); !errors.Is(err, errJournalCorrupt) {
		t.Errorf("cold > invocations: %v, want errJournalCorrupt", err)
	}
}

func TestJournalFiles(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := testEntry(1)
	if err := j.Append(&e); err != nil {
		t.Fatal(err)
	}
	b, _ := AppendJournalEntry(nil, &e)
	if j.Size() != int64(len(b)) {
		t.Errorf("Size %d after one record of %d bytes", j.Size(), len(b))
	}
	upTo, err := j.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if j.Size() != 0 {
		t.Errorf("Size %d after Rotate", j.Size())
	}
	e = testEntry(2)
	if err := j.Append(&e); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// A later life replays both files in order, then releases them.
	j2, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	var got []int64
	last, err := j2.Replay(func(e JournalEntry) error { got = append(got, e.Invocations); return nil },
		func(f string, err error) { t.Errorf("%s: %v", f, err) })
	if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 2 || last != upTo+1 {
		t.Fatalf("replay: %v (last %d, %v), want [1 2] (last %d)", got, last, err, upTo+1)
	}
	if err := j2.Release(last); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "invocations-*.journal"))
	if len(names) != 1 {
		t.Fatalf("after release: %v, want the current file only", names)
	}
	// A damaged file is reported; the replay goes on with the next.
	if err := os.WriteFile(filepath.Join(dir, "invocations-0000000000000001.journal"), []byte("garbage!"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := 0
	if _, err := j2.Replay(func(JournalEntry) error { return nil }, func(string, error) { bad++ }); err != nil || bad != 1 {
		t.Errorf("damaged file: %d reports, %v; want 1, nil", bad, err)
	}
	if err := j2.Drop(); err != nil {
		t.Fatal(err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "invocations-*")); len(names) != 0 {
		t.Errorf("after Drop: %v", names)
	}
	if err := j2.Append(&e); err == nil {
		t.Error("Append after Drop succeeded")
	}
}

func FuzzJournal(f *testing.F) {
	e := testEntry(7)
	b, _ := AppendJournalEntry(nil, &e)
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Add(append(bytes.Clone(b), b...))
	f.Add([]byte{0x53, 0x4a, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := DecodeJournal(bytes.NewReader(data), func(e JournalEntry) error {
			n++
			// Whatever decodes encodes back to a record of the same size.
			re, err := AppendJournalEntry(nil, &e)
			if err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
			if len(re) > len(data) {
				t.Fatalf("record of %d bytes from %d bytes of input", len(re), len(data))
			}
			if e.ColdStarts > e.Invocations || e.Invocations < 0 {
				t.Fatalf("counters %+v", e)
			}
			return nil
		})
		if err != nil && !errors.Is(err, errJournalCorrupt) {
			t.Fatalf("error %v is not errJournalCorrupt", err)
		}
		if n > len(data)/(journalHeader+journalFixed+14) {
			t.Fatalf("%d records from %d bytes", n, len(data))
		}
	})
}

func BenchmarkJournalAppend(b *testing.B) {
	j, err := OpenJournal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	e := testEntry(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Invocations = int64(i + 1)
		if err := j.Append(&e); err != nil {
			b.Fatal(err)
		}
	}
}
