"""The client's job socket (``CORRAL_SOCKET``): a UNIX socket through which the processes
this client started call the master, as the ``corral`` command does from inside a job.

The socket speaks the master's control-socket frames (``call``, then ``item`` frames and a
``result`` or ``error``; ``cancel`` or closing cancels), so the same ``corral`` command
works on either. Each call is forwarded to the master over the client's authenticated
connection (``common.calls``), named after the process it comes from.

Who may call: the socket is mode 0600 in the client's state folder, so only this user (and
root) can connect at all; then the peer's pid (SO_PEERCRED, which the kernel fills in and
no peer can forge) must belong to a process this client started, or descend from one
(its parent chain is walked). A process of the same user that is not one of them, such as
a process of another node's client on the same machine that was handed this socket's path
in a forged ``CORRAL_SOCKET``, is refused: a call is always attributed to the node whose
processes made it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.queue
import gevent.socket
import psutil
from gevent.server import StreamServer

from client.proctable import JOB_SOCKET_ENV, ProcTable
from common import private_socket
from common.calls import CallError, CallItem, CallResult
from common.errors import CorralError, ErrorCode
from common.framing import FrameChannel

log = logging.getLogger("corral.client.jobsocket")

ENV_NAME = JOB_SOCKET_ENV
FILE_NAME = "job.sock"
MAX_ANCESTRY = 256  # parent links followed before a peer is judged a stranger
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
MAX_PATH = 107
FORWARD_MARGIN = 4096  # bytes a forwarded call adds around what the caller sent
# Open at once, as the master takes calls in flight from one node: a job that opens
# connections and never sends (or never reads) must not use up the client's descriptors,
# which it needs to start and follow every other process of its node.
MAX_CONNECTIONS = 1_000
# A connection that has not sent its call by then holds a place for nothing: closed. A
# call is one frame written at once by the corral command; waiting on a variable or a
# barrier comes after it and is not limited.
FIRST_FRAME_TIMEOUT = 10.0

Answer = CallItem | CallResult | CallError | None  # None: the connection to the master went


def path_problem(path: Path) -> str | None:
    """A UNIX socket's path must fit in sun_path (108 bytes with its NUL, on Linux)."""
    size = len(os.fsencode(path))
    if size > MAX_PATH:
        return (f"the job socket's path {path} is {size} bytes, longer than the {MAX_PATH} "
                "a UNIX socket may have (give the client a shorter --state-dir)")
    return None


class Forwarder(Protocol):
    """What the job socket needs of the client's connection to the master."""

    def forward(self, op: str, args: dict[str, Any], pid: int, ref: str, job: str
                ) -> tuple[int, gevent.queue.Queue[Answer]]:
        """Send the call; its answers arrive on the queue."""
        ...

    def cancel_call(self, req: int) -> None:
        """Ask the master to stop the call; its last answers still arrive."""
        ...

    def end_call(self, req: int) -> None:
        """Forget the call: answers that still come are dropped."""
        ...


