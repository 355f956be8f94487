#!/bin/bash
# /launch.sh of the nodeha test image: the parts of Spilo's launch.sh +
# configure_spilo.py + runit that nodeha relies on. Started as root by
# CMD ["/bin/sh","/launch.sh","init"]. See README.md.
#
# Until the re-exec below this must stay POSIX sh: /bin/sh (dash) runs it.
if [ "$$" = 1 ] && [ -x /usr/bin/dumb-init ]; then
	# PID 1 is dumb-init (reaps orphans); --single-child: signals go to this
	# script only, which forwards SIGTERM to Patroni alone (as runit does).
	exec /usr/bin/dumb-init --single-child -- /bin/bash "$0" "$@"
elif [ -z "${BASH_VERSION:-}" ]; then
	exec /bin/bash "$0" "$@"
fi

set -uo pipefail

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) launch.sh: $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must start as root (it drops to postgres for Patroni)"

: "${PGHOME:=/home/postgres}"
: "${PGROOT:=$PGHOME/pgdata/pgroot}"
: "${PGDATA:=$PGROOT/data}"
: "${PGLOG:=$PGROOT/pg_log}"
: "${RW_DIR:=/run}"
: "${PGVERSION:=15}"
CONFIG=$RW_DIR/postgres.yml

# Real Spilo starts its own etcd inside the container when the environment
# names no DCS. This image never does: it refuses to start instead.
if [ -z "${ETCD_HOST:-}${ETCD_HOSTS:-}${ETCD3_HOST:-}${ETCD3_HOSTS:-}" ]; then
	die "no ETCD_HOST, ETCD_HOSTS, ETCD3_HOST or ETCD3_HOSTS in the environment" \
		"(real Spilo would start its own etcd on 2379/2380 here); refusing to start"
fi

PG_UID=$(id -u postgres) && PG_GID=$(id -g postgres) || die "no postgres user"

# --- directories (launch.sh) -------------------------------------------------
mkdir -p "$PGLOG" "$RW_DIR/postgresql" "$RW_DIR/tmp" "$RW_DIR/certs" "$PGROOT" || die "mkdir failed"
chown postgres:postgres "$PGLOG" "$RW_DIR/postgresql" "$RW_DIR/certs" "$PGROOT"
chmod 2775 "$RW_DIR/postgresql"
chmod 1777 "$RW_DIR/tmp"
# The parent of the data directory, never recursively into existing data.
pgdata_parent=$(dirname "$PGDATA")
mkdir -p "$pgdata_parent" && chown postgres:postgres "$pgdata_parent" || die "cannot prepare $pgdata_parent"

# --- TLS (configure_spilo.py) -------------------------------------------------
crt=$RW_DIR/certs/server.crt
key=$RW_DIR/certs/server.key
if [ ! -s "$crt" ] || [ ! -s "$key" ]; then
	log "generating a self-signed certificate in $RW_DIR/certs"
	openssl req -nodes -new -x509 -days 3650 -subj /CN=spilo.example.org \
		-keyout "$key" -out "$crt" >/dev/null 2>&1 || die "openssl failed"
fi
chown postgres:postgres "$crt" "$key"
chmod 0600 "$key"

