"""A log in chunks with the next few already on their way, for whoever shows it: the
console's thread (``MasterAPI.log_chunks``) or the control socket's greenlet for the CLI.

While one chunk is shown the next few are already being fetched, so client and master
work at the same time instead of taking turns. A full chunk from X ends at X + step, so
those are asked for at X + step, X + 2 step...; a short chunk means the end was reached,
and what was asked beyond it is dropped and asked again later from where it ended.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Generator
from typing import Generic, TypeVar

from master.operations import LogChunk

# A followed log is looked at again soon after it grew, less and less often while it
# does not: quick behind a busy writer, cheap beside an idle one.
FOLLOW_POLL_FIRST = 0.002  # seconds
FOLLOW_POLL_MAX = 0.1
LOG_AHEAD = 4  # chunks of a log asked for ahead of the one being shown

Pending = TypeVar("Pending")  # one fetch under way: a Future, a greenlet


class Fetcher(Generic[Pending]):
    """How one side starts, waits for and drops the fetch of a chunk, and sleeps."""

    def __init__(self, start: Callable[[int], Pending], wait: Callable[[Pending], LogChunk],
                 drop: Callable[[Pending], None], sleep: Callable[[float], None]) -> None:
        self.start = start  # the chunk from an offset
        self.wait = wait
        self.drop = drop
        self.sleep = sleep


def chunks_ahead(first: LogChunk, step: int, follow: bool, fetch: Fetcher[Pending]
                 ) -> Generator[LogChunk, None, None]:
    """``first``, then the rest of the log in chunks of ``step`` bytes, ``LOG_AHEAD``
    of them on their way; with ``follow`` what is written next, until the process has
    ended. At most ``LOG_AHEAD`` chunks wait at any time, whatever the log's size."""
    poll = FOLLOW_POLL_FIRST
    chunk = first
    ahead: collections.deque[tuple[int, Pending]] = collections.deque()

    def drop_ahead() -> None:
        for _offset, pending in ahead:
            fetch.drop(pending)
        ahead.clear()

    try:
        while True:
            yield chunk
            if chunk.more:
                if ahead and ahead[0][0] != chunk.offset:
                    drop_ahead()
                while len(ahead) < LOG_AHEAD:
                    offset = ahead[-1][0] + step if ahead else chunk.offset
                    ahead.append((offset, fetch.start(offset)))
            else:
                drop_ahead()
                if not follow or chunk.ended:
                    return
                poll = FOLLOW_POLL_FIRST if chunk.data else min(poll * 2, FOLLOW_POLL_MAX)
                fetch.sleep(poll)
                ahead.append((chunk.offset, fetch.start(chunk.offset)))
            chunk = fetch.wait(ahead.popleft()[1])
    finally:
        drop_ahead()
