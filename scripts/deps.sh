#!/usr/bin/env bash
# Makes sure the system packages scoped needs are installed. As root on
# Debian/Ubuntu it installs what is missing; elsewhere it prints the exact
# command and fails. Usage: scripts/deps.sh build|bench|generate|systemd
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want() { for p in "$@"; do have_pkg "$p" || need+=("$p"); done; }

case "${1:-build}" in
build) want gcc libc6-dev pkg-config libseccomp-dev ;;
bench) want gcc libc6-dev pkg-config libseccomp-dev bubblewrap runc ;;
generate) want protobuf-compiler clang-14 llvm-14 libbpf-dev gcc libc6-dev ;; # versions: scripts/gencheck.sh
# make test-systemd: systemd as the VM's init (the host's own), and what
# scripts/systemd-check.sh runs in it.
systemd) want systemd bpftool jq ;;
*) echo "usage: $0 build|bench|generate|systemd" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "scoped needs Go 1.26 or later on PATH (https://go.dev/doc/install)" >&2; exit 1; }
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
	echo "missing system packages: ${need[*]} (install their equivalents with your package manager)" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing system packages; run: sudo apt-get install -y ${need[*]}" >&2
	exit 1
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${need[@]}" >/dev/null
}
