// Package bench holds scoped's benchmarks: programs under bench/cmd that
// measure scoped against plain processes and other sandboxes, side by side in
// one run so that machine noise hits every variant alike. `sudo make bench`
// runs them and writes their results into BENCHMARKS.md, each program
// replacing only its own section.
//
// This package is their shared harness, so that each program keeps only its
// scenario: the Kit (work directory, the daemon and bundles built with
// internal/gobuild, daemons started and stopped with their cgroup roots
// checked, the -daemon-log file, the final check for cgroups left), the runc
// and bubblewrap peers (Runc, HostLayout), RoundRobin over variants,
// percentiles, the machine's facts and busy time (read by cgroups), report
// formats and WriteSection. Cold-start phases come from the daemon itself
// (the invocation's Figures.cold_start), never from its log.
package bench
