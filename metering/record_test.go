package metering

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRecordIDGolden(t *testing.T) {
	// A contract with everything downstream that deduplicates by id: these
	// must never change. They were computed from the encoding documented
	// on RecordID by an independent implementation (Python hashlib).
	start := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	for _, c := range []struct {
		tenant, meter string
		window        time.Duration
		d             Dimensions
		want          string
	}{
		{"acme", CPUSeconds, time.Minute, Dimensions{}, "67b5cdbf9499bfc3abe303227f0b307c"},
		{"acme", CPUSeconds, time.Minute, Dimensions{Scope: "acme.production", Environment: "production", Extension: "hook"}, "bff09529618d54d0a562973d57f1f5e6"},
		{"acme", NetBytesOut, 5 * time.Minute, Dimensions{Scope: "acme.staging", Environment: "staging"}, "fe2e032deaeee33b87d825c7be0b7ab4"},
	} {
		got := RecordID(c.tenant, c.meter, start, c.window, c.d)
		if !hex32.MatchString(got) {
			t.Fatalf("RecordID = %q, want 32 lowercase hex digits", got)
		}
		if got != c.want {
			t.Errorf("RecordID(%q, %q, %v, %v, %+v) = %s, want %s", c.tenant, c.meter, start, c.window, c.d, got, c.want)
		}
		// The location of the time does not matter, only the instant.
		if other := RecordID(c.tenant, c.meter, start.In(time.FixedZone("x", 3600)), c.window, c.d); other != got {
			t.Errorf("RecordID depends on the time zone: %s != %s", other, got)
		}
	}
}

func TestNodeRecordID(t *testing.T) {
	// Golden values computed from the documented encoding (Python hashlib),
	// like TestRecordIDGolden's.
	start := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	full := Dimensions{Scope: "acme.production", Environment: "production", Extension: "hook"}
	for _, c := range []struct {
		node string
		d    Dimensions
		want string
	}{
		{"", Dimensions{}, "67b5cdbf9499bfc3abe303227f0b307c"}, // a single host: RecordID exactly
		{"node-a", Dimensions{}, "613799f83490ca65b238345ff43bab6f"},
		{"node-b", full, "111b0fa074d525424919ee2b7b111313"},
	} {
		if got := NodeRecordID(c.node, "acme", CPUSeconds, start, time.Minute, c.d); got != c.want {
			t.Errorf("NodeRecordID(%q, ..., %+v) = %s, want %s", c.node, c.d, got, c.want)
		}
	}
	// Two nodes, and a node and a single host, never share an id; nor does
	// a node name that moves into the extension.
	seen := map[string]string{}
	for _, n := range []struct{ node, ext string }{{"", "hook"}, {"a", "hook"}, {"b", "hook"}, {"", "hook\x00\x00\x00\x01a"}, {"ab", "hook"}} {
		d := full
		d.Extension = n.ext
		id := NodeRecordID(n.node, "acme", CPUSeconds, start, time.Minute, d)
		if prev, ok := seen[id]; ok {
			t.Errorf("%+v and %s share id %s", n, prev, id)
		}
		seen[id] = n.node + "/" + n.ext
	}
}

