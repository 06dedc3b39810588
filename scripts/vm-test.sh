#!/usr/bin/env bash
# Runs test binaries (or any binary) inside a VM booted from one of Debian's
# kernels with a pure cgroup v2 hierarchy (no v1 controllers), sharing this
# host's root file system read-only over 9p. Streams the output and exits
# with the binaries' status.
# Usage: scripts/vm-test.sh WORKDIR BINARY[@DIR]...
#   Each binary runs in DIR (its package's source directory), or in its own
#   directory when no DIR is given, with SCOPED_VM_TESTFLAGS as its arguments;
#   the run fails if any binary exits non-zero.
#   WORKDIR holds the kernel caches and is shared read-write for results.
# Knobs (environment):
#   SCOPED_VM_KERNEL=6.1|6.12|linux-image-PACKAGE, or several separated by
#     spaces or commas (default 6.1). 6.1 is what linux-image-amd64 depends
#     on (bookworm); 6.12 is the newest linux-image-6.12.N+deb12-amd64-unsigned
#     in apt's lists (bookworm-security). Each kernel is fetched once with
#     apt-get download into WORKDIR/kernel-<name>, never installed (remove
#     that directory to fetch a newer one). With several kernels, one VM per
#     kernel runs at the same time (TCG uses one host thread per VM), every
#     line prefixed with "[<kernel>] ", and the run fails if any VM fails,
#     saying which.
#   SCOPED_VM_ACCEL=auto|kvm|tcg (default auto: KVM if a probe boots, else TCG)
#   SCOPED_VM_TIMEOUT=seconds for one VM run (default 600; a timed-out run is
#     retried once)
#   SCOPED_VM_TESTFLAGS=arguments passed to every binary (split on spaces)
#   SCOPED_VM_SKIP_<kernel>=regexp (kernel with "." as "_", e.g.
#     SCOPED_VM_SKIP_6_12): go tests skipped on that kernel only, added to
#     the -test.skip= of SCOPED_VM_TESTFLAGS (or added as one)
#   SCOPED_VM_ENV="K=V ..." environment of the binaries, which also get
#     SCOPED_VM_KERNEL=<the kernel's name> (e.g. to label figures)
#   SCOPED_VM_INIT=sh|systemd (default sh): sh runs the binaries right after
#     the kernel's boot, as PID 1's child; systemd boots the host's
#     /lib/systemd/systemd as PID 1 on a writable overlay (the host's root
#     read-only beneath, memory above) into scoped-vm.target, which starts
#     only the binaries' run (scoped-vm-run.service, its output on the
#     console); units a VM without disks, udev or network has no use for are
#     masked. The binaries may install units and files as on a host.
#   SCOPED_VM_SHARE=directory shown at its own path in the VM even where the
#     VM mounts a tmpfs (/tmp, /run); default the current directory, which
#     must hold WORKDIR and the binaries
set -euo pipefail

