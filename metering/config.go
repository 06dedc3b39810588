package metering

import (
	"errors"
	"fmt"
	"time"

	"github.com/scoped-io/scoped/internal/confval"
	"github.com/scoped-io/scoped/metering/export"
)

// Config is the daemon's [metering] table: per-tenant usage records in the
// ledger, and the exporters that push them. The toml tags are its keys,
// Validate its checks.
type Config struct {
	Enabled bool             `toml:"enabled"`
	Window  confval.Duration `toml:"window"` // the records' window
	Flush   confval.Duration `toml:"flush"`  // how often usage is committed: what a crash can lose
	// Retention is how long records stay in the ledger once every
	// exporter has delivered them (at least 32 days: the spend guards sum
	// over the current month).
	Retention confval.Duration `toml:"retention"`
	// OnError is what admission does when the ledger cannot tell a tier
	// with spend caps what its tenant used: CapsRefuse (the default; also
	// when empty) refuses the invocation with UNAVAILABLE, CapsAllow lets it
	// run unchecked. Either way the daemon logs it and counts it.
	OnError string          `toml:"on_error"`
	Exports []export.Config `toml:"export"`
}

// The values of [metering] on_error.
const (
	CapsRefuse = "refuse"
	CapsAllow  = "allow"
)

// Validate checks the configuration and reads the exporters' token files
// (so a reload reads them again).
func (c *Config) Validate() error {
	switch c.OnError {
	case "", CapsRefuse, CapsAllow:
	default:
		return fmt.Errorf("metering.on_error %q is not %q or %q", c.OnError, CapsRefuse, CapsAllow)
	}
	if !c.Enabled {
		return nil
	}
	switch {
	case c.Window.Duration < time.Second || c.Window.Duration > 24*time.Hour || (24*time.Hour)%c.Window.Duration != 0 || c.Window.Duration%time.Second != 0:
		return errors.New("metering.window must be whole seconds from 1s to 24h that divide a day")
	case c.Flush.Duration < 100*time.Millisecond || c.Flush.Duration > c.Window.Duration:
		return errors.New("metering.flush must be at least 100ms and at most the window")
	case c.Retention.Duration < 32*24*time.Hour:
		return errors.New("metering.retention must be at least 768h (32 days): the monthly spend caps sum over the month")
	}
	names := map[string]bool{}
	for i := range c.Exports {
		e := &c.Exports[i]
		if names[e.Name] {
			return fmt.Errorf("metering.export: two exporters named %q (the name keys its cursor)", e.Name)
		}
		names[e.Name] = true
		err := e.ReadToken()
		if err == nil && e.Batch > MaxBatch {
			err = fmt.Errorf("export %s: batch %d above %d", e.Name, e.Batch, MaxBatch)
		}
		if err == nil {
			err = e.Validate()
		}
		if err != nil {
			return fmt.Errorf("metering.export %q: %w", e.Name, err)
		}
	}
	return nil
}
