package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A shell stands in for the daemon: spawn, Stop and LogTail need no root.

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

// waitLog waits until the log at path holds want.
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
	}
	t.Fatalf("%s never held %q", path, want)
}

func TestDaemonStop(t *testing.T) {
	var l logLines
	logPath := filepath.Join(t.TempDir(), "d.log")
	// 50 lines, a warning, then ready; SIGTERM ends it cleanly.
	script := `trap 'echo level=INFO stopped; exit 0' TERM
i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done
echo 'level=WARN msg="scope left"'
echo ready
while :; do sleep 0.05; done`
	d, err := spawn(logPath, l.logf, "/bin/sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, logPath, "ready")
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	tail := strings.Split(d.LogTail(), "\n")
	if len(tail) != 40 || tail[len(tail)-1] != "level=INFO stopped" || tail[0] != "line 13" {
		t.Errorf("LogTail: %d lines, %q … %q; want 40, line 13 … level=INFO stopped", len(tail), tail[0], tail[len(tail)-1])
	}
	if want := []string{`daemon: level=WARN msg="scope left"`}; fmt.Sprint(l.lines) != fmt.Sprint(want) {
		t.Errorf("logged %q, want %q", l.lines, want)
	}
}

func TestDaemonStopErrors(t *testing.T) {
	dir := t.TempDir()
	// Gone before Stop.
	d, err := spawn(filepath.Join(dir, "exited.log"), t.Logf, "/bin/sh", "-c", "echo bye; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	<-d.exited
	if err := d.Stop(); err == nil || !strings.Contains(err.Error(), "before the benchmark stopped it") || !strings.Contains(err.Error(), "bye") {
		t.Errorf("Stop of an exited daemon: %v", err)
	}
	// Dies of SIGTERM instead of exiting cleanly.
	logPath := filepath.Join(dir, "killed.log")
	d, err = spawn(logPath, t.Logf, "/bin/sh", "-c", "echo ready; while :; do sleep 0.05; done")
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, logPath, "ready")
	if err := d.Stop(); err == nil || !strings.Contains(err.Error(), "scoped exited with signal: terminated") {
		t.Errorf("Stop of a daemon that dies of SIGTERM: %v", err)
	}
	if d.LogTail() != "ready" {
		t.Errorf("LogTail = %q, want ready", d.LogTail())
	}
}
