package netns

// The egress policy programs, compiled by clang into policy_bpfel.o and
// embedded by the generated policy_bpfel.go; both are committed, so that
// building scoped needs no clang. `make generate` rebuilds them (clang, llvm
// and libbpf-dev from Debian: scripts/deps.sh generate). The identifier is
// policyBPF, not policy: bpf2go would generate a loadPolicy of its own.
//go:generate go tool bpf2go -tags linux -target bpfel -output-stem policy -cflags "-O2 -g -Wall -Werror" policyBPF bpf/policy.c -- -I./bpf
