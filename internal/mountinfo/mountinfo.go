// Package mountinfo reads /proc/<pid>/mountinfo (proc(5)): the mounts of a
// mount namespace, and where the cgroup hierarchies are. It does not import
// package testing, so programs (the benchmarks) may use it as tests do.
package mountinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/<pid>/mountinfo (proc(5)). Paths are
// unescaped: the kernel writes space, tab, newline and backslash as \040,
// \011, \012 and \134.
type Mount struct {
	ID, Parent   int
	Dev          string   // major:minor
	Root         string   // the mounted directory within its filesystem
	Point        string   // where it is mounted, in this mount namespace
	Options      string   // per-mount options
	Optional     []string // tagged fields: shared:N, master:N, ...
	FSType       string   // cgroup2, proc, ... (with a subtype: fuse.sshfs)
	Source       string
	SuperOptions string // per-superblock options
}

// ErrMalformed is the error of a line that is not a mountinfo line.
var ErrMalformed = errors.New("malformed mountinfo")

// maxMountinfoLine bounds one line: options of overlay mounts run long.
const maxMountinfoLine = 1 << 20

// Parse reads the mountinfo lines of r; an empty r has no mounts.
func Parse(r io.Reader) ([]Mount, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMountinfoLine)
	sc.Split(splitLines)
	var out []Mount
	for n := 1; sc.Scan(); n++ {
		m, err := parseMountLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrMalformed, n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return out, nil
}

// splitLines splits at '\n' only: a raw '\r' is part of a path (the
// kernel escapes only space, tab, newline and backslash).
func splitLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func parseMountLine(line string) (Mount, error) {
	var m Mount
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) != sep+4 {
		return m, errors.New(`want 6 fields, optional ones, "-" and 3 more`)
	}
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil || m.ID < 0 {
		return m, fmt.Errorf("mount id %q", f[0])
	}
	if m.Parent, err = strconv.Atoi(f[1]); err != nil || m.Parent < 0 {
		return m, fmt.Errorf("parent id %q", f[1])
	}
	if maj, mnr, ok := strings.Cut(f[2], ":"); !ok || !isDigits(maj) || !isDigits(mnr) {
		return m, fmt.Errorf("device %q", f[2])
	}
	m.Dev = f[2]
	if m.Root, err = unescapeMount(f[3]); err != nil {
		return m, fmt.Errorf("root: %w", err)
	}
	if m.Point, err = unescapeMount(f[4]); err != nil {
		return m, fmt.Errorf("mount point: %w", err)
	}
	m.Options = f[5]
	for _, o := range f[6:sep] {
		if o == "" {
			return m, errors.New("empty optional field")
		}
		m.Optional = append(m.Optional, o)
	}
	m.FSType = f[sep+1]
	if m.FSType == "" {
		return m, errors.New("empty filesystem type")
	}
	if m.Source, err = unescapeMount(f[sep+2]); err != nil {
		return m, fmt.Errorf("source: %w", err)
	}
	m.SuperOptions = f[sep+3]
	return m, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// unescapeMount undoes the kernel's octal escapes (\NNN).
func unescapeMount(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("short escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("escape %q in %q", s[i:i+4], s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// escapeMount is the kernel's escaping of a path field (and the inverse of
// unescapeMount).
func escapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// String is m as a mountinfo line.
func (m Mount) String() string {
	f := []string{strconv.Itoa(m.ID), strconv.Itoa(m.Parent), m.Dev, escapeMount(m.Root), escapeMount(m.Point), m.Options}
	f = append(f, m.Optional...)
	f = append(f, "-", m.FSType, escapeMount(m.Source), m.SuperOptions)
	return strings.Join(f, " ")
}

// Self is the mounts of this process's mount namespace.
func Self() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// CgroupMounts lists where the cgroup hierarchies, v1 and v2, are mounted.
func CgroupMounts() ([]string, error) {
	ms, err := Self()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

// UnifiedMount is where the root of the unified (cgroup2) hierarchy is
// mounted: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a
// hybrid one. A mount of a subtree only does not count: paths below it
// would not be the cgroup paths the kernel reports.
func UnifiedMount() (string, error) {
	ms, err := Self()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.FSType == "cgroup2" && m.Root == "/" {
			return m.Point, nil
		}
	}
	return "", errors.New("no cgroup2 mount of the hierarchy's root (a pure cgroup v1 host?)")
}
