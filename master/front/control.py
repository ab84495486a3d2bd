"""The front end's side of the control socket: call one operation of a running master.

Where the master is: ``--control PATH``, else ``CORRAL_CONTROL``, else the current user's
default state folder (``$XDG_STATE_HOME/corral/master/control.sock``).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from common.errors import ConnectionClosed, CorralError, ErrorCode, ProtocolError
from common.framing import FrameChannel
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
        threading.Thread(target=listen, name="corral-events", daemon=True).start()


def _code(value: Any) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL
