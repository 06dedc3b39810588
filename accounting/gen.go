package accounting

// The eBPF programs, compiled by clang into acct_bpfel.o and embedded by the
// generated acct_bpfel.go; both are committed, so that building scoped needs
// no clang. `make generate` rebuilds them (clang, llvm and libbpf-dev from
// Debian: scripts/deps.sh generate).
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" acct bpf/accounting.c -- -I./bpf