work=$(realpath "$1"); shift
share=$(realpath "${SCOPED_VM_SHARE:-$PWD}")
case "$work/" in "$share"/*) ;; *) echo "vm-test: WORKDIR $work is not inside $share" >&2; exit 2 ;; esac
[ $# -gt 0 ] || { echo "usage: $0 WORKDIR TEST_BINARY..." >&2; exit 2; }
accel=${SCOPED_VM_ACCEL:-auto}
timeout_s=${SCOPED_VM_TIMEOUT:-600}
testflags=${SCOPED_VM_TESTFLAGS:-}
vminit=${SCOPED_VM_INIT:-sh}
case "$vminit" in sh) initargs= ;; systemd) initargs="scoped.init=systemd systemd.unit=scoped-vm.target" ;;
*) echo "vm-test: SCOPED_VM_INIT must be sh or systemd" >&2; exit 2 ;; esac
case "$accel" in auto | kvm | tcg) ;; *) echo "vm-test: SCOPED_VM_ACCEL must be auto, kvm or tcg" >&2; exit 2 ;; esac
say() { echo "vm-test: $*" >&2; }
if [ "$(id -u)" -ne 0 ]; then
	# qemu shares the host's files with their owners (9p passthrough), and
	# the tests are root tests: without root there is nothing to prove.
	say "SKIP: the cgroup v2 VM run needs root (sudo make test)"
	exit 0
fi

# --- what the VM needs from the host -------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		say "missing packages; run: sudo apt-get install -y --no-install-recommends ${need[*]}"
		exit 1
	fi
	say "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	}
fi

# --- several kernels: one VM each, at the same time ----------------------
read -ra kernels <<<"$(echo "${SCOPED_VM_KERNEL:-6.1}" | tr ',' ' ')"
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1)
if [ "$(printf '%s\n' "${kernels[@]}" | sort -u | wc -l)" -ne ${#kernels[@]} ]; then
	say "SCOPED_VM_KERNEL names a kernel twice: ${kernels[*]}"
	exit 2
fi
if [ ${#kernels[@]} -gt 1 ]; then
	say "running ${#kernels[@]} VMs at the same time: ${kernels[*]}"
	pids=()
	for k in "${kernels[@]}"; do
		# Each VM is this script with one kernel; its lines (the guest's
		# serial console and this script's own) carry the kernel's name.
		(
			set +e
			SCOPED_VM_KERNEL=$k "$0" "$work" "$@" 2>&1 | sed -u "s/^/[$k] /"
			exit "${PIPESTATUS[0]}"
		) </dev/null &
		pids+=($!)
	done
	failed=() passed=()
	for i in "${!kernels[@]}"; do
		if wait "${pids[$i]}"; then passed+=("${kernels[$i]}"); else failed+=("${kernels[$i]}"); fi
	done
	if [ ${#failed[@]} -gt 0 ]; then
		say "FAILED on kernel ${failed[*]}${passed[*]:+; passed on ${passed[*]}}"
		exit 1
	fi
	say "passed on every kernel: ${kernels[*]}"
	exit 0
fi
klabel=${kernels[0]}

# --- Debian's kernel, unpacked into the cache (not installed) ------------
# pkg_for prints the package of a kernel name: 6.1 is what the bookworm
# meta-package linux-image-amd64 depends on, 6.12 the newest 6.12 image.
pkg_for() {
	case "$1" in
	6.1) apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' ;;
	6.12)
		apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
			awk '{print $1}' | sort -V | tail -1
		;;
	linux-image-*) apt-cache show "$1" >/dev/null 2>&1 && echo "$1" ;;
	esac
}
case "$klabel" in
6.1 | 6.12 | linux-image-*) ;;
*) say "SCOPED_VM_KERNEL must be 6.1, 6.12 or a linux-image-* package, not '$klabel'"; exit 2 ;;
esac
kdir=$work/kernel-$klabel
# The cache of the single-kernel script (6.1) is kept, not fetched again.
if [ "$klabel" = 6.1 ] && [ -f "$work/kernel/ok" ] && [ ! -e "$kdir" ]; then
	mv "$work/kernel" "$kdir"
fi
if [ ! -f "$kdir/ok" ]; then
	pkg=$(pkg_for "$klabel")
	if [ -z "$pkg" ]; then
		apt-get update -qq >/dev/null 2>&1 || true
		pkg=$(pkg_for "$klabel")
	fi
	if [ -z "$pkg" ]; then
		case "$klabel" in
		6.1) say "apt knows no linux-image-amd64 (Debian's 6.1); check apt's sources, then run: apt-get update && apt-cache depends linux-image-amd64" ;;
		6.12) say "apt knows no linux-image-6.12.N+deb12-amd64-unsigned (Debian bookworm-security); add bookworm-security to apt's sources, then run: apt-get update && apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned\$'" ;;
		*) say "apt knows no package $klabel; run: apt-get update && apt-cache show $klabel" ;;
		esac
		exit 1
	fi
	say "fetching $pkg into $kdir"
	rm -rf "$kdir"; mkdir -p "$kdir/deb"
	if ! (cd "$kdir/deb" && apt-get download "$pkg" >/dev/null 2>&1); then
		say "cannot download $pkg; run: apt-get update && (cd $kdir/deb && apt-get download $pkg)"
		exit 1
	fi
	dpkg-deb -x "$kdir"/deb/*.deb "$kdir/x"
	rm -rf "$kdir/deb"
	echo "$pkg" >"$kdir/package"
	touch "$kdir/ok"
fi
vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
moddir=$kdir/x/lib/modules/$kver

# --- initramfs: busybox, the 9p/virtio/overlay and network modules, /init -
ird=$(mktemp -d "$work/initramfs.XXXXXX")
trap 'rm -rf "$ird" "$ird.cpio.gz" "${run:-}"' EXIT
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
# The modules the VM needs, by name; what they depend on is read from each
# module's own modinfo (depends=), so paths, compression (6.12 ships .ko.xz)
# and the split of modules (fscache inside netfs since 6.4) do not matter.
# A module built into the kernel (modules.builtin) is skipped. crc32c_generic
# is no dependency (libcrc32c asks the crypto API for "crc32c" at run time).
want="virtio_pci 9pnet_virtio 9p overlay crc32c_generic nf_tables nft_ct nft_chain_nat nft_masq bridge veth sch_tbf"
declare -A modpath=() builtin=() loaded=()
while IFS= read -r f; do
	n=${f##*/}; n=${n%.xz}; n=${n%.ko}; modpath[${n//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz')
while IFS= read -r f; do
	n=${f##*/}; n=${n%.ko}; builtin[${n//-/_}]=1
done <"$moddir/modules.builtin"
addmod() {
	local n=${1//-/_} f d
	[ -z "${loaded[$n]:-}" ] || return 0
	loaded[$n]=1
	if [ -z "${modpath[$n]:-}" ]; then
		[ -n "${builtin[$n]:-}" ] && return 0
		say "kernel $kver has no module $n (neither a file under $moddir nor in modules.builtin)"
		exit 1
	fi
	f=${modpath[$n]}
	case "$f" in
	*.xz) xz -dc "$f" >"$ird/modules/$n.ko" ;;
	*) cp "$f" "$ird/modules/$n.ko" ;;
	esac
	for d in $(tr '\0' '\n' <"$ird/modules/$n.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
		addmod "$d"
	done
	echo "$n" >>"$ird/modules/order"
}
for m in $want; do addmod "$m"; done
say "kernel $kver: modules $(tr '\n' ' ' <"$ird/modules/order")"
# Tests skipped on this kernel only join the -test.skip of the flags (go's
# flag package keeps the last of a repeated flag, so it must be one).
kskipvar=SCOPED_VM_SKIP_${klabel//[^A-Za-z0-9]/_}
kskip=${!kskipvar:-}
if [ -n "$kskip" ]; then
	read -ra words <<<"$testflags"
	flags=() merged=
	for f in "${words[@]}"; do
		case "$f" in
		-test.skip=* | --test.skip=*) f="$f|$kskip" merged=1 ;;
		esac
		flags+=("$f")
	done
	[ -n "$merged" ] || flags+=("-test.skip=$kskip")
	testflags=${flags[*]}
	say "kernel $klabel: also skipping $kskip"
fi
# The test list and the flags travel in a file on the work share, one
# directory per kernel (and init) so that VMs can run side by side.
run=$work/run-$klabel
[ "$vminit" = systemd ] && run=$work/run-systemd-$klabel
mkdir -p "$run"
printf '%s\n' "$@" >"$run/tests"
echo "$testflags" >"$run/flags"
# The binaries learn the kernel's name (to label what they print).
echo "export SCOPED_VM_KERNEL=$klabel" >"$run/env"
for kv in ${SCOPED_VM_ENV:-}; do echo "export $kv" >>"$run/env"; done
rm -f "$run/status"
# The runner: every binary in turn, then the status on the work share and
# power off. Started by /init, or under systemd by scoped-vm-run.service.
cat >"$run/runner" <<'RUNNER'
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. "$1/env"
status=0
for t in $(cat "$1/tests"); do
	bin=${t%%@*} dir=${t#*@}
	[ "$dir" = "$t" ] && dir=$(dirname "$bin")
	echo "=== vm: $bin (in $dir)"
	if ( cd "$dir" && "$bin" $(cat "$1/flags") ); then
		echo "=== vm: ok $bin"
	else
		echo "=== vm: FAIL $bin"
		status=1
	fi
done
echo "$status" > "$1/status"
sync
/bin/busybox poweroff -f
RUNNER
if [ "$vminit" = systemd ]; then
	# The units /init copies into the overlay's /etc/systemd/system: a target
	# that starts only the runner (as a service, its output on the console),
	# and masks for what a VM with no disks, udev or network has no use for
	# (and what would copy the host's journal or state into the overlay).
	u=$run/systemd
	rm -rf "$u"; mkdir -p "$u"
	cat >"$u/scoped-vm.target" <<-EOF
		[Unit]
		Description=scoped VM run (scripts/vm-test.sh)
		Wants=scoped-vm-run.service
		AllowIsolate=yes
	EOF
	cat >"$u/scoped-vm-run.service" <<-EOF
		[Unit]
		Description=scoped VM run: the binaries of scripts/vm-test.sh
		DefaultDependencies=no
		Wants=systemd-journald.socket
		After=systemd-journald.socket
		[Service]
		Type=exec
		ExecStart=/bin/sh $run/runner $run
		StandardInput=null
		StandardOutput=tty
		StandardError=inherit
		TTYPath=/dev/console
	EOF
	for m in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-firstboot.service \
		systemd-machine-id-commit.service systemd-modules-load.service systemd-pcrphase-sysinit.service \
		systemd-pcrphase.service systemd-random-seed.service systemd-repart.service systemd-sysusers.service \
		systemd-update-utmp.service systemd-journal-flush.service systemd-ask-password-console.path \
		kmod-static-nodes.service sys-kernel-config.mount sys-fs-fuse-connections.mount dev-hugepages.mount \
		dev-mqueue.mount sys-kernel-debug.mount systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service \
		systemd-tmpfiles-clean.timer systemd-sysctl.service systemd-pstore.service systemd-timesyncd.service \
		systemd-journald-audit.socket dbus.socket dbus.service systemd-remount-fs.service systemd-fsck-root.service \
		systemd-hwdb-update.service ldconfig.service systemd-udevd.service systemd-udev-trigger.service \
		systemd-udev-settle.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
		systemd-networkd-wait-online.service NetworkManager-wait-online.service networking.service \
		e2scrub_reap.service getty.target console-getty.service serial-getty@ttyS0.service systemd-logind.service \
		systemd-user-sessions.service systemd-update-utmp-runlevel.service; do
		ln -s /dev/null "$u/$m"
	done
fi
cat >"$ird/init" <<'INIT'
#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t devtmpfs dev /dev
for m in $(busybox cat /modules/order); do busybox insmod /modules/$m.ko || echo "insmod $m failed"; done
arg() { busybox cat /proc/cmdline | busybox sed -n "s/.*scoped.$1=\([^ ]*\).*/\1/p"; }
work=$(arg work)
share=$(arg share)
run=$(arg run)
init=$(arg init)
hostroot="busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot"
if [ "$init" = systemd ]; then
	# The host's root, read-only, under a writable overlay in memory: the
	# binaries install units and configuration as on a host.
	busybox mkdir -p /lower /upper
	$hostroot /lower || { echo "cannot mount host root"; busybox poweroff -f; }
	busybox mount -t tmpfs -o mode=0755 upper /upper
	busybox mkdir -p /upper/u /upper/w
	busybox mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot ||
		{ echo "cannot mount the overlay root"; busybox poweroff -f; }
else
	$hostroot /newroot || { echo "cannot mount host root"; busybox poweroff -f; }
fi
busybox mount -t proc proc /newroot/proc
busybox mount -t sysfs sys /newroot/sys
if [ "$init" != systemd ]; then
	# nsdelegate and memory_recursiveprot, as systemd mounts it (a tenant's
	# memory.low then covers its scopes' memory too). systemd mounts both.
	busybox mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /newroot/sys/fs/cgroup
	busybox mount -t bpf bpf /newroot/sys/fs/bpf 2>/dev/null
fi
busybox mount -t devtmpfs dev /newroot/dev
busybox mkdir -p /newroot/dev/pts /newroot/dev/shm
busybox mount -t devpts devpts /newroot/dev/pts
busybox mount -t tmpfs shm /newroot/dev/shm
for d in tmp run var/tmp; do busybox mount -t tmpfs -o mode=1777 tmpfs /newroot/$d; done
[ "$init" = systemd ] && busybox chmod 0755 /newroot/run
busybox mount -t tmpfs -o mode=0700 tmpfs /newroot/root
# The project directory, again at its own path (it may sit below /tmp), and
# the work directory in it, writable.
busybox mkdir -p /newroot$share
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 share /newroot$share || echo "cannot mount $share"
busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /newroot$work || echo "cannot mount work share"
busybox hostname scoped-vm
busybox ip link set lo up
if [ "$init" = systemd ]; then
	# Nothing of the host's own setup in the overlay: its enabled units,
	# mounts, journal and scoped's state and configuration; nor the marks of
	# a container the host may run in (systemd would take the VM for one,
	# and ignore the kernel's command line).
	busybox rm -rf /newroot/.dockerenv /newroot/run/.containerenv /newroot/etc/systemd/system/*.wants /newroot/etc/systemd/system/*.target \
		/newroot/var/log/journal /newroot/var/lib/scoped /newroot/etc/scoped
	: >/newroot/etc/fstab
	echo scoped-vm >/newroot/etc/hostname
	busybox cp -a /newroot$run/systemd/. /newroot/etc/systemd/system/
	echo "vm: kernel $(busybox uname -r), cgroup2 only, systemd as init"
	exec busybox switch_root /newroot /lib/systemd/systemd
fi
echo "vm: kernel $(busybox uname -r), cgroup2 only, controllers: $(busybox cat /newroot/sys/fs/cgroup/cgroup.controllers)"
# switch_root, not chroot: the kernel refuses new user namespaces to a
# chrooted task, and every sandbox needs one.
exec busybox switch_root /newroot /bin/sh "$run/runner" "$run"
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$ird.cpio.gz"

qemu() {
	local acc=$1 limit=$2; shift 2
	# Single-threaded TCG: with thread=multi, attaching or detaching a
	# scheduler tracepoint program (the kernel patches __schedule with
	# text_poke and an int3) can leave one vCPU looping for good; 400
	# attach/detach cycles under load passed with thread=single.
	local a=(-accel tcg,thread=single -cpu max)
	[ "$acc" = kvm ] && a=(-accel kvm -cpu host)
	timeout --kill-after=10 "$limit" qemu-system-x86_64 "${a[@]}" -smp 2 -m 4096 \
		-nodefaults -no-reboot -display none -serial stdio \
		-kernel "$vmlinuz" -initrd "$ird.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all scoped.work=$work scoped.share=$share scoped.run=$run $initargs $*" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
		-virtfs local,path="$share",mount_tag=share,security_model=passthrough,readonly=on,multidevs=remap \
		-virtfs local,path="$work",mount_tag=work,security_model=passthrough,multidevs=remap
}

if [ "$accel" = auto ]; then
	accel=tcg
	if [ -w /dev/kvm ]; then
		# KVM guests hang on some of these machines: use it only if a probe
		# boot reaches userspace quickly.
		if qemu kvm 10 "rdinit=/bin/sh -c 'echo SCOPED-KVM-OK; busybox poweroff -f'" 2>/dev/null </dev/null | grep -q SCOPED-KVM-OK; then
			accel=kvm
		fi
	fi
fi
case "$accel" in
kvm) how="KVM" ;;
tcg)
	how="TCG software emulation"
	if [ "${SCOPED_VM_ACCEL:-auto}" = auto ]; then how="$how (KVM is missing or did not boot a probe guest)"; fi
	;;
*) say "SCOPED_VM_ACCEL must be auto, kvm or tcg"; exit 2 ;;
esac
say "booting Debian kernel $kver with pure cgroup v2${initargs:+ and systemd as init} under $how"
start=$(date +%s)
# A run that hits the time limit is retried once: a TCG guest has been seen
# to stall for good under heavy host load, and a stall is not a test result.
for attempt in 1 2; do
	rm -f "$run/status"
	set +e
	qemu "$accel" "$timeout_s" </dev/null
	rc=$?
	set -e
	if [ $rc -ne 124 ] && [ $rc -ne 137 ]; then
		break
	fi
	say "timed out after $timeout_s s; qemu killed"
	[ $attempt -eq 1 ] && say "retrying once (a stalled emulator is not a test failure)"
done
say "VM run (kernel $kver) took $(( $(date +%s) - start )) s"
status=$(cat "$run/status" 2>/dev/null || echo missing)
rm -rf "$run"
case "$status" in
0) say "tests passed inside the VM (kernel $kver)"; exit 0 ;;
missing) say "the VM (kernel $kver) stopped before the tests finished"; exit 1 ;;
*) say "tests failed inside the VM (kernel $kver)"; exit 1 ;;
esac
