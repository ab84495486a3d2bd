"""The control socket: a UNIX socket on the hub through which the ``corral`` CLI and
attached consoles call the master's operations (``master.front.ops``).

One call per connection: ``call`` in; ``item`` frames for what streams (log chunks,
progress, events); then ``result`` or ``error``. A ``cancel`` frame, or the connection
closing, cancels the call as Ctrl-C does at the console. Frames are the node protocol's
(length + msgpack) without the per-frame MAC: the socket is mode 0600 in a 0700 folder and
each peer's uid is checked with SO_PEERCRED, so only this user (or root) can write to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import gevent.lock
import gevent.queue
import gevent.socket
from gevent.server import StreamServer

from common import private_socket
from common.errors import CorralError, ErrorCode, ProtocolError
from common.framing import FrameChannel
from master import transfers
from master.caller import OPERATOR, Caller
from master.events import Event
from master.front import codec
from master.front.ops import OPS, Op, args_problem
from master.logstream import Fetcher, chunks_ahead
from master.operations import Operations
from master.ready import wait_ready
from master.shared import SHARED_OPS

if TYPE_CHECKING:
    from master.server import MasterEngine

log = logging.getLogger("corral.master.control")

ITEMS_AHEAD = 2  # log chunks or events made and not yet sent to a front end
EVENT_QUEUE = 10_000  # events a slow subscriber may fall behind by before losing the oldest
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


class ControlServer:
    def __init__(self, engine: MasterEngine, path: Path | None) -> None:
        self.engine = engine
        self.path = path or Path("(no control socket)")
        self.ops = Operations(engine)
        self._server: StreamServer | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        private_socket.bind_private(listener, self.path, (
            f"another master already answers on {self.path}; give this one another "
            "--state-dir or --control"))
        listener.listen(128)
        self._server = StreamServer(listener, self._handle)
        self._server.start()
        log.info("control socket %s", self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
        private_socket.remove(self.path)

    def _handle(self, sock: Any, _address: Any) -> None:
        channel = FrameChannel(sock, self.engine.config.max_frame)
        uid = peer_uid(sock)
        if uid not in (os.getuid(), 0):
            log.warning("control: refused a process of uid %d", uid)
            with contextlib.suppress(OSError):
                channel.send({"t": "refused", "message": f"the master at {self.path} serves "
                              f"uid {os.getuid()} and root, not uid {uid}"})
            return
        # The peer is this user: its call may be as big as any frame (a 64 KiB variable,
        # an exec's stdin), not only as big as an unauthenticated peer's.
        channel.reader.max_frame = self.engine.config.max_frame
        try:
            call = channel.read()
            op_name, args = call.get("op"), call.get("args")
            if call.get("t") != "call" or op_name not in OPS or not isinstance(args, dict):
                raise ProtocolError(f"not a call of a known operation: {op_name!r}")
        except CorralError as exc:
            self._send_error(channel, exc.code, exc.message)
            return
        self._serve(channel, op_name, OPS[op_name], args)

    def _serve(self, channel: FrameChannel, op_name: str, op: Op, args: dict[str, Any]
               ) -> None:
        # What a log or the events produce waits for the front end to take it: a CLI that
        # reads slowly (``corral log -f | less``) slows the log's fetching instead of
        # piling the log up here, and a slow events subscriber loses its oldest events.
        items: gevent.queue.Queue[Any] = gevent.queue.Queue()
        room = gevent.lock.Semaphore(ITEMS_AHEAD) if op_name in ("log", "events") else None

        def emit(item: Any) -> None:
            if room is not None:
                room.acquire()
            items.put(item)

        worker = gevent.spawn(self.perform, op_name, args, emit)
        watcher = gevent.spawn(self._watch, channel, worker, op)
        worker.link(lambda _g: items.put(_DONE))
        try:
            while (item := items.get()) is not _DONE:
                channel.send({"t": "item", "value": codec.encode(item)})
                if room is not None:
                    room.release()
            if worker.successful() and not isinstance(worker.value, gevent.GreenletExit):
                channel.send({"t": "result", "value": codec.encode(worker.value)})
            else:
                exc = worker.exception
                if isinstance(exc, CorralError):
                    self._send_error(channel, exc.code, exc.message)
                elif exc is None:
                    self._send_error(channel, ErrorCode.CANCELLED, "cancelled")
                else:
                    log.error("control: %s failed: %r", op_name, exc)
                    self._send_error(channel, ErrorCode.INTERNAL, f"{op_name}: {exc!r}")
        except OSError:
            worker.kill(block=False)  # the front end went away: nobody waits for it
        finally:
            watcher.kill(block=False)

    @staticmethod
    def _watch(channel: FrameChannel, worker: gevent.Greenlet, op: Op) -> None:
        """A ``cancel`` frame or the connection closing stops the call."""
        try:
            while channel.read().get("t") != "cancel":
                pass
        except (CorralError, OSError):
            worker.kill(block=False)
            return
        worker.kill(block=False)

    @staticmethod
    def _send_error(channel: FrameChannel, code: int, message: str) -> None:
        with contextlib.suppress(OSError):
            channel.send({"t": "error", "code": int(code), "message": message})

    # --- the operations on the hub ----------------------------------------------------------

    def perform(self, op_name: str, args: dict[str, Any], emit: Callable[[Any], Any],
                caller: Caller = OPERATOR) -> Any:
        """Run one operation for ``caller``; ``emit`` gets what streams before its result.
        Also serves the calls that clients forward for their processes."""
        if (problem := args_problem(op_name, args)) is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        try:
            if op_name in SHARED_OPS:
                return self.engine.shared.perform(op_name, args, emit, caller)
            return self._dispatch(op_name, args, emit)
        except (TypeError, KeyError) as exc:  # arguments that do not fit the operation
            raise CorralError(f"{op_name}: bad arguments: {exc}", ErrorCode.BAD_REQUEST
                              ) from None

    def _dispatch(self, op_name: str, args: dict[str, Any], emit: Callable[[Any], Any]
                  ) -> Any:
        registry = self.engine.registry
        ops = self.ops
        if op_name == "nodes":
            return registry.views()
        if op_name == "wait_ready":
            return wait_ready(registry, **args)
        if op_name == "forget_node":
            return registry.forget_node(args["name"])
        if op_name == "log":
            return self._log(emit, **args)
        if op_name == "setenv":
            return self.engine.environment.set(args["pairs"])
        if op_name == "unsetenv":
            return self.engine.environment.unset(args["names"])
        if op_name == "env":
            return self.engine.environment.entries()
        if op_name == "events":
            return self._events(emit)
        if op_name == "copy":
            return self.engine.push(args["nodeset"], args["sources"], args["dest"],
                                    args["recursive"], emit, args["follow"], args["star"])
        if op_name == "pull":
            return self.engine.pull(args["nodeset"], args["remote_paths"], args["local_dir"],
                                    emit, args["follow"])
        if op_name == "remove":
            return transfers.remove(registry, args["nodeset"], args["paths"],
                                    args["recursive"], self.engine.config.request_timeout)
        if op_name == "exec":
            return ops.exec(args["nodeset"], args["argv"], args["cwd"], args["env"] or {},
                            args["stdin"], args["count"])
        if op_name == "run":
            return ops.run(args["nodeset"], args["command"], args["timeout"], None)
        if op_name == "script":
            return ops.script(args["nodeset"], args["local_file"], args["args"],
                              args["timeout"])
        methods: dict[str, Callable[..., Any]] = {
            "processes": ops.processes, "signal": ops.signal, "signal_all": ops.signal_all,
            "forget": ops.forget, "forget_ended": ops.forget_ended, "rusage": ops.rusage,
            "wait": ops.wait, "node_names": ops.node_names, "process_refs": ops.process_refs,
            "jobs": ops.jobs_list, "job_members": ops.job_members, "job_names": ops.job_names}
        return methods[op_name](**args)

    def _log(self, emit: Callable[[Any], Any], ref: str, lines: int | None, follow: bool
             ) -> bool:
        """The log to the CLI as the console gets it: the next chunks on their way while
        one is sent (``master.logstream``)."""
        fetch: Fetcher[gevent.Greenlet] = Fetcher(
            lambda offset: gevent.spawn(self.ops.log, ref, None, offset),
            lambda greenlet: greenlet.get(), lambda greenlet: greenlet.kill(block=False),
            gevent.sleep)
        ended = False
        chunks = chunks_ahead(self.ops.log(ref, lines, None), self.ops.log_chunk_size,
                              follow, fetch)
        with contextlib.closing(chunks):  # a CLI gone: the chunks on their way are dropped
            for chunk in chunks:
                emit(chunk)
                ended = chunk.ended
        return ended

    def _events(self, emit: Callable[[Any], Any]) -> None:
        """Every event until the caller goes. The queue is bounded: a subscriber that
        does not keep up loses its oldest events (and is told how many), never slows the
        hub."""
        queue: gevent.queue.Queue[Event] = gevent.queue.Queue(EVENT_QUEUE)
        lost = 0

        def hear(event: Event) -> None:
            nonlocal lost
            if queue.full():
                queue.get_nowait()
                lost += 1
            queue.put_nowait(event)

        self.engine.registry.subscribe(hear)
        try:
            while True:
                event = queue.get()
                if lost:
                    log.warning("control: a subscriber fell behind and lost %d events", lost)
                    lost = 0
                emit(event)
        finally:
            self.engine.registry.unsubscribe(hear)


_DONE = object()

