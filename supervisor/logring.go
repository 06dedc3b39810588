package supervisor

import (
	"bytes"
	"sync"
	"time"
)

// LogLine is one line of a worker's output.
type LogLine struct {
	Time         time.Time
	Scope        string
	Worker       string
	Extension    string
	InvocationID string
	Stream       string // "stdout" or "stderr"
	Line         string
}

// maxLineLen bounds one stored line; a longer line is stored as several,
// however the worker's output was cut into writes.
const maxLineLen = 4096

// logRing keeps the last lines of a scope's workers and feeds followers.
// Followers that do not keep up lose lines rather than slow workers down.
// Its lines grow as they come, up to size: most scopes log little, and a
// daemon holds thousands of scopes.
type logRing struct {
	mu        sync.Mutex
	size      int
	lines     []LogLine
	next      int
	full      bool
	followers map[chan LogLine]struct{}
	out       *workerLog // the copy into the daemon's log (see workerLog)
}

func newLogRing(n int) *logRing {
	return &logRing{size: n, followers: map[chan LogLine]struct{}{}}
}

func (r *logRing) add(l LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < r.size {
		if len(r.lines) == cap(r.lines) {
			r.lines = append(make([]LogLine, 0, min(max(2*cap(r.lines), 16), r.size)), r.lines...)
		}
		r.lines = append(r.lines, l)
	} else {
		r.lines[r.next] = l
	}
	r.next = (r.next + 1) % r.size
	if r.next == 0 {
		r.full = true
	}
	for ch := range r.followers {
		select {
		case ch <- l:
		default:
		}
	}
}

// snapshot returns the kept lines, oldest first, and when follow is set a
// channel of the lines that come next (cancel with unfollow).
func (r *logRing) snapshot(follow bool) ([]LogLine, chan LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LogLine
	if r.full {
		out = append(out, r.lines[r.next:]...)
	}
	out = append(out, r.lines[:r.next]...)
	var ch chan LogLine
	if follow {
		ch = make(chan LogLine, 256)
		r.followers[ch] = struct{}{}
	}
	return out, ch
}

func (r *logRing) unfollow(ch chan LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.followers, ch)
}

// ringWriter turns a worker's output stream into tagged lines.
type ringWriter struct {
	ring    *logRing
	scope   string
	worker  string
	ext     string
	stream  string
	current func() string // the invocation in flight, "" if none or many
	out     *workerLog    // nil: the ring only
	mu      sync.Mutex
	buf     []byte
}

func (w *ringWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLineLen - len(w.buf)
			if len(p) > room {
				w.buf = append(w.buf, p[:room]...)
				w.flush()
				p = p[room:]
				continue
			}
			w.buf = append(w.buf, p...)
			break
		}
		line := p[:i]
		for len(w.buf)+len(line) > maxLineLen {
			room := maxLineLen - len(w.buf)
			w.buf = append(w.buf, line[:room]...)
			w.flush()
			line = line[room:]
		}
		w.buf = append(w.buf, line...)
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (w *ringWriter) flush() {
	w.ring.add(LogLine{
		Time: time.Now(), Scope: w.scope, Worker: w.worker, Extension: w.ext,
		InvocationID: w.current(), Stream: w.stream, Line: string(w.buf),
	})
	if w.out != nil {
		w.out.line(w.worker, w.ext, w.stream, string(w.buf))
	}
	w.buf = w.buf[:0]
}
