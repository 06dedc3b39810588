// scoped-init: the first program of a sandbox started by the native launcher
// (../launch.go). The daemon clones it as the host's root into the
// sandbox's new mount, pid, ipc, uts and network namespaces and its unified
// cgroup (a vfork: cheap however large the daemon), and runs it from a
// sealed memfd. It reads its plan from fd 3 (records of a little-endian u32
// length and that many bytes), lays out the root on a tmpfs of its own
// mount namespace, moves in the binds the daemon made (detached mount
// trees passed as fds), pivots into the root, masks /proc and sets
// rlimits and the hostname. Then it unshares a user namespace and writes
// "U" on fd 5; the daemon maps the sandbox's id range into it, moves it
// into its cgroup v1 leaves and writes "G" on fd 4. It becomes root of its
// user namespace, unshares its cgroup namespace, drops every capability,
// sets no_new_privs, loads the seccomp program (compiled once by the
// daemon) and executes the target. fd 5 (close on exec) carries "U", then
// "T" and its phase stamps, then EOF at the exec; or "E" and why it failed.
// Built static by `make generate` (gcc -static).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { CFG = 3, SYNC = 4, STATUS = 5 };
enum { phMain, phCfg, phLo, phMounts, phPivot, phFinal, phUserns, phGo, phCaps, phSeccomp, nPhases };
static int64_t stamps[nPhases];

static int64_t now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *what) {
	char buf[512];
	int e = errno;
	int n = snprintf(buf, sizeof buf, "E%s: %s", what, e ? strerror(e) : "failed");
	if (write(STATUS, buf, n) < 0) {
	}
	_exit(127);
}

static char *plan;
static size_t planLen, pos;

static char *next(size_t *len) {
	if (pos + 4 > planLen) { errno = 0; fail("plan truncated"); }
	uint32_t n;
	memcpy(&n, plan + pos, 4);
	if (pos + 4 + n > planLen) { errno = 0; fail("plan truncated"); }
	char *s = malloc(n + 1);
	memcpy(s, plan + pos + 4, n);
	s[n] = 0;
	pos += 4 + n;
	if (len) *len = n;
	return s;
}
static unsigned long num(void) { return strtoul(next(NULL), NULL, 10); }

static unsigned long locked(const char *p) {
	struct statvfs st;
	if (statvfs(p, &st) < 0) return 0;
	unsigned long f = 0;
	if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
	if (st.f_flag & ST_NODEV) f |= MS_NODEV;
	if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
	if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
	if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
	if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
	return f;
}

#define MAXN 64
struct mnt { char *src, *dst, *fs, *data; unsigned long flags, prop; int tree; };

