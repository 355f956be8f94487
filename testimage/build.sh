#!/bin/bash
# Builds the local test image nodeha-spilo-test:15 from Debian bookworm
# packages, with no container registry: debootstrap + docker import.
# See README.md in this directory.
#
# Usage: testimage/build.sh [--force] [--image NAME:TAG]
set -euo pipefail

IMAGE=nodeha-spilo-test:15
FORCE=0
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
PGVERSION=15
PG_UID=101 # uid and gid of postgres in the published Spilo images:
PG_GID=103 # nodeha chowns host directories to 101:103.
LABEL_KEY=nodeha.testimage.hash

while [ $# -gt 0 ]; do
	case "$1" in
	--force) FORCE=1 ;;
	--image) IMAGE=$2; shift ;;
	--image=*) IMAGE=${1#--image=} ;;
	-h | --help) sed -n '2,6p' "$0"; exit 0 ;;
	*) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Everything that ends up in the image, or decides how it is built.
FILES=(build.sh launch.sh scripts/post_init.sh scripts/on_role_change.sh scripts/basebackup.sh)

HASH=$(cd "$HERE" && sha256sum "${FILES[@]}" | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ]; then
	have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$IMAGE" 2>/dev/null || true)
	if [ "$have" = "$HASH" ]; then
		echo "$IMAGE up to date ($LABEL_KEY=$HASH)"
		exit 0
	fi
fi

for tool in debootstrap docker tar; do
	command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (apt-get install -y debootstrap)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/nodeha-testimage.XXXXXX")
ROOT=$WORK/rootfs

