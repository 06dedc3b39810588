package main

// Where fairbench runs (the host or scoped's test VM, emulated or not), the
// label of its section in BENCHMARKS.md, and the copying of a VM run's
// section into it beside the host's.

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	benchmd "github.com/scoped-io/scoped/bench"
)

// vmHostname is the hostname scripts/vm-test.sh gives its guest.
const vmHostname = "scoped-vm"

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

// emulated says whether the /proc/cpuinfo text info names QEMU's TCG CPU
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
// host, vm-<major.minor of the kernel> in scoped's test VM (the release
// itself if it does not start with one).
func autoLabel(w where) string {
	if !w.vm {
		return ""
	}
	if m := regexp.MustCompile(`^\d+\.\d+`).FindString(w.kernel); m != "" {
		return "vm-" + m
	}
	return "vm-" + w.kernel
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

var (
	// fairEndRE matches the end marker of every fairbench section.
	fairEndRE = regexp.MustCompile(`<!-- fairbench(-[a-z0-9][a-z0-9.-]*)?:end -->\n?`)
	// sectionRE matches a labelled fairbench section; the submatches are
	// the labels of its start and end markers.
	sectionRE = regexp.MustCompile(`(?s)<!-- fairbench-([a-z0-9][a-z0-9.-]*):start -->\n.*?<!-- fairbench-([a-z0-9][a-z0-9.-]*):end -->\n?`)
)

// placeSection gives the section marked mark an empty place in the markdown
// file path right after its last fairbench section, so that the host's and
// the VMs' sections sit side by side. It does nothing if the file has the
// section already, has no fairbench section or does not exist: then the
// section is appended as any other.
func placeSection(path, mark string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	doc := string(b)
	ends := fairEndRE.FindAllStringIndex(doc, -1)
	if err != nil || len(ends) == 0 || strings.Contains(doc, "<!-- "+mark+":start -->") {
		return err
	}
	at := ends[len(ends)-1][1]
	head := doc[:at]
	if !strings.HasSuffix(head, "\n") {
		head += "\n"
	}
	doc = head + "\n<!-- " + mark + ":start -->\n<!-- " + mark + ":end -->\n" + doc[at:]
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// merge returns the labelled fairbench sections of the file from (a VM
// run's -o), each ending with a newline, and first gives each its place in
// the file out (placeSection) so that Main's Output puts them beside the
// host's.
func merge(from, out string) ([]string, error) {
	b, err := os.ReadFile(from)
	if err != nil {
		return nil, fmt.Errorf("-merge: %w", err)
	}
	var sections, labels []string
	for _, m := range sectionRE.FindAllStringSubmatch(string(b), -1) {
		if m[1] != m[2] {
			return nil, fmt.Errorf("-merge %s: the section fairbench-%s ends with the marker of fairbench-%s", from, m[1], m[2])
		}
		sections, labels = append(sections, strings.TrimSuffix(m[0], "\n")+"\n"), append(labels, m[1])
	}
	if len(sections) == 0 {
		return nil, fmt.Errorf("-merge %s: no labelled fairbench section (<!-- fairbench-<label>:start -->) in it", from)
	}
	for i := 0; i < len(labels) && out != ""; i++ {
		if err := placeSection(out, sectionMark(labels[i])); err != nil {
			return nil, err
		}
	}
	logf("copied %d %s from %s", len(sections), benchmd.Plural(len(sections), "section"), from)
	return sections, nil
}
