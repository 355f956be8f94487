#!/bin/bash
# Installs what the test image builds need when it is missing: debootstrap
# (and make, tar). With apt and root it installs them; otherwise it says
# exactly what to install and fails.
set -euo pipefail
need=()
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v tar >/dev/null || need+=(tar)
command -v docker >/dev/null || { echo "deps: docker not found: install Docker Engine first (Debian: apt-get install docker.io)" >&2; exit 1; }
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "deps: installing ${need[*]} (apt-get)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	exit 0
fi
if command -v apt-get >/dev/null; then
	echo "deps: the test images need ${need[*]}: run \`sudo apt-get install -y ${need[*]}\`, then make again" >&2
else
	echo "deps: the test images need ${need[*]} (Debian's debootstrap); install it with your package manager, then make again" >&2
fi
exit 1
