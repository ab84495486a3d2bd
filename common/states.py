"""Node states and the one table of transitions allowed between them."""

from __future__ import annotations

import enum


class NodeState(enum.Enum):
    CONNECTING = "CONNECTING"  # authenticated, first heartbeat not yet seen
    READY = "READY"
    MISSING = "MISSING"  # heartbeats stopped for a while; the socket is still open
    GONE = "GONE"  # socket closed, or silent for too long

    def __str__(self) -> str:
        return self.value


NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.CONNECTING: frozenset({NodeState.READY, NodeState.GONE}),
    NodeState.READY: frozenset({NodeState.MISSING, NodeState.GONE}),
    NodeState.MISSING: frozenset({NodeState.READY, NodeState.GONE}),
    NodeState.GONE: frozenset({NodeState.CONNECTING}),
}

REACHABLE_STATES = frozenset({NodeState.CONNECTING, NodeState.READY, NodeState.MISSING})


class ProcState(enum.Enum):
    """A process a client started: STARTING -> RUNNING -> EXITED | KILLED, or SPAWN_FAILED;
    RUNNING <-> STOPPED while a signal has stopped it."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"  # by SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU; SIGCONT resumes it
    EXITED = "exited"
    KILLED = "killed"
    SPAWN_FAILED = "spawn failed"
    ENDED_UNKNOWN = "ended, status unknown"  # ended while no client was there to reap it

    def __str__(self) -> str:
        return self.value


_ENDS = frozenset({ProcState.EXITED, ProcState.KILLED, ProcState.ENDED_UNKNOWN})

PROC_TRANSITIONS: dict[ProcState, frozenset[ProcState]] = {
    ProcState.STARTING: frozenset({ProcState.RUNNING, ProcState.SPAWN_FAILED}),
    ProcState.RUNNING: _ENDS | {ProcState.STOPPED},
    # A stopped process can be killed (SIGKILL needs no SIGCONT), and when it is continued
    # and exits at once, wait4 reports only the exit.
    ProcState.STOPPED: _ENDS | {ProcState.RUNNING},
    ProcState.EXITED: frozenset(),
    ProcState.ENDED_UNKNOWN: frozenset(),
    ProcState.KILLED: frozenset(),
    ProcState.SPAWN_FAILED: frozenset(),
}

ENDED_STATES = _ENDS | {ProcState.SPAWN_FAILED}
LIVE_STATES = frozenset({ProcState.RUNNING, ProcState.STOPPED})
SIGNALLABLE_STATES = LIVE_STATES
