package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoFavorDynMods: the kernel has no favordynmods (Linux 6.0) or the host
// no cgroup2 mount.
var ErrNoFavorDynMods = errors.New("cgroup2 favordynmods not available")

// FavorDynMods turns on the cgroup2 mount option favordynmods, host-wide,
// and returns a function that turns it off again (a no-op if it was on
// already). With it, moving a process between cgroups no longer waits for
// an RCU grace period (5–15 ms on the first move after a pause; on hybrid
// hosts the option of the unified mount covers the v1 hierarchies too), at
// the cost of slightly dearer forks and exits everywhere. The kernel keeps
// the option until it is turned off or the machine reboots: a daemon that
// crashes leaves it on.
func FavorDynMods() (restore func() error, err error) {
	mnt := unifiedMount(HostMode())
	if mnt == "" {
		return nil, fmt.Errorf("%w: no cgroup2 mount", ErrNoFavorDynMods)
	}
	features, err := os.ReadFile("/sys/kernel/cgroup/features")
	if err != nil || !slices.Contains(strings.Fields(string(features)), "favordynmods") {
		return nil, fmt.Errorf("%w: not in /sys/kernel/cgroup/features", ErrNoFavorDynMods)
	}
	opts, err := superOptions(mnt)
	if err != nil {
		return nil, err
	}
	if slices.Contains(opts, "favordynmods") {
		return func() error { return nil }, nil
	}
	if err := remount(mnt, append(slices.Clone(opts), "favordynmods")); err != nil {
		return nil, err
	}
	return func() error { return remount(mnt, opts) }, nil
}

// remount reconfigures the cgroup2 mount at mnt with exactly opts.
func remount(mnt string, opts []string) error {
	if err := unix.Mount("none", mnt, "cgroup2", unix.MS_REMOUNT, strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("remount %s with %q: %w", mnt, opts, err)
	}
	return nil
}

// superOptions are the cgroup2-specific options of the mount at mnt (its
// super options in mountinfo, without rw).
func superOptions(mnt string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		i := slices.Index(fields, "-")
		if len(fields) < 5 || i < 0 || i+3 >= len(fields) || fields[4] != mnt || fields[i+1] != "cgroup2" {
			continue
		}
		var opts []string
		for _, o := range strings.Split(fields[i+3], ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		return opts, nil
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s is not a cgroup2 mount", ErrNoFavorDynMods, mnt)
}
