#!/usr/bin/env bash
# quiet-runs.sh N BENCHTIME REGEX: runs the benchmarks matching REGEX N times,
# each run started once the CPUs were at least 90% idle over one second (or
# after waiting 20 s), and prints the benchmark lines, for benchstat. On a
# machine shared with other work this gives figures closer to the code's own
# cost than one long run does. Linux only (reads /proc/stat).
set -euo pipefail
n=${1:-16} benchtime=${2:-300ms} regex=${3:-.}
cd "$(dirname "$0")"
bin=$(mktemp -d)/bench.test
go test -c -o "$bin" .

idle() { # percent of CPU time idle over one second
	local a b
	read -r -a a < /proc/stat
	sleep 1
	read -r -a b < /proc/stat
	local total=0 i
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	echo $((100 * (b[4] + b[5] - a[4] - a[5]) / (total > 0 ? total : 1)))
}

for _ in $(seq "$n"); do
	for _ in $(seq 20); do
		[ "$(idle)" -ge 90 ] && break
	done
	"$bin" -test.run '^$' -test.bench "$regex" -test.benchtime="$benchtime" -test.benchmem | grep '^Benchmark'
done
rm -f "$bin"
