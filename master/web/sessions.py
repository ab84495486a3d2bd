"""Who may use the dashboard: a login with the master's token opens a session, kept in an
HttpOnly, SameSite=Strict cookie, and every POST must also carry that session's CSRF token.

No gevent and no clock of its own (the caller passes the time in), so the rules are unit
tested directly. The token is compared in constant time and never stored here: a session
keeps a digest of the token it was opened with, and ends when the token changes (SIGHUP
after a rotation logs every browser out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable

COOKIE = "corral_session"
IDLE_LIMIT = 12 * 3600.0  # seconds a session lives unused
MAX_SESSIONS = 1000  # the oldest is dropped beyond this: a login loop cannot fill memory
FAILURES_ALLOWED = 10  # wrong tokens from one address in a window before it must wait
FAILURE_WINDOW = 60.0  # seconds
MAX_TRACKED = 10_000  # addresses whose failures are remembered


@dataclasses.dataclass
class WebSession:
    sid: str
    csrf: str
    token_digest: bytes
    last_used: float


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(b"corral web session\0" + token).digest()


class WebSessions:
    def __init__(self, token: Callable[[], bytes]) -> None:
        self._token = token  # read at each use: SIGHUP may replace it
        self._by_sid: OrderedDict[str, WebSession] = OrderedDict()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait_before_login(self, address: str, now: float) -> float:
        """Seconds ``address`` must wait before it may try a token again (0: now)."""
        count, since = self._failures.get(address, (0, now))
        if count < FAILURES_ALLOWED or now - since >= FAILURE_WINDOW:
            return 0.0
        return FAILURE_WINDOW - (now - since)

    def login(self, offered: str, address: str, now: float) -> WebSession | None:
        """A new session if ``offered`` is the token; None (and the failure counted)
        otherwise."""
        if not hmac.compare_digest(offered.encode("utf-8", "replace"), self._token()):
            count, since = self._failures.pop(address, (0, now))
            if now - since >= FAILURE_WINDOW:
                count, since = 0, now
            self._failures[address] = (count + 1, since)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
            return None
        self._failures.pop(address, None)
        session = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                             _digest(self._token()), now)
        self._by_sid[session.sid] = session
        while len(self._by_sid) > MAX_SESSIONS:
            self._by_sid.popitem(last=False)
        return session

    def find(self, sid: str | None, now: float) -> WebSession | None:
        """The live session of this cookie value, or None."""
        if not sid:
            return None
        session = self._by_sid.get(sid)
        if session is None:
            return None
        if (now - session.last_used > IDLE_LIMIT
                or not hmac.compare_digest(session.token_digest, _digest(self._token()))):
            del self._by_sid[sid]
            return None
        session.last_used = now
        self._by_sid.move_to_end(sid)
        return session

    def logout(self, sid: str) -> None:
        self._by_sid.pop(sid, None)

    @staticmethod
    def csrf_ok(session: WebSession, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(
            session.csrf.encode(), offered.encode("utf-8", "replace"))
