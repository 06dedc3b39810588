package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	occ "github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// hostTopDirs are the top-level directories a program needs to run: on a
// merged-/usr host they are symlinks into /usr and are copied as symlinks,
// elsewhere they are bound read-only.
var hostTopDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// hostEtc are the few host files under /etc a sandbox sees, read-only:
// the loader cache, the alternatives symlinks and CA certificates. Nothing
// else of the host's /etc (no shadow, no passwd) is visible.
var hostEtc = []string{"/etc/ld.so.cache", "/etc/alternatives", "/etc/ssl/certs", "/etc/ca-certificates"}

// makeRootfs lays out the sandbox's root directory on the host: owned by
// root, read-only inside, with every mount point made in advance (the
// sandbox's root user cannot create them in a directory it does not own).
func makeRootfs(dir, hostname string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for _, d := range hostTopDirs {
		target, err := os.Readlink("/" + d)
		switch {
		case err == nil:
			if err := os.Symlink(target, filepath.Join(dir, d)); err != nil {
				return err
			}
		case errors.Is(err, os.ErrNotExist):
		default: // a real directory: a bind mount point
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	for _, d := range []string{"usr", "proc", "dev", "tmp", "etc", strip(BundlePath)} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range rootFiles(hostname) {
		if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func strip(p string) string { return p[1:] }

// rootFiles are the files of the sandbox's /etc, by absolute path inside.
func rootFiles(hostname string) [][2]string {
	return [][2]string{
		{"/etc/passwd", "root:x:0:0:sandbox:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
		{"/etc/group", "root:x:0:\nnogroup:x:65534:\n"},
		{"/etc/hosts", "127.0.0.1\tlocalhost " + hostname + "\n::1\tlocalhost " + hostname + "\n"},
		{"/etc/hostname", hostname + "\n"},
		{"/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"},
		{"/etc/resolv.conf", ""},
	}
}

// binds are the bind mounts of a sandbox, in order: the host's /usr and
// top-level directories and the few /etc files (read-only), the worker
// binary, the bundle and cfg.Binds.
func binds(cfg *Config) []Bind {
	bs := []Bind{{Source: "/usr", Target: "/usr"}}
	for _, d := range hostTopDirs {
		if fi, err := os.Lstat("/" + d); err == nil && fi.IsDir() {
			bs = append(bs, Bind{Source: "/" + d, Target: "/" + d})
		}
	}
	for _, e := range hostEtc {
		if _, err := os.Stat(e); err == nil {
			bs = append(bs, Bind{Source: e, Target: e})
		}
	}
	if cfg.Binary != "" {
		bs = append(bs, Bind{Source: cfg.Binary, Target: WorkerPath})
	}
	if cfg.Bundle != "" {
		// Executable: the exec runtime runs its entrypoint from here.
		bs = append(bs, Bind{Source: cfg.Bundle, Target: BundlePath})
	}
	return append(bs, cfg.Binds...)
}

// maskPaths are hidden in the sandbox's /proc (an empty read-only tmpfs on
// a directory, /dev/null on a file); readonlyPaths are bound read-only.
var (
	maskPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/proc/interrupts", "/proc/sys/kernel/random/boot_id",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// mountPoint makes target (inside the rootfs dir) ready to receive a bind
// of source: a directory or an empty file, matching source.
func mountPoint(rootfs, source, target string) error {
	st, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("%w: bind source: %w", ErrInvalidConfig, err)
	}
	p := filepath.Join(rootfs, target)
	if st.IsDir() {
		return os.MkdirAll(p, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// containerConfig turns cfg into libcontainer's configuration.
func containerConfig(cfg *Config, rootfs string) (*configs.Config, error) {
	const (
		roBind = unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
		rwBind = unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV
		noExec = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
	)
	bind := func(src, dst string, flags int) (*configs.Mount, error) {
		if err := mountPoint(rootfs, src, dst); err != nil {
			return nil, err
		}
		m := &configs.Mount{Source: src, Destination: dst, Device: "bind", Flags: flags}
		if flags&unix.MS_RDONLY != 0 {
			// Mounts made later below the source on the host do not
			// propagate into the sandbox.
			m.PropagationFlags = []int{unix.MS_PRIVATE | unix.MS_REC}
		}
		return m, nil
	}
	mounts := []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: noExec},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=64k"},
		{Source: "tmpfs", Destination: TmpPath, Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV,
			Data: "mode=1777,size=" + strconv.FormatInt(cfg.TmpSize, 10)},
	}
	for _, b := range binds(cfg) {
		flags := roBind
		if b.Writable {
			flags = rwBind
		}
		m, err := bind(b.Source, b.Target, flags)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, m)
	}

	var devRules []*devconfig.Rule
	for _, d := range specconv.AllowedDevices {
		devRules = append(devRules, &d.Rule)
	}
	ids := []configs.IDMap{{ContainerID: 0, HostID: int64(cfg.IDs.Base), Size: int64(cfg.IDs.Size)}}
	// Its own namespace gets loopback from libcontainer; a joined one was
	// set up by the host (lo up, a veth) and is not the sandbox's to change.
	var networks []*configs.Network
	if cfg.NetNS == "" {
		networks = []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}}
	}
	return &configs.Config{
		Networks:        networks,
		Rootfs:          rootfs,
		Readonlyfs:      true,
		NoNewKeyring:    true,
		RootPropagation: unix.MS_SLAVE | unix.MS_REC,
		Hostname:        cfg.Hostname,
		Capabilities:    &configs.Capabilities{},
		NoNewPrivileges: true,
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
			{Type: configs.NEWPID}, {Type: configs.NEWUSER}, {Type: configs.NEWNET, Path: cfg.NetNS},
			{Type: configs.NEWCGROUP},
		},
		UIDMappings: ids,
		GIDMappings: ids,
		Cgroups: &occ.Cgroup{
			Path:      cfg.Cgroup,
			Resources: &occ.Resources{Devices: devRules},
		},
		Devices:       specconv.AllowedDevices,
		Mounts:        mounts,
		MaskPaths:     maskPaths,
		ReadonlyPaths: readonlyPaths,
		Rlimits: []configs.Rlimit{
			{Type: unix.RLIMIT_NOFILE, Hard: cfg.NoFile, Soft: cfg.NoFile},
			{Type: unix.RLIMIT_CORE, Hard: 0, Soft: 0},
		},
		Seccomp: seccompProfile(),
	}, nil
}
