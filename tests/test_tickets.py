"""Tickets for node-to-node data links: only the link the master signed, once, in time."""

from __future__ import annotations

import dataclasses

import pytest

from common.errors import AuthError
from common.tickets import TicketGate, issue

TOKEN = b"ticket-test-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(clock: Clock) -> TicketGate:
    gate = TicketGate(TOKEN, "n2", clock)
    gate.expect("t1", "n1")
    return gate


def test_the_signed_link_is_admitted_once(gate: TicketGate, clock: Clock) -> None:
    ticket = issue(TOKEN, "t1", "n1", "n2", clock=clock)
    gate.admit(ticket)
    with pytest.raises(AuthError, match="used already"):
        gate.admit(ticket)


@pytest.mark.parametrize("change", [
    {"transfer": "t2"}, {"sender": "n3"}, {"receiver": "n4"}, {"expires": 9e9},
    {"nonce": "00" * 16}, {"mac": b"\0" * 32}])
def test_any_altered_field_is_a_forgery(gate: TicketGate, clock: Clock,
                                        change: dict[str, object]) -> None:
    ticket = dataclasses.replace(issue(TOKEN, "t1", "n1", "n2", clock=clock), **change)
    with pytest.raises(AuthError, match="forged or altered"):
        gate.admit(ticket)


def test_a_ticket_made_with_another_token_is_a_forgery(gate: TicketGate, clock: Clock) -> None:
    with pytest.raises(AuthError, match="forged"):
        gate.admit(issue(b"not-the-token", "t1", "n1", "n2", clock=clock))


def test_misdirected_stale_or_unannounced_tickets_are_refused(gate: TicketGate,
                                                              clock: Clock) -> None:
    with pytest.raises(AuthError, match="for 'n3'"):
        gate.admit(issue(TOKEN, "t1", "n1", "n3", clock=clock))
    with pytest.raises(AuthError, match="no such transfer"):
        gate.admit(issue(TOKEN, "t9", "n1", "n2", clock=clock))
    with pytest.raises(AuthError, match="no such transfer"):
        gate.admit(issue(TOKEN, "t1", "n5", "n2", clock=clock))
    stale = issue(TOKEN, "t1", "n1", "n2", lifetime=5, clock=clock)
    clock.now += 6
    with pytest.raises(AuthError, match="expired"):
        gate.admit(stale)
    gate.forget("t1")
    with pytest.raises(AuthError, match="that copy is over"):  # at once: no waiting for it
        gate.admit(issue(TOKEN, "t1", "n1", "n2", clock=clock))


def test_tickets_expire_by_the_master_s_clock(clock: Clock) -> None:
    master_clock = Clock()
    master_clock.now = clock.now + 3600  # the node's clock is an hour behind the master's
    gate = TicketGate(TOKEN, "n2", clock)
    gate.expect("t1", "n1", master_clock())
    gate.admit(issue(TOKEN, "t1", "n1", "n2", lifetime=5, clock=master_clock))
    stale = issue(TOKEN, "t1", "n1", "n2", lifetime=5, clock=master_clock)
    clock.now += 6
    with pytest.raises(AuthError, match="expired"):
        gate.admit(stale)
    gate.forget("t1")
    with pytest.raises(AuthError, match="that copy is over"):
        gate.admit(issue(TOKEN, "t1", "n1", "n2", clock=clock))
