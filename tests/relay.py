"""A man in the middle for tests: relays whole frames between clients and a master, keeps a
copy of every frame, and lets a test add bytes of its own in either direction."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

Rewrite = Callable[[bytes], bytes]  # a whole frame in, the frame to pass on out

_HEADER = struct.Struct(">I")


class Direction:
    """One way of one relayed connection: frames read from ``source`` go to ``sink``."""

    def __init__(self, source: socket.socket, sink: socket.socket,
                 rewrite: Rewrite | None = None) -> None:
        self.source, self.sink = source, sink
        self.rewrite = rewrite
        self.frames: list[bytes] = []  # every whole frame relayed, in order
        self._lock = threading.Lock()  # an injection never lands inside a relayed frame
        threading.Thread(target=self._relay, daemon=True).start()

    def inject(self, data: bytes) -> None:
        with self._lock:
            self.sink.sendall(data)

    def _relay(self) -> None:
        try:
            while True:
                header = self._read(_HEADER.size)
                frame = header + self._read(_HEADER.unpack(header)[0])
                if self.rewrite is not None:
                    frame = self.rewrite(frame)
                with self._lock:
                    self.sink.sendall(frame)
                    self.frames.append(frame)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sink.shutdown(socket.SHUT_WR)

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            got = self.source.recv(count - len(data))
            if not got:
                raise ConnectionResetError("closed")
            data += got
        return data


class Link:
    def __init__(self, client: socket.socket, master: socket.socket,
                 to_client: Rewrite | None, to_master: Rewrite | None) -> None:
        self.sockets = [client, master]
        self.to_client = Direction(master, client, to_client)
        self.to_master = Direction(client, master, to_master)


class FrameRelay:
    """Listens on an ephemeral port; each connection is relayed to ``master``, each frame
    passed through ``to_client`` or ``to_master`` first when given."""

    def __init__(self, master: tuple[str, int], to_client: Rewrite | None = None,
                 to_master: Rewrite | None = None) -> None:
        self.master = master
        self.rewrites = (to_client, to_master)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()
        self.links: list[Link] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                master = socket.create_connection(self.master)
                self.links.append(Link(client, master, *self.rewrites))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
        self.listener.close()
        for link in self.links:
            for sock in link.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
