"""Calls that a node's client forwards for the processes it started (``common.calls``):
each runs as the control socket's calls do (``ControlServer.perform``), in a greenlet of
its own, attributed to the process that made it (``n1:4242``) and to its node.

A call ends with its result or error, when the client cancels it (the process went away),
or when the connection closes: its greenlet is killed, so a process that was waiting at a
barrier leaves it, as one that gave up would.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import gevent
import msgpack

from common.calls import CallError, CallItem, CallResult, ForwardedCall
from common.errors import CorralError, ErrorCode
from common.text import printable
from master.caller import Caller
from master.front import codec
from master.front.ops import OPS
from master.shared import SHARED_OPS

if TYPE_CHECKING:
    from master.registry import Node
    from master.session import Session

log = logging.getLogger("corral.master.forwarded")

JOB_CALLS = ("all", "shared")  # --job-calls: every operation but those below, or these only
# They read and write files on the master's machine, in its user's name: a job runs on a
# node and has no business there.
NEVER_FROM_JOBS = frozenset({"copy", "pull", "script"})
# Results these give are far below a frame's limit whatever is asked (a value is at most
# 64 KiB): they skip the size check, which costs an encoding of its own.
SMALL_RESULTS = frozenset({"var_set", "var_get", "var_cas", "var_del", "var_watch",
                           "barrier", "node_names"})
MAX_CALLS = 1_000  # in flight from one node: a runaway job cannot pile up greenlets
FRAME_MARGIN = 1024  # bytes a frame adds around its value (tag, req, MAC)


class ForwardedCalls:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._running: dict[int, gevent.Greenlet] = {}

    def start(self, node: Node, call: ForwardedCall) -> None:
        if call.req in self._running:
            self._fail(call.req, CorralError(f"call {call.req} is already running",
                                             ErrorCode.BAD_REQUEST))
            return
        if len(self._running) >= MAX_CALLS:
            self._fail(call.req, CorralError(
                f"{MAX_CALLS:,} calls from node {node.name} are already in flight",
                ErrorCode.BAD_REQUEST))
            return
        # A client names only its own processes: a ref naming another node's is a forgery.
        ref = call.ref if call.ref.startswith(f"{node.name}:") else ""
        label = ref or f"{node.name}:{call.pid}"
        if call.job:
            label += f" ({call.job})"
        caller = Caller(label=printable(label), node=node.name)
        self._running[call.req] = gevent.spawn(self._serve, call, caller)

    def cancel(self, req: int) -> None:
        worker = self._running.pop(req, None)
        if worker is not None:
            worker.kill(block=False)

    def stop_all(self) -> None:
        workers, self._running = list(self._running.values()), {}
        gevent.killall(workers, block=False)

    def _serve(self, call: ForwardedCall, caller: Caller) -> None:
        engine = self.session.engine
        try:
            self._check_allowed(call.op)
            log.debug("%s from %s", call.op, caller.label)

            fits = _as_is if call.op in SMALL_RESULTS else self._fits

            def emit(item: Any) -> None:
                self._send(CallItem(req=call.req, value=fits(codec.encode(item))))

            result = engine.calls.perform(call.op, call.args, emit, caller)
            self._send(CallResult(req=call.req, value=fits(codec.encode(result))))
        except CorralError as exc:
            self._fail(call.req, exc)
        except gevent.GreenletExit:
            self._fail(call.req, CorralError("cancelled", ErrorCode.CANCELLED))
        except Exception as exc:
            log.exception("forwarded %s from %s failed", call.op, caller.label)
            self._fail(call.req, CorralError(f"{call.op}: {exc!r}", ErrorCode.INTERNAL))
        finally:
            if self._running.get(call.req) is gevent.getcurrent():
                del self._running[call.req]

    def _check_allowed(self, op: str) -> None:
        if op not in OPS:
            raise CorralError(f"unknown operation {op!r}", ErrorCode.BAD_REQUEST)
        if op in NEVER_FROM_JOBS:
            raise CorralError(f"{op} reads or writes files on the master's machine: not from "
                              "inside a job (run it where the master runs)",
                              ErrorCode.PERMISSION)
        if self.session.engine.config.job_calls == "shared" and op not in SHARED_OPS:
            raise CorralError(f"this master lets jobs use only var and barrier "
                              f"(--job-calls shared), not {op}", ErrorCode.PERMISSION)

    def _fits(self, value: Any) -> Any:
        """A value too big for one frame would make the client drop the connection: refuse
        it here, for this call only."""
        size = len(msgpack.packb(value, use_bin_type=True))
        limit = self.session.engine.config.max_frame - FRAME_MARGIN
        if size > limit:
            raise CorralError(f"the result is {size:,} bytes, more than a node's connection "
                              f"carries in one frame ({limit:,}); ask for less (-w, --last)",
                              ErrorCode.BAD_REQUEST)
        return value

    def _fail(self, req: int, exc: CorralError) -> None:
        self._send(CallError(req=req, code=int(exc.code), message=exc.message))

    def _send(self, message: CallItem | CallResult | CallError) -> None:
        with contextlib.suppress(OSError):  # gone: the session's read loop ends us all
            self.session.send(message)


def _as_is(value: Any) -> Any:
    return value
