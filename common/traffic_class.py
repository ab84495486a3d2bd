"""What a connection carries, told to the network (IP TOS, IPv6 traffic class), so that a
busy link sends a heartbeat ahead of a copy's bulk data.

A chained copy keeps every node's link busy both ways. Queues that look at the class
(pfifo_fast's bands, DSCP-aware switches) then send the master connection's small frames
first; without it a heartbeat can wait behind the copy, or be dropped from a full queue
again and again, until the master takes the node for gone. The values are the classic
ones (RFC 1349), which ssh also uses for interactive and bulk traffic.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

LOW_DELAY = 0x10  # the master connection: requests, replies, heartbeats
BULK = 0x08  # a data link: a chained copy's frames


def mark(sock: Any, traffic_class: int) -> None:
    """Best effort: a socket of the other family, or a platform without the option, is
    left as it is."""
    for level, option in ((socket.IPPROTO_IP, socket.IP_TOS),
                          (socket.IPPROTO_IPV6, getattr(socket, "IPV6_TCLASS", -1))):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, traffic_class)
