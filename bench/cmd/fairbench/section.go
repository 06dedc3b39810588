package main

// Where fairbench runs (the host or scoped's test VM, emulated or not),
// the label of its section in BENCHMARKS.md, and the copying of a VM run's
// section into it beside the host's.

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// vmHostname is the hostname scripts/vm-test.sh gives its guest.
const vmHostname = "scoped-vm"

// where describes the machine fairbench runs on.
type where struct {
	vm     bool   // scoped's test VM (scripts/vm-test.sh)
	tcg    bool   // the CPU is QEMU's TCG software emulation
	kernel string // uname -r
}

func detectWhere() where {
	host, _ := os.Hostname()
	info, _ := os.ReadFile("/proc/cpuinfo")
	w := where{vm: host == vmHostname, tcg: emulated(string(info)), kernel: "unknown"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		w.kernel = unix.ByteSliceToString(u.Release[:])
	}
	return w
}

// emulated says whether the /proc/cpuinfo text info is QEMU's TCG CPU
// ("QEMU TCG CPU version ..." as model name).
func emulated(info string) bool {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Contains(v, "TCG")
		}
	}
	return false
}

// autoLabel is the section's label when -label is not given: none on a
// host, vm-<major.minor> in scoped's test VM.
func autoLabel(w where) string {
	if !w.vm {
		return ""
	}
	return "vm-" + majorMinor(w.kernel)
}

// majorMinor is the major.minor version of a kernel release such as
// 6.1.0-41-amd64 or 6.12.48+deb12-amd64 (the release itself if it does not
// start with one).
func majorMinor(release string) string {
	if m := regexp.MustCompile(`^\d+\.\d+`).FindString(release); m != "" {
		return m
	}
	return release
}

var labelRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,39}$`)

// validLabel says whether label can name a section ("" is the host's).
func validLabel(label string) bool { return label == "" || labelRE.MatchString(label) }

// sectionMark is the marker name of the section labelled label:
// <!-- fairbench:start --> without a label, <!-- fairbench-<label>:start -->
// with one.
func sectionMark(label string) string {
	if label == "" {
		return "fairbench"
	}
	return "fairbench-" + label
}

// fairEndRE matches the end marker of every fairbench section.
var fairEndRE = regexp.MustCompile(`<!-- fairbench(-[a-z0-9][a-z0-9.-]*)?:end -->\n?`)

// placeSection gives the section marked mark an empty place in the
// markdown file path right after the last fairbench section, unless the
// file has it already (or has no fairbench section, or does not exist:
// then the section is appended as any other), so that the host's and the
// VMs' sections sit side by side.
func placeSection(path, mark string) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	doc, ok := withPlace(string(old), mark)
	if !ok {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// withPlace is doc with empty markers of mark after its last fairbench
// section; ok is false when doc has mark's start marker already, or no
// fairbench section.
func withPlace(doc, mark string) (string, bool) {
	if strings.Contains(doc, "<!-- "+mark+":start -->") {
		return doc, false
	}
	ends := fairEndRE.FindAllStringIndex(doc, -1)
	if len(ends) == 0 {
		return doc, false
	}
	at := ends[len(ends)-1][1]
	head := doc[:at]
	if !strings.HasSuffix(head, "\n") {
		head += "\n"
	}
	return head + "\n<!-- " + mark + ":start -->\n<!-- " + mark + ":end -->\n" + doc[at:], true
}

// sectionRE matches a labelled fairbench section, its label the first
// submatch.
var sectionRE = regexp.MustCompile(`(?s)<!-- fairbench-([a-z0-9][a-z0-9.-]*):start -->\n.*?<!-- fairbench-([a-z0-9][a-z0-9.-]*):end -->\n?`)

// labelled are the labelled fairbench sections of the markdown text doc
// (what a VM run wrote), each ending with a newline.
func labelled(doc string) ([]string, error) {
	var out []string
	for _, m := range sectionRE.FindAllStringSubmatch(doc, -1) {
		if m[1] != m[2] {
			return nil, fmt.Errorf("the section fairbench-%s ends with the marker of fairbench-%s", m[1], m[2])
		}
		out = append(out, strings.TrimSuffix(m[0], "\n")+"\n")
	}
	if len(out) == 0 {
		return nil, errors.New("no labelled fairbench section (<!-- fairbench-<label>:start -->) in it")
	}
	return out, nil
}

// merge returns the labelled sections of the file from (a VM run's -o),
// placed in the file out first (placeSection) so that Main's Output puts
// them beside the host's.
func merge(from, out string) ([]string, error) {
	b, err := os.ReadFile(from)
	if err != nil {
		return nil, fmt.Errorf("-merge: %w", err)
	}
	sections, err := labelled(string(b))
	if err != nil {
		return nil, fmt.Errorf("-merge %s: %w", from, err)
	}
	for _, s := range sections {
		if out == "" {
			continue
		}
		mark := strings.TrimSuffix(strings.TrimPrefix(s[:strings.Index(s, "\n")], "<!-- "), ":start -->")
		if err := placeSection(out, mark); err != nil {
			return nil, err
		}
	}
	logf("copied %d %s from %s", len(sections), map[bool]string{true: "section", false: "sections"}[len(sections) == 1], from)
	return sections, nil
}
