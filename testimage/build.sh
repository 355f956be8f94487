#!/bin/bash
# Builds a local Spilo test image that runs the real, unmodified Spilo files
# of one tag (postgres-appliance/ of zalando/spilo) over Debian's PostgreSQL
# and Patroni packages, with no container registry: debootstrap + docker
# import. See README.md in this directory for what differs from the
# published image.
#
# Usage: testimage/build.sh --tag 3.0-p1|4.0-p3 [--spilo-src DIR] [--image NAME:TAG] [--force]
#
#   --tag        the Spilo tag: 3.0-p1 (Debian bookworm, PostgreSQL 15,
#                Patroni 3.0.x) or 4.0-p3 (Debian trixie, PostgreSQL 17,
#                Patroni 4.0.x)
#   --spilo-src  the folder holding that tag's postgres-appliance/
#                (default: $SPILO_SRC, else ../shared/spilo/<tag> beside
#                the repository)
#   --image      the image to build (default nodeha-spilo-test:<tag>)
#   --force      rebuild even if an image with the same inputs exists
set -euo pipefail
trap 'echo "build.sh: line $LINENO: $BASH_COMMAND failed" >&2' ERR

TAG=
SRC=${SPILO_SRC:-}
IMAGE=
FORCE=0
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PG_UID=101 # uid and gid of postgres in the published Spilo images:
PG_GID=103 # nodeha owns host directories by 101:103.
LABEL_KEY=nodeha.testimage.hash

usage() { sed -n '2,17p' "$0"; }
while [ $# -gt 0 ]; do
	case "$1" in
	--tag) TAG=$2; shift ;;
	--tag=*) TAG=${1#--tag=} ;;
	--spilo-src) SRC=$2; shift ;;
	--spilo-src=*) SRC=${1#--spilo-src=} ;;
	--image) IMAGE=$2; shift ;;
	--image=*) IMAGE=${1#--image=} ;;
	--force) FORCE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "$TAG" in
3.0-p1) SUITE=bookworm PGVERSION=15 PATRONI_MAJOR=3.0 ;;
4.0-p3) SUITE=trixie PGVERSION=17 PATRONI_MAJOR=4.0 ;;
'') echo "build.sh: --tag is required: 3.0-p1 or 4.0-p3" >&2; exit 2 ;;
*) echo "build.sh: --tag $TAG: not a tag this script builds (3.0-p1 or 4.0-p3)" >&2; exit 2 ;;
esac
IMAGE=${IMAGE:-nodeha-spilo-test:$TAG}
SRC=${SRC:-$HERE/../../shared/spilo/$TAG}
if [ ! -f "$SRC/postgres-appliance/launch.sh" ]; then
	echo "build.sh: --spilo-src (SPILO_SRC) $SRC: no postgres-appliance/launch.sh there; give the folder of Spilo's $TAG files" >&2
	exit 2
fi
SRC=$(cd "$SRC" && pwd)
APP=$SRC/postgres-appliance
# pg_auth_mon: 4.0-p3's post_init.sh stops on its CREATE EXTENSION, and Debian
# does not package it; its source sits beside the tag's folder.
AUTH_MON=$SRC/../extensions/pg_auth_mon
if [ "$TAG" = 4.0-p3 ] && [ ! -f "$AUTH_MON/pg_auth_mon.c" ]; then
	echo "build.sh: $AUTH_MON: pg_auth_mon source missing (4.0-p3's post_init.sh needs the extension)" >&2
	exit 2
fi

# Everything that ends up in the image or decides how it is built.
HASH=$( (
	cd "$HERE" && sha256sum build.sh
	cd "$APP" && find . -type f -print0 | sort -z | xargs -0 sha256sum
	[ "$TAG" = 4.0-p3 ] && cd "$AUTH_MON" && find . -type f -print0 | sort -z | xargs -0 sha256sum
	echo "$TAG"
) | sha256sum | cut -d' ' -f1)
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
# The tools are those of Spilo's build_scripts/prepare.sh that the scripts
# use (runit, dumb-init, cron (installed with apt below), curl, jq, less, rsync, vim-tiny for
# post_build.sh), plus procps (pgrep in basebackup.sh) and iproute2.
debootstrap --variant=minbase \
	--include=ca-certificates,openssl,locales,tzdata,procps,iproute2,dumb-init,runit,curl,jq,less,rsync,vim-tiny \
	"$SUITE" "$ROOT" "$MIRROR"

mount -t proc proc "$ROOT/proc"
# Never start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "0";\nAPT::Install-Suggests "0";\n' >"$ROOT/etc/apt/apt.conf.d/01norecommend"

