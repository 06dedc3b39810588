// Package ident checks the identifiers that travel from a request into paths,
// cgroup names and command lines: tenant, user, environment, extension,
// version and scope names. One rule for all of them, so that no caller has to
// remember which characters are safe where.
package ident

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest identifier accepted.
const MaxLen = 63

// ErrInvalid is wrapped by every error Check returns.
var ErrInvalid = errors.New("invalid identifier")

// Check reports whether s matches [a-z0-9][a-z0-9_-]{0,62}. kind names the
// field ("tenant", "extension", …) in the error message.
func Check(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, kind)
	case len(s) > MaxLen:
		return fmt.Errorf("%w: %s is %d characters long, at most %d are allowed", ErrInvalid, kind, len(s), MaxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		lower := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if lower || i > 0 && (c == '_' || c == '-') {
			continue
		}
		return fmt.Errorf("%w: %s %q: character %q at %d is not allowed (want [a-z0-9][a-z0-9_-]{0,62})", ErrInvalid, kind, s, c, i)
	}
	return nil
}

// MaxDottedLen is the longest dotted name accepted (a cgroup name's limit).
const MaxDottedLen = 255

// CheckDotted reports whether s is one or more identifiers joined by ".",
// the form of scope names ("production.alice"). No element may be empty,
// so "." and ".." are refused.
func CheckDotted(kind, s string) error {
	if len(s) > MaxDottedLen {
		return fmt.Errorf("%w: %s is %d characters long, at most %d are allowed", ErrInvalid, kind, len(s), MaxDottedLen)
	}
	for _, e := range strings.Split(s, ".") {
		if err := Check(kind, e); err != nil {
			return err
		}
	}
	return nil
}

// Tenant is a tenant id that passed Check. The API edge makes it from a
// request with ParseTenant; code beneath it takes a Tenant as checked and
// does not check it again. Converting a string to a Tenant anywhere else is
// for ids the daemon wrote itself (its state, its scopes) and for tests.
type Tenant string

// ParseTenant checks s as a tenant id.
func ParseTenant(s string) (Tenant, error) {
	if err := Check("tenant", s); err != nil {
		return "", err
	}
	return Tenant(s), nil
}

// String is the id.
func (t Tenant) String() string { return string(t) }
