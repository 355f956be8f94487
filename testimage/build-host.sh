#!/bin/bash
# Builds the local image nodeha-host-test:bookworm: a Debian bookworm machine
# with systemd as PID 1 and Debian's cloud-init, used by the end-to-end tests
# of `nodeha install` (systemd) and `nodeha cloud-init` (real cloud-init,
# NoCloud seed directory). No registry: debootstrap + docker import.
#
# It also carries the checkers the tests run: systemd-analyze (verify the
# unit), cloud-init (schema of the user-data) and Debian's Prometheus
# (promtool checks the alert rules; prometheus scrapes the test hosts in the
# metrics test, its service masked so systemd hosts do not start it), so CI
# needs none of them; and Debian's HAProxy (masked too), which the
# benchmark puts beside nodeha's client endpoint for comparison.
#
# There is no dockerd in it: hosts use the machine's engine through the
# mounted socket, and host/docker.service is a stub standing in for Debian's
# docker.service (active when /var/run/docker.sock exists).
#
# Usage: testimage/build-host.sh [--force] [--image NAME:TAG]
set -euo pipefail

IMAGE=nodeha-host-test:bookworm
FORCE=0
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
LABEL_KEY=nodeha.testimage.hash

while [ $# -gt 0 ]; do
	case "$1" in
	--force) FORCE=1 ;;
	--image) IMAGE=$2; shift ;;
	--image=*) IMAGE=${1#--image=} ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "build-host.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FILES=(build-host.sh host/docker.service host/99-nodeha-test.cfg)
HASH=$(cd "$HERE" && sha256sum "${FILES[@]}" | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ]; then
	have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$IMAGE" 2>/dev/null || true)
	if [ "$have" = "$HASH" ]; then
		echo "$IMAGE up to date ($LABEL_KEY=$HASH)"
		exit 0
	fi
fi

for tool in debootstrap docker tar; do
	command -v "$tool" >/dev/null || { echo "build-host.sh: $tool not found (apt-get install -y debootstrap)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-host.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/nodeha-hostimage.XXXXXX")
ROOT=$WORK/rootfs
cleanup() {
	local rc=$?
	for m in "$ROOT/proc" "$ROOT/sys"; do
		if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
	done
	if grep -q " $WORK/" /proc/mounts; then
		echo "build-host.sh: mounts left under $WORK, not removing it" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
in_root() { LC_ALL=C LANG=C DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

start=$(date +%s)
echo "== debootstrap $SUITE (minbase) into $ROOT"
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,ca-certificates,curl,iproute2,procps \
	"$SUITE" "$ROOT" "$MIRROR"
mount -t proc proc "$ROOT/proc"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

echo "== apt-get install cloud-init"
# python3-jsonschema: `cloud-init schema` validates with it (a Recommends).
in_root apt-get install -y -q --no-install-recommends cloud-init python3-jsonschema

echo "== apt-get install prometheus haproxy"
in_root apt-get install -y -q --no-install-recommends prometheus haproxy
in_root systemctl mask prometheus.service haproxy.service >/dev/null

echo "== configure systemd and cloud-init for a container"
install -m 0644 "$HERE/host/docker.service" "$ROOT/etc/systemd/system/docker.service"
in_root systemctl enable docker.service
install -m 0644 "$HERE/host/99-nodeha-test.cfg" "$ROOT/etc/cloud/cloud.cfg.d/99-nodeha-test.cfg"
# Units that have no business in a container (no consoles, no udev, no
# kernel file systems to mount).
for u in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
	systemd-udevd-control.socket systemd-udevd-kernel.socket dev-hugepages.mount \
	sys-fs-fuse-connections.mount sys-kernel-config.mount sys-kernel-debug.mount \
	sys-kernel-tracing.mount systemd-remount-fs.service systemd-firstboot.service \
	systemd-modules-load.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
	fstrim.timer; do
	in_root systemctl mask "$u" >/dev/null 2>&1 || true
done
# A machine id is generated at first boot, as on a fresh VM.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

echo "== checks"
in_root systemd --version | head -1
in_root cloud-init --version
in_root python3 -c 'import jsonschema'
in_root promtool --version | head -1
in_root haproxy -v | head -1

echo "== trim"
in_root apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
	"$ROOT"/var/log/apt/* "$ROOT"/var/log/dpkg.log "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
	"$ROOT"/var/lib/cloud/*
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/hostname"
umount "$ROOT/proc"

echo "== docker import $IMAGE"
tar -C "$ROOT" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
	docker import \
		--change 'ENV container=docker' \
		--change 'CMD ["/sbin/init"]' \
		--change "LABEL $LABEL_KEY=$HASH" \
		--message "nodeha systemd + cloud-init test host (Debian $SUITE)" \
		- "$IMAGE"

echo "== built $IMAGE in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
