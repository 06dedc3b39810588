package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// HostLayout is how the host's top directories (/bin, /lib, ...) appear in
// a sandbox: symlinks into /usr on a merged-/usr host, else read-only
// binds.
type HostLayout struct {
	Symlinks [][2]string // target, link path
	Binds    []string
}

// ReadHostLayout reads the host's top directories.
func ReadHostLayout() (HostLayout, error) {
	var l HostLayout
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
			l.Symlinks = append(l.Symlinks, [2]string{target, p})
		case fi.IsDir():
			l.Binds = append(l.Binds, p)
		}
	}
	return l, nil
}

// BwrapArgs are bubblewrap's arguments to run args as a scoped sandbox
// would: every namespace, read-only /usr and the host's top directories,
// private /proc, /dev and /tmp.
func (l HostLayout) BwrapArgs(args ...string) []string {
	a := []string{"--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"}
	for _, s := range l.Symlinks {
		a = append(a, "--symlink", s[0], s[1])
	}
	for _, d := range l.Binds {
		a = append(a, "--ro-bind", d, d)
	}
	return append(append(a, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--"), args...)
}

// Runc runs a program in runc containers set up like a scoped sandbox, the
// peer the benchmarks compare with.
type Runc struct {
	Bin    string // the runc binary
	Root   string // its state directory (--root)
	Bundle string // the OCI bundle: config.json and rootfs
	Cgroup string // the cgroup under which each container gets its leaf

	conf map[string]any
}

// RuncSpec is what a Runc's containers get.
type RuncSpec struct {
	Layout  HostLayout
	HostID  uint32 // the first host id mapped to the container's root
	IDs     uint32 // how many ids are mapped
	TmpSize int    // bytes of the /tmp tmpfs
	Args    []string
}

// NewRunc makes runc's state directory dir/runc-state and the OCI bundle
// dir/oci-bundle from `runc spec`, changed to match a scoped sandbox: the
// same namespaces (user and cgroup too), spec's host ids mapped to root,
// no capabilities, a read-only root of /usr and the host's top directories,
// and a private /proc, /dev and /tmp. Only the cgroup path changes per run.
func NewRunc(bin, dir, cgroup string, spec RuncSpec) (*Runc, error) {
	r := &Runc{Bin: bin, Root: filepath.Join(dir, "runc-state"), Bundle: filepath.Join(dir, "oci-bundle"), Cgroup: cgroup}
	if err := os.Mkdir(r.Root, 0o700); err != nil {
		return nil, err
	}
	if err := r.makeBundle(spec); err != nil {
		return nil, fmt.Errorf("OCI bundle: %w", err)
	}
	return r, nil
}

func (r *Runc) makeBundle(spec RuncSpec) error {
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if err := os.Mkdir(r.Bundle, 0o711); err != nil {
		return err
	}
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	// Mount points are made in advance: the container's root user cannot
	// create them in a directory owned by the host's root.
	for _, d := range append([]string{"/usr", "/proc", "/dev", "/tmp"}, spec.Layout.Binds...) {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	for _, s := range spec.Layout.Symlinks {
		if err := os.Symlink(s[0], filepath.Join(rootfs, s[1])); err != nil {
			return err
		}
	}
	if out, err := exec.Command(r.Bin, "spec", "--bundle", r.Bundle).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	data, err := os.ReadFile(filepath.Join(r.Bundle, "config.json"))
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
	proc["args"] = spec.Args
	proc["env"] = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"} // scoped's defaults
	proc["capabilities"] = map[string]any{}
	proc["noNewPrivileges"] = true
	conf["root"] = map[string]any{"path": "rootfs", "readonly": true}
	conf["hostname"] = "bench"
	mounts := []any{
		mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
		mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=64k"),
		mount("/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777", "size="+strconv.Itoa(spec.TmpSize)),
		mount("/usr", "bind", "/usr", "rbind", "ro", "nosuid", "nodev"),
	}
	for _, d := range spec.Layout.Binds {
		mounts = append(mounts, mount(d, "bind", d, "rbind", "ro", "nosuid", "nodev"))
	}
	conf["mounts"] = mounts
	var nss []any
	for _, ns := range []string{"pid", "network", "ipc", "uts", "mount", "user", "cgroup"} {
		nss = append(nss, map[string]any{"type": ns})
	}
	linux["namespaces"] = nss
	ids := []any{map[string]any{"containerID": 0, "hostID": spec.HostID, "size": spec.IDs}}
	linux["uidMappings"] = ids
	linux["gidMappings"] = ids
	r.conf = conf
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

// Run runs container id (`runc run`, which deletes it when its process
// exits) in its own cgroup leaf, as a scoped worker gets, and returns the
// time `runc run` took.
func (r *Runc) Run(id string) (time.Duration, error) {
	linux, err := object(r.conf, "linux")
	if err != nil {
		return 0, err
	}
	linux["cgroupsPath"] = r.Cgroup + "/" + id
	data, err := json.MarshalIndent(r.conf, "", "\t")
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(r.Bundle, "config.json"), data, 0o644); err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(r.Bin, "--root", r.Root, "run", "--bundle", r.Bundle, id)
	cmd.Stderr = &stderr
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		// runc run removes its container when the process exits; not
		// necessarily when it fails.
		return 0, errors.Join(fmt.Errorf("runc run: %w: %s", err, strings.TrimSpace(stderr.String())), r.Delete(id))
	}
	return d, nil
}

// List is the ids of the containers in runc's state directory.
func (r *Runc) List() ([]string, error) {
	if _, err := os.Stat(r.Root); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var stderr bytes.Buffer
	cmd := exec.Command(r.Bin, "--root", r.Root, "list", "-q")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("runc list: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.Fields(string(out)), nil
}

// Delete deletes container id, killing what runs in it.
func (r *Runc) Delete(id string) error {
	out, err := exec.Command(r.Bin, "--root", r.Root, "delete", "-f", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc delete -f %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Close deletes any container left in runc's state directory, which
// `runc run` should have removed itself, saying so through logf, and fails
// if one remains.
func (r *Runc) Close(logf func(string, ...any)) error {
	ids, err := r.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		logf("deleting runc container %s left behind", id)
		errs = append(errs, r.Delete(id))
	}
	if ids, err := r.List(); err != nil || len(ids) > 0 {
		errs = append(errs, fmt.Errorf("runc containers left in %s: %q %w", r.Root, ids, err))
	}
	return errors.Join(errs...)
}
