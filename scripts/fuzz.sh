#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func FuzzXxx(f *testing.F)` in
# a _test.go file, found with grep, so that a new target is never left out)
# for FUZZTIME each. go test -fuzz takes one target per run, so each
# package's test binary is built once with the fuzzing instrumentation and
# run once per target, in the package's directory: a failing input is
# written to <pkg>/testdata/fuzz/<FuzzXxx>/<id>, where plain `go test`
# runs it as a regression case from then on (commit it with the fix).
#
#   FUZZTIME       how long each target runs (default 5s; go's -fuzztime:
#                  a duration, or Nx for N inputs)
#   FUZZ_PARALLEL  fuzzing worker processes per target (default 2)
#   FUZZ           run only the targets whose name matches this regexp
#   GO             the go command (default go)
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
FUZZ_PARALLEL=${FUZZ_PARALLEL:-2}
FUZZ=${FUZZ:-.}
export CGO_ENABLED=1

out=$(mktemp -d)
chmod 0711 "$out" # the supervisor refuses state and runtime dirs the sandboxes cannot reach
trap 'rm -rf "$out"' EXIT
# The targets' temporary directories: a worker still busy when its time is
# up is killed before it removes its own.
mkdir "$out/t"
export TMPDIR="$out/t"
cache="$($GO env GOCACHE)/fuzz"
module=$($GO list -m)

# pkg dir → its targets, in file order.
declare -A targets
while IFS=: read -r file line; do
	name=${line#func }
	name=${name%%(*}
	[[ $name =~ $FUZZ ]] || continue
	dir=$(dirname "$file")
	targets[$dir]+="$name "
done < <(git ls-files -z -co --exclude-standard '*_test.go' | xargs -0 grep -H -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' | sort -t: -k1,1 -s)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no target matches $FUZZ" >&2
	exit 1
fi

# count_inputs prints how many inputs a target's testdata directory holds.
count_inputs() {
	if [ -d "$1" ]; then
		find "$1" -type f | wc -l
	else
		echo 0
	fi
}

failed=()
n=0
start=$SECONDS
for dir in $(printf '%s\n' "${!targets[@]}" | sort); do
	pkg=${dir#./}
	bin="$out/$(echo "$pkg" | tr / _).test"
	$GO test -tags seccomp -c -fuzz=. -o "$bin" "./$pkg"
	for name in ${targets[$dir]}; do
		n=$((n + 1))
		echo "fuzz: $pkg $name ($FUZZTIME)"
		# No minimizing in a bounded run: go's fuzzer reports a
		# minimization cut short by -fuzztime as a failure ("context
		# deadline exceeded", no input); a crasher is kept unminimized.
		# A failure that wrote no input is that engine's, not the code's:
		# it is run once more.
		for try in 1 2; do
			inputs=$(count_inputs "$pkg/testdata/fuzz/$name")
			if (cd "$pkg" && "$bin" -test.run='^$' -test.fuzz="^$name\$" -test.fuzztime="$FUZZTIME" \
				-test.fuzzminimizetime=0 -test.parallel="$FUZZ_PARALLEL" -test.fuzzcachedir="$cache/$module/$pkg"); then
				break
			fi
			if [ "$try" = 2 ] || [ "$(count_inputs "$pkg/testdata/fuzz/$name")" != "$inputs" ]; then
				failed+=("$pkg $name")
				break
			fi
			echo "fuzz: $pkg $name failed without an input (the fuzzing engine's); once more"
		done
	done
done

echo "fuzz: $n targets in $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	echo "fuzz: the failing inputs are in <pkg>/testdata/fuzz/<target>/; 'go test -run <target>/<id> ./<pkg>' replays one" >&2
	exit 1
fi
