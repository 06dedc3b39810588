//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package netns

import (
	"errors"
	"net/netip"
)

// errNoPolicy: the eBPF programs exist only where bpf2go built them
// (little-endian Linux), so egress scopes cannot be enforced elsewhere.
var errNoPolicy = errors.New("netns: egress policy needs little-endian Linux")

type policy struct{}

func loadPolicy(uint32, uint64) (*policy, error)    { return nil, errNoPolicy }
func hostNetnsCookie() (uint64, error)              { return 0, errNoPolicy }
func (*policy) attach(string) (func() error, error) { return nil, errNoPolicy }
func (*policy) setScope(uint64, []Rule) error       { return errNoPolicy }
func (*policy) forget(uint64) error                 { return nil }
func (*policy) setDeny([]netip.Prefix) error        { return errNoPolicy }
func (*policy) Close() error                        { return nil }
