#!/bin/bash
# Runs the end-to-end suites once per Spilo generation, the generations at
# the same time (each has its own names, networks and addresses), and
# fails if any fails. Usage: testimage/e2e.sh LOGDIR TAG...
set -uo pipefail
logs=$1
shift
mkdir -p "$logs"
start=$(date +%s)
declare -A pids
for tag in "$@"; do
	echo "e2e: Spilo $tag -> $logs/$tag.log"
	NODEHA_E2E_SPILO=$tag go test -tags e2e -count=1 -v -timeout 80m ./e2e >"$logs/$tag.log" 2>&1 &
	pids[$tag]=$!
done
rc=0
for tag in "$@"; do
	if wait "${pids[$tag]}"; then
		echo "e2e: Spilo $tag: PASS"
	else
		rc=1
		echo "e2e: Spilo $tag: FAIL; the failures:"
		grep -E -- '^\s*(--- FAIL|FAIL|panic:)|_test\.go:[0-9]+:' "$logs/$tag.log" | head -80
		echo "e2e: ... full log: $logs/$tag.log (last 60 lines below)"
		tail -n 60 "$logs/$tag.log"
	fi
	grep -E -- '^(--- |ok |PASS|FAIL)' "$logs/$tag.log" | sed "s/^/e2e[$tag]: /"
done
echo "e2e: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
exit $rc
