#!/bin/bash
# Give one command to the watchdogs (examples/watchdog.sh) on the named nodes and join
# their exit statuses, naming the nodes where it failed.
#
#   examples/watchdog-command.sh --start NODE...   # start a watchdog on each node (one job)
#   examples/watchdog-command.sh COMMAND NODE...   # run COMMAND on all of them; exit 1
#                                                  # if it failed anywhere
#   examples/watchdog-command.sh quit NODE...      # stop the watchdogs
set -u
here=$(cd "$(dirname "$0")" && pwd)
command=${1:?usage: watchdog-command.sh --start|COMMAND|quit NODE...}
shift
nodes=("$@")
count=${#nodes[@]}
[ "$count" -gt 0 ] || { echo "watchdog-command: name the nodes" >&2; exit 2; }
nodeset=$(IFS=,; echo "${nodes[*]}")

if [ "$command" = --start ]; then
    corral var del CMD 2>/dev/null  # a quit left from the last time
    corral copy -w "$nodeset" "$here/watchdog.sh" watchdog.sh >/dev/null || exit 2
    job=$(corral exec -w "$nodeset" -- bash watchdog.sh | awk '/^job J[0-9]+:/ { sub(":", "", $2); print $2 }')
    [ -n "$job" ] || exit 2
    echo "watchdogs started on $nodeset as job $job"
    exit 0
fi

corral var set CMD "$command" || exit 2
[ "$command" = quit ] && exit 0
# Released once every watchdog has run it and recorded its status.
corral barrier watchdog-ran --count $((count + 1)) --timeout 600 || exit 2
failed=()
for node in "${nodes[@]}"; do
    rc=$(corral var get "RC_$node") || exit 2
    echo "$node: exit $rc"
    [ "$rc" = 0 ] || failed+=("$node")
done
corral barrier watchdog-reset --count $((count + 1)) --timeout 600 || exit 2
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed on: $(IFS=,; echo "${failed[*]}")" >&2
    exit 1
fi
