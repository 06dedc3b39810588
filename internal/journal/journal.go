// Package journal is a slog.Handler that writes each record to systemd's
// journal with the native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/):
// one datagram to /run/systemd/journal/socket holding MESSAGE, PRIORITY
// (from the level), SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC and every
// attribute as a field of its own, so that `journalctl -o json` (and
// `journalctl -p err`, `journalctl TENANT=acme`) see them.
//
// A field's name is the attribute's key with its groups, joined with `_`,
// uppercased; a character other than [A-Z0-9_] becomes `_`, a name that
// does not start with a letter, or that journald or this handler gives a
// meaning to (MESSAGE, PRIORITY, CODE_LINE, ...), gets the prefix `X_`, and
// names are cut to 64 characters. Values are formatted as slog's text
// handler formats them, unquoted; a value with a newline is sent in the
// protocol's binary form, so no value (a worker's output line, say) can
// end its field and start another: "x\nPRIORITY=0" stays one value.
// MESSAGE is the record's message followed by its attributes as the text
// handler prints them (` tenant=acme scope=...`), so plain `journalctl`
// shows them too.
//
// A record too big for one datagram (EMSGSIZE) goes in a sealed memfd
// passed with SCM_RIGHTS, as the protocol says. A record that cannot be
// sent (no socket, journald not reading for sendWait) is written to the
// fallback writer (stderr) as the text handler's line: never dropped, and
// never waited on for longer than sendWait.
package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SocketPath is journald's native protocol socket.
const SocketPath = "/run/systemd/journal/socket"

// Identifier is the SYSLOG_IDENTIFIER of every record.
const Identifier = "scoped"

// sendWait bounds how long a record waits for journald to read the socket
// before it goes to the fallback writer instead.
const sendWait = 100 * time.Millisecond

// maxName is the longest field name journald accepts.
const maxName = 64

// ErrNoJournal is returned when the journal's socket is not there.
var ErrNoJournal = errors.New("journal: no journald socket")

// sink is what all handlers derived from one New share: the socket, the
// fallback writer and the buffer the MESSAGE text is formatted into.
type sink struct {
	path     string
	fallback io.Writer

	mu  sync.Mutex
	fd  int          // the datagram socket, -1 until opened
	txt bytes.Buffer // the text handler's output for MESSAGE, under mu
}

// Handler sends records to the journal. Make one with New.
type Handler struct {
	s        *sink
	level    slog.Leveler
	text     slog.Handler // attrs as text for MESSAGE, writing to s.txt
	fallback slog.Handler // the whole line, writing to s.fallback
	fields   []field      // from WithAttrs, named already
	prefix   string       // open groups, each followed by "_"
}

type field struct{ name, value string }

// Options configure a Handler.
type Options struct {
	// Level is the minimum level logged (default Info).
	Level slog.Leveler
	// Fallback receives, as the text handler's line, each record that
	// could not be sent (default os.Stderr).
	Fallback io.Writer
}

// Available reports whether journald's socket is there.
func Available() error { return available(SocketPath) }

func available(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoJournal, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%w: %s is not a socket", ErrNoJournal, path)
	}
	return nil
}

// New returns a Handler writing to journald's socket.
func New(o Options) *Handler { return newHandler(SocketPath, o) }

func newHandler(path string, o Options) *Handler {
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Fallback == nil {
		o.Fallback = os.Stderr
	}
	s := &sink{path: path, fallback: o.Fallback, fd: -1}
	return &Handler{
		s:     s,
		level: o.Level,
		text: slog.NewTextHandler(&s.txt, &slog.HandlerOptions{
			Level: slog.LevelDebug - 100, // Enabled is ours
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
					return slog.Attr{}
				}
				return a
			},
		}),
		fallback: slog.NewTextHandler(o.Fallback, &slog.HandlerOptions{Level: slog.LevelDebug - 100}),
	}
}

// Enabled reports whether l is at or above the handler's level.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs returns a handler that adds as to every record.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	h2 := *h
	h2.fields = append([]field(nil), h.fields...)
	for _, a := range as {
		h2.fields = appendAttr(h2.fields, h.prefix, a)
	}
	h2.text = h.text.WithAttrs(as)
	h2.fallback = h.fallback.WithAttrs(as)
	return &h2
}

