package bench

import (
	"slices"
	"testing"
)

func TestBwrapArgs(t *testing.T) {
	l := HostLayout{Symlinks: [][2]string{{"usr/bin", "/bin"}}, Binds: []string{"/lib64"}}
	got := l.BwrapArgs("/usr/bin/true")
	want := []string{"--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
		"--ro-bind", "/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/usr/bin/true"}
	if !slices.Equal(got, want) {
		t.Errorf("BwrapArgs = %q, want %q", got, want)
	}
	if _, err := ReadHostLayout(); err != nil {
		t.Error(err)
	}
}
