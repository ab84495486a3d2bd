"""Which events the operator sees above the prompt, and bursts of them summarised.

``exec -n 2000`` ends 2,000 processes within a second; one line each would bury the
prompt. Successful ends (exit 0) are counted per node for a moment and then shown as one
line (``n2: 2,000 processes exited 0 in the last second``, or the single notice when there
was only one); a failed end is shown at once, each one, up to ``FAILURES_SHOWN`` per node
in a moment, and the rest of a burst of failures is counted and shown as one line too: a
node (a broken program, or a peer making events up) must not bury the prompt or, while a
command runs and nothing drains them, grow the console's queue of alerts without bound.
The operator chooses with ``set notices``: ``all``, ``failures`` (no successful ends), or
``off`` (no process ends).
Node events are always shown. Ends of ``run`` commands are never noticed: the command's
own report says how they ended. No gevent and no clock of its own: the caller passes the
time in and flushes when ``due`` says so.
"""

from __future__ import annotations

import threading

from master.events import Event, ProcessesStarted, ProcessEvent
from master.front.results import natural_key

LEVELS = ("all", "failures", "off")
WINDOW = 1.0  # seconds successful ends are gathered before they are shown
FAILURES_SHOWN = 20  # failed ends of one node shown one by one in a window; the rest counted


class Notices:
    def __init__(self, level: str = "all", window: float = WINDOW) -> None:
        self.level = level
        self.window = window
        self._lock = threading.Lock()  # events arrive on the hub thread, flushes on a timer
        self._pending: dict[str, tuple[int, str]] = {}  # node -> (count, first notice)
        self._since: float | None = None  # when the oldest pending notice arrived
        # node -> (failed ends in its window, when that window began)
        self._failures: dict[str, tuple[int, float]] = {}

    def offer(self, event: Event, now: float) -> list[str]:
        """The lines to show now for ``event`` (successful ends wait for ``flush``)."""
        if isinstance(event, ProcessesStarted):
            return []  # exec's own report lists them
        if not isinstance(event, ProcessEvent):
            return [event.describe()]
        if self.level == "off" or event.info.origin == "run":
            return []
        if event.info.describe() != "exited 0":
            with self._lock:
                count, began = self._failures.get(event.node, (0, now))
                if now - began >= self.window:
                    count, began = 0, now
                self._failures[event.node] = (count + 1, began)
                if count < FAILURES_SHOWN:
                    return [event.describe()]
                if self._since is None:  # the held ones are told at the next flush
                    self._since = now
            return []
        if self.level != "all":
            return []
        with self._lock:
            count, first = self._pending.get(event.node, (0, ""))
            self._pending[event.node] = (count + 1, first or event.describe())
            if self._since is None:
                self._since = now
        return []

    def due(self, now: float) -> float | None:
        """Seconds until pending notices should be flushed; None when nothing waits."""
        with self._lock:
            return None if self._since is None else max(0.0, self._since + self.window - now)

    def flush(self) -> list[str]:
        """One line per node for the successful ends gathered so far."""
        with self._lock:
            pending, self._pending, self._since = self._pending, {}, None
            failures, self._failures = self._failures, {}
        lines = []
        for node in sorted(pending, key=natural_key):
            count, first = pending[node]
            lines.append(first if count == 1 else
                         f"{node}: {count:,} processes exited 0 in the last second")
        for node in sorted(failures, key=natural_key):
            if (held := failures[node][0] - FAILURES_SHOWN) > 0:
                lines.append(f"{node}: {held:,} more processes failed in the last second "
                             "(pid --state failed lists them)")
        return lines
