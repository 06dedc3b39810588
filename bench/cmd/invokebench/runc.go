package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// This is sandboxbench's `runc run` variant: the same bundle, changed to
// match a scoped sandbox.

// hostLayout is how the host's top directories (/bin, /lib, ...) appear in
// the container: symlinks into /usr on a merged-/usr host, else read-only
// binds.
type hostLayout struct {
	symlinks [][2]string // target, link path
	binds    []string
}

func readHostLayout() (hostLayout, error) {
	var l hostLayout
	for _, d := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		p := "/" + d
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return l, err
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return l, err
			}
			l.symlinks = append(l.symlinks, [2]string{target, p})
		case fi.IsDir():
			l.binds = append(l.binds, p)
		}
	}
	return l, nil
}

// makeRuncBundle builds the OCI bundle from `runc spec`, changed to match
// the scoped sandbox: the same namespaces (user and cgroup too), the host
// ids from hostID mapped to root, no capabilities, a read-only root of /usr
// and the host's top symlinks, and a private /proc, /dev and /tmp. Only the
// cgroup path changes per run.
func (b *bench) makeRuncBundle(hostID uint32) error {
	rootfs := filepath.Join(b.runcBndl, "rootfs")
	if err := os.Mkdir(b.runcBndl, 0o711); err != nil {
		return err
	}
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	// Mount points are made in advance: the container's root user cannot
	// create them in a directory owned by the host's root.
	for _, d := range append([]string{"/usr", "/proc", "/dev", "/tmp"}, b.layout.binds...) {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	for _, s := range b.layout.symlinks {
		if err := os.Symlink(s[0], filepath.Join(rootfs, s[1])); err != nil {
			return err
		}
	}
	if out, err := exec.Command(b.o.runc, "spec", "--bundle", b.runcBndl).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	data, err := os.ReadFile(filepath.Join(b.runcBndl, "config.json"))
	if err != nil {
		return err
	}
	conf := map[string]any{}
	if err := json.Unmarshal(data, &conf); err != nil {
		return fmt.Errorf("runc spec output: %w", err)
	}
	proc, err := object(conf, "process")
	if err != nil {
		return err
	}
	linux, err := object(conf, "linux")
	if err != nil {
		return err
	}
	proc["terminal"] = false
	proc["args"] = []string{truePath}
	proc["env"] = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"}
	proc["capabilities"] = map[string]any{}
	proc["noNewPrivileges"] = true
	conf["root"] = map[string]any{"path": "rootfs", "readonly": true}
	conf["hostname"] = "bench"
	mounts := []any{
		mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
		mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=64k"),
		mount("/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777", "size="+strconv.Itoa(tmpSize)),
		mount("/usr", "bind", "/usr", "rbind", "ro", "nosuid", "nodev"),
	}
	for _, d := range b.layout.binds {
		mounts = append(mounts, mount(d, "bind", d, "rbind", "ro", "nosuid", "nodev"))
	}
	conf["mounts"] = mounts
	var nss []any
	for _, ns := range []string{"pid", "network", "ipc", "uts", "mount", "user", "cgroup"} {
		nss = append(nss, map[string]any{"type": ns})
	}
	linux["namespaces"] = nss
	ids := []any{map[string]any{"containerID": 0, "hostID": hostID, "size": idSize}}
	linux["uidMappings"] = ids
	linux["gidMappings"] = ids
	b.runcConf = conf
	return nil
}

func object(m map[string]any, key string) (map[string]any, error) {
	o, ok := m[key].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("runc spec output: no %q object", key)
	}
	return o, nil
}

func mount(dst, typ, src string, opts ...string) map[string]any {
	return map[string]any{"destination": dst, "type": typ, "source": src, "options": opts}
}

// writeRuncConfig writes the bundle's config.json for container id, which
// gets its own cgroup leaf, as a scoped worker does.
func (b *bench) writeRuncConfig(id string) error {
	linux, err := object(b.runcConf, "linux")
	if err != nil {
		return err
	}
	linux["cgroupsPath"] = b.runcNode.Path() + "/" + id
	data, err := json.MarshalIndent(b.runcConf, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.runcBndl, "config.json"), data, 0o644)
}
