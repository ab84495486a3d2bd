#!/bin/bash
# WISH case studies 2 and 3, for corral: a watchdog started on every node. It waits until
# the shared variable CMD names a command, runs it, records its exit status in RC_<node>,
# meets the other watchdogs (and whoever gave the command) at a barrier, and resets CMD;
# then waits for the next command. CMD=quit ends it. Started as one job on the nodes, and
# driven, by examples/watchdog-command.sh; by hand:
#
#   corral copy examples/watchdog.sh . && corral exec -w 'n[1-3]' -- bash watchdog.sh
#
# From its job it knows its node (CORRAL_NODE) and how many watchdogs there are
# (CORRAL_SIZE); `corral` reaches the master through this node's client (CORRAL_SOCKET).
set -u
node=${CORRAL_NODE:?watchdog.sh runs in a corral job}
count=${CORRAL_SIZE:?watchdog.sh runs in a corral job}
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
