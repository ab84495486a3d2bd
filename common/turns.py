"""Fair turns for one event loop: code that can stay busy for long (a read loop whose socket
always has data, a batch of spawns) gives the rest of the loop a turn now and then.

With gevent, a read that finds data already buffered returns without ever entering the
event loop, and ``sleep(0)`` runs only greenlets that are already ready: timers (the
heartbeat) and other sockets wait until the loop itself gets to poll, which a tiny real
sleep forces. The sleep function is passed in, so this module needs no gevent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE = 0.05  # seconds of busy work between turns
NAP = 0.0001  # long enough to make the loop poll timers and sockets


class Turns:
    def __init__(self, sleep: Callable[[float], object], slice_seconds: float = SLICE) -> None:
        self._sleep = sleep
        self._slice = slice_seconds
        self._since = self._last = time.monotonic()

    def take(self) -> None:
        """Yield to the loop if this code has been busy for a whole slice.

        Busy means called again and again with less than a slice between calls: a read
        loop that waited for its next message (a heartbeat a second) has given the loop
        its turn already, and napping then cost every idle session a timer per message."""
        now = time.monotonic()
        if now - self._last >= self._slice:
            self._since = now  # it waited since the last call: a new busy stretch begins
        elif now - self._since >= self._slice:
            self._sleep(NAP)
            now = self._since = time.monotonic()
        self._last = now
