"""Liveness rules both ends must agree on."""

PING_EVERY = 5  # heartbeat intervals between the master's round-trip pings to a client
# A client's heartbeats left unacknowledged by the master's host this many intervals mean
# the link or that host is gone.
UNACKNOWLEDGED_INTERVALS = 3