int main(void) {
	stamps[phMain] = now();
	if (fcntl(STATUS, F_SETFD, FD_CLOEXEC) < 0) _exit(126);
	size_t cap = 1 << 16;
	plan = malloc(cap);
	for (;;) {
		if (planLen == cap) plan = realloc(plan, cap *= 2);
		ssize_t n = read(CFG, plan + planLen, cap - planLen);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) fail("read plan");
		if (n == 0) break;
		planLen += n;
	}
	close(CFG);
	stamps[phCfg] = now();

	char *root = NULL, *hostname = "", *cwd = "/", *bpf = NULL;
	size_t bpfLen = 0;
	struct mnt mounts[MAXN];
	char *devs[MAXN][2], *links[MAXN][2], *masks[MAXN], *ros[MAXN];
	unsigned long rl[8][3];
	char **argv = NULL, **env = NULL;
	char *tmproot = NULL;
	unsigned long owner = 0;
	struct { char kind, *a, *b; } skel[MAXN * 2];
	int nskel = 0;
	int nm = 0, nd = 0, nl = 0, nmask = 0, nro = 0, nrl = 0, lo = 0;
	while (pos < planLen) {
		char *k = next(NULL);
		if (!strcmp(k, "root")) root = next(NULL);
		else if (!strcmp(k, "host")) hostname = next(NULL);
		else if (!strcmp(k, "tmproot")) tmproot = next(NULL);
		else if (!strcmp(k, "owner")) owner = num();
		else if (!strcmp(k, "mkdir")) { skel[nskel].kind = 'd'; skel[nskel++].a = next(NULL); }
		else if (!strcmp(k, "file")) { skel[nskel].kind = 'f'; skel[nskel].a = next(NULL); skel[nskel++].b = next(NULL); }
		else if (!strcmp(k, "sym")) { skel[nskel].kind = 's'; skel[nskel].b = next(NULL); skel[nskel++].a = next(NULL); }
		else if (!strcmp(k, "lo")) lo = 1;
		else if (!strcmp(k, "mnt")) {
			struct mnt *m = &mounts[nm++];
			m->src = next(NULL); m->dst = next(NULL); m->fs = next(NULL);
			m->flags = num(); m->data = next(NULL); m->prop = num(); m->tree = -1;
		} else if (!strcmp(k, "tree")) {
			// A bind the daemon made: a detached mount tree (open_tree,
			// its flags set with mount_setattr) passed as this fd.
			struct mnt *m = &mounts[nm++];
			m->tree = (int)num(); m->dst = next(NULL);
			if (m->tree < 6) { errno = 0; fail("bad tree fd"); }
		} else if (!strcmp(k, "dev")) { devs[nd][0] = next(NULL); devs[nd++][1] = next(NULL); }
		else if (!strcmp(k, "ln")) { links[nl][0] = next(NULL); links[nl++][1] = next(NULL); }
		else if (!strcmp(k, "mask")) masks[nmask++] = next(NULL);
		else if (!strcmp(k, "ro")) ros[nro++] = next(NULL);
		else if (!strcmp(k, "rlim")) { rl[nrl][0] = num(); rl[nrl][1] = num(); rl[nrl++][2] = num(); }
		else if (!strcmp(k, "bpf")) bpf = next(&bpfLen);
		else if (!strcmp(k, "argv") || !strcmp(k, "env")) {
			unsigned long c = num();
			char **v = calloc(c + 1, sizeof *v);
			for (unsigned long i = 0; i < c; i++) v[i] = next(NULL);
			if (k[0] == 'a') argv = v; else env = v;
		} else if (!strcmp(k, "cwd")) cwd = next(NULL);
		else { errno = 0; fail("unknown plan record"); }
		if (nm >= MAXN || nd >= MAXN || nl >= MAXN || nmask >= MAXN || nro >= MAXN || nrl >= 8 || nskel >= 2 * MAXN) { errno = 0; fail("plan too big"); }
	}
	if (!root || !tmproot || !owner || !argv || !argv[0] || !bpf || bpfLen % 8 || bpfLen / 8 > BPF_MAXINSNS) { errno = 0; fail("incomplete plan"); }

	if (lo) {
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		struct ifreq ifr = {0};
		strcpy(ifr.ifr_name, "lo");
		if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) fail("SIOCGIFFLAGS lo");
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) fail("SIOCSIFFLAGS lo");
		close(fd);
	}
	stamps[phLo] = now();

	if (mount("", "/", "", MS_SLAVE | MS_REC, "") < 0) fail("rslave /");
	char p[4096];
	{
		// The root is a tmpfs of this mount namespace, laid out here:
		// nothing of it is on the host, nothing to remove afterwards.
		if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, tmproot) < 0) fail("tmpfs root");
		for (int i = 0; i < nskel; i++) {
			snprintf(p, sizeof p, "%s%s", root, skel[i].a);
			if (skel[i].kind == 'd') {
				if (mkdir(p, 0755) < 0 && errno != EEXIST) fail(skel[i].a);
			} else if (skel[i].kind == 's') {
				if (symlink(skel[i].b, p) < 0) fail(skel[i].a);
			} else {
				// (files: owned below, once written)
				int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
				if (fd < 0) fail(skel[i].a);
				size_t len = strlen(skel[i].b);
				if (len && write(fd, skel[i].b, len) != (ssize_t)len) fail(skel[i].a);
				close(fd);
			}
			// The sandbox's root owns its root's entries, as if it had
			// made them (it cannot write them: the root is remounted
			// read-only).
			if (lchown(p, owner, owner) < 0) fail(skel[i].a);
		}
	}
	for (int i = 0; i < nm; i++) {
		struct mnt *m = &mounts[i];
		snprintf(p, sizeof p, "%s%s", root, m->dst);
		if (m->tree >= 0) {
			if (syscall(SYS_move_mount, m->tree, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0) fail(m->dst);
			close(m->tree);
			continue;
		}
		if (m->flags & MS_BIND) {
			if (mount(m->src, p, "", MS_BIND | MS_REC, "") < 0) fail(m->dst);
			unsigned long rest = m->flags & ~(unsigned long)(MS_BIND | MS_REC);
			if (rest) {
				unsigned long fl = MS_BIND | MS_REMOUNT | rest;
				if (mount("", p, "", fl, "") < 0 && mount("", p, "", fl | locked(p), "") < 0) fail(m->dst);
			}
		} else if (mount(m->src, p, m->fs, m->flags, m->data) < 0) fail(m->dst);
		if (m->prop && mount("", p, "", m->prop, "") < 0) fail(m->dst);
	}
	for (int i = 0; i < nd; i++) {
		snprintf(p, sizeof p, "%s%s", root, devs[i][1]);
		int fd = open(p, O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_WRONLY, 0);
		if (fd < 0) fail(devs[i][1]);
		close(fd);
		if (mount(devs[i][0], p, "bind", MS_BIND, "") < 0) fail(devs[i][0]);
	}
	for (int i = 0; i < nl; i++) {
		snprintf(p, sizeof p, "%s%s", root, links[i][1]);
		if (symlink(links[i][0], p) < 0 && errno != EEXIST) fail(links[i][1]);
		if (lchown(p, owner, owner) < 0) fail(links[i][1]);
	}
	stamps[phMounts] = now();

	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0 || chdir(root) < 0) fail("chdir rootfs");
	if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root");
	if (fchdir(oldroot) < 0) fail("fchdir");
	if (mount("", ".", "", MS_SLAVE | MS_REC, "") < 0) fail("rslave oldroot");
	if (umount2(".", MNT_DETACH) < 0) fail("umount oldroot");
	if (chdir("/") < 0) fail("chdir /");
	close(oldroot);
	stamps[phPivot] = now();

	unsigned long ro = MS_BIND | MS_REMOUNT | MS_RDONLY;
	if (mount("", "/", "", ro, "") < 0 && mount("", "/", "", ro | locked("/"), "") < 0) fail("remount / ro");
	umask(022);
	if (sethostname(hostname, strlen(hostname)) < 0) fail("sethostname");
	for (int i = 0; i < nro; i++) {
		if (mount(ros[i], ros[i], "", MS_BIND | MS_REC, "") < 0) {
			if (errno == ENOENT) continue;
			fail(ros[i]);
		}
		unsigned long fl = locked(ros[i]) & (MS_NOSUID | MS_NODEV | MS_NOEXEC);
		if (mount(ros[i], ros[i], "", fl | MS_BIND | MS_REMOUNT | MS_RDONLY, "") < 0) fail(ros[i]);
	}
	for (int i = 0; i < nmask; i++) {
		struct stat st;
		if (stat(masks[i], &st) < 0) {
			if (errno == ENOENT) continue;
			fail(masks[i]);
		}
		if (S_ISDIR(st.st_mode)) {
			char data[96];
			snprintf(data, sizeof data, "nr_blocks=1,nr_inodes=1,uid=%lu,gid=%lu", owner, owner);
			if (mount("tmpfs", masks[i], "tmpfs", MS_RDONLY, data) < 0) fail(masks[i]);
		} else if (mount("/dev/null", masks[i], "", MS_BIND, "") < 0) fail(masks[i]);
	}
	for (int i = 0; i < nrl; i++) {
		struct rlimit r = {rl[i][1], rl[i][2]};
		if (setrlimit(rl[i][0], &r) < 0) fail("setrlimit");
	}
	if (chdir(cwd) < 0) fail("chdir cwd");
	stamps[phFinal] = now();

	// Everything above ran as the host's root in namespaces the host's
	// user namespace owns, so the sandbox has no capability over them
	// even within its own. Now the user namespace: the daemon maps the
	// sandbox's id range into it once told, and says go once that and the
	// cgroup v1 moves are done.
	if (unshare(CLONE_NEWUSER) < 0) fail("unshare user namespace");
	if (write(STATUS, "U", 1) != 1) _exit(126);
	stamps[phUserns] = now();
	char b;
	ssize_t n;
	while ((n = read(SYNC, &b, 1)) < 0 && errno == EINTR) {
	}
	if (n != 1 || b != 'G') { errno = 0; fail("parent did not say go"); }
	close(SYNC);
	stamps[phGo] = now();
	if (setresgid(0, 0, 0) < 0) fail("setresgid");
	if (setgroups(0, NULL) < 0) fail("setgroups");
	if (setresuid(0, 0, 0) < 0) fail("setresuid");
	if (unshare(CLONE_NEWCGROUP) < 0) fail("unshare cgroupns");
	syscall(SYS_close_range, 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("no_new_privs");
	for (int c = 0; c < 64; c++) {
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
			if (errno == EINVAL) break;
			fail("PR_CAPBSET_DROP");
		}
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2] = {{0}};
	if (syscall(SYS_capset, &hdr, data) < 0) fail("capset");
	stamps[phCaps] = now();
	struct sock_fprog prog = {(unsigned short)(bpfLen / 8), (struct sock_filter *)bpf};
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) fail("seccomp");
	stamps[phSeccomp] = now();
	char rec[1 + 8 * nPhases];
	rec[0] = 'T';
	memcpy(rec + 1, stamps, sizeof stamps);
	if (write(STATUS, rec, sizeof rec) < 0) {
	}
	if (strchr(argv[0], '/')) execve(argv[0], argv, env);
	else execvpe(argv[0], argv, env);
	fail(argv[0]);
}
