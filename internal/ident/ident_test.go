package ident

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

var rule = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func TestCheck(t *testing.T) {
	good := []string{"a", "acme", "tenant-1", "t_2", "0", strings.Repeat("a", 63)}
	bad := []string{"", "-a", "_a", "A", "a/b", "..", "../etc", "a.b", "a b", "é", strings.Repeat("a", 64), strings.Repeat("x", 70), "a\x00"}
	for _, s := range good {
		if err := Check("tenant", s); err != nil {
			t.Errorf("Check(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		err := Check("tenant", s)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"acme", "../x", "", "A-b", strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Check("x", s)
		if (err == nil) != rule.MatchString(s) {
			t.Fatalf("Check(%q) = %v, regexp says %v", s, err, rule.MatchString(s))
		}
	})
}

func TestCheckDotted(t *testing.T) {
	for _, s := range []string{"a", "production.alice", "a.b.c"} {
		if err := CheckDotted("scope", s); err != nil {
			t.Errorf("CheckDotted(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "..", "a..b", ".a", "a.", "a/b", "a.B", strings.Repeat("a.", 130) + "a"} {
		if err := CheckDotted("scope", s); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckDotted(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestParseTenant(t *testing.T) {
	if got, err := ParseTenant("acme"); err != nil || got != "acme" {
		t.Errorf("ParseTenant(acme) = %q, %v", got, err)
	}
	for _, s := range []string{"", "../x", "ACME", strings.Repeat("a", 64)} {
		got, err := ParseTenant(s)
		if !errors.Is(err, ErrInvalid) || got != "" {
			t.Errorf("ParseTenant(%q) = %q, %v, want ErrInvalid", s, got, err)
		}
		if want := Check("tenant", s); err.Error() != want.Error() {
			t.Errorf("ParseTenant(%q) says %q, Check says %q", s, err, want)
		}
	}
}
