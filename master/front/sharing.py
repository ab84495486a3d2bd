"""The results of the shared-variable and barrier operations, as every front end sees
them (gevent-free, like ``master.front.results``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class VarEntry:
    name: str
    value: str
    set_by: str  # who set it: `operator`, or the node and process of a job (`n1:4242`)
    set_at: float  # wall clock
    version: int  # 1 when created, one more at each change


@dataclasses.dataclass(frozen=True)
class VarChange:
    """What ``var watch`` streams: the variable now (None: it does not exist)."""

    name: str
    entry: VarEntry | None


@dataclasses.dataclass(frozen=True)
class CasOutcome:
    swapped: bool
    current: VarEntry | None  # after the swap, or what prevented it (None: absent)

    @property
    def ok(self) -> bool:
        return self.swapped


@dataclasses.dataclass(frozen=True)
class BarrierOutcome:
    name: str
    generation: int  # 1 for the first use of the name, one more at each release
    count: int
    participants: list[str]  # who arrived, in order
    released_at: float  # wall clock, when the last arrived


@dataclasses.dataclass(frozen=True)
class BarrierView:
    """A barrier that participants wait at now."""

    name: str
    generation: int
    count: int
    participants: list[str]
    waiting_since: float  # wall clock, when the first arrived
