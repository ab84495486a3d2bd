"""The control socket: a UNIX socket on the hub through which the ``corral`` CLI and
attached consoles call the master's operations (``master.front.ops``).

One call per connection: ``call`` in; ``item`` frames for what streams (log chunks,
progress, events); then ``result`` or ``error``. A ``cancel`` frame, or the connection
closing, cancels the call as Ctrl-C does at the console. A connection whose first call
carries an ``id`` carries many calls at once instead (``master.front.control.Pipeline``):
every frame either way then carries its call's id. Frames are the node protocol's
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
from master.front.ops import OPS, args_problem
from master.logstream import Fetcher, chunks_ahead
from master.operations import Operations
from master.ready import wait_ready
from master.shared import SHARED_OPS

if TYPE_CHECKING:
    from master.server import MasterEngine

log = logging.getLogger("corral.master.control")

ITEMS_AHEAD = 2  # log chunks or events made and not yet sent to a front end
MAX_CALLS_IN_FLIGHT = 1_000  # on one connection: beyond it a call is refused, not queued
EVENT_QUEUE = 10_000  # events a slow subscriber may fall behind by before losing the oldest
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


class _Items:
    """What a call streams, waiting to be sent to its front end. A log or the events wait
    for the front end to take them (at most ``ITEMS_AHEAD`` made and not sent): a CLI that
    reads slowly (``corral log -f | less``) slows the log's fetching instead of piling the
    log up here, and a slow events subscriber loses its oldest events."""

    def __init__(self, bounded: bool) -> None:
        self._queue: gevent.queue.Queue[Any] = gevent.queue.Queue()
        self._room = gevent.lock.Semaphore(ITEMS_AHEAD) if bounded else None

    def put(self, item: Any) -> None:
        if self._room is not None:
            self._room.acquire()
        self._queue.put(item)

    def end(self) -> None:
        self._queue.put(_DONE)

    def take(self) -> Any:
        return self._queue.get()

    def sent(self) -> None:
        if self._room is not None:
            self._room.release()


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
            if "id" in call:
                self._serve_many(channel, call)
                return
            op_name, args = _checked_call(call)
        except CorralError as exc:
            self._send_error(channel.send, {}, exc.code, exc.message)
            return
        worker, items = self._start(op_name, args)
        watcher = gevent.spawn(self._watch, channel, worker)
        try:
            self._answer(channel.send, {}, op_name, worker, items)
        finally:
            watcher.kill(block=False)

    def _serve_many(self, channel: FrameChannel, first: dict[str, Any]) -> None:
        """A connection whose calls carry ids: they run side by side, each frame of an
        answer carries its call's id, ``cancel`` with an id stops that call, and the
        connection closing stops them all."""
        write_lock = gevent.lock.Semaphore()
        workers: dict[int, gevent.Greenlet] = {}
        # A call counts against the bound until its answer is sent, not only while it
        # works: a front end that sends calls and never reads would otherwise have the
        # master hold every answer it cannot send.
        answering: set[gevent.Greenlet] = set()

        def send(frame: dict[str, Any]) -> None:
            with write_lock:  # several calls answer at once: one frame at a time
                channel.send(frame)

        def take(frame: dict[str, Any]) -> None:
            call_id = frame.get("id")
            if call_id is None:
                raise ProtocolError(f"a frame without a call id on a connection of calls "
                                    f"with ids: {frame.get('t')!r}")
            if type(call_id) is not int:  # bool too: True is no call's id
                raise ProtocolError(f"a call id must be an integer, not {call_id!r} "
                                    f"({type(call_id).__name__})")
            tag = {"id": call_id}
            if frame.get("t") == "cancel":
                if (worker := workers.get(call_id)) is not None:
                    worker.kill(block=False)
                return
            try:
                op_name, args = _checked_call(frame)
                if call_id in workers:
                    raise CorralError(f"call id {call_id} is already in flight",
                                      ErrorCode.BAD_REQUEST)
                if len(answering) >= MAX_CALLS_IN_FLIGHT:
                    raise CorralError(f"more than {MAX_CALLS_IN_FLIGHT} calls in flight on "
                                      "one connection: wait for an answer first",
                                      ErrorCode.BAD_REQUEST)
            except CorralError as exc:
                self._send_error(send, tag, exc.code, exc.message)
                return

            worker, items = self._start(op_name, args)  # now: a cancel may follow at once
            workers[call_id] = worker
            # Linked before ``_answer`` links the end of its answer: the id is free again
            # before the front end hears the result and may reuse it.
            worker.link(lambda _g: workers.pop(call_id, None))
            answerer = gevent.spawn(self._answer, send, tag, op_name, worker, items)
            answering.add(answerer)
            answerer.link(answering.discard)

        try:
            take(first)
            while True:
                take(channel.read())
        except ProtocolError as exc:
            self._send_error(send, {}, exc.code, exc.message)
        except (CorralError, OSError):
            pass  # the front end closed the connection
        finally:
            for worker in list(workers.values()):
                worker.kill(block=False)  # nobody is left to hear their answers

    def _start(self, op_name: str, args: dict[str, Any]) -> tuple[gevent.Greenlet, _Items]:
        """The greenlet doing the call's work, and what it streams."""
        items = _Items(bounded=op_name in ("log", "events"))
        return gevent.spawn(self.perform, op_name, args, items.put), items

    def _answer(self, send: Callable[[dict[str, Any]], None], tag: dict[str, Any],
                op_name: str, worker: gevent.Greenlet, items: _Items) -> None:
        """Send what the call streams, then its result or error, each frame with ``tag``."""
        worker.link(lambda _g: items.end())
        try:
            while (item := items.take()) is not _DONE:
                send({"t": "item", **tag, "value": codec.encode(item)})
                items.sent()
            if worker.successful() and not isinstance(worker.value, gevent.GreenletExit):
                send({"t": "result", **tag, "value": codec.encode(worker.value)})
            else:
                exc = worker.exception
                if isinstance(exc, CorralError):
                    self._send_error(send, tag, exc.code, exc.message)
                elif exc is None:
                    self._send_error(send, tag, ErrorCode.CANCELLED, "cancelled")
                else:
                    log.error("control: %s failed: %r", op_name, exc)
                    self._send_error(send, tag, ErrorCode.INTERNAL, f"{op_name}: {exc!r}")
        except OSError:
            worker.kill(block=False)  # the front end went away: nobody waits for it

    @staticmethod
    def _watch(channel: FrameChannel, worker: gevent.Greenlet) -> None:
        """A ``cancel`` frame or the connection closing stops the call."""
        try:
            while channel.read().get("t") != "cancel":
                pass
        except (CorralError, OSError):
            worker.kill(block=False)
            return
        worker.kill(block=False)

    @staticmethod
    def _send_error(send: Callable[[dict[str, Any]], None], tag: dict[str, Any], code: int,
                    message: str) -> None:
        with contextlib.suppress(OSError):
            send({"t": "error", **tag, "code": int(code), "message": message})

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


def _checked_call(frame: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The operation and arguments of a ``call`` frame, or ProtocolError."""
    kind, op_name, args = frame.get("t"), frame.get("op"), frame.get("args")
    if kind != "call":
        raise ProtocolError(f"expected a call, not a {kind!r} frame")
    if op_name not in OPS:
        raise ProtocolError(f"not a call of a known operation: {op_name!r}")
    if not isinstance(args, dict):
        raise ProtocolError(f"{op_name}: the call's args must be a map, not "
                            f"{type(args).__name__}")
    return op_name, args

