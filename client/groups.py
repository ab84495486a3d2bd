"""Who is still in a process group: one pass over the machine's processes.

Each process the client starts leads its own session and process group (``setsid``), so
the group's id is the leader's pid, and what the leader starts stays in the group unless
it leaves on purpose (``setsid``, ``setpgid``: daemons, shells with job control). The
leader may end first (``sh -c 'sleep 100 & sleep 200'``); its pid number stays reserved by
the kernel as long as any member uses it as a group id, so ``killpg`` still reaches the
members and no one else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection

import psutil


@dataclasses.dataclass(frozen=True)
class GroupScan:
    pids: frozenset[int]  # every process on the machine when the scan ran
    members: dict[int, list[int]]  # group id -> pids of its members that have not ended

    def live(self, pgid: int) -> list[int]:
        return self.members.get(pgid, [])


def scan_groups(pgids: Collection[int]) -> GroupScan:
    """The living members (zombies left out) of each group in ``pgids``."""
    wanted = set(pgids)
    members: dict[int, list[int]] = {}
    pids = frozenset(psutil.pids())
    if not wanted:
        return GroupScan(pids, members)
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            if pgid in wanted and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.setdefault(pgid, []).append(pid)
        except (OSError, psutil.Error):
            continue  # ended during the scan
    return GroupScan(pids, members)
