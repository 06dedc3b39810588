package bench

import (
	"errors"
	"fmt"
	"os"
)

// LogKeeper appends daemons' logs to one file (a benchmark's -daemon-log),
// truncating it the first time. The zero value with an empty Path keeps
// nothing.
type LogKeeper struct {
	Path   string // the file; "" keeps nothing
	Header bool   // put "==> <log path> <==" before each log

	started bool
}

// Keep appends the log file src.
func (k *LogKeeper) Keep(src string) error {
	if k.Path == "" {
		return nil
	}
	log, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if !k.started {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(k.Path, flags, 0o644)
	if err != nil {
		return err
	}
	k.started = true
	if k.Header {
		_, err = fmt.Fprintf(f, "==> %s <==\n%s", src, log)
	} else {
		_, err = f.Write(log)
	}
	return errors.Join(err, f.Close())
}
