// Package confval holds the value types the daemon's configuration file
// shares between the packages that own a part of it.
package confval

import (
	"encoding/json"
	"time"
)

// Duration is a time.Duration written as "5s" in TOML. Unlike a plain
// time.Duration field, a bare integer is refused (no unit), not read as
// nanoseconds.
type Duration struct{ time.Duration }

// UnmarshalText parses "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

// MarshalText writes the duration as "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalJSON writes nanoseconds, as for a time.Duration, so that JSON
// holding a Duration reads the same as before it was one.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(int64(d.Duration)) }

// UnmarshalJSON reads nanoseconds, or a string such as "1m30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return d.UnmarshalText([]byte(s))
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	d.Duration = time.Duration(n)
	return nil
}
