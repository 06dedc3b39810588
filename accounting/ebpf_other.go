//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package accounting

import "io"

// ebpfSource exists only where bpf2go built the programs (little-endian
// Linux); elsewhere Open always falls back.
type ebpfSource struct{ statsFD io.Closer }

func (*ebpfSource) Name() string                  { return SourceEBPF }
func (*ebpfSource) Track(uint64, Scope) error     { return ErrNotSupported }
func (*ebpfSource) Untrack(uint64) error          { return ErrNotSupported }
func (*ebpfSource) Read(uint64) (Counters, error) { return Counters{}, ErrNotSupported }
func (*ebpfSource) Stats() SourceStats            { return SourceStats{Source: SourceEBPF} }
func (*ebpfSource) Close() error                  { return nil }

func openEBPF(Options) (*ebpfSource, error) {
	return nil, notSupported("no eBPF programs built for this platform", nil)
}
