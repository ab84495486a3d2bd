"""Plain WSGI plumbing for the dashboard: a request wrapper, responses, and the checks
that every request passes before a handler sees it (Host, Origin). No gevent.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024  # bytes of a POST body (a token, refs, a command line)

StartResponse = Callable[..., Any]

# Every response: nothing cached, nothing framed, nothing sniffed, no script but ours.
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; "
     "form-action 'self'; base-uri 'none'"),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.path: str = environ.get("PATH_INFO", "/") or "/"
        self.query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.remote: str = environ.get("REMOTE_ADDR", "?")

    def header(self, name: str) -> str | None:
        if name.lower() == "content-type":
            return self.environ.get("CONTENT_TYPE") or None
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return str(value) if value is not None else None

    def cookie(self, name: str) -> str | None:
        cookies = SimpleCookie()
        try:
            cookies.load(self.environ.get("HTTP_COOKIE", ""))
        except CookieError:
            return None
        morsel = cookies.get(name)
        return morsel.value if morsel is not None else None

    @property
    def scheme(self) -> str:
        return str(self.environ.get("wsgi.url_scheme", "http"))

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object. Only JSON is taken: a cross-site HTML form cannot
        send it without a CORS preflight, which this server never grants."""
        kind = (self.header("content-type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HttpError(415, "send JSON (Content-Type: application/json)")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(413, f"body over {MAX_BODY} bytes")
        try:
            raw = self.environ["wsgi.input"].read(length) if length > 0 else b""
        except OSError:  # the peer hung up half-way
            raise HttpError(400, "the body ended early") from None
        try:
            body = json.loads(raw or b"{}", parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "body is not JSON") from None
        except RecursionError:
            raise HttpError(400, "body is JSON nested too deep") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body is not a JSON object")
        try:  # JSON may escape a lone surrogate, which no node's UTF-8 can carry
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise HttpError(400, "body holds a lone surrogate (\\ud800 to \\udfff), "
                                 "which is not text") from None
        return body


def _not_json(word: str) -> Any:
    """NaN, Infinity and -Infinity: Python's JSON reader takes them, the standard does not,
    and a nan timeout never ends."""
    raise HttpError(400, f"body is not JSON: {word} is not a number JSON allows")


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """``[::1]:8080`` -> ``::1``, ``example.org:80`` -> ``example.org``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def host_problem(request: Request, bound_host: str, also: frozenset[str] = frozenset()
                 ) -> str | None:
    """A dashboard bound to a loopback address answers only to loopback names, and to
    the names of the origins it was told to trust (``also``: a proxy's): another name
    there means a page elsewhere whose name was pointed at 127.0.0.1 (DNS rebinding)."""
    host = request.header("host")
    if host is None:
        return "no Host header"
    name = host_name(host).lower()
    if is_loopback(bound_host) and not is_loopback(name) and name not in also:
        return f"this dashboard answers to a loopback name, not {host!r}"
    return None


def origin_problem(request: Request, also: frozenset[str] = frozenset()) -> str | None:
    """A POST must come from a page of this dashboard: its Origin, when the client sends
    one (every browser does for a POST), must be this server's own, or one of the origins
    it was told to trust (``also``: a TLS-terminating proxy's ``https://name``, which the
    server, speaking plain http behind it, cannot see for itself)."""
    origin = request.header("origin")
    if origin is not None:
        expected = f"{request.scheme}://{request.header('host')}"
        if origin == expected or origin.lower() in also:
            return None
        return f"cross-origin request from {origin!r}"
    fetch_site = request.header("sec-fetch-site")
    if fetch_site not in (None, "same-origin", "none"):
        return f"cross-site request ({fetch_site})"
    return None


def respond(start: StartResponse, status: int, body: bytes, content_type: str,
            headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    phrase = HTTPStatus(status).phrase
    start(f"{status} {phrase}", [("Content-Type", content_type),
                                 ("Content-Length", str(len(body))),
                                 *SECURITY_HEADERS, *headers])
    return [body]


def respond_json(start: StartResponse, status: int, value: Any,
                 headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json.dumps(value, separators=(",", ":")).encode()
    return respond(start, status, body, "application/json", headers)


def session_cookie(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
