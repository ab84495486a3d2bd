"""A scripted node for tests: it holds the token and speaks the protocol, but answers what
the test tells it to, so a test can play a hostile or broken client against a real master."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from client.protocol import Identity, handshake
from common.errors import CorralError
from common.framing import FrameChannel
from common.messages import Heartbeat, Message, Ping, Reply, decode

# What the peer answers to a request: the reply's value (any shape: that is the point), a
# whole message to send instead, or Frames.
Answer = Callable[[Message], Any]


@dataclasses.dataclass
class Frames:
    """Several frames to send for one request, each given the request's id."""

    wires: list[dict[str, Any]]


def good_heartbeat(seq: int) -> dict[str, Any]:
    return Heartbeat(seq=seq, load=[0.0, 0.0, 0.0], cpu_percent=0.0, mem_available=1,
                     mem_total=1, disk_free=1, processes=0).to_wire()


class ScriptedNode:
    """Connects, authenticates, heartbeats every ``interval`` seconds from a thread, and
    answers each request with ``answer(request)``; Ping is answered properly."""

    def __init__(self, address: tuple[str, int], name: str, token: bytes,
                 answer: Answer | None = None, interval: float = 0.1,
                 watches_link: bool | None = None) -> None:
        self.address = address
        self.identity = Identity(node_id=uuid.uuid4().hex, name=name, host="scripted")
        self.token = token
        self.answer = answer or (lambda request: None)
        self.interval = interval
        self.watches_link = watches_link  # None: as a real client on this socket would say
        self.requests: list[Message] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock: socket.socket | None = None
        self.channel: FrameChannel | None = None

    def start(self) -> ScriptedNode:
        self.sock = socket.create_connection(self.address, timeout=30)
        self.channel = FrameChannel(self.sock)
        handshake(self.channel, self.identity, self.token, self.watches_link)
        self.sock.settimeout(None)
        threading.Thread(target=self._beat, daemon=True).start()
        threading.Thread(target=self._serve, args=(self.channel,), daemon=True).start()
        return self

    def send_wire(self, wire: dict[str, Any]) -> None:
        assert self.channel is not None
        with self._lock:  # frames are numbered: made and sent in one order
            self.channel.send(wire)

    def send(self, message: Message) -> None:
        self.send_wire(message.to_wire())

    def _beat(self) -> None:
        seq = 0
        while not self._stop.wait(self.interval if seq else 0):
            seq += 1
            try:
                self.send_wire(good_heartbeat(seq))
            except OSError:
                return

    def _serve(self, channel: FrameChannel) -> None:
        try:
            while True:
                request = decode(channel.read())
                self.requests.append(request)
                req = getattr(request, "req", None)
                if req is None:
                    continue
                if isinstance(request, Ping):
                    self.send(Reply(req=req, value=None))
                    continue
                answer = self.answer(request)
                if isinstance(answer, Message):
                    self.send(answer)
                elif isinstance(answer, Frames):
                    for wire in answer.wires:
                        self.send_wire({**wire, "req": req})
                else:
                    self.send_wire(Reply(req=req, value=answer).to_wire())
        except (OSError, CorralError):
            pass
        finally:
            self.closed.set()

    def stop(self) -> None:
        self._stop.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
