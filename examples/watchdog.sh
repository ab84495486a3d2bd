#!/bin/bash
# WISH case studies 2 and 3, for corral: a watchdog started on every node. It waits until
# the shared variable CMD names a command, runs it, records its exit status in RC_<node>,
# meets the other watchdogs (and whoever gave the command) at a barrier, and resets CMD;
# then waits for the next command. CMD=quit ends it. Started and driven by
# examples/watchdog-command.sh; by hand, once per node (its name, how many watchdogs):
#
#   corral exec -w n1 -- bash watchdog.sh n1 3
#
# Inside a job `corral` reaches the master through this node's client (CORRAL_SOCKET).
set -u
node=${CORRAL_NODE:-${1:?usage: watchdog.sh NODE COUNT}}
count=${CORRAL_SIZE:-${2:?usage: watchdog.sh NODE COUNT}}
meeting=$((count + 1))  # the watchdogs and the one who gives the commands

while true; do
    command=$(corral var get CMD --wait) || exit 2
    [ "$command" = quit ] && exit 0
    sh -c "$command"
    corral var set "RC_$node" "$?" || exit 2
    corral barrier watchdog-ran --count "$meeting" || exit 2
    # Reset: one of us deletes CMD (the others find it gone). Nobody gives the next command
    # before everyone has passed the second barrier, so none runs this one twice.
    corral var del CMD 2>/dev/null
    corral barrier watchdog-reset --count "$meeting" || exit 2
done
