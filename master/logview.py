"""What ``log`` leaves in ``last_result``: how much it showed, and the tail of it.

The log itself goes to the screen chunk by chunk and is not kept: a log of any size costs
the master no more than the tail kept here.
"""

from __future__ import annotations

import collections
import dataclasses

TAIL_KEPT = 1024 * 1024  # bytes of the shown log kept for scripts and tests


@dataclasses.dataclass(frozen=True)
class LogView:
    ref: str
    shown: int  # bytes written to the console
    ended: bool  # the process had ended and all of its log was shown
    tail: bytes  # the last TAIL_KEPT bytes shown (all of it, for a smaller log)


class LogTail:
    def __init__(self, keep: int = TAIL_KEPT) -> None:
        self._keep = keep
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0
        self.shown = 0

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.shown += len(data)
        self._chunks.append(data)
        self._kept += len(data)
        while self._kept - len(self._chunks[0]) >= self._keep:
            self._kept -= len(self._chunks.popleft())

    def view(self, ref: str, ended: bool) -> LogView:
        tail = b"".join(self._chunks)[-self._keep:]
        return LogView(ref=ref, shown=self.shown, ended=ended, tail=tail)
