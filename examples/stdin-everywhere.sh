#!/bin/bash
# WISH case study 1, for corral: a program that reads its input on stdin, started on every
# READY node from one local file, with one local file as its input; the exit statuses are
# joined (0 only if every node's run exited 0) and the failing nodes are named.
#
#   examples/stdin-everywhere.sh PROGRAM INPUT [NODESET]
#
# PROGRAM is a local executable file (a script, say); it is copied into each node's work
# folder and started there with INPUT on its stdin. Needs `corral` on PATH and a master
# answering it (see the README).
set -u
program=${1:?usage: stdin-everywhere.sh PROGRAM INPUT [NODESET]}
input=${2:?usage: stdin-everywhere.sh PROGRAM INPUT [NODESET]}
targets=()
[ $# -ge 3 ] && targets=(-w "$3")
name=$(basename "$program")

corral copy "${targets[@]}" "$program" "$name" >/dev/null || exit 2
# exec starts one job across the nodes and ends its report with "job J12: N processes".
job=$(corral exec "${targets[@]}" --stdin "$input" -- "./$name" | awk '/^job J[0-9]+:/ { sub(":", "", $2); print $2 }')
[ -n "$job" ] || { echo "stdin-everywhere: nothing started" >&2; exit 2; }
# wait J prints one row per process (rank, ref, state, status) and exits with the job's
# status: 0 only if every process exited 0.
report=$(corral wait "$job")
status=$?
echo "$report"
if [ $status -ne 0 ]; then
    failed=$(echo "$report" | awk '$1 ~ /^[0-9]+$/ && $NF != "0" { split($2, r, ":"); print r[1] }' | sort -u | paste -sd, -)
    echo "failed on: $failed" >&2
    exit $status
fi
echo "all nodes exited 0"
