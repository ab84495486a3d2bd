"""One-time tickets for node-to-node data links (chained copies).

A node accepts a data connection from another node only when it presents a ticket the
master made for exactly that link: an HMAC-SHA256, under a key derived from the token,
over the transfer's id, the sending node, the receiving node, an expiry time and a random
nonce. The receiver checks the MAC, that it is the receiver named, that the sender is the
one the master told it to expect for that transfer (over its own authenticated master
connection), that the ticket has not expired, and that its nonce has not been used: a
forged, altered, misdirected, stale or replayed ticket is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import time
from collections.abc import Callable

from common.auth import claims
from common.errors import AuthError

TICKET_LIFETIME = 60.0  # seconds: time enough to connect, not to keep
_LABEL = b"corral-v2 data ticket"


@dataclasses.dataclass(frozen=True)
class Ticket:
    transfer: str
    sender: str
    receiver: str
    expires: float  # Unix time
    nonce: str
    mac: bytes


def _key(token: bytes) -> bytes:
    return hmac.digest(token, _LABEL, "sha256")


def _mac(token: bytes, transfer: str, sender: str, receiver: str, expires: float,
         nonce: str) -> bytes:
    return hmac.digest(_key(token), claims(transfer, sender, receiver, expires, nonce),
                       "sha256")


def issue(token: bytes, transfer: str, sender: str, receiver: str,
          lifetime: float = TICKET_LIFETIME, clock: Callable[[], float] = time.time) -> Ticket:
    """The master's side: a ticket for ``sender`` to connect to ``receiver``."""
    expires = clock() + lifetime
    nonce = os.urandom(16).hex()
    return Ticket(transfer, sender, receiver, expires, nonce,
                  _mac(token, transfer, sender, receiver, expires, nonce))


class NotAnnounced(AuthError):
    """A ticket that is sound but for a link the master has not announced (yet: its
    announcement may still be on the way, over another connection)."""


class TicketGate:
    """The receiving node's side: which links the master announced, and which tickets
    were already used (kept until they expire, so the memory stays bounded)."""

    def __init__(self, token: bytes, me: str, clock: Callable[[], float] = time.time) -> None:
        self.token = token  # replaced when the client re-reads its token (SIGHUP)
        self._me = me
        self._clock = clock
        # transfer -> the sender the master announced, and how far the master's clock is
        # ahead of ours (tickets expire by the master's clock: nodes' clocks may differ)
        self._expected: dict[str, tuple[str, float]] = {}
        self._used: dict[str, float] = {}  # nonce -> expiry, by our clock
        self._over: dict[str, float] = {}  # transfers forgotten -> until when to say so

    def expect(self, transfer: str, sender: str, master_clock: float | None = None) -> None:
        """The master announces ``sender`` for ``transfer``; ``master_clock`` is the
        master's time when it sent the announcement."""
        offset = 0.0 if master_clock is None else master_clock - self._clock()
        self._expected[transfer] = (sender, offset)

    def forget(self, transfer: str) -> None:
        """The copy is over here: a ticket for it is refused at once from now on."""
        if self._expected.pop(transfer, None) is not None:
            self._over[transfer] = self._clock() + TICKET_LIFETIME

    def admit(self, ticket: Ticket) -> None:
        """Accept ``ticket`` once, or raise AuthError saying why not."""
        now = self._clock()
        self._used = {nonce: expires for nonce, expires in self._used.items() if expires > now}
        self._over = {transfer: until for transfer, until in self._over.items() if until > now}
        expected = _mac(self.token, ticket.transfer, ticket.sender, ticket.receiver,
                        ticket.expires, ticket.nonce)
        if not hmac.compare_digest(expected, ticket.mac):
            raise AuthError("data link refused: the ticket's MAC is wrong (forged or altered)")
        if ticket.receiver != self._me:
            raise AuthError(f"data link refused: the ticket is for {ticket.receiver!r}")
        if ticket.nonce in self._used:
            raise AuthError("data link refused: the ticket was used already (a replay)")
        if ticket.transfer in self._over:
            raise AuthError("data link refused: that copy is over on this node (cancelled "
                            "or done)")
        sender, offset = self._expected.get(ticket.transfer, ("", 0.0))
        if sender != ticket.sender:
            raise NotAnnounced("data link refused: no such transfer from that sender "
                               "announced")
        if ticket.expires <= now + offset:
            raise AuthError("data link refused: the ticket has expired")
        self._used[ticket.nonce] = ticket.expires - offset
