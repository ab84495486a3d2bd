"""Which processes a ``pid`` table shows: by state, by program, the last N started.

Pure functions over what the clients answered, so a table of thousands of rows can be cut
down to the ones the operator is after.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import os

from common.procs import ProcInfo
from common.states import ProcState
from master.front.results import GroupResult

STATES = ("running", "ended", "failed")


def in_state(info: ProcInfo, state: str) -> bool:
    """``running``; ``ended`` (any way); ``failed``: ended otherwise than by exit 0
    (a non-zero status, a signal, a failed spawn)."""
    if state == "running":
        return not info.ended_state
    if state == "ended":
        return info.ended_state
    return info.ended_state and info.proc_state is not ProcState.ENDED_UNKNOWN and not (
        info.proc_state is ProcState.EXITED and info.exit_code == 0)


def runs_program(info: ProcInfo, pattern: str) -> bool:
    """``pattern`` (a glob) matches the program's name, its path, or the command line."""
    program = info.argv[0] if info.argv else ""
    return any(fnmatch.fnmatchcase(text, pattern)
               for text in (os.path.basename(program), program, " ".join(info.argv)))


def select(group: GroupResult[list[ProcInfo]], state: str | None = None,
           program: str | None = None, last: int | None = None
           ) -> GroupResult[list[ProcInfo]]:
    """The same group with only the chosen processes; ``last``: of those, the ``last``
    most recently started on all the nodes together (shown in the usual order)."""
    chosen = {name: [info for info in group.results[name]
                     if (state is None or in_state(info, state))
                     and (program is None or runs_program(info, program))]
              for name in group.succeeded}
    if last is not None:
        newest = heapq.nlargest(last, ((info.started, info.seq, name)
                                       for name, infos in chosen.items() for info in infos))
        keep = {(name, seq) for _started, seq, name in newest}
        chosen = {name: [info for info in infos if (name, info.seq) in keep]
                  for name, infos in chosen.items()}
    return dataclasses.replace(group, results=chosen)
