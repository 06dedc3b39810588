#!/bin/sh
# forkstorm: an exec-runtime extension for fairbench's noisy-neighbour
# scenario. Every round forks two short-lived processes (/bin/true, through
# the sandbox's read-only /usr) and waits for both. The payload, on stdin,
# is the number of rounds; 0 or none runs until the invocation is cancelled
# or times out (the exec runtime then kills the script's process group).
# It prints the rounds it ran.
n=$(head -c 32)
case $n in
'') n=0 ;;
*[!0-9]*)
	echo "forkstorm: the payload must be a whole number of rounds" >&2
	exit 2
	;;
esac
i=0
while [ "$n" -eq 0 ] || [ "$i" -lt "$n" ]; do
	/bin/true &
	/bin/true &
	wait
	i=$((i + 1))
done
echo "$i"