class JobSocket:
    """Made first of all the client's parts, so a second client started on the same state
    folder stops before it touches anything there; it serves once ``serve`` has given it
    the process table and the connection."""

    def __init__(self, path: Path, node: str, max_frame: int,
                 first_frame_timeout: float = FIRST_FRAME_TIMEOUT) -> None:
        self.path = path
        self.node = node
        self.max_frame = max_frame
        self.first_frame_timeout = first_frame_timeout
        self.procs: ProcTable | None = None
        self.connection: Callable[[], Forwarder | None] = lambda: None
        self._server: StreamServer | None = None
        self._open = 0  # connections being served

    def serve(self, procs: ProcTable, connection: Callable[[], Forwarder | None]) -> None:
        """``connection`` gives the live connection to the master, if there is one."""
        self.procs = procs
        self.connection = connection

    def start(self) -> None:
        listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        private_socket.bind_private(listener, self.path, (
            f"another client already answers on {self.path}: two clients cannot share one "
            "state folder"))
        listener.listen(128)
        self._server = StreamServer(listener, self._handle)
        self._server.start()
        log.info("job socket %s", self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
        private_socket.remove(self.path)

    # --- who calls ------------------------------------------------------------------------

    def started_ancestor(self, pid: int) -> int | None:
        """The process this client started that ``pid`` is or descends from (the one
        nearest this client), 0 for a descendant of the client itself that is not in its
        table, None for a stranger."""
        own = os.getpid()
        found: int | None = None
        if self.procs is None:
            return None  # not serving yet
        for _ in range(MAX_ANCESTRY):
            if pid == own:
                return found if found is not None else 0
            if self.procs.is_running_here(pid):
                found = pid
            try:
                pid = psutil.Process(pid).ppid()
            except psutil.Error:
                break
            if pid <= 1:
                break
        return found  # an adopted process (its parent is init now) counts as ours

    # --- one call -------------------------------------------------------------------------

    def _handle(self, sock: Any, _address: Any) -> None:
        channel = FrameChannel(sock, self.max_frame)
        if self._open >= MAX_CONNECTIONS:
            _send_error(channel, ErrorCode.BAD_REQUEST, (
                f"{MAX_CONNECTIONS:,} connections to the job socket of node {self.node} are "
                "open already; try again when some have ended"))
            return
        self._open += 1
        try:
            self._serve_one(sock, channel)
        finally:
            self._open -= 1

    def _serve_one(self, sock: Any, channel: FrameChannel) -> None:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        pid = _PEERCRED.unpack(creds)[0]
        ancestor = self.started_ancestor(pid)
        if ancestor is None:
            log.warning("job socket: refused pid %d, which is not a process this client "
                        "started nor one of their descendants", pid)
            with contextlib.suppress(OSError):
                channel.send({"t": "refused", "message": (
                    f"the job socket {self.path} of node {self.node} serves only the "
                    f"processes that node's client started and their descendants; pid "
                    f"{pid} is none of them")})
            return
        # A little under the master's limit: the call must still fit once forwarded.
        channel.reader.max_frame = self.max_frame - FORWARD_MARGIN
        late = gevent.Timeout(self.first_frame_timeout)
        late.start()
        try:
            call = channel.read()
        except gevent.Timeout as exc:
            if exc is not late:
                raise
            _send_error(channel, ErrorCode.HANDSHAKE_TIMEOUT, (
                f"no call within {self.first_frame_timeout:g} s of connecting to the job "
                f"socket of node {self.node}; closed"))
            return
        except CorralError as exc:  # not a frame, or too big: said, and closed
            _send_error(channel, exc.code, exc.message)
            return
        except OSError:
            return
        finally:
            late.close()
        op, args = call.get("op"), call.get("args")
        if call.get("t") != "call" or not isinstance(op, str) or not isinstance(args, dict):
            _send_error(channel, ErrorCode.PROTOCOL, "expected a call frame")
            return
        connection = self.connection()
        if connection is None:
            _send_error(channel, ErrorCode.DISCONNECTED,
                        f"node {self.node} is not connected to its master now (its client "
                        "keeps trying); try again")
            return
        ref = f"{self.node}:{ancestor}" if ancestor else ""
        job = self.procs.job_place(ancestor) if self.procs is not None and ancestor else ""
        try:
            req, answers = connection.forward(op, args, pid, ref, job)
        except OSError:
            _send_error(channel, ErrorCode.DISCONNECTED, "the connection to the master broke")
            return
        self._relay(channel, connection, req, answers)

    def _relay(self, channel: FrameChannel, connection: Forwarder, req: int,
               answers: gevent.queue.Queue[Answer]) -> None:
        watcher = gevent.spawn(_watch_caller, channel, connection, req, answers)
        try:
            while True:
                answer = answers.get()
                if isinstance(answer, CallItem):
                    channel.send({"t": "item", "value": answer.value})
                    continue
                if isinstance(answer, CallResult):
                    channel.send({"t": "result", "value": answer.value})
                elif isinstance(answer, CallError):
                    _send_error(channel, answer.code, answer.message)
                elif answer is None:
                    _send_error(channel, ErrorCode.DISCONNECTED,
                                f"node {self.node} lost its connection to the master during "
                                "the call")
                return
        except OSError:
            return  # the caller went: the watcher cancels the call
        finally:
            connection.end_call(req)
            watcher.kill(block=False)


_GONE = CallError(req=0, code=int(ErrorCode.CANCELLED), message="the caller went away")


def _watch_caller(channel: FrameChannel, connection: Forwarder, req: int,
                  answers: gevent.queue.Queue[Answer]) -> None:
    """A ``cancel`` frame asks the master to stop the call (which may still report what it
    did: ``run``); the caller closing its end stops it and the relay."""
    try:
        while channel.read().get("t") != "cancel":
            pass
    except (CorralError, OSError):
        connection.cancel_call(req)
        answers.put(_GONE)
        return
    connection.cancel_call(req)


def _send_error(channel: FrameChannel, code: int, message: str) -> None:
    with contextlib.suppress(OSError):
        channel.send({"t": "error", "code": int(code), "message": message})
