// Package bench holds scoped's benchmarks: programs under bench/cmd that
// measure scoped against plain processes and other sandboxes, side by side in
// one run so that machine noise hits every variant alike. `sudo make bench`
// runs them and writes their results into BENCHMARKS.md, each program
// replacing only its own section.
package bench
