package bench

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// intro opens a BENCHMARKS.md that WriteSection creates.
const intro = `# Benchmarks

Each section below comes from one benchmark program under ` + "`bench/cmd`" + `. A program
runs all its variants side by side in one run, interleaved round-robin, so that
machine noise hits them alike: read the ratios between variants, which carry
over to other machines far better than the absolute times. Reproduce them with
` + "`sudo make bench`" + ` (root; it installs bubblewrap and runc on Debian or Ubuntu),
which reruns every benchmark and replaces its section here.
`

// WriteSection replaces one program's section of a markdown file (the
// lines from markStart to markEnd) with section, appends it if the file has
// none, or creates the file starting with the benchmarks' intro. The file
// is replaced atomically; mismatched markers are an error.
func WriteSection(path, markStart, markEnd, section string) error {
	old, err := os.ReadFile(path)
	var doc string
	switch {
	case errors.Is(err, os.ErrNotExist):
		doc = intro + "\n" + section
	case err != nil:
		return err
	default:
		s := string(old)
		i := strings.Index(s, markStart)
		j := strings.Index(s, markEnd)
		switch {
		case i >= 0 && j > i:
			end := j + len(markEnd)
			if end < len(s) && s[end] == '\n' {
				end++
			}
			doc = s[:i] + section + s[end:]
		case i >= 0 || j >= 0:
			return fmt.Errorf("%s: unmatched %s / %s markers; fix them by hand", path, markStart, markEnd)
		default:
			doc = strings.TrimRight(s, "\n") + "\n\n" + section
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// Report is one section of BENCHMARKS.md being written: NewReport writes
// its start marker and title, End its end marker.
type Report struct {
	strings.Builder
	mark string
}

// NewReport starts the section marked <!-- mark:start --> with the
// heading title.
func NewReport(mark, title string) *Report {
	r := &Report{mark: mark}
	r.P("<!-- %s:start -->\n%s\n\n", mark, title)
	return r
}

// P appends a formatted text.
func (r *Report) P(format string, a ...any) { fmt.Fprintf(&r.Builder, format, a...) }

// End appends the end marker and returns the section.
func (r *Report) End() string {
	r.P("<!-- %s:end -->\n", r.mark)
	return r.String()
}