// WithGroup returns a handler whose later attributes are in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "_"
	h2.text = h.text.WithGroup(name)
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// Handle sends r as one journal entry, or writes it to the fallback.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.txt.Reset()
	rr := r // the attributes only: MESSAGE starts with r.Message
	rr.Message = ""
	if err := h.text.Handle(ctx, rr); err != nil {
		return h.fallback.Handle(ctx, r)
	}
	msg := r.Message
	if t := strings.TrimSuffix(h.s.txt.String(), "\n"); t != "" {
		msg += " " + t
	}
	var b []byte
	b = appendField(b, "MESSAGE", msg)
	b = appendField(b, "PRIORITY", strconv.Itoa(Priority(r.Level)))
	b = appendField(b, "SYSLOG_IDENTIFIER", Identifier)
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if f.File != "" {
			b = appendField(b, "CODE_FILE", f.File)
			b = appendField(b, "CODE_LINE", strconv.Itoa(f.Line))
			b = appendField(b, "CODE_FUNC", f.Function)
		}
	}
	for _, f := range h.fields {
		b = appendField(b, f.name, f.value)
	}
	var fs []field
	r.Attrs(func(a slog.Attr) bool {
		fs = appendAttr(fs, h.prefix, a)
		return true
	})
	for _, f := range fs {
		b = appendField(b, f.name, f.value)
	}
	if err := h.s.send(b); err != nil {
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

// Priority is the syslog priority of a slog level.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // info
	default:
		return 7 // debug
	}
}

// appendAttr appends a's fields (several for a group) named under prefix.
func appendAttr(fs []field, prefix string, a slog.Attr) []field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		if a.Key != "" {
			prefix += a.Key + "_"
		}
		for _, ga := range g {
			fs = appendAttr(fs, prefix, ga)
		}
		return fs
	}
	return append(fs, field{FieldName(prefix + a.Key), formatValue(a.Value)})
}

// formatValue formats v as slog's text handler does, without its quoting.
func formatValue(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return x.Error()
		case interface{ MarshalText() ([]byte, error) }:
			if t, err := x.MarshalText(); err == nil {
				return string(t)
			}
		case []byte:
			return string(x)
		}
		return fmt.Sprintf("%+v", v.Any())
	default:
		return v.String() // strings, numbers, bools, durations
	}
}

// reserved are the field names journald (or this handler) gives a meaning
// to: an attribute never writes them.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true,
	"CODE_LINE": true, "CODE_FUNC": true, "ERRNO": true, "INVOCATION_ID": true,
	"USER_INVOCATION_ID": true, "SYSLOG_FACILITY": true, "SYSLOG_IDENTIFIER": true,
	"SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true, "SYSLOG_RAW": true,
	"DOCUMENTATION": true, "TID": true, "UNIT": true, "USER_UNIT": true,
	"OBJECT_PID": true, "COREDUMP_UNIT": true, "COREDUMP_USER_UNIT": true,
}

// FieldName turns an attribute's key (groups joined with "_") into a
// journal field name: uppercase, [A-Z0-9_] only, starting with a letter,
// not a reserved name, at most 64 characters.
func FieldName(key string) string {
	b := make([]byte, 0, len(key)+2)
	for i := 0; i < len(key) && len(b) < maxName; i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			c = '_'
		}
		b = append(b, c)
	}
	if len(b) == 0 || b[0] < 'A' || b[0] > 'Z' || reserved[string(b)] {
		b = append([]byte("X_"), b...)
	}
	if len(b) > maxName {
		b = b[:maxName]
	}
	return string(b)
}

// appendField appends one field in the native protocol: NAME=value, or,
// when value has a newline, NAME, the value's length as 64-bit little
// endian and the value.
func appendField(b []byte, name, value string) []byte {
	if !strings.ContainsRune(value, '\n') {
		b = append(b, name...)
		b = append(b, '=')
		b = append(b, value...)
		return append(b, '\n')
	}
	b = append(b, name...)
	b = append(b, '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	return append(b, '\n')
}

// send writes one entry to the socket, in a memfd when it is too big for a
// datagram; the caller holds s.mu.
func (s *sink) send(b []byte) error {
	if s.fd < 0 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		s.fd = fd
	}
	to := &unix.SockaddrUnix{Name: s.path}
	err := s.sendmsg(b, nil, to)
	if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
		err = s.sendMemfd(b, to)
	}
	return err
}

// sendmsg sends one datagram, waiting at most sendWait for room.
func (s *sink) sendmsg(b, oob []byte, to unix.Sockaddr) error {
	deadline := time.Now().Add(sendWait)
	for {
		err := unix.Sendmsg(s.fd, b, oob, to, unix.MSG_NOSIGNAL)
		if err != unix.EAGAIN && err != unix.EINTR {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
		if _, perr := unix.Poll(pfd, int(left/time.Millisecond)+1); perr != nil && perr != unix.EINTR {
			return perr
		}
	}
}

// sendMemfd passes b in a sealed memfd, as the protocol asks for entries
// too big for a datagram.
func (s *sink) sendMemfd(b []byte, to unix.Sockaddr) error {
	fd, err := unix.MemfdCreate("scoped-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for w := b; len(w) > 0; {
		n, err := unix.Write(fd, w)
		if err != nil {
			return err
		}
		w = w[n:]
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return err
	}
	return s.sendmsg(nil, unix.UnixRights(fd), to)
}
