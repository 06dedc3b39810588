#!/usr/bin/env bash
# Installs scoped as a systemd service and checks it under systemd as PID 1:
# run inside the VM of make test-systemd (scripts/vm-test.sh with
# SCOPED_VM_INIT=systemd), in the repository's directory, as root. Never run
# it on a real host: it installs into /etc and /usr/local/bin and kills and
# stops the service.
# Environment:
#   SCOPED_SYSTEMD_BIN  directory with scoped, scoped-exec, scopectl and
#                       bundles/{whoami,spin}, built on the host
#   SCOPED_SYSTEMD_SKIP comma-separated steps not run (e.g. "layout")
# Each step prints "ok STEP" or "FAIL STEP: why"; the script exits non-zero
# if any step failed. The install is README's "Installing on a systemd
# host", plus a test drop-in (WatchdogSec=10s, an ExecStopPost that records
# what the service's cgroup still holds once the daemon has exited).
set -uo pipefail

bin=${SCOPED_SYSTEMD_BIN:?SCOPED_SYSTEMD_BIN: the directory of the binaries built on the host}
skip=",${SCOPED_SYSTEMD_SKIP:-},"
repo=$PWD
rec=/run/scoped-check # what the ExecStopPost of the test drop-in records
svc=/sys/fs/cgroup/system.slice/scoped.service
tenant=acme env=production
begin=$(date +%s)
passed=() failed=() skipped=()

say() { echo "systemd-check: $*"; }
why() { say "  $*"; } # a failing step says why before it returns 1
ctl() { scopectl --timeout 60s "$@"; }
mainpid() { systemctl show -p MainPID --value scoped; }
active() { [ "$(systemctl show -p ActiveState --value scoped)" = active ]; }
# waitfor SECONDS COMMAND...: polls COMMAND every half second.
waitfor() {
	local until=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$until" ] || return 1
		sleep 0.5
	done
}
step() {
	local name=$1 t
	shift
	if [[ $skip == *",$name,"* ]]; then
		skipped+=("$name")
		say "SKIP $name (SCOPED_SYSTEMD_SKIP)"
		return
	fi
	say "--- $name"
	t=$(date +%s)
	if "$@"; then
		passed+=("$name")
		say "ok $name ($(($(date +%s) - t)) s)"
	else
		failed+=("$name")
		say "FAIL $name ($(($(date +%s) - t)) s)"
	fi
}
# procs prints the processes whose executable is one scoped runs: the
# daemon (or its sealed copy), scoped-exec, the bundles' programs.
procs() {
	local p e b
	for p in /proc/[0-9]*; do
		e=$(readlink "$p/exe" 2>/dev/null) || continue
		b=${e##*/} b=${b% (deleted)}
		case "$b" in scoped | scoped-exec | whoami | spin | runc* | memfd:*) echo "${p#/proc/}:$e" ;; esac
	done
}
# workers prints the pids in the cgroups of the tenant's scopes, wherever
# the daemon made them.
workers() {
	find /sys/fs/cgroup -path "*/$tenant/*" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -n
}
bpfprogs() { bpftool prog show 2>/dev/null | grep -E ' name (acct|policy)_' || true; }
invoke() { # invoke EXTENSION PAYLOAD: the result must be the payload's echo
	local out
	out=$(ctl invoke --tenant "$tenant" --env "$env" "$1" --data "$2") || { why "invoke $1 failed"; return 1; }
	case "$out" in *"$2"*) ;; *) why "invoke $1: result without the payload: $out"; return 1 ;; esac
}

