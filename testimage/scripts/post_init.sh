#!/bin/bash
# Patroni post_init (bootstrap.post_init): post_init.sh <human_role> <connstring>
# Runs once on the primary after initdb, as postgres. Creates, in one
# transaction, the roles and the preloaded extensions the seed relies on;
# any error fails the bootstrap (set_user and pg_cron need
# shared_preload_libraries).
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 <human_role> <connstring>" >&2
	exit 2
fi
HUMAN_ROLE=$1
CONNSTRING=$2

echo "post_init.sh: creating roles admin, ${HUMAN_ROLE:-<none>} and extensions" >&2
psql -X -q -1 -v ON_ERROR_STOP=1 -v human="$HUMAN_ROLE" -d "$CONNSTRING" <<'SQL'
SELECT 'CREATE ROLE admin NOLOGIN CREATEDB CREATEROLE'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'admin')
\gexec
SELECT format('CREATE ROLE %I NOLOGIN', :'human')
 WHERE :'human' <> '' AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'human')
\gexec
-- Preloaded by shared_preload_libraries (overlay.yml keeps them).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS set_user;
CREATE EXTENSION IF NOT EXISTS pg_stat_kcache;
-- pg_cron can only be created in cron.database_name (default: postgres).
SELECT 'CREATE EXTENSION IF NOT EXISTS pg_cron'
 WHERE current_database() = current_setting('cron.database_name')
\gexec
SQL
echo "post_init.sh: done" >&2
