package mountinfo

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
40 26 0:24 /sub /mnt/sub\040tree rw master:10 propagate_from:3 - cgroup2 none\134x rw
41 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 6 {
		t.Fatalf("%d mounts, want 6", len(ms))
	}
	want := Mount{ID: 40, Parent: 26, Dev: "0:24", Root: "/sub", Point: "/mnt/sub tree", Options: "rw",
		Optional: []string{"master:10", "propagate_from:3"}, FSType: "cgroup2", Source: `none\x`, SuperOptions: "rw"}
	if !reflect.DeepEqual(ms[4], want) {
		t.Errorf("line 5:\n got %+v\nwant %+v", ms[4], want)
	}
	if ms[2].Point != "/sys/fs/cgroup/unified" || ms[2].FSType != "cgroup2" || ms[2].Optional[0] != "shared:10" {
		t.Errorf("line 3: %+v", ms[2])
	}
	if got := ms[4].String(); got != strings.Split(sampleMountinfo, "\n")[4] {
		t.Errorf("String: %q", got)
	}
	if ms, err := Parse(strings.NewReader("")); err != nil || len(ms) != 0 {
		t.Errorf("empty: %v, %v", ms, err)
	}
}

func TestParseBad(t *testing.T) {
	for _, in := range []string{
		"\n",
		"1 2 0:1 / / rw",
		"1 2 0:1 / / rw - ext4",
		"1 2 0:1 / / rw - ext4 src opts extra",
		"x 2 0:1 / / rw - ext4 src opts",
		"1 -2 0:1 / / rw - ext4 src opts",
		"1 2 01 / / rw - ext4 src opts",
		"1 2 0:a / / rw - ext4 src opts",
		`1 2 0:1 / /a\04 rw - ext4 src opts`,
		`1 2 0:1 / /a\999 rw - ext4 src opts`,
		"1 2 0:1 / / rw  - ext4 src opts",
		"1 2 0:1 / / rw - ext4 src opts\n1 2 0:1 / / rw - ext4",
		"1 2 0:1 / / rw -  src opts",
		strings.Repeat("x", maxMountinfoLine+1),
	} {
		if ms, err := Parse(strings.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%.60q: %v, %v; want ErrMalformed", in, ms, err)
		}
	}
}

// TestMountinfoHere reads this process's mountinfo: the root is mounted.
func TestSelf(t *testing.T) {
	ms, err := Self()
	if err != nil {
		t.Skipf("no /proc/self/mountinfo: %v", err)
	}
	if !slices.ContainsFunc(ms, func(m Mount) bool { return m.Point == "/" }) {
		t.Errorf("no mount at /: %v", ms)
	}
}

// FuzzParse: any input parses or fails with ErrMalformed, never
// panics, and each parsed mount, written back as a line, parses to itself.
func FuzzParse(f *testing.F) {
	f.Add(sampleMountinfo)
	f.Add("1 2 0:1 / / rw - ext4 src opts")
	f.Add(`1 2 0:1 \134 /a\011b\012 rw shared:1 - - \040 -`)
	f.Add("1 2 0:1 / /\r rw - x y z\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := Parse(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		for _, m := range ms {
			again, err := Parse(strings.NewReader(m.String()))
			if err != nil || len(again) != 1 || !reflect.DeepEqual(again[0], m) {
				t.Fatalf("%q: written %q, parsed back %+v, %v; want %+v", in, m.String(), again, err, m)
			}
		}
	})
}