boot() {
	say "systemd $(systemctl --version | head -1 | cut -d' ' -f2), uptime $(cut -d' ' -f1 /proc/uptime) s"
	systemd-analyze time 2>&1 | head -1
	systemd-analyze blame --no-pager 2>/dev/null | head -5
	[ "$(readlink /proc/1/exe)" = /usr/lib/systemd/systemd ] || [ "$(readlink /proc/1/exe)" = /lib/systemd/systemd ] ||
		{ why "PID 1 is $(readlink /proc/1/exe)"; return 1; }
	[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { why "/sys/fs/cgroup is no cgroup2"; return 1; }
	command -v bpftool >/dev/null || { why "no bpftool (scripts/deps.sh systemd installs it)"; return 1; }
}

# As README's "Installing on a systemd host", with the binaries of the share.
install_unit() {
	install -m 0755 "$bin/scoped" "$bin/scoped-exec" /usr/local/bin/ &&
		install -m 0755 "$bin/scopectl" /usr/local/bin/ &&
		install -D -m 0644 systemd/scoped.service /etc/systemd/system/scoped.service &&
		install -D -m 0644 systemd/config.toml /etc/scoped/config.toml || return 1
	# The test's drop-in: a shorter watchdog (the unit's 30 s would make the
	# hang check wait that long), and what the service's cgroup still holds
	# once the daemon has exited (systemd removes the cgroup right after,
	# subgroups included, so a leak would not show later).
	mkdir -p /etc/systemd/system/scoped.service.d "$rec"
	cat >/etc/systemd/system/scoped.service.d/vm-test.conf <<-EOF
		[Service]
		WatchdogSec=10s
		ExecStopPost=/bin/sh $rec/stoppost.sh
	EOF
	cat >"$rec/stoppost.sh" <<-EOF
		# The cgroups and processes left in the service's cgroup: but the
		# one this runs in (systemd's .control of a delegated unit), and the
		# daemon's own leaf (supervisor), which it cannot remove while in it.
		{
			echo "result \$SERVICE_RESULT \$EXIT_CODE \$EXIT_STATUS"
			find $svc -mindepth 1 -type d ! -name .control ! -path $svc/supervisor | sed 's/^/cgroup /'
			find $svc -mindepth 1 -name cgroup.procs ! -path '*/.control/*' -exec cat {} + | sed 's/^/pid /'
		} >$rec/stoppost.tmp 2>&1
		mv $rec/stoppost.tmp $rec/stoppost
	EOF
	systemctl daemon-reload && systemctl enable scoped || return 1
	systemctl cat scoped --no-pager | grep -E '^# /(etc|usr|lib)/systemd/'
}

start() {
	local t0=$(date +%s%N)
	timeout 300 systemctl start scoped || { why "systemctl start failed"; systemctl status scoped --no-pager; return 1; }
	# Type=notify: start returns once the daemon said READY=1, after it
	# listens. The socket must answer at once, not after a retry.
	ctl --timeout 5s status || { why "the socket does not answer right after systemctl start returned"; return 1; }
	say "systemctl start took $((($(date +%s%N) - t0) / 1000000)) ms"
	active || { why "not active after start"; return 1; }
	[ "$(systemctl show -p Type --value scoped)" = notify ] || { why "Type is not notify"; return 1; }
	[ "$(systemctl show -p StatusErrno --value scoped)" = 0 ] || return 1
}

deploy() {
	ctl deploy --tenant "$tenant" --env "$env" --name whoami "$bin/bundles/whoami" &&
		ctl deploy --tenant "$tenant" --env "$env" --name spin "$bin/bundles/spin" &&
		ctl deploy --tenant beta --env "$env" --name whoami "$bin/bundles/whoami" || { why "deploy failed"; return 1; }
	invoke whoami hello-acme && invoke spin 20 || return 1
	ctl invoke --tenant beta --env "$env" whoami --data hello-beta | grep -q hello-beta || { why "beta's invoke failed"; return 1; }
	ctl scopes
}

# The delegated subtree (issue 17 point 1): the daemon in its own leaf,
# the scopes under <service>/scopes/<tier>/<tenant>/, nothing outside.
layout() {
	local pid cg ok=0 d
	pid=$(mainpid)
	cg=$(sed -n 's/^0:://p' /proc/"$pid"/cgroup)
	say "daemon (pid $pid) in cgroup $cg"
	[ "$cg" = /system.slice/scoped.service/supervisor ] || { why "the daemon is not in /system.slice/scoped.service/supervisor"; ok=1; }
	d=$(find "$svc/scopes" -mindepth 3 -maxdepth 3 -type d -path "*/standard/$tenant/*" 2>/dev/null | head -1)
	if [ -n "$d" ]; then say "a scope of $tenant: ${d#/sys/fs/cgroup}"; else
		why "no scope cgroup under /system.slice/scoped.service/scopes/standard/$tenant/"
		ok=1
	fi
	[ -z "$(cat "$svc/cgroup.procs")" ] || { why "processes in the service's own cgroup (an inner node): $(cat "$svc/cgroup.procs" | tr '\n' ' ')"; ok=1; }
	[ ! -e /sys/fs/cgroup/scoped ] || { why "/sys/fs/cgroup/scoped exists: scoped's tree is outside its service's subtree"; ok=1; }
	d=$(find /sys/fs/cgroup -type d -name "$tenant" | grep -v "^$svc/scopes/" | head -3)
	[ -z "$d" ] || { why "cgroups of $tenant outside the service's subtree: $d"; ok=1; }
	return $ok
}

cgls() {
	systemd-cgls --no-pager --full --xattr=no | head -80
	systemd-cgls --no-pager -u scoped.service | grep -q scoped
}

# The daemon's lines are in the journal as the service's, natively ([log]
# format = "auto" under systemd): MESSAGE is the message and its key=value
# pairs, every attribute a field of its own (TENANT=...), PRIORITY the
# slog level's.
journal() {
	local j
	j=$(journalctl -u scoped -o json --no-pager) || return 1
	echo "$j" | jq -c 'select(.MESSAGE | test("scope created")) | {MESSAGE, TENANT, PRIORITY, _SYSTEMD_UNIT, _PID}' | head -2
	echo "$j" | jq -e -s 'any(.[]; .MESSAGE | test("^scoped ready"))' >/dev/null ||
		{ why "no 'scoped ready' line in the journal of scoped.service"; return 1; }
	echo "$j" | jq -e -s 'any(.[]; (.MESSAGE | test("^scope created")) and .TENANT == "'$tenant'" and .PRIORITY == "6" and ._SYSTEMD_UNIT == "scoped.service")' >/dev/null ||
		{ why "no 'scope created' line with the field TENANT=$tenant and PRIORITY=6 from scoped.service"; return 1; }
	say "journal fields of a daemon line: $(echo "$j" | jq -r -s '[.[] | select(.MESSAGE | test("scope created"))][0] | keys | map(select(startswith("_") | not)) | join(" ")')"
	say "the daemon's lines by PRIORITY: $(echo "$j" | jq -r -s '[.[] | select(.SYSLOG_IDENTIFIER == "scoped") | .PRIORITY] | group_by(.) | map("\(.[0])×\(length)") | join(" ")')"
}

# reload: a changed tier applies (SIGHUP through ExecReload); a broken
# configuration is refused and the old one stays in force.
weight() { # the cpu.weight of the tenant's cgroup, wherever it is
	local d
	d=$(find /sys/fs/cgroup -type d -path "*/standard/$tenant" | head -1)
	[ -n "$d" ] && cat "$d/cpu.weight"
}
tierweight() { ctl -o json tenant get "$tenant" | jq -r '.. | objects | .cpuWeight? // empty' | head -1; }
reload() {
	local pid w
	pid=$(mainpid)
	say "tenant $tenant: cgroup cpu.weight $(weight), tier's cpu_weight $(tierweight)"
	sed -i '/^\[tiers.standard\]/,/^\[/ s/^cpu_weight = 100 /cpu_weight = 300 /' /etc/scoped/config.toml
	grep -q '^cpu_weight = 300 ' /etc/scoped/config.toml || { why "could not edit the config"; return 1; }
	systemctl reload scoped || { why "systemctl reload failed"; return 1; }
	waitfor 30 sh -c "[ \"\$(find /sys/fs/cgroup -type d -path '*/standard/$tenant' -exec cat {}/cpu.weight \;)\" = 300 ]" ||
		{ why "the tenant's cpu.weight is $(weight), not 300, after the reload"; return 1; }
	w=$(tierweight)
	say "after the reload: cgroup cpu.weight $(weight), tier's cpu_weight $w"
	[ "$w" = 300 ] || { why "scopectl shows cpu_weight $w"; return 1; }
	# A broken file: refused, the old configuration stays, the daemon serves.
	cp /etc/scoped/config.toml "$rec/config.good"
	echo 'this is [not toml' >>/etc/scoped/config.toml
	systemctl reload scoped || { why "systemctl reload (broken config) failed"; return 1; }
	waitfor 30 sh -c "journalctl -u scoped --no-pager -o cat | grep -q 'reload failed'" ||
		{ why "no 'reload failed' in the journal"; return 1; }
	journalctl -u scoped --no-pager -o cat | grep 'reload failed' | tail -1
	active && [ "$(mainpid)" = "$pid" ] || { why "the daemon did not survive a broken config"; return 1; }
	[ "$(weight)" = 300 ] && [ "$(tierweight)" = 300 ] || { why "the configuration in force changed"; return 1; }
	invoke whoami after-broken-reload || return 1
	cp "$rec/config.good" /etc/scoped/config.toml
}

# kill -9: systemd restarts the daemon (Restart=on-failure), which removes
# what the old one left and serves.
kill9() {
	local pid n old p
	pid=$(mainpid) n=$(systemctl show -p NRestarts --value scoped)
	old=$(workers | tr '\n' ' ')
	say "daemon $pid, restarts $n, its tenant's workers: $old"
	[ -n "$old" ] || { why "no worker of $tenant to leave behind"; return 1; }
	kill -9 "$pid"
	waitfor 90 sh -c "[ \"\$(systemctl show -p MainPID --value scoped)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value scoped)\" != 0 ] && [ \"\$(systemctl show -p ActiveState --value scoped)\" = active ]" ||
		{ why "not restarted: $(systemctl show -p ActiveState -p SubState -p MainPID scoped | tr '\n' ' ')"; return 1; }
	say "restarted: daemon $(mainpid), restarts $(systemctl show -p NRestarts --value scoped)"
	[ "$(systemctl show -p NRestarts --value scoped)" -gt "$n" ] || { why "NRestarts did not grow"; return 1; }
	invoke whoami after-kill9 || return 1
	for p in $old; do
		waitfor 30 sh -c "! kill -0 $p 2>/dev/null" || { why "worker $p of the killed daemon is still alive"; return 1; }
	done
}

# A hung daemon: SIGSTOP; the watchdog (WatchdogSec=10s in the drop-in)
# has systemd kill it (SIGABRT) and start a new one.
hang() {
	local pid n
	pid=$(mainpid) n=$(systemctl show -p NRestarts --value scoped)
	kill -STOP "$pid"
	waitfor 120 sh -c "[ \"\$(systemctl show -p MainPID --value scoped)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value scoped)\" != 0 ] && [ \"\$(systemctl show -p ActiveState --value scoped)\" = active ]" ||
		{ why "not restarted: $(systemctl show -p ActiveState -p SubState -p Result scoped | tr '\n' ' ')"; return 1; }
	journalctl -u scoped --no-pager -o cat | grep -i 'watchdog timeout' | tail -1
	journalctl -u scoped --no-pager -o cat | grep -qi 'watchdog timeout' || { why "no watchdog timeout in the journal"; return 1; }
	[ "$(systemctl show -p NRestarts --value scoped)" -gt "$n" ] || { why "NRestarts did not grow"; return 1; }
	waitfor 30 sh -c "! kill -0 $pid 2>/dev/null" || { why "the hung daemon $pid is still there"; return 1; }
	invoke whoami after-watchdog
}

# stop: an invocation in flight completes (drain), then nothing is left.
stop() {
	local left inflight pid out
	invoke whoami before-stop || return 1
	[ -n "$(bpfprogs)" ] || say "  (no accounting BPF program loaded while running: [accounting] mode auto fell back?)"
	bpfprogs | head -3
	rm -f "$rec/stoppost"
	out=$rec/inflight
	ctl invoke --tenant "$tenant" --env "$env" spin --data 1500 >"$out" 2>&1 &
	inflight=$!
	waitfor 60 sh -c "scopectl -o json scopes --tenant $tenant | jq -e '[.. | objects | select(has(\"inFlight\")) | .inFlight] | any(. > 0)' >/dev/null" ||
		{ why "the invocation to drain never got in flight: $(cat "$out")"; return 1; }
	timeout 120 systemctl stop scoped || { why "systemctl stop failed"; return 1; }
	wait "$inflight" || { why "the invocation in flight failed: $(cat "$out")"; return 1; }
	grep -q 1500 "$out" || { why "the invocation in flight returned: $(cat "$out")"; return 1; }
	left=0
	[ "$(systemctl show -p Result --value scoped)" = success ] || { why "Result=$(systemctl show -p Result --value scoped)"; left=1; }
	journalctl -u scoped --no-pager -o cat | tail -3
	journalctl -u scoped --no-pager -o cat | tail -5 | grep -q '^stopped\( \|$\)\|msg=stopped\|"msg":"stopped"' || { why "the daemon did not log 'stopped' (its cleanup failed)"; left=1; }
	say "ExecStopPost saw: $(tr '\n' ';' <"$rec/stoppost" 2>/dev/null)"
	grep -q '^result success exited 0' "$rec/stoppost" || { why "ExecStopPost: no clean exit"; left=1; }
	grep -q '^cgroup \|^pid ' "$rec/stoppost" && { why "left in the service's cgroup when the daemon had exited"; left=1; }
	[ ! -e /sys/fs/cgroup/scoped ] || { why "/sys/fs/cgroup/scoped is still there"; left=1; }
	[ -z "$(find /sys/fs/cgroup -type d -name "$tenant")" ] || { why "a cgroup of $tenant is left: $(find /sys/fs/cgroup -type d -name "$tenant")"; left=1; }
	[ -z "$(procs)" ] || { why "processes left: $(procs | tr '\n' ' ')"; left=1; }
	[ -z "$(bpfprogs)" ] || { why "BPF programs left: $(bpfprogs | tr '\n' ' ')"; left=1; }
	[ -z "$(ls /sys/fs/bpf)" ] || { why "pinned in /sys/fs/bpf: $(ls /sys/fs/bpf)"; left=1; }
	[ ! -e /run/scoped ] || { why "/run/scoped is left"; left=1; }
	return $left
}

cd "$repo" || exit 1
step boot boot
step install install_unit
step start start || true
if active; then
	step deploy deploy
	step layout layout
	step cgls cgls
	step journal journal
	step reload reload
	step kill9 kill9
	step watchdog hang
	step stop stop
else
	failed+=("the rest (scoped is not active)")
fi
say "passed: ${passed[*]:-none}"
[ ${#skipped[@]} -eq 0 ] || say "skipped: ${skipped[*]}"
say "took $(($(date +%s) - begin)) s (uptime $(cut -d' ' -f1 /proc/uptime) s)"
if [ ${#failed[@]} -gt 0 ]; then
	say "FAILED: ${failed[*]}"
	exit 1
fi
