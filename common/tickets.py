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


class TicketGate:
    """The receiving node's side: which links the master announced, and which tickets
    were already used (kept until they expire, so the memory stays bounded)."""

    def __init__(self, token: bytes, me: str, clock: Callable[[], float] = time.time) -> None:
        self._token = token
        self._me = me
        self._clock = clock
        self._expected: dict[str, str] = {}  # transfer -> the sender the master announced
        self._used: dict[str, float] = {}  # nonce -> expiry

    def expect(self, transfer: str, sender: str) -> None:
        self._expected[transfer] = sender

    def forget(self, transfer: str) -> None:
        self._expected.pop(transfer, None)

    def admit(self, ticket: Ticket) -> None:
        """Accept ``ticket`` once, or raise AuthError saying why not."""
        now = self._clock()
        self._used = {nonce: expires for nonce, expires in self._used.items() if expires > now}
        expected = _mac(self._token, ticket.transfer, ticket.sender, ticket.receiver,
                        ticket.expires, ticket.nonce)
        if not hmac.compare_digest(expected, ticket.mac):
            raise AuthError("data link refused: the ticket's MAC is wrong (forged or altered)")
        if ticket.receiver != self._me:
            raise AuthError(f"data link refused: the ticket is for {ticket.receiver!r}")
        if ticket.expires <= now:
            raise AuthError("data link refused: the ticket has expired")
        if ticket.nonce in self._used:
            raise AuthError("data link refused: the ticket was used already (a replay)")
        if self._expected.get(ticket.transfer) != ticket.sender:
            raise AuthError("data link refused: no such transfer from that sender announced")
        self._used[ticket.nonce] = ticket.expires
