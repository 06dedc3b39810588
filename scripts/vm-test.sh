#!/usr/bin/env bash
# Runs test binaries inside a VM booted from Debian's kernel with a pure
# cgroup v2 hierarchy (no v1 controllers), sharing this host's root file
# system read-only over 9p. Streams the output and exits with the tests'
# status. Usage: scripts/vm-test.sh WORKDIR TEST_BINARY[@DIR]...
#   Each test binary runs in DIR (its package's source directory), or in its
#   own directory when no DIR is given.
#   WORKDIR holds the kernel cache and is shared read-write for results.
#   SCOPED_VM_ACCEL=auto|kvm|tcg (default auto: KVM if a probe boots, else TCG)
#   SCOPED_VM_TIMEOUT=seconds for one run (default 600; a timed-out run is
#     retried once)
#   SCOPED_VM_TESTFLAGS=flags passed to every test binary
#   SCOPED_VM_ENV="K=V ..." environment of the test binaries
#   SCOPED_VM_SHARE=directory shown at its own path in the VM even where the
#     VM mounts a tmpfs (/tmp, /run); default the current directory, which
#     must hold WORKDIR and the test binaries
set -euo pipefail

work=$(realpath "$1"); shift
share=$(realpath "${SCOPED_VM_SHARE:-$PWD}")
case "$work/" in "$share"/*) ;; *) echo "vm-test: WORKDIR $work is not inside $share" >&2; exit 2 ;; esac
[ $# -gt 0 ] || { echo "usage: $0 WORKDIR TEST_BINARY..." >&2; exit 2; }
accel=${SCOPED_VM_ACCEL:-auto}
timeout_s=${SCOPED_VM_TIMEOUT:-600}
testflags=${SCOPED_VM_TESTFLAGS:-}
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

# --- Debian's kernel, unpacked into the cache (not installed) ------------
kdir=$work/kernel
if [ ! -f "$kdir/ok" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update -qq >/dev/null
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
	fi
	[ -n "$pkg" ] || { say "cannot find Debian's linux-image-amd64 package"; exit 1; }
	say "fetching $pkg"
	rm -rf "$kdir"; mkdir -p "$kdir/deb"
	(cd "$kdir/deb" && apt-get download "$pkg" >/dev/null 2>&1)
	dpkg-deb -x "$kdir"/deb/*.deb "$kdir/x"
	rm -rf "$kdir/deb"
	touch "$kdir/ok"
fi
vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
mods=$kdir/x/lib/modules/$kver/kernel

# --- initramfs: busybox, the 9p/virtio/overlay and network modules, /init -
ird=$(mktemp -d "$work/initramfs.XXXXXX")
trap 'rm -rf "$ird" "$ird.cpio.gz"' EXIT
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
	drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache \
	net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p fs/overlayfs/overlay \
	crypto/crc32c_generic lib/libcrc32c net/ipv4/netfilter/nf_defrag_ipv4 net/ipv6/netfilter/nf_defrag_ipv6 \
	net/netfilter/nf_conntrack net/netfilter/nf_nat net/netfilter/nfnetlink net/netfilter/nf_tables \
	net/netfilter/nft_ct net/netfilter/nft_chain_nat net/netfilter/nft_masq \
	net/llc/llc net/802/stp net/bridge/bridge drivers/net/veth net/sched/sch_tbf; do
	cp "$mods/$m.ko" "$ird/modules/"
	echo "${m##*/}" >>"$ird/modules/order"
done
# The test list and the flags travel in a file on the work share.
run=$work/run
mkdir -p "$run"
printf '%s\n' "$@" >"$run/tests"
echo "$testflags" >"$run/flags"
: >"$run/env"
for kv in ${SCOPED_VM_ENV:-}; do echo "export $kv" >>"$run/env"; done
rm -f "$run/status"
cat >"$ird/init" <<'INIT'
#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t devtmpfs dev /dev
for m in $(busybox cat /modules/order); do busybox insmod /modules/$m.ko || echo "insmod $m failed"; done
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /newroot || { echo "cannot mount host root"; busybox poweroff -f; }
arg() { busybox cat /proc/cmdline | busybox sed -n "s/.*scoped.$1=\([^ ]*\).*/\1/p"; }
work=$(arg work)
share=$(arg share)
busybox mount -t proc proc /newroot/proc
busybox mount -t sysfs sys /newroot/sys
busybox mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup
busybox mount -t bpf bpf /newroot/sys/fs/bpf 2>/dev/null
busybox mount -t devtmpfs dev /newroot/dev
busybox mkdir -p /newroot/dev/pts /newroot/dev/shm
busybox mount -t devpts devpts /newroot/dev/pts
busybox mount -t tmpfs shm /newroot/dev/shm
for d in tmp run var/tmp; do busybox mount -t tmpfs -o mode=1777 tmpfs /newroot/$d; done
busybox mount -t tmpfs -o mode=0700 tmpfs /newroot/root
# The project directory, again at its own path (it may sit below /tmp), and
# the work directory in it, writable.
busybox mkdir -p /newroot$share
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 share /newroot$share || echo "cannot mount $share"
busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /newroot$work || echo "cannot mount work share"
busybox hostname scoped-vm
busybox ip link set lo up
echo "vm: kernel $(busybox uname -r), cgroup2 only, controllers: $(busybox cat /newroot/sys/fs/cgroup/cgroup.controllers)"
# switch_root, not chroot: the kernel refuses new user namespaces to a
# chrooted task, and every sandbox needs one.
exec busybox switch_root /newroot /bin/sh -c '
	export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
	. "$1/run/env"
	status=0
	for t in $(cat "$1/run/tests"); do
		bin=${t%%@*} dir=${t#*@}
		[ "$dir" = "$t" ] && dir=$(dirname "$bin")
		echo "=== vm: $bin (in $dir)"
		if ( cd "$dir" && "$bin" $(cat "$1/run/flags") ); then
			echo "=== vm: ok $bin"
		else
			echo "=== vm: FAIL $bin"
			status=1
		fi
	done
	echo "$status" > "$1/run/status"
	sync
	/bin/busybox poweroff -f
' - "$work"
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
		-append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all scoped.work=$work scoped.share=$share $*" \
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
say "booting Debian kernel $kver with pure cgroup v2 under $how"
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
say "VM run took $(( $(date +%s) - start )) s"
status=$(cat "$run/status" 2>/dev/null || echo missing)
rm -rf "$run"
case "$status" in
0) say "tests passed inside the VM"; exit 0 ;;
missing) say "the VM stopped before the tests finished"; exit 1 ;;
*) say "tests failed inside the VM"; exit 1 ;;
esac