echo "== locale en_US.UTF-8"
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$ROOT/etc/locale.gen"
grep -q '^en_US.UTF-8 UTF-8' "$ROOT/etc/locale.gen" || echo 'en_US.UTF-8 UTF-8' >>"$ROOT/etc/locale.gen"
in_root locale-gen

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
in_root useradd --system --uid "$PG_UID" --gid "$PG_GID" --home-dir /var/lib/postgresql \
	--shell /bin/bash --comment 'PostgreSQL administrator' postgres

# Debian would otherwise create and register a "<major>/main" cluster.
mkdir -p "$ROOT/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' >"$ROOT/etc/postgresql-common/createcluster.d/nodeha.conf"

echo "== apt-get install postgresql-$PGVERSION, patroni, extensions"
# The seed's preload list and post_init.sh's extensions, as Debian packages
# them (plpython3u for the zmon schema post_init.sh loads; bg_mon and pg_auth_mon are Zalando's own: see README.md). pgqd is
# Spilo's skytools3-ticker (runit/pgqd). The python modules are what
# configure_spilo.py, spilo_commons.py and Patroni's etcd3 backend import.
PKGS=(
	"postgresql-$PGVERSION"
	patroni pgqd cron
	python3-psycopg2 python3-etcd python3-urllib3 python3-yaml python3-dateutil python3-pystache
	python3-requests python3-six python3-psutil python3-click python3-prettytable
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
	"postgresql-$PGVERSION-pgq-node"
	"postgresql-plpython3-$PGVERSION"
)
# Point releases and security fixes too, like any host of that release.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
rm -f "$ROOT/etc/apt/sources.list.d/debian.sources"
in_root apt-get update -q
in_root apt-get -y -q dist-upgrade
in_root apt-get install -y -q "${PKGS[@]}"

if [ "$TAG" = 4.0-p3 ]; then
	echo "== pg_auth_mon from $AUTH_MON"
	in_root apt-get install -y -q "postgresql-server-dev-$PGVERSION" make gcc libc6-dev libkrb5-dev
	mkdir -p "$ROOT/tmp/pg_auth_mon"
	cp -a "$AUTH_MON/." "$ROOT/tmp/pg_auth_mon/"
	in_root make -C /tmp/pg_auth_mon USE_PGXS=1 PG_CONFIG="/usr/lib/postgresql/$PGVERSION/bin/pg_config" install
	rm -rf "$ROOT/tmp/pg_auth_mon"
	in_root apt-get purge -y -q --auto-remove "postgresql-server-dev-$PGVERSION" make gcc libc6-dev libkrb5-dev
fi

# Belt and braces: no default cluster, whatever postgresql-common did.
rm -rf "$ROOT/etc/postgresql/$PGVERSION/main" "$ROOT/var/lib/postgresql/$PGVERSION/main"

