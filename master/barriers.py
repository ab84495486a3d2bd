"""Barriers: named meeting points where N participants wait until the last has arrived.

A barrier exists while participants wait at it; when the N-th arrives every one of them
is released and the name is free again for its next generation. A participant that gives
up (its timeout passed, its caller went away) leaves without releasing anyone. When the
node of a participant goes GONE, the barrier fails for all who wait, naming the node:
the count it waits for can no longer be reached as intended.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import gevent.event

from common.errors import CorralError, ErrorCode
from common.states import NodeState
from common.varnames import timeout_problem, var_name_problem
from master.caller import Caller
from master.events import Event, NodeEvent
from master.front.sharing import BarrierOutcome, BarrierView

log = logging.getLogger("corral.master.barriers")

MAX_COUNT = 100_000


@dataclasses.dataclass
class _Meeting:
    """One generation of a barrier."""

    name: str
    generation: int
    count: int
    waiting_since: float
    arrived: list[Caller] = dataclasses.field(default_factory=list)
    done: gevent.event.AsyncResult = dataclasses.field(
        default_factory=gevent.event.AsyncResult)

    def who(self) -> str:
        return ", ".join(c.label for c in self.arrived) or "nobody"


class Barriers:
    def __init__(self) -> None:
        self._meetings: dict[str, _Meeting] = {}
        self._generations: dict[str, int] = {}  # the last generation released, per name

    def arrive(self, name: str, count: int, timeout: float | None, caller: Caller
               ) -> BarrierOutcome:
        if (problem := var_name_problem(name)) is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        if type(count) is not int or not 1 <= count <= MAX_COUNT:
            raise CorralError(f"--count must be 1 to {MAX_COUNT:,}", ErrorCode.BAD_REQUEST)
        if (problem := timeout_problem(timeout)) is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        if timeout == 0:
            raise CorralError("--timeout must be positive", ErrorCode.BAD_REQUEST)
        meeting = self._meetings.get(name)
        if meeting is None:
            meeting = _Meeting(name, self._generations.get(name, 0) + 1, count, time.time())
            self._meetings[name] = meeting
        elif meeting.count != count:
            raise CorralError(f"barrier {name} waits for {meeting.count} participants, not "
                              f"{count} ({len(meeting.arrived)} arrived: {meeting.who()})",
                              ErrorCode.BAD_REQUEST)
        meeting.arrived.append(caller)
        if len(meeting.arrived) == count:
            self._release(meeting)
        try:
            return meeting.done.get(timeout=timeout)
        except gevent.Timeout:
            raise CorralError(
                f"barrier {name}: timed out after {timeout:g} s with {len(meeting.arrived)} "
                f"of {count} arrived ({meeting.who()}); this one left", ErrorCode.NO_REPLY
            ) from None
        finally:
            # Gave up (timeout, or the caller went away): leave without releasing anyone.
            if not meeting.done.ready():
                meeting.arrived.remove(caller)
                if not meeting.arrived:
                    del self._meetings[name]

    def _release(self, meeting: _Meeting) -> None:
        del self._meetings[meeting.name]
        self._generations[meeting.name] = meeting.generation
        meeting.done.set(BarrierOutcome(meeting.name, meeting.generation, meeting.count,
                                        [c.label for c in meeting.arrived], time.time()))

    def node_changed(self, event: Event) -> None:
        """A registry listener: fail every barrier a participant of a GONE node waits at."""
        if not (isinstance(event, NodeEvent) and event.new is NodeState.GONE):
            return
        for meeting in list(self._meetings.values()):
            lost = [c.label for c in meeting.arrived if c.node == event.name]
            if not lost:
                continue
            del self._meetings[meeting.name]
            self._generations[meeting.name] = meeting.generation
            message = (f"barrier {meeting.name}: node {event.name} went GONE while "
                       f"{', '.join(lost)} waited at it ({len(meeting.arrived)} of "
                       f"{meeting.count} had arrived)")
            log.warning("%s", message)
            meeting.done.set_exception(CorralError(message, ErrorCode.DISCONNECTED))

    def views(self) -> list[BarrierView]:
        return [BarrierView(m.name, m.generation, m.count, [c.label for c in m.arrived],
                            m.waiting_since) for _, m in sorted(self._meetings.items())]