cleanup() {
	local rc=$?
	for m in "$ROOT/proc" "$ROOT/sys"; do
		if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
	done
	# Never rm -rf across a mount point still in place.
	if grep -q " $WORK/" /proc/mounts; then
		echo "build.sh: mounts left under $WORK, not removing it" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT

in_root() { LC_ALL=C LANG=C DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

start=$(date +%s)
echo "== debootstrap $SUITE (minbase) into $ROOT"
# Stage 1: the base system, without PostgreSQL, so that the postgres user and
# the "no main cluster" setting are in place before postgresql-common runs.
debootstrap --variant=minbase \
	--include=ca-certificates,openssl,locales,tzdata,procps,iproute2,dumb-init,less \
	"$SUITE" "$ROOT" "$MIRROR"

mount -t proc proc "$ROOT/proc"
# Never start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

echo "== locale en_US.UTF-8"
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$ROOT/etc/locale.gen"
grep -q '^en_US.UTF-8 UTF-8' "$ROOT/etc/locale.gen" || echo 'en_US.UTF-8 UTF-8' >>"$ROOT/etc/locale.gen"
in_root locale-gen
echo 'LANG=en_US.UTF-8' >"$ROOT/etc/default/locale"

echo "== postgres user $PG_UID:$PG_GID"
# Created before postgresql-common, whose postinst keeps an existing system
# user: no file ever belongs to another id.
if in_root getent group "$PG_GID" >/dev/null; then
	echo "build.sh: gid $PG_GID already taken: $(in_root getent group "$PG_GID")" >&2; exit 1
fi
if in_root getent passwd "$PG_UID" >/dev/null; then
	echo "build.sh: uid $PG_UID already taken: $(in_root getent passwd "$PG_UID")" >&2; exit 1
fi
in_root groupadd --system --gid "$PG_GID" postgres
in_root useradd --system --uid "$PG_UID" --gid "$PG_GID" --home-dir /home/postgres \
	--create-home --shell /bin/bash --comment 'PostgreSQL administrator' postgres

# Debian would otherwise create and register a "15/main" cluster.
mkdir -p "$ROOT/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' >"$ROOT/etc/postgresql-common/createcluster.d/nodeha.conf"

echo "== apt-get install postgresql-$PGVERSION, patroni, extensions"
# Every seed extension exists in bookworm under these names (checked with
# apt-cache policy); bg_mon and pg_auth_mon are Zalando's own and are not
# packaged anywhere in Debian: overlay.yml drops them from the preload list.
PKGS=(
	"postgresql-$PGVERSION"
	patroni
	python3-etcd python3-psycopg2 python3-urllib3 python3-yaml python3-dateutil
	python3-click python3-prettytable python3-psutil python3-cdiff
	"postgresql-$PGVERSION-cron"
	"postgresql-$PGVERSION-pg-stat-kcache"
	"postgresql-$PGVERSION-hypopg"
	"postgresql-$PGVERSION-pglogical"
	"postgresql-$PGVERSION-set-user"
	"postgresql-$PGVERSION-partman"
	"postgresql-$PGVERSION-hll"
	"postgresql-$PGVERSION-pgextwlist"
	"postgresql-$PGVERSION-first-last-agg"
	"postgresql-$PGVERSION-extra-window-functions"
	"postgresql-$PGVERSION-pgq3"
)
# Point releases and security fixes too, like any bookworm host.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
in_root apt-get update -q
in_root apt-get -y -q --no-install-recommends dist-upgrade
in_root apt-get install -y -q --no-install-recommends "${PKGS[@]}"

# Belt and braces: no default cluster, whatever postgresql-common did.
rm -rf "$ROOT/etc/postgresql/$PGVERSION/main" "$ROOT/var/lib/postgresql/$PGVERSION/main"

echo "== checks"
in_root id postgres
[ "$(in_root id -u postgres):$(in_root id -g postgres)" = "$PG_UID:$PG_GID" ] ||
	{ echo "build.sh: postgres is not $PG_UID:$PG_GID" >&2; exit 1; }
in_root patroni --version
in_root python3 -c 'import patroni.dcs.etcd3, psycopg2, etcd, urllib3, yaml, dateutil, click, prettytable, psutil'
in_root "/usr/lib/postgresql/$PGVERSION/bin/postgres" --version
in_root locale -a | grep -qi '^en_US.utf8$' || { echo "build.sh: en_US.UTF-8 locale missing" >&2; exit 1; }
for lib in pg_stat_statements pgextwlist set_user pg_cron pg_stat_kcache pglogical; do
	[ -e "$ROOT/usr/lib/postgresql/$PGVERSION/lib/$lib.so" ] || { echo "build.sh: $lib.so missing" >&2; exit 1; }
done
if ls "$ROOT/etc/postgresql/$PGVERSION" 2>/dev/null | grep -q .; then
	echo "build.sh: a cluster exists under /etc/postgresql/$PGVERSION" >&2; exit 1
fi

echo "== install launch.sh and scripts"
install -m 0755 -o root -g root "$HERE/launch.sh" "$ROOT/launch.sh"
install -d -m 0755 "$ROOT/scripts"
for s in post_init.sh on_role_change.sh basebackup.sh; do
	install -m 0755 -o root -g root "$HERE/scripts/$s" "$ROOT/scripts/$s"
done
# As in Spilo: $PGHOME/postgres.yml -> $RW_DIR/postgres.yml (RW_DIR=/run).
ln -sfn /run/postgres.yml "$ROOT/home/postgres/postgres.yml"
install -d -m 0755 -o "$PG_UID" -g "$PG_GID" "$ROOT/home/postgres/pgdata"
chown "$PG_UID:$PG_GID" "$ROOT/home/postgres"

echo "== trim"
in_root apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
	"$ROOT"/var/log/apt/* "$ROOT"/var/log/dpkg.log "$ROOT"/tmp/* "$ROOT"/var/tmp/*
find "$ROOT/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf -- {} +
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/hostname"
umount "$ROOT/proc"

echo "== docker import $IMAGE"
PATH_ENV=/usr/lib/postgresql/$PGVERSION/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
tar -C "$ROOT" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
	docker import \
		--change "ENV PGHOME=/home/postgres PGROOT=/home/postgres/pgdata/pgroot PGDATA=/home/postgres/pgdata/pgroot/data PGLOG=/home/postgres/pgdata/pgroot/pg_log RW_DIR=/run PGVERSION=$PGVERSION LC_ALL=en_US.UTF-8 LANG=en_US.UTF-8 PATH=$PATH_ENV" \
		--change 'CMD ["/bin/sh","/launch.sh","init"]' \
		--change "LABEL $LABEL_KEY=$HASH" \
		--message "nodeha Spilo-compatible test image (Debian $SUITE)" \
		- "$IMAGE"

echo "== built $IMAGE in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
