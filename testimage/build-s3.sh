#!/bin/bash
# Builds the local image nodeha-s3-test:v1.8.0: Versity S3 Gateway
# (github.com/versity/versitygw, Apache-2.0), a real S3-compatible server,
# for the end-to-end tests of backups (its posix backend over a directory).
# No registry: `go install` from the Go module proxy, then the static
# binary alone in a tar (FROM scratch style) and docker import.
#
# The image holds /versitygw (ENTRYPOINT), an empty /tmp and /data (where
# the tests mount the backend's directory). Needs Go and Docker, not root.
#
# Usage: testimage/build-s3.sh [--force] [--image NAME:TAG]
set -euo pipefail
trap 'echo "build-s3.sh: line $LINENO: $BASH_COMMAND failed" >&2' ERR

VERSION=v1.8.0
PKG=github.com/versity/versitygw/cmd/versitygw
IMAGE=nodeha-s3-test:$VERSION
FORCE=0
LABEL_KEY=nodeha.testimage.hash

while [ $# -gt 0 ]; do
	case "$1" in
	--force) FORCE=1 ;;
	--image) IMAGE=$2; shift ;;
	--image=*) IMAGE=${1#--image=} ;;
	-h | --help) sed -n '2,11p' "$0"; exit 0 ;;
	*) echo "build-s3.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The script names the version and every build setting: its hash is the
# image's.
HASH=$(cd "$HERE" && sha256sum build-s3.sh | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ]; then
	have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$IMAGE" 2>/dev/null || true)
	if [ "$have" = "$HASH" ]; then
		echo "$IMAGE up to date ($LABEL_KEY=$HASH)"
		exit 0
	fi
fi

for tool in go docker tar; do
	command -v "$tool" >/dev/null || { echo "build-s3.sh: $tool not found" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/nodeha-s3image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs

start=$(date +%s)
echo "== go install $PKG@$VERSION"
# Outside any module (the repository's go.mod has no say), static, with
# the version --version prints (versitygw's Makefile sets it the same way).
(
	cd "$WORK"
	CGO_ENABLED=0 GOBIN="$WORK/bin" GOFLAGS=-trimpath go install \
		-ldflags "-s -w -X main.Version=$VERSION" "$PKG@$VERSION"
)
BIN=$WORK/bin/versitygw
if ldd "$BIN" >/dev/null 2>&1; then
	echo "build-s3.sh: $BIN is not static" >&2; exit 1
fi
ver=$("$BIN" --version)
grep -q "^Version *: $VERSION\$" <<<"$ver" || { echo "build-s3.sh: $BIN --version says $ver, want $VERSION" >&2; exit 1; }

echo "== rootfs"
install -d -m 0755 "$ROOT" "$ROOT/data"
install -d -m 1777 "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/versitygw"

echo "== docker import $IMAGE"
tar -C "$ROOT" --numeric-owner --owner=0 --group=0 -c . |
	docker import \
		--change 'ENTRYPOINT ["/versitygw"]' \
		--change 'EXPOSE 7070' \
		--change "LABEL $LABEL_KEY=$HASH" \
		--change "LABEL io.nodeha.versitygw-version=$VERSION" \
		--message "nodeha S3 test server: Versity S3 Gateway $VERSION" \
		- "$IMAGE"
ver=$(docker run --rm --network none "$IMAGE" --version)
grep -q "^Version *: $VERSION\$" <<<"$ver" || { echo "build-s3.sh: $IMAGE --version says $ver, want $VERSION" >&2; exit 1; }

echo "== built $IMAGE in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
