"""Ctrl-C reaches a console call however the kernel delivers the SIGINT.

The kernel may hand a signal sent to the process to any thread that does not block it;
Python then runs the handler in the main thread only when that thread next runs. corral's
own threads block it (``common.quiet_threads``); a library's thread (cmd2's alert thread)
may not: these tests send SIGINT to such a bystander thread, the case a plain blocking
wait slept through.
"""

from __future__ import annotations

import signal
import threading

import gevent
import pytest

from common.quiet_threads import MAIN_THREAD_SIGNALS
from master.bridge import HubThread
from tests.harness import wait_until


@pytest.fixture
def hub():
    hub = HubThread()
    hub.start(lambda: None)
    yield hub
    hub.stop()


def _interrupt_a_bystander_once_started(started: threading.Event) -> None:
    def send() -> None:
        started.wait(30)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread

    threading.Thread(target=send, daemon=True).start()


def test_sigint_delivered_to_another_thread_cancels_a_call(hub) -> None:
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

    _interrupt_a_bystander_once_started(started)
    with pytest.raises(KeyboardInterrupt):
        hub.call(long_call)
    wait_until(cancelled.is_set, what="the call's greenlet killed on the hub")


def test_sigint_delivered_to_another_thread_winds_a_call_down(hub) -> None:
    started = threading.Event()

    def long_call() -> str:
        started.set()
        try:
            gevent.sleep(30)
        except gevent.GreenletExit:
            return "wound down"
        return "slept through the Ctrl-C"

    _interrupt_a_bystander_once_started(started)
    assert hub.call_to_the_end(long_call) == "wound down"


def test_a_call_failing_with_a_timeout_error_reports_it(hub) -> None:
    def times_out() -> None:
        raise TimeoutError("the node did not answer")

    with pytest.raises(TimeoutError, match="did not answer"):
        hub.call(times_out)


def test_the_hub_and_its_pool_leave_the_operators_signals_to_the_main_thread(hub) -> None:
    def blocked_here_and_in_the_pool() -> tuple[set[int], set[int]]:
        def mask() -> set[int]:
            return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return mask(), gevent.get_hub().threadpool.apply(mask)

    on_hub, in_pool = hub.call(blocked_here_and_in_the_pool)
    assert on_hub >= MAIN_THREAD_SIGNALS and in_pool >= MAIN_THREAD_SIGNALS
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # main: takes it
