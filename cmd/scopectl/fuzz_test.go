package main

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseWhen: --from and --to are an RFC 3339 time or a duration
// before now; anything else is an error, never a panic.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"-24h", "-1h30m", "-0s", "-", "--1h", "-1e9h", "-9223372036s", "24h", "",
		"2026-01-02T03:04:05Z", "2026-01-02T03:04:05+01:00", "2026-01-02", "2026-13-40T25:61:61Z", "10000-01-01T00:00:00Z"} {
		f.Add(s)
	}
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, now)
		if err != nil {
			return
		}
		if strings.HasPrefix(s, "-") {
			if d, derr := time.ParseDuration(s); derr != nil || d > 0 || !got.Equal(now.Add(d)) {
				t.Fatalf("parseWhen(%q) = %v", s, got)
			}
			return
		}
		if want, perr := time.Parse(time.RFC3339, s); perr != nil || !got.Equal(want) {
			t.Fatalf("parseWhen(%q) = %v, time.Parse says %v, %v", s, got, want, perr)
		}
	})
}

// FuzzMetaFlag: --meta k=v sets key k (never empty) to v, the rest is an
// error.
func FuzzMetaFlag(f *testing.F) {
	for _, s := range []string{"k=v", "k=", "=v", "k", "", "k=v=w", "a b=c\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := metaFlag{}
		if err := m.Set(s); err != nil {
			if len(m) != 0 {
				t.Fatalf("Set(%q) failed but set %v", s, m)
			}
			return
		}
		k, v, _ := strings.Cut(s, "=")
		if len(m) != 1 || k == "" || m[k] != v {
			t.Fatalf("Set(%q) = %v", s, m)
		}
	})
}
