package control

import (
	"errors"

	"github.com/scoped-io/scoped/cgroups"
)

// Sentinel errors. Every error of this package wraps one of them, or the
// error of a Source or an Actuator.
var (
	ErrInvalidConfig = errors.New("invalid controller configuration")
	// ErrClosed: the Controller was closed; it restored every scope it
	// had throttled and does nothing more.
	ErrClosed = errors.New("controller closed")
	// ErrNoActuator: an Actuators has no function for the setting.
	ErrNoActuator = errors.New("no actuator for this setting")
	// ErrInvalidPSI: a cpu.pressure file did not parse (cgroups reads it).
	ErrInvalidPSI = cgroups.ErrInvalidStat
)
