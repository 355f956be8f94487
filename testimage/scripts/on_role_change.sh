#!/bin/bash
# Patroni callback: on_role_change.sh <args from the config...> <action> <role> <scope>
# The role is "master" before Patroni 4 and "primary" from Patroni 4.
# Logs one line and succeeds (real Spilo updates Kubernetes labels here).
if [ $# -lt 3 ]; then
	echo "on_role_change.sh: expected at least <action> <role> <scope>, got: $*" >&2
	exit 0
fi
args=("$@")
n=${#args[@]}
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on_role_change.sh: action=${args[n-3]} role=${args[n-2]} scope=${args[n-1]}" >&2
exit 0
