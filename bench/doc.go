// Package bench holds scoped's benchmarks: programs under bench/cmd that
// measure scoped against plain processes and other sandboxes, side by side in
// one run so that machine noise hits every variant alike. `sudo make bench`
// runs them and writes their results into BENCHMARKS.md, each program
// replacing only its own section.
//
// This package is their shared harness, so that each program keeps only its
// scenario: Main (flags, root, the host-wide lock, signals, -o), the Kit
// (work directory, the daemon and bundles built with internal/gobuild,
// daemons started, stopped and checked for cgroups left), a Daemon's client
// with Deploy, Invoke and ColdStart (the cold-start phases come from the
// daemon's Figures.cold_start, never from its log), the runc and bubblewrap
// peers, RoundRobin, Parallel, Keep and Poll, percentiles, the machine's
// facts and busy time, /proc and cgroup readers, and Report sections.
package bench
