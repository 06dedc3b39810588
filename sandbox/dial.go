package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrUnsafeSocket is returned when the socket a worker announced is not a
// socket inside its own socket directory: a symlink, another kind of file,
// a mount point or a name that is not one plain element. The daemon never
// connects to it.
var ErrUnsafeSocket = errors.New("unsafe worker socket")

// openSocketDir opens dir as the handle the runner resolves the worker's
// socket beneath; O_PATH, so it grants nothing but a starting point.
func openSocketDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket dir for the sandbox: open %s: %w", dir, err)
	}
	return fd, nil
}

// Dial connects to the socket the worker announced (see PluginToHost). It
// reaches exactly a socket inode that lies in the worker's socket
// directory: the name is opened beneath the directory's handle without
// following a symlink or crossing a mount, checked to be a socket, and
// connected to through that very handle, so the worker cannot swap the
// entry between the check and the connect. Anything else is refused with
// ErrUnsafeSocket. Use it as go-plugin's gRPC dialer.
func (r *Runner) Dial(ctx context.Context) (net.Conn, error) {
	r.dirMu.Lock()
	name, dirFD := r.announced, r.dirFD
	if dirFD < 0 {
		r.dirMu.Unlock()
		return nil, fmt.Errorf("dial the worker: %w (it was stopped)", net.ErrClosed)
	}
	if name == "" {
		r.dirMu.Unlock()
		return nil, fmt.Errorf("%w: the worker announced no socket", ErrAddress)
	}
	// Under dirMu: Kill and Wait close dirFD, and a closed number may be
	// reused by another open file.
	fd, err := openBeneath(dirFD, name)
	r.dirMu.Unlock()
	if err != nil {
		return nil, err
	}
	return connectFD(ctx, fd)
}

// dialBeneath is Dial for a directory handle and a name.
func dialBeneath(ctx context.Context, dirFD int, name string) (net.Conn, error) {
	fd, err := openBeneath(dirFD, name)
	if err != nil {
		return nil, err
	}
	return connectFD(ctx, fd)
}

// openBeneath opens name in the directory dirFD as an O_PATH handle, and
// returns it only if it is a socket.
func openBeneath(dirFD int, name string) (int, error) {
	shown := PluginSocketPath + "/" + name
	if !plainName(name) {
		return -1, fmt.Errorf("%w: %q is not a name in %s", ErrUnsafeSocket, shown, PluginSocketPath)
	}
	how := &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
			unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(dirFD, name, how)
	// EAGAIN: a rename raced with the lookup (the worker may rename in a
	// loop: a few tries, then give up).
	for try := 0; try < 4 && (err == unix.EAGAIN || err == unix.EINTR); try++ {
		fd, err = unix.Openat2(dirFD, name, how)
	}
	switch {
	case err == unix.ELOOP:
		return -1, fmt.Errorf("%w: %s is a symlink", ErrUnsafeSocket, shown)
	case err == unix.EXDEV:
		return -1, fmt.Errorf("%w: %s is a mount point", ErrUnsafeSocket, shown)
	case err == unix.ENOENT:
		return -1, fmt.Errorf("%w: %s does not exist", ErrUnsafeSocket, shown)
	case err != nil:
		return -1, fmt.Errorf("%w: open %s: %w", ErrUnsafeSocket, shown, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: stat %s: %w", ErrUnsafeSocket, shown, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is %s", ErrUnsafeSocket, shown, fileType(st.Mode))
	}
	return fd, nil
}

// connectFD connects to the socket inode fd refers to and closes fd.
// connect(2) on the magic link /proc/self/fd/N reaches exactly that inode,
// whatever its name points to now.
func connectFD(ctx context.Context, fd int) (net.Conn, error) {
	defer unix.Close(fd)
	var d net.Dialer
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("not a socket (mode %#o)", mode&unix.S_IFMT)
}
