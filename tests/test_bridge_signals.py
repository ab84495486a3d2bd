"""Ctrl-C reaches a console call however the kernel delivers the SIGINT.

The kernel may hand a signal sent to the process to any thread that does not block it;
Python then runs the handler in the main thread only when that thread next runs. These
tests send SIGINT to the hub thread itself, the case a plain blocking wait slept through.
"""

from __future__ import annotations

import signal
import threading

import gevent
import pytest

from master.bridge import HubThread
from tests.harness import wait_until


@pytest.fixture
def hub():
    hub = HubThread()
    hub.start(lambda: None)
    yield hub
    hub.stop()


def _interrupt_hub_thread_once_started(hub: HubThread, started: threading.Event) -> None:
    def send() -> None:
        started.wait(30)
        signal.pthread_kill(hub._thread.ident, signal.SIGINT)  # type: ignore[union-attr]

    threading.Thread(target=send, daemon=True).start()


def test_sigint_delivered_to_the_hub_thread_cancels_a_call(hub) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    def long_call() -> str:
        started.set()
        try:
            gevent.sleep(30)
        except gevent.GreenletExit:
            cancelled.set()
            raise
        return "slept through the Ctrl-C"

    _interrupt_hub_thread_once_started(hub, started)
    with pytest.raises(KeyboardInterrupt):
        hub.call(long_call)
    wait_until(cancelled.is_set, what="the call's greenlet killed on the hub")


def test_sigint_delivered_to_the_hub_thread_winds_a_call_down(hub) -> None:
    started = threading.Event()

    def long_call() -> str:
        started.set()
        try:
            gevent.sleep(30)
        except gevent.GreenletExit:
            return "wound down"
        return "slept through the Ctrl-C"

    _interrupt_hub_thread_once_started(hub, started)
    assert hub.call_to_the_end(long_call) == "wound down"


def test_a_call_failing_with_a_timeout_error_reports_it(hub) -> None:
    def times_out() -> None:
        raise TimeoutError("the node did not answer")

    with pytest.raises(TimeoutError, match="did not answer"):
        hub.call(times_out)
