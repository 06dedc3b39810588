package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParsePSI(t *testing.T) {
	for _, c := range []struct {
		in   string
		want PSI
		err  bool
	}{
		{in: "some avg10=11.05 avg60=1.99 avg300=0.41 total=1757784\nfull avg10=11.05 avg60=1.99 avg300=0.41 total=1757763\n",
			want: PSI{Some: 1757784 * time.Microsecond, Full: 1757763 * time.Microsecond}},
		{in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n", want: PSI{Some: 42 * time.Microsecond}},
		{in: "", err: true},
		{in: "full avg10=0.00 total=1\n", err: true},
		{in: "some avg10=0.00\n", err: true},
		{in: "some total=-1\n", err: true},
		{in: "some total=99999999999999999999\n", err: true},
	} {
		got, err := ParsePSI(c.in)
		if c.err {
			if !errors.Is(err, ErrInvalidStat) {
				t.Errorf("%q: %v, want ErrInvalidStat", c.in, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestReadPSI(t *testing.T) {
	dir := t.TempDir()
	if p, err := ReadPSI("", "cpu"); p != nil || err != nil {
		t.Errorf("no dir: %v, %v", p, err)
	}
	if p, err := ReadPSI(dir, "cpu"); p != nil || err != nil {
		t.Errorf("no file: %v, %v", p, err)
	}
	f := filepath.Join(dir, "cpu.pressure")
	if err := os.WriteFile(f, []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := ReadPSI(dir, "cpu"); err != nil || p == nil || p.Full != 5*time.Microsecond {
		t.Errorf("got %+v, %v", p, err)
	}
	if err := os.WriteFile(f, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPSI(dir, "cpu"); !errors.Is(err, ErrInvalidStat) {
		t.Errorf("garbage: %v", err)
	}
}

func TestParseCPUStat(t *testing.T) {
	in := "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\ncore_sched.force_idle_usec 0\nnr_periods 7\nnr_throttled 2\nthrottled_usec 300\nnr_bursts 0\nburst_usec 0\n"
	want := CPUStat{Usage: 1500 * time.Microsecond, User: time.Millisecond, System: 500 * time.Microsecond,
		NrPeriods: 7, NrThrottled: 2, Throttled: 300 * time.Microsecond}
	if got, err := ParseCPUStat(in); err != nil || got != want {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
	// Without the cpu controller only the usage lines are there.
	if got, err := ParseCPUStat("usage_usec 9\nuser_usec 4\nsystem_usec 5\n"); err != nil || got.Usage != 9*time.Microsecond {
		t.Errorf("usage only: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "user_usec 1\n", "usage_usec\n", "usage_usec x\n", "usage_usec -1\n",
		"usage_usec 1 2\n", "usage_usec 18446744073709551615\n", "usage_usec 1\nthrottled_usec 99999999999999999999\n"} {
		if _, err := ParseCPUStat(bad); !errors.Is(err, ErrInvalidStat) {
			t.Errorf("ParseCPUStat(%q): %v, want ErrInvalidStat", bad, err)
		}
	}
}

func TestReadCPUStat(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadCPUStat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.stat"), []byte("usage_usec 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadCPUStat(dir); err != nil || st.Usage != 42*time.Microsecond {
		t.Errorf("got %+v, %v", st, err)
	}
}

func TestParseProcStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 2 30 5000 40 5 6 7 8 0\ncpu0 50 1 15 2500 20 2 3 3 4 0\n"
	if got, err := ParseProcStat(stat); err != nil || got != 150*10*time.Millisecond {
		t.Errorf("ParseProcStat = %v, %v; want %v", got, err, 150*10*time.Millisecond)
	}
	for _, bad := range []string{"", "cpu 1 2 3\n", "intr 1 2 3 4 5 6 7 8 9\n", "cpu 1 2 x 4 5 6 7 8\n",
		"cpu 9223372036854775807 1 1 0 0 1 1 1\n"} {
		if _, err := ParseProcStat(bad); !errors.Is(err, ErrInvalidStat) {
			t.Errorf("ParseProcStat(%q): %v, want ErrInvalidStat", bad, err)
		}
	}
	a, err := HostBusy()
	if err != nil {
		t.Skipf("no /proc/stat here: %v", err)
	}
	if b, err := HostBusy(); err != nil || b < a {
		t.Errorf("HostBusy went back from %v to %v (%v)", a, b, err)
	}
}

// The parsers read files a hostile tenant's cgroup could in principle
// shape: whatever the text, they return a value or ErrInvalidStat, never
// panic, and never a negative time.
func FuzzUnitParsePSI(f *testing.F) {
	f.Add("some avg10=0.00 avg60=0.00 avg300=0.00 total=1757784\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1757763\n")
	f.Add("some total=1\n")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePSI(s)
		if err != nil && !errors.Is(err, ErrInvalidStat) {
			t.Fatalf("%q: %v", s, err)
		}
		if p.Some < 0 || p.Full < 0 {
			t.Fatalf("%q: negative %+v", s, p)
		}
	})
}

func FuzzUnitParseCPUStat(f *testing.F) {
	f.Add("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\nnr_throttled 2\nthrottled_usec 300\n")
	f.Add("usage_usec 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseCPUStat(s)
		if err != nil && !errors.Is(err, ErrInvalidStat) {
			t.Fatalf("%q: %v", s, err)
		}
		if st.Usage < 0 || st.User < 0 || st.System < 0 || st.Throttled < 0 {
			t.Fatalf("%q: negative %+v", s, st)
		}
	})
}

func FuzzUnitParseProcStat(f *testing.F) {
	f.Add("cpu  100 2 30 5000 40 5 6 7 8 0\ncpu0 50 1 15 2500 20 2 3 3 4 0\n")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseProcStat(s)
		if err != nil && !errors.Is(err, ErrInvalidStat) {
			t.Fatalf("%q: %v", s, err)
		}
		if d < 0 {
			t.Fatalf("%q: negative %v", s, d)
		}
	})
}
