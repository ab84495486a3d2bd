"""A plain HTTP client for the dashboard's tests: what a script (or an attacker) would use,
with none of a browser's help. Keeps the session cookie it is given."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
from typing import Any


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class WebClient:
    def __init__(self, address: tuple[str, int], host_header: str | None = None) -> None:
        self.address = address
        self.host_header = host_header or f"{address[0]}:{address[1]}"
        self.cookie: str | None = None
        self.csrf: str | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host_header}"

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None
                ) -> Response:
        connection = http.client.HTTPConnection(*self.address, timeout=30)
        sent = {"Host": self.host_header, **(headers or {})}
        if self.cookie is not None:
            sent.setdefault("Cookie", self.cookie)
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            connection.request(method, path, body=data, headers=sent)
            reply = connection.getresponse()
            return Response(reply.status, reply.headers, reply.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, csrf: bool = True, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if csrf and self.csrf is not None:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.request("POST", path, body=body, headers=headers, **kwargs)

    def login(self, token: str) -> Response:
        reply = self.post("/login", {"token": token}, csrf=False)
        if reply.status == 200:
            match = re.match(r"([^=]+=[^;]*)", reply.headers["Set-Cookie"])
            assert match
            self.cookie = match.group(1)
            self.csrf = reply.json()["csrf"]
        return reply


class EventStream:
    """An open ``/events`` stream, read event by event."""

    def __init__(self, client: WebClient) -> None:
        self.connection = http.client.HTTPConnection(*client.address, timeout=30)
        headers = {"Host": client.host_header, "Accept": "text/event-stream"}
        if client.cookie is not None:
            headers["Cookie"] = client.cookie
        self.connection.request("GET", "/events", headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def next(self) -> tuple[str, Any]:
        """The next event that carries data: (kind, data)."""
        kind, data = "message", ""
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data += line[len("data: "):]
            elif line == "" and data:
                return kind, json.loads(data)

    def close(self) -> None:
        self.connection.close()


class ByteRelay:
    """A TCP relay in front of the dashboard whose connections a test can cut, holding new
    ones until it resumes: a network outage between a browser and the master."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._passing = threading.Event()
        self._passing.set()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Break every relayed connection; new ones wait for ``resume``."""
        self._passing.clear()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def resume(self) -> None:
        self._passing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._passing.set()  # connections held back are let go, and closed
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                near, _address = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._link, args=(near,), daemon=True).start()

    def _link(self, near: socket.socket) -> None:
        self._passing.wait()
        if self._closed:
            near.close()
            return
        try:
            far = socket.create_connection(self.target)
        except OSError:
            near.close()
            return
        with self._lock:
            self._open += [near, far]
        threading.Thread(target=self._pump, args=(far, near), daemon=True).start()
        self._pump(near, far)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
