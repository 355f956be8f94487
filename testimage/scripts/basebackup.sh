#!/bin/bash
# Patroni replica method: basebackup.sh --datadir=DIR --connstring=CONN --retries=N
# (also "--datadir DIR"; other options Patroni adds, like --scope or --role,
# are ignored). Runs pg_basebackup, retrying N times after the first attempt.
# Between attempts it empties DIR only when this script created DIR (or DIR
# was empty): pre-existing data is never deleted.
set -uo pipefail

DATADIR=
CONNSTRING=
RETRIES=2
while [ $# -gt 0 ]; do
	case "$1" in
	--datadir=*) DATADIR=${1#*=} ;;
	--connstring=*) CONNSTRING=${1#*=} ;;
	--retries=*) RETRIES=${1#*=} ;;
	--datadir | --connstring | --retries)
		[ $# -ge 2 ] || { echo "basebackup.sh: $1 needs a value" >&2; exit 2; }
		case "$1" in
		--datadir) DATADIR=$2 ;;
		--connstring) CONNSTRING=$2 ;;
		--retries) RETRIES=$2 ;;
		esac
		shift ;;
	*) ;; # --scope=..., --role=..., anything else Patroni passes
	esac
	shift
done

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) basebackup.sh: $*" >&2; }
[ -n "$DATADIR" ] || { log "missing --datadir"; exit 2; }
[ -n "$CONNSTRING" ] || { log "missing --connstring"; exit 2; }
case "$RETRIES" in '' | *[!0-9]*) log "bad --retries: $RETRIES"; exit 2 ;; esac

OURS=0
if [ ! -e "$DATADIR" ]; then
	mkdir -p -m 0700 "$DATADIR" || { log "cannot create $DATADIR"; exit 1; }
	OURS=1
elif [ -d "$DATADIR" ] && [ -z "$(ls -A "$DATADIR")" ]; then
	OURS=1
fi

attempt=0
while :; do
	attempt=$((attempt + 1))
	log "attempt $attempt/$((RETRIES + 1)): pg_basebackup into $DATADIR"
	pg_basebackup -D "$DATADIR" -X stream -c fast -d "$CONNSTRING"
	rc=$?
	if [ "$rc" = 0 ]; then
		log "done"
		exit 0
	fi
	if [ "$attempt" -gt "$RETRIES" ]; then
		log "pg_basebackup failed $attempt times (last status $rc)"
		exit 1
	fi
	if [ "$OURS" = 1 ]; then
		# Only what this script's pg_basebackup wrote: DIR was absent or empty.
		find "$DATADIR" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
	else
		log "$DATADIR held data before this script ran: not removing anything"
	fi
	sleep "$attempt"
done
