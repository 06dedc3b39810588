package bench

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// WriteSection replaces one program's section of a markdown file (the
// lines from markStart to markEnd) with section, appends it if the file has
// none, or creates the file starting with intro. The file is replaced
// atomically; mismatched markers are an error.
func WriteSection(path, intro, markStart, markEnd, section string) error {
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