# --- Patroni configuration (configure_spilo.py) -------------------------------
# A file already in place is used as it is (only chowned), as Spilo does.
yq() { local s=${1//\'/\'\'}; printf "'%s'" "$s"; } # YAML single-quoted scalar

write_config() {
	local section hosts ip name human su_user su_pass st_user st_pass
	if [ -n "${ETCD3_HOSTS:-}${ETCD3_HOST:-}" ]; then
		section=etcd3; hosts=${ETCD3_HOSTS:-$ETCD3_HOST}
	else
		section=etcd; hosts=${ETCD_HOSTS:-$ETCD_HOST}
	fi
	hosts=$(printf '%s' "$hosts" | tr -d "\"' []")
	ip=${POD_IP:-$(ip -o -4 addr show scope global 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}')}
	[ -n "$ip" ] || ip=$(hostname -i | awk '{print $1}')
	name=${PATRONI_NAME:-$(hostname)}
	human=${HUMAN_ROLE:-zalandos}
	su_user=${PGUSER_SUPERUSER:-postgres}; su_pass=${PGPASSWORD_SUPERUSER:-zalando}
	st_user=${PGUSER_STANDBY:-standby}; st_pass=${PGPASSWORD_STANDBY:-standby}
	cat <<EOF
scope: $(yq "${SCOPE:-dummy}")
name: $(yq "$name")
restapi:
  listen: ':8008'
  connect_address: $(yq "$ip:8008")
$section:
  hosts: $(yq "$hosts")
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 33554432
    postgresql:
      use_pg_rewind: true
      use_slots: true
  initdb:
  - encoding: UTF8
  - locale: en_US.UTF-8
  - data-checksums
  post_init: /scripts/post_init.sh $(yq "$human")
postgresql:
  name: $(yq "$name")
  listen: '*:5432'
  connect_address: $(yq "$ip:5432")
  data_dir: $(yq "$PGDATA")
  bin_dir: $(yq "/usr/lib/postgresql/$PGVERSION/bin")
  pgpass: $(yq "$RW_DIR/tmp/pgpass")
  use_unix_socket: true
  use_unix_socket_repl: true
  authentication:
    superuser:
      username: $(yq "$su_user")
      password: $(yq "$su_pass")
    replication:
      username: $(yq "$st_user")
      password: $(yq "$st_pass")
  callbacks:
    on_role_change: /scripts/on_role_change.sh $(yq "$human") true
  create_replica_method:
  - basebackup_fast_xlog
  basebackup_fast_xlog:
    command: /scripts/basebackup.sh
    retries: 2
  parameters:
    unix_socket_directories: $(yq "$RW_DIR/postgresql")
    ssl: 'on'
    ssl_cert_file: $(yq "$crt")
    ssl_key_file: $(yq "$key")
    shared_preload_libraries: pg_stat_statements,pgextwlist,set_user,pg_cron,pg_stat_kcache,pglogical
    log_destination: stderr
  pg_hba:
  - local all all trust
  - hostssl all +$human 127.0.0.1/32 pam
  - host all all 127.0.0.1/32 md5
  - hostssl all +$human ::1/128 pam
  - host all all ::1/128 md5
  - local replication $st_user trust
  - hostssl replication $st_user all md5
  - hostnossl all all all reject
  - hostssl all +$human all pam
  - hostssl all all all md5
EOF
}

if [ -e "$CONFIG" ]; then
	log "using $CONFIG as it is"
else
	log "$CONFIG missing: writing one from the environment"
	(umask 077 && write_config >"$CONFIG") || die "cannot write $CONFIG"
fi
chown postgres:postgres "$CONFIG" || die "cannot chown $CONFIG (mounted read-only?)"

# --- Patroni under supervision (runit) -----------------------------------------
# Like Spilo's runit service: Patroni runs as postgres with a cleared
# environment (PATRONI_* variables never reach it: everything is in the file).
PATRONI_PID=
SLEEP_PID=
STOPPING=0

on_signal() {
	STOPPING=1
	log "received SIG$1, stopping Patroni"
	[ -n "$PATRONI_PID" ] && kill -TERM "$PATRONI_PID" 2>/dev/null
	[ -n "$SLEEP_PID" ] && kill -TERM "$SLEEP_PID" 2>/dev/null
	return 0
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

start_patroni() {
	env -i PATH="$PATH" HOSTNAME="$(hostname)" HOME="$PGHOME" PGHOME="$PGHOME" \
		USER=postgres LOGNAME=postgres LC_ALL="${LC_ALL:-en_US.UTF-8}" LANG="${LANG:-en_US.UTF-8}" \
		setpriv --reuid="$PG_UID" --regid="$PG_GID" --init-groups -- \
		patroni "$CONFIG" &
	PATRONI_PID=$!
	log "started Patroni (pid $PATRONI_PID)"
}

# Waits for Patroni to exit, through any number of trapped signals; sets RC.
wait_patroni() {
	RC=0
	while kill -0 "$PATRONI_PID" 2>/dev/null; do
		wait "$PATRONI_PID"; RC=$?
	done
	# If a signal interrupted the last wait just before the exit, the real
	# status is still stored: collect it (127 means already collected).
	local r
	wait "$PATRONI_PID" 2>/dev/null; r=$?
	[ "$r" != 127 ] && RC=$r
	PATRONI_PID=
}

interruptible_sleep() {
	sleep "$1" &
	SLEEP_PID=$!
	wait "$SLEEP_PID" 2>/dev/null
	kill "$SLEEP_PID" 2>/dev/null
	SLEEP_PID=
}

MAX_RESTARTS=5
restarts=0
while :; do
	[ "$STOPPING" = 1 ] && break
	start_patroni
	wait_patroni
	if [ "$STOPPING" = 1 ]; then
		log "Patroni exited with status $RC after a stop request"
		exit 0
	fi
	if [ "$restarts" -ge "$MAX_RESTARTS" ]; then
		log "Patroni exited abnormally with status $RC, $restarts restarts already: leaving it down" \
			"(the container keeps running, as Spilo's runit does)" >&2
		break
	fi
	restarts=$((restarts + 1))
	log "Patroni exited abnormally with status $RC: restart $restarts/$MAX_RESTARTS in 1 s" >&2
	interruptible_sleep 1
done

while [ "$STOPPING" = 0 ]; do
	interruptible_sleep 3600
done
log "stopped"
exit 0
