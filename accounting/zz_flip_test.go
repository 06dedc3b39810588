package accounting

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Scratch: does toggling an empty tp_btf program hang the VM?
func TestZZFlip(t *testing.T) {
	requireEBPF(t)
	c := startHelper(t, "pingpong")
	c.release("100000000", "0")
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_switch", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < 400; i++ {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		if i%50 == 0 {
			t.Logf("flip %d", i)
		}
	}
}
