"""A man in the middle for tests: relays whole frames between clients and a master, keeps a
copy of every frame, and lets a test add bytes of its own in either direction."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

_HEADER = struct.Struct(">I")


class Direction:
    """One way of one relayed connection: frames read from ``source`` go to ``sink``."""

    def __init__(self, source: socket.socket, sink: socket.socket) -> None:
        self.source, self.sink = source, sink
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
    def __init__(self, client: socket.socket, master: socket.socket) -> None:
        self.sockets = [client, master]
        self.to_client = Direction(master, client)
        self.to_master = Direction(client, master)


class FrameRelay:
    """Listens on an ephemeral port; each connection is relayed to ``master``."""

    def __init__(self, master: tuple[str, int]) -> None:
        self.master = master
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()
        self.links: list[Link] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                master = socket.create_connection(self.master)
                self.links.append(Link(client, master))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
        self.listener.close()
        for link in self.links:
            for sock in link.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
