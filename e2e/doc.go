// Package e2e holds the end-to-end tests: they build the real daemon,
// scopectl, the exec runtime and the example extensions, start the daemon
// as root with a private configuration, and drive it over its socket.
package e2e