func TestRecordIDDistinct(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type in struct {
		tenant, meter string
		start         time.Time
		window        time.Duration
		d             Dimensions
	}
	base := in{"ab", "c", start, time.Minute, Dimensions{"ab.x", "e", "f"}}
	variants := []in{
		base,
		{"a", "bc", start, time.Minute, Dimensions{"ab.x", "e", "f"}},                    // boundary moved between tenant and meter
		{"c", "ab", start, time.Minute, Dimensions{"ab.x", "e", "f"}},                    // fields swapped
		{"ab", "c", start, time.Minute, Dimensions{"ab.xe", "", "f"}},                    // scope swallows environment
		{"ab", "c", start, time.Minute, Dimensions{"ab.x", "", "ef"}},                    // environment moves into extension
		{"ab", "c", start, time.Minute, Dimensions{"ab.x", "f", "e"}},                    // environment and extension swapped
		{"ab", "c", start, time.Minute, Dimensions{"ab.x", "ef", ""}},                    //
		{"ab", "c", start, time.Minute, Dimensions{"", "ab.x", "ef"}},                    //
		{"ab", "c", start.Add(time.Minute), time.Minute, base.d},                         // next window
		{"ab", "c", start, 2 * time.Minute, base.d},                                      // other length
		{"ab", "c\x00", start, time.Minute, base.d},                                      // a NUL is data, not a separator
		{"ab\x00\x00\x00\x01c", "", start, time.Minute, base.d},                          // a forged length prefix
		{"ab", "c", time.Unix(60, 0), time.Duration(start.Unix()) * time.Second, base.d}, // start and window swapped
	}
	seen := map[string]int{}
	for i, v := range variants {
		id := RecordID(v.tenant, v.meter, v.start, v.window, v.d)
		if j, ok := seen[id]; ok {
			t.Errorf("variants %d and %d share id %s: %+v, %+v", j, i, id, variants[j], v)
		}
		seen[id] = i
	}
}

// FuzzRecordID checks that two inputs have the same id exactly when they
// are the same input, however the bytes are split between the fields.
func FuzzRecordID(f *testing.F) {
	f.Add("ab", "c", "", "", "", int64(0), int64(60), "a", "bc", "", "", "", int64(0), int64(60))
	f.Add("acme", CPUSeconds, "acme.p", "p", "x", int64(1893456000), int64(60), "acme", CPUSeconds, "acme.p", "px", "", int64(1893456000), int64(60))
	f.Add("t", "m", "s", "", "", int64(60), int64(1), "t", "m", "", "s", "", int64(60), int64(1))
	f.Add("t", "m", "", "", "", int64(60), int64(120), "t", "m", "", "", "", int64(120), int64(60))
	f.Add("t\x00\x00\x00\x01m", "", "", "", "", int64(0), int64(1), "t", "m", "", "", "", int64(0), int64(1))
	f.Fuzz(func(t *testing.T, t1, m1, s1, e1, x1 string, st1, w1 int64, t2, m2, s2, e2, x2 string, st2, w2 int64) {
		// Windows beyond ±2^33 s would overflow a time.Duration.
		w1, w2 = w1%(1<<33), w2%(1<<33)
		a := [5]string{t1, m1, s1, e1, x1}
		b := [5]string{t2, m2, s2, e2, x2}
		same := a == b && st1 == st2 && w1 == w2
		ea := idInput("", t1, m1, st1, w1, Dimensions{s1, e1, x1})
		eb := idInput("", t2, m2, st2, w2, Dimensions{s2, e2, x2})
		if (string(ea) == string(eb)) != same {
			t.Fatalf("encodings equal = %v for inputs equal = %v: %q %d %d / %q %d %d", !same, same, a, st1, w1, b, st2, w2)
		}
		ia := RecordID(t1, m1, time.Unix(st1, 0), time.Duration(w1)*time.Second, Dimensions{s1, e1, x1})
		ib := RecordID(t2, m2, time.Unix(st2, 0), time.Duration(w2)*time.Second, Dimensions{s2, e2, x2})
		if (ia == ib) != same {
			t.Fatalf("ids equal = %v for inputs equal = %v: %q %d %d / %q %d %d", ia == ib, same, a, st1, w1, b, st2, w2)
		}
		if !hex32.MatchString(ia) {
			t.Fatalf("RecordID = %q", ia)
		}
	})
}

func TestAlignUnix(t *testing.T) {
	for _, c := range []struct{ t, w, want int64 }{
		{0, 60, 0}, {59, 60, 0}, {60, 60, 60}, {61, 60, 60}, {-1, 60, -60}, {-60, 60, -60}, {-61, 60, -120},
		{1893456000 + 86399, 86400, 1893456000}, {7, 1, 7},
	} {
		if got := alignUnix(c.t, c.w); got != c.want {
			t.Errorf("alignUnix(%d, %d) = %d, want %d", c.t, c.w, got, c.want)
		}
	}
}

