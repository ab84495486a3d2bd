"""The open-file limit of a process that holds one socket per peer, and how many peers fit.

Many systems start a process with a soft limit of 1,024 open files while its hard limit is
far higher: a master with one socket per node would stop at about a thousand nodes, with
``Too many open files`` deep in its log and the next clients left waiting. The soft limit
may be raised up to the hard limit without privileges, so a server raises it at start and
then knows how many connections it can hold.
"""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path

# Descriptors kept for the process's own files beside its connections: its log, state
# files being saved, control-socket connections, files of pulls in progress, the spare
# descriptor used to refuse a connection, a TLS handshake's duplicate.
RESERVED = 64
_NR_OPEN = Path("/proc/sys/fs/nr_open")  # Linux's ceiling when the hard limit is unlimited
_NR_OPEN_DEFAULT = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class OpenFileLimit:
    soft: int
    hard: int | None  # None: unlimited
    raised_from: int | None = None  # the soft limit before ``raise_soft_limit`` raised it

    @property
    def connections(self) -> int:
        """How many connections fit beside the RESERVED descriptors."""
        return max(0, self.soft - RESERVED)

    def describe(self) -> str:
        hard = "unlimited" if self.hard is None else str(self.hard)
        raised = "" if self.raised_from is None else f", raised from {self.raised_from}"
        return f"open-file limit {self.soft} (hard {hard}{raised})"


def _ceiling() -> int:
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return _NR_OPEN_DEFAULT


def current() -> OpenFileLimit:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return OpenFileLimit(soft=_ceiling() if soft == unlimited else soft,
                         hard=None if hard == unlimited else hard)


def raise_soft_limit() -> OpenFileLimit:
    """Raise this process's soft limit of open files to its hard limit (or to the kernel's
    ceiling when that is unlimited); the limit as it then stands."""
    before = current()
    target = _ceiling() if before.hard is None else before.hard
    if target <= before.soft:
        return before
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (target, resource.RLIM_INFINITY if before.hard is None
                            else before.hard))
    except (ValueError, OSError):
        return before  # a container may forbid it: the limit stays as it was
    return dataclasses.replace(current(), raised_from=before.soft)
