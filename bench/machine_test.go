package bench

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestMachine(t *testing.T) {
	m := Machine()
	if !strings.HasPrefix(m, "Kernel: ") || !strings.Contains(m, "; cgroup mode: ") ||
		!strings.Contains(m, fmt.Sprintf("; CPUs: %d", runtime.NumCPU())) {
		t.Errorf("Machine() = %q", m)
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.00GHz\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got, want := cpuModel(info), " (Intel(R) Xeon(R) CPU @ 2.00GHz)"; got != want {
		t.Errorf("cpuModel = %q, want %q", got, want)
	}
	// arm64 names no model.
	if got := cpuModel("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"); got != "" {
		t.Errorf("cpuModel without a model name = %q, want \"\"", got)
	}
}

func TestLoadAvg(t *testing.T) {
	if got, want := loadAvg("0.52 0.58 0.59 1/467 12345\n"), "0.52 0.58 0.59"; got != want {
		t.Errorf("loadAvg = %q, want %q", got, want)
	}
	if got := loadAvg("0.52 0.58\n"); got != "unknown" {
		t.Errorf("loadAvg of two fields = %q, want unknown", got)
	}
	if got := LoadAvg(); got == "" {
		t.Error("LoadAvg() is empty")
	}
}

func TestQuoteArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"-o", "my file.md", "-n", "5"}, "-o 'my file.md' -n 5"},
		{[]string{"-o", ""}, "-o ''"},
		{[]string{"-scenarios", "it's"}, `-scenarios 'it'\''s'`},
		{[]string{"-x", "$HOME"}, "-x '$HOME'"},
	} {
		if got := QuoteArgs(tc.args); got != tc.want {
			t.Errorf("QuoteArgs(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCommand(t *testing.T) {
	const base = "go run ./bench/cmd/xbench"
	for _, tc := range []struct{ args, want string }{
		{"-o BENCHMARKS.md", "Command: `sudo make bench`, which runs `go run ./bench/cmd/xbench -o BENCHMARKS.md`"},
		{"", "Command: `go run ./bench/cmd/xbench`, as root"},
		{"-n 5", "Command: `go run ./bench/cmd/xbench -n 5`, as root"},
	} {
		if got := Command(base, tc.args); got != tc.want {
			t.Errorf("Command(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestFacts(t *testing.T) {
	f := Facts("go run ./bench/cmd/x", "-n 1")
	if !strings.HasPrefix(f, "- Command: `go run ./bench/cmd/x -n 1`, as root\n- Date: ") || !strings.Contains(f, "\n- Kernel: ") || !strings.HasSuffix(f, "\n") {
		t.Errorf("Facts = %q", f)
	}
}
