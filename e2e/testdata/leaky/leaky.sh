#!/bin/sh
# leaky: an exec-runtime extension that misbehaves on request (e2e tests).
# The payload is a command and an argument:
#   ok         print ok
#   leave      leave sleepers behind: one in a session of its own (setsid),
#              one orphaned by a double fork, one in the program's group
#   bomb MIN   start a fork bomb in a session of its own whose processes
#              stay (each forks twice, then becomes a sleep); wait, with
#              shell builtins only (forks fail at pids.max), until at least
#              MIN processes are visible and their number stopped changing
#   hang       leave sleepers behind, then sleep past any deadline
#   oom        grow the shell's own memory until the OOM killer kills it
# Background processes do not hold stdout or stderr: the worker waits for
# those to close.
read -r cmd arg || true
leave() {
	setsid sleep 600 </dev/null >/dev/null 2>&1 &
	(sleep 600 </dev/null >/dev/null 2>&1 &)
	sleep 600 </dev/null >/dev/null 2>&1 &
}
case "$cmd" in
ok)
	echo ok
	;;
leave)
	leave
	echo left
	;;
bomb)
	setsid sh -c 'b() { b & b & exec sleep 600; }; b' </dev/null >/dev/null 2>&1 &
	prev=0 same=0 i=0
	while [ "$i" -lt 50000 ]; do
		i=$((i + 1))
		set -- /proc/[0-9]*
		if [ "$#" -ge "$arg" ] && [ "$#" -eq "$prev" ]; then
			same=$((same + 1))
			[ "$same" -ge 300 ] && break
		else
			same=0
		fi
		prev=$#
	done
	echo "$# processes"
	;;
hang)
	leave
	exec sleep 600
	;;
oom)
	x=$(head -c 2000000000 /dev/zero | tr '\0' x)
	echo "survived with ${#x} bytes"
	;;
*)
	echo "unknown command: $cmd" >&2
	exit 2
	;;
esac
