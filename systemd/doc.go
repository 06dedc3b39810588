// Package systemd holds scoped's unit file, tmpfiles entry and default
// configuration for operators; its tests check the unit with
// systemd-analyze and that the shipped configuration is the daemon's own
// default.
package systemd