func TestCheckWindow(t *testing.T) {
	good := []time.Duration{time.Second, 10 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 24 * time.Hour}
	bad := []time.Duration{-time.Minute, 0, time.Millisecond, 1500 * time.Millisecond, 7 * time.Second, 7 * time.Minute, 25 * time.Hour, 48 * time.Hour}
	for _, w := range good {
		if err := checkWindow(w); err != nil {
			t.Errorf("checkWindow(%v) = %v", w, err)
		}
	}
	for _, w := range bad {
		if err := checkWindow(w); !errors.Is(err, ErrInvalid) {
			t.Errorf("checkWindow(%v) = %v, want ErrInvalid", w, err)
		}
	}
}

func TestDeltaValidate(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ok := Delta{Tenant: "acme", Meter: CPUSeconds, Dims: Dimensions{"acme.prod", "prod", "hook"}, At: at, Value: 1.5}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for _, m := range Meters() {
		d := ok
		d.Meter, d.Value = m, 3
		if err := d.Validate(); err != nil {
			t.Errorf("meter %s: %v", m, err)
		}
	}
	for _, c := range []struct {
		name string
		edit func(*Delta)
		want error
	}{
		{"empty tenant", func(d *Delta) { d.Tenant = "" }, ident.ErrInvalid},
		{"bad tenant", func(d *Delta) { d.Tenant = "../etc" }, ident.ErrInvalid},
		{"upper tenant", func(d *Delta) { d.Tenant = "Acme" }, ident.ErrInvalid},
		{"unknown meter", func(d *Delta) { d.Meter = "gpu_seconds" }, ErrUnknownMeter},
		{"empty meter", func(d *Delta) { d.Meter = "" }, ErrUnknownMeter},
		{"bad scope", func(d *Delta) { d.Dims.Scope = "acme..prod" }, ident.ErrInvalid},
		{"scope of another tenant", func(d *Delta) { d.Dims.Scope = "other.prod" }, ErrInvalid},
		{"scope prefix of tenant", func(d *Delta) { d.Dims.Scope = "acmex.prod" }, ErrInvalid},
		{"bad environment", func(d *Delta) { d.Dims.Environment = "prod/x" }, ident.ErrInvalid},
		{"bad extension", func(d *Delta) { d.Dims.Extension = strings.Repeat("x", 64) }, ident.ErrInvalid},
		{"zero time", func(d *Delta) { d.At = time.Time{} }, ErrInvalid},
		{"before 1970", func(d *Delta) { d.At = time.Unix(-1, 0) }, ErrInvalid},
		{"after 9999", func(d *Delta) { d.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ErrInvalid},
		{"negative", func(d *Delta) { d.Value = -1 }, ErrInvalid},
		{"NaN", func(d *Delta) { d.Value = math.NaN() }, ErrInvalid},
		{"Inf", func(d *Delta) { d.Value = math.Inf(1) }, ErrInvalid},
		{"huge", func(d *Delta) { d.Value = 1e300 }, ErrInvalid},
		{"fractional count", func(d *Delta) { d.Meter, d.Value = Invocations, 1.5 }, ErrInvalid},
		{"fractional bytes", func(d *Delta) { d.Meter, d.Value = NetBytesIn, 0.1 }, ErrInvalid},
	} {
		d := ok
		c.edit(&d)
		err := d.Validate()
		if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want %v (and ErrInvalid)", c.name, err, c.want)
		}
	}
}

func TestCheckKey(t *testing.T) {
	for _, k := range []string{"a", "scope:acme.prod", "export/webhook-1", strings.Repeat("k", MaxKeyLen)} {
		if err := checkKey("key", k); err != nil {
			t.Errorf("checkKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "a b", "a\nb", "é", "a\x00", strings.Repeat("k", MaxKeyLen+1)} {
		if err := checkKey("key", k); !errors.Is(err, ErrInvalid) {
			t.Errorf("checkKey(%q) = %v, want ErrInvalid", k, err)
		}
	}
}
