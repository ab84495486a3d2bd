"""Fair turns: a loop that stays busy gives the event loop a turn every slice; one that
waited for its work (a read loop between heartbeats) is not made to nap on top."""

from __future__ import annotations

import pytest

from common import turns
from common.turns import NAP, Turns


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(turns.time, "monotonic", fake)
    return fake


def test_a_busy_loop_naps_once_a_slice(clock: FakeClock) -> None:
    naps: list[float] = []
    busy = Turns(naps.append, slice_seconds=0.05)
    for _ in range(100):  # 100 messages 1 ms apart: 0.1 s of work
        clock.now += 0.001
        busy.take()
    assert naps == [NAP, NAP]


def test_a_loop_that_waits_between_messages_never_naps(clock: FakeClock) -> None:
    naps: list[float] = []
    idle = Turns(naps.append, slice_seconds=0.05)
    for _ in range(10):  # a heartbeat a second
        clock.now += 1.0
        idle.take()
    assert naps == []
