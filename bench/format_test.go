package bench

import (
	"testing"
	"time"
)

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Ms(1250 * time.Microsecond), "1.25 ms"},
		{MsP(1250*time.Microsecond, 1), "1.2 ms"},
		{Us(1250 * time.Microsecond), "1250 µs"},
		{Secs(1500 * time.Millisecond), "1.5 s"},
		{DRatio(3*time.Second, 2*time.Second), "1.50"},
		{DRatio(time.Second, 0), "–"},
		{MiB(3 << 20), "3.0 MiB"},
		{KiB(2048), "2 KiB"},
		{Plural(1, "round"), "round"},
		{Plural(0, "round"), "rounds"},
		{Pcts([]time.Duration{time.Millisecond, 3 * time.Millisecond}, 1), "2.0 ms / 3.0 ms / 3.0 ms"},
		{ModuleVersion("no/such/module"), "unknown"},
		{BinaryModuleVersion("/no/such/binary", "x"), "unknown"},
		{ToolVersion("/no/such/tool"), "tool (version unknown)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