echo "== Spilo's layout (Dockerfile, build_scripts/prepare.sh, post_build.sh) from $APP"
# prepare.sh: envdir is chpst; the locale archive is reached through
# /run/locale-archive, which launch.sh points at the real one.
ln -sf chpst "$ROOT/usr/bin/envdir"
rm -rf "$ROOT"/etc/cron.??*
truncate --size 0 "$ROOT/etc/crontab"
mv "$ROOT/usr/lib/locale/locale-archive" "$ROOT/usr/lib/locale/locale-archive.22"
ln -s /run/locale-archive "$ROOT/usr/lib/locale/locale-archive"
# Spilo's Ubuntu 18.04 archive (USE_OLD_LOCALES) does not exist here: the
# same archive stands in, so the link launch.sh makes is never dangling.
cp "$ROOT/usr/lib/locale/locale-archive.22" "$ROOT/usr/lib/locale/locale-archive.18"
# Dockerfile: COPY motd /etc/; COPY runit /etc/service/; pgq_ticker.ini.
PGHOME=/home/postgres
install -d -m 0755 -o "$PG_UID" -g "$PG_GID" "$ROOT$PGHOME"
cp "$APP/motd" "$ROOT/etc/motd"
# Debian's runit makes /etc/service a link to /etc/runit/runsvdir/default,
# as Ubuntu's does: COPY follows it, and configure_spilo.py links services
# from there.
[ -L "$ROOT/etc/service" ] || { echo "build.sh: /etc/service is not a link in $SUITE's runit" >&2; exit 1; }
svc=/etc/service
for _ in 1 2 3 4 5 6 7 8; do
	[ -L "$ROOT$svc" ] || break
	t=$(readlink "$ROOT$svc")
	case "$t" in /*) svc=$t ;; *) svc=$(realpath -ms "$(dirname "$svc")/$t") ;; esac
done
mkdir -p "$ROOT$svc"
# Debian's runit ships services of its own there (default-syslog); Spilo's
# image has only its own.
find "$ROOT$svc" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
cp -r "$APP/runit/." "$ROOT$svc/"
[ -d "$ROOT/etc/runit/runsvdir/default/patroni" ] || { echo "build.sh: runit services are not under /etc/runit/runsvdir/default" >&2; exit 1; }
cp "$APP/pgq_ticker.ini" "$ROOT$PGHOME/"
install -d -m 0755 "$ROOT/builddeps"
cp "$APP/build_scripts/post_build.sh" "$ROOT/builddeps/"
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$PGVERSION/bin
in_root env PGHOME=$PGHOME RW_DIR=/run COMPRESS=false PATH="$PATH_ENV" sh -ex /builddeps/post_build.sh
rm -rf "$ROOT/builddeps"
# COPY scripts bootstrap major_upgrade /scripts/; COPY launch.sh /
install -d -m 0755 "$ROOT/scripts"
for d in scripts bootstrap major_upgrade; do
	cp -r "$APP/$d/." "$ROOT/scripts/"
done
cp "$APP/launch.sh" "$ROOT/launch.sh"

echo "== checks"
[ "$(in_root id -u postgres):$(in_root id -g postgres)" = "$PG_UID:$PG_GID" ] ||
	{ echo "build.sh: postgres is not $PG_UID:$PG_GID" >&2; exit 1; }
[ "$(in_root getent passwd postgres | cut -d: -f6)" = "$PGHOME" ] || { echo "build.sh: post_build.sh did not set postgres's home" >&2; exit 1; }
ver=$(in_root patroni --version)
echo "$ver"
case "$ver" in "patroni $PATRONI_MAJOR".*) ;; *) echo "build.sh: want Patroni $PATRONI_MAJOR.x, have $ver" >&2; exit 1 ;; esac
in_root python3 -c 'import patroni.dcs.etcd3, etcd, psycopg2, urllib3, yaml, pystache, requests, six, psutil'
in_root "/usr/lib/postgresql/$PGVERSION/bin/postgres" --version
# locale-archive links to /run/locale-archive, made by launch.sh at start.
in_root localedef --list-archive /usr/lib/locale/locale-archive.22 | grep -qi '^en_US.utf8$' || { echo "build.sh: en_US.UTF-8 locale missing" >&2; exit 1; }
libs=(pg_stat_statements pgextwlist set_user pg_cron pg_stat_kcache pglogical)
[ "$TAG" = 4.0-p3 ] && libs+=(pg_auth_mon)
for lib in "${libs[@]}"; do
	[ -e "$ROOT/usr/lib/postgresql/$PGVERSION/lib/$lib.so" ] || { echo "build.sh: $lib.so missing" >&2; exit 1; }
done
for f in /launch.sh /scripts/configure_spilo.py /scripts/basebackup.sh /scripts/post_init.sh /scripts/on_role_change.sh; do
	cmp "$ROOT$f" "$APP/$( [ "$f" = /launch.sh ] && echo launch.sh || echo "scripts/${f#/scripts/}")" ||
		{ echo "build.sh: $f differs from Spilo's" >&2; exit 1; }
done
[ "$(readlink "$ROOT/etc/service")" = /run/service ] || { echo "build.sh: /etc/service does not link to /run/service" >&2; exit 1; }
[ "$(readlink "$ROOT$PGHOME/postgres.yml")" = /run/postgres.yml ] || { echo "build.sh: $PGHOME/postgres.yml does not link to /run/postgres.yml" >&2; exit 1; }

echo "== trim"
in_root apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
	"$ROOT"/var/log/apt/* "$ROOT"/var/log/dpkg.log "$ROOT"/tmp/*
find "$ROOT/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf -- {} +
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/hostname"
umount "$ROOT/proc"

echo "== docker import $IMAGE"
# The Dockerfile's ENV, WORKDIR and CMD, unmodified.
PGROOT=$PGHOME/pgdata/pgroot
tar -C "$ROOT" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
	docker import \
		--change "ENV LC_ALL=en_US.utf-8 PATH=$PATH_ENV PGHOME=$PGHOME RW_DIR=/run DEMO=false WALE_ENV_DIR=/run/etc/wal-e.d/env LOG_ENV_DIR=/run/etc/log.d/env PGROOT=$PGROOT PGDATA=$PGROOT/data PGLOG=$PGROOT/pg_log USE_OLD_LOCALES=false" \
		--change "WORKDIR $PGHOME" \
		--change 'EXPOSE 5432 8008 8080' \
		--change 'CMD ["/bin/sh","/launch.sh","init"]' \
		--change "LABEL $LABEL_KEY=$HASH" \
		--change "LABEL io.nodeha.spilo-tag=$TAG" \
		--message "nodeha test image: Spilo $TAG scripts on Debian $SUITE" \
		- "$IMAGE"

echo "== built $IMAGE in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
