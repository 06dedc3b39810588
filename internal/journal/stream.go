package journal

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// StderrIsJournal reports whether the process's stderr is connected to the
// journal: systemd sets JOURNAL_STREAM to "<device>:<inode>" of the stream
// it connects, and a process whose fd 2 is that stream (not a descendant's
// redirected stderr) may log natively instead (systemd.exec(5)).
func StderrIsJournal() bool {
	return streamMatches(os.Getenv("JOURNAL_STREAM"), 2)
}

// streamMatches reports whether env ("<device>:<inode>", decimal) names
// the file open as fd.
func streamMatches(env string, fd int) bool {
	d, i, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(d, 10, 64)
	ino, err2 := strconv.ParseUint(i, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
