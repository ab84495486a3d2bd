"""Ask the kernel whether a TCP peer still acknowledges what we send (Linux ``TCP_INFO``).

A peer that says nothing may be a dead link or host, or a live host whose program is busy
or stopped. The two differ in the kernel: a live host's TCP acknowledges our data at once,
whatever its program does, while over a dead link our data stays unacknowledged.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

# struct tcp_info: 8 one-byte fields, then 32-bit ones. tcpi_retransmits (the 3rd byte)
# counts the retransmission timeouts of the oldest unacknowledged segment (0 again once it
# is acknowledged); tcpi_unacked is the 5th 32-bit field, tcpi_last_ack_recv
# (milliseconds since an ACK last arrived) the 13th.
_TCP_INFO = struct.Struct("8B13I")
_RETRANSMITS, _UNACKED, _LAST_ACK_RECV = 2, 8 + 4, 8 + 12


def unacknowledged_for(sock: Any) -> float | None:
    """Seconds that data we sent has waited for the peer's acknowledgement (0.0 when
    nothing waits); None where the kernel does not say (not Linux, not TCP).

    Data counts as waiting only once the kernel has had to send it again: the time since
    the last ACK also grows while the link is merely idle, so right after this process
    was held up (a loaded machine, a stop) a heartbeat just sent, its ACK a moment away,
    would look like minutes of silence from a peer that is there."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO.size)
    except OSError:
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    fields = _TCP_INFO.unpack_from(raw)
    if fields[_UNACKED] == 0 or fields[_RETRANSMITS] == 0:
        return 0.0
    return fields[_LAST_ACK_RECV] / 1000
