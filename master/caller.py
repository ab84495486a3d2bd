"""Who asked for an operation: the operator (the console, the control socket), or a
process of a job, forwarded by its node's client."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Caller:
    label: str  # as tables and log lines name it: `operator`, `n1:4242`
    node: str | None = None  # the node it runs on, for a process of a job


OPERATOR = Caller("operator")
