package bench

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Kill9 kills the daemon with SIGKILL, as a crash would, and waits for it
// to exit. Its workers and cgroups stay behind for the next start to find.
func (d *Daemon) Kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.logFile.Close()
}

// Restart starts the daemon again after Kill9 (or Stop), with the same
// binary, arguments and configuration, its output appended to its log, and
// waits for it to serve. It returns how long that took.
func (d *Daemon) Restart(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	f, err := os.OpenFile(d.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(d.cmd.Path, d.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return 0, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.cmd, d.logFile, d.exited = cmd, f, exited
	if err := d.waitServing(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}
