"""The master's accept loop: past its connection capacity, or with no descriptor left, a
new connection is refused at once with a reason instead of being left to wait.

A server out of descriptors cannot accept: the connection stays in the kernel's queue and
the client waits for a hello that never comes, while the accept loop spins on ``Too many
open files``. So the master holds at most ``capacity`` connections (its open-file limit
less what it keeps for its own files, see ``common.fdlimit``), and keeps one descriptor
spare: when accepting fails for lack of descriptors it closes the spare, accepts the
waiting connection on it, refuses it, and takes the spare back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Sized
from typing import Any

import gevent
import gevent.socket
from gevent.server import StreamServer

from common.errors import ErrorCode
from common.fdlimit import OpenFileLimit
from common.framing import pack_frame
from common.messages import ErrorFrame

NOTICE_EVERY = 60.0  # seconds between the counts of connections refused for lack of room
_NO_DESCRIPTOR = (errno.EMFILE, errno.ENFILE)
_PAUSE = 0.1  # seconds without accepting when even the spare descriptor is gone


class RefusalNotice:
    """Refusals for lack of room, told at once and then as a count now and then: a master
    at its limit with thousands of clients retrying must not bury its log."""

    def __init__(self, tell: Callable[[str, str], None], every: float = NOTICE_EVERY) -> None:
        self._tell = tell
        self._every = every
        self._told_at: float | None = None
        self._unreported = 0
        self.total = 0

    def note(self, source: str, reason: str, now: float) -> None:
        self.total += 1
        if self._told_at is None or now - self._told_at >= self._every:
            more = f"; {self._unreported} more since the last notice" if self._unreported else ""
            self._tell(source, f"{reason}{more}")
            self._told_at, self._unreported = now, 0
        else:
            self._unreported += 1


class Listener(StreamServer):
    def __init__(self, address: tuple[str, int], handle: Callable[[Any, Any], None],
                 sessions: Sized, limit: OpenFileLimit, tls: bool,
                 tell: Callable[[str, str], None]) -> None:
        super().__init__(address, handle, backlog=2048)
        self.max_accept = 1000  # drain a reconnect storm in big gulps
        self.limit = limit
        self.capacity = limit.connections
        self._sessions = sessions
        self._tls = tls
        self.notice = RefusalNotice(tell)
        self._spare: int | None = self._open_spare()

    @staticmethod
    def _open_spare() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def close(self) -> None:
        super().close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def do_read(self) -> tuple[Any, Any] | None:
        try:
            fd, address = self.socket._accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in _NO_DESCRIPTOR:
                raise
            self._refuse_without_descriptor()
            return None
        if len(self._sessions) >= self.capacity:
            self._refuse(fd, address, (
                f"master full: it holds {len(self._sessions)} connections, all that its "
                f"{self.limit.describe()} allows; raise the master's limit (ulimit -n, "
                "LimitNOFILE=)"))
            return None
        return gevent.socket.socket(self.socket.family, self.socket.type, self.socket.proto,
                                    fileno=fd), address

    def _refuse_without_descriptor(self) -> None:
        if self._spare is None:
            # Nothing to accept with: pause rather than spin on the waiting connection.
            self.stop_accepting()
            gevent.spawn_later(_PAUSE, self._resume)
            self._spare = self._open_spare()
            return
        os.close(self._spare)
        try:
            fd, address = self.socket._accept()
        except OSError:
            pass  # it went away, or another thread took the descriptor
        else:
            self._refuse(fd, address, (
                f"master out of file descriptors ({self.limit.describe()}); raise the "
                "master's limit (ulimit -n, LimitNOFILE=)"))
        self._spare = self._open_spare()

    def _resume(self) -> None:
        if not self.closed:
            self.start_accepting()

    def _refuse(self, fd: int, address: Any, reason: str) -> None:
        """Tell the peer why and close: in clear (it waits for our hello), or with TLS just
        close (its handshake has begun; this master's log says why)."""
        with socket.socket(fileno=fd) as refused:
            refused.setblocking(False)
            if not self._tls:
                with contextlib.suppress(OSError):  # a fresh socket's buffer takes it
                    refused.send(pack_frame(ErrorFrame(code=int(ErrorCode.MASTER_FULL),
                                                       message=reason).to_wire()))
        self.notice.note(str(address[0]), reason, time.monotonic())
