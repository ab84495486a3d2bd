"""The front end's side of the control socket: call one operation of a running master.

Where the master is: ``--control PATH``, else ``CORRAL_CONTROL``, else the current user's
default state folder (``$XDG_STATE_HOME/corral/master/control.sock``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from common.errors import ConnectionClosed, CorralError, ErrorCode, ProtocolError
from common.framing import FrameChannel
from common.quiet_threads import quiet_thread
from master.front import codec
from master.front.ops import OPS, ItemCallback

START_HINT = "start one with: corral-master --no-console"
JOB_SOCKET_ENV = "CORRAL_SOCKET"
JOB_SOCKET_PEER = "corral client (CORRAL_SOCKET)"
MAX_RESULT_FRAME = 1 << 30


def default_control_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "corral" / "master" / "control.sock"


def control_path(option: str | None) -> Path:
    return Path(option or os.environ.get("CORRAL_CONTROL") or default_control_path())


def default_backend(option: str | None) -> SocketBackend:
    """``--control PATH`` if given; inside a job (a process a client started), its node's
    client through ``CORRAL_SOCKET``, which forwards to the master; else the master's
    control socket."""
    job_socket = os.environ.get(JOB_SOCKET_ENV)
    if option is None and job_socket:
        return SocketBackend(Path(job_socket), JOB_SOCKET_PEER)
    return SocketBackend(control_path(option))


class NoMaster(CorralError):
    """Nothing answers at the control socket, or the master went away during a call."""

    code = ErrorCode.DISCONNECTED


class SocketBackend:
    """Each call on its own connection, so calls from several threads never mix."""

    def __init__(self, path: Path, peer: str = "master") -> None:
        self.path = path
        self.peer = peer  # who answers there, as messages name it
        self.hint = f"; {START_HINT}" if peer == "master" else ""

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise NoMaster(f"no {self.peer} at {self.path} ({exc.strerror or exc})"
                           f"{self.hint}") from None
        return sock

    def call(self, op: str, args: dict[str, Any], on_item: ItemCallback | None = None
             ) -> Any:
        spec = OPS[op]
        with self.connect() as sock:
            # Only this user's master can be at the other end: a result may be as big as
            # it is (a table of every process on a thousand nodes).
            channel = FrameChannel(sock, MAX_RESULT_FRAME)
            channel.reader.max_frame = MAX_RESULT_FRAME  # not the handshake's 64 KiB
            try:
                channel.send({"t": "call", "op": op, "args": codec.encode(args)})
            except OSError as exc:
                # A master that refused this user has already said why and closed: what
                # it said is still there to read.
                sent_error: OSError | None = exc
            else:
                sent_error = None
            cancelled = False
            while True:
                try:
                    frame = channel.read()
                except KeyboardInterrupt:
                    # Ctrl-C: the master stops the call; an operation that winds down
                    # (run) still reports what became of it, so wait for that.
                    if cancelled or not spec.to_the_end:
                        raise
                    cancelled = True
                    channel.send({"t": "cancel"})
                    continue
                except (ConnectionClosed, OSError) as exc:
                    raise self._gone(sent_error or exc) from None
                kind = frame.get("t")
                if kind == "item":
                    if on_item is not None:
                        on_item(codec.decode(spec.item, frame.get("value")))
                elif kind == "result":
                    return codec.decode(spec.result, frame.get("value"))
                elif kind == "refused":
                    raise NoMaster(f"refused: {frame.get('message')}")
                elif kind == "error":
                    raise CorralError(str(frame.get("message")),
                                      _code(frame.get("code")))
                else:
                    raise ProtocolError(f"unexpected frame {kind!r} from the master")

    def _gone(self, exc: BaseException) -> NoMaster:
        reason = exc.message if isinstance(exc, CorralError) else str(exc)
        return NoMaster(f"the {self.peer} at {self.path} went away during the call "
                        f"({reason}){self.hint}")

    def subscribe(self, listener: ItemCallback) -> None:
        """Hear the master's events on a thread of their own."""
        def listen() -> None:
            try:
                self.call("events", {}, listener)
            except CorralError:
                return  # the master went: the console's next command says so
        quiet_thread(listen, "corral-events").start()


class Pipeline:
    """Many calls at once on one connection to the master's control socket: ``submit``
    returns a future at once, so one thread keeps many requests in flight without a
    connection (or a thread) each. A reader thread matches the answers to the calls by
    id; ``on_item`` callbacks run on it. Close it (or use it as a context manager) when
    done: the calls still in flight are cancelled and their futures fail."""

    def __init__(self, backend: SocketBackend) -> None:
        self._backend = backend
        self._sock = backend.connect()
        self._channel = FrameChannel(self._sock, MAX_RESULT_FRAME)
        self._channel.reader.max_frame = MAX_RESULT_FRAME
        self._lock = threading.Lock()  # for the writes, the ids and the table of calls
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[Future[Any], str, ItemCallback | None]] = {}
        self._closed: CorralError | None = None
        self._reader = quiet_thread(self._read, "corral-pipeline")
        self._reader.start()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(self, op: str, args: dict[str, Any], on_item: ItemCallback | None = None
               ) -> Future[Any]:
        """Send a call of ``op``; its future resolves to what ``SocketBackend.call``
        returns, or raises what it raises (the master's one-line error for a bad call)."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        wire_args = codec.encode(args)
        with self._lock:
            if self._closed is not None:
                raise self._closed
            call_id = next(self._ids)
            self._calls[call_id] = (future, op, on_item)
            try:
                self._channel.send({"t": "call", "id": call_id, "op": op, "args": wire_args})
            except OSError as exc:
                self._calls.pop(call_id)
                raise self._backend._gone(exc) from None
            except BaseException:  # not sent (too big a frame, Ctrl-C): no answer will come
                self._calls.pop(call_id)
                raise
        return future

    def cancel(self, future: Future[Any]) -> None:
        """Ask the master to stop the call of ``future`` (as Ctrl-C does for ``call``)."""
        with self._lock:
            for call_id, (waiting, _op, _on_item) in self._calls.items():
                if waiting is future:
                    with contextlib.suppress(OSError):
                        self._channel.send({"t": "cancel", "id": call_id})
                    return

    def close(self) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = CorralError("the pipeline was closed", ErrorCode.CANCELLED)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join()
        self._sock.close()

    def _read(self) -> None:
        try:
            while True:
                self._take(self._channel.read())
        except (CorralError, OSError) as exc:
            with self._lock:
                if self._closed is None:
                    self._closed = (exc if isinstance(exc, ProtocolError)
                                    else self._backend._gone(exc))
                gone, self._calls = self._calls, {}
            for future, _op, _on_item in gone.values():
                future.set_exception(self._closed)

    def _take(self, frame: dict[str, Any]) -> None:
        kind, call_id = frame.get("t"), frame.get("id")
        if kind == "refused":
            raise NoMaster(f"refused: {frame.get('message')}")
        if call_id is None and kind == "error":  # about the connection, not one call
            raise CorralError(str(frame.get("message")), _code(frame.get("code")))
        with self._lock:
            entry = self._calls.get(call_id) if type(call_id) is int else None
            if entry is not None and kind != "item":
                self._calls.pop(call_id)  # type: ignore[arg-type]
        if entry is None:
            raise ProtocolError(f"an answer to no call in flight from the {self._backend.peer}"
                                f" ({kind!r}, id {call_id!r}): does it take calls with ids?")
        future, op, on_item = entry
        spec = OPS.get(op)  # None: an operation the master refuses by name
        try:
            if spec is None and kind in ("item", "result"):
                raise ProtocolError(f"an answer to {op!r}, which is no operation")
            if spec is None or kind == "error":
                raise CorralError(str(frame.get("message")), _code(frame.get("code")))
            if kind == "item":
                if on_item is not None and not future.done():
                    on_item(codec.decode(spec.item, frame.get("value")))
            elif kind == "result":
                value = codec.decode(spec.result, frame.get("value"))
                if not future.done():
                    future.set_result(value)
            else:
                raise ProtocolError(f"unexpected frame {kind!r} from the "
                                    f"{self._backend.peer}")
        except CorralError as exc:  # this call's, not the connection's
            if kind == "item":  # its end (an error: cancelled) comes later
                self.cancel(future)
            if not future.done():
                future.set_exception(exc)


def _code(value: Any) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL
