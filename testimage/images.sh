#!/bin/bash
# Builds the Spilo test images of the given tags at the same time (each is
# cached: an up-to-date image is not rebuilt), reading each tag's files
# from SPILO_ROOT/<tag>. Usage: SPILO_ROOT=DIR testimage/images.sh TAG...
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${SPILO_ROOT:-$HERE/../../shared/spilo}
logs=$(mktemp -d "${TMPDIR:-/tmp}/nodeha-images.XXXXXX")
declare -A pids
for tag in "$@"; do
	SPILO_SRC=$root/$tag bash "$HERE/build.sh" --tag "$tag" >"$logs/$tag.log" 2>&1 &
	pids[$tag]=$!
done
rc=0
for tag in "$@"; do
	if wait "${pids[$tag]}"; then
		tail -n 1 "$logs/$tag.log"
	else
		rc=1
		echo "images: building the $tag image failed; the end of its log ($logs/$tag.log):" >&2
		tail -n 30 "$logs/$tag.log" >&2
	fi
done
[ $rc = 0 ] && rm -rf "$logs"
exit $rc
