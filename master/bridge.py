"""The gevent hub in its own native thread, and the bridge the console thread calls it by.

The master is not monkey-patched: cmd2 4.x reads input through prompt-toolkit's asyncio
loop in the main thread, while every socket, session and timer lives on one gevent hub in
a dedicated thread. A call from another thread schedules a greenlet on the hub with
``loop.run_callback_threadsafe`` and waits on a ``concurrent.futures.Future`` that the
greenlet resolves. Ctrl-C in the waiting thread kills that greenlet through the same path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from typing import Any, TypeVar

import gevent
import gevent.event

from common.errors import CorralError, ErrorCode
from common.quiet_threads import quiet_thread

T = TypeVar("T")

SIGNAL_CHECK_INTERVAL = 0.25  # seconds a waiting main thread may sleep through a signal


class Cancelled(CorralError):
    code = ErrorCode.CANCELLED


class HubThread:
    def __init__(self, name: str = "corral-hub") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: Any = None
        self._stop: gevent.event.Event | None = None

    def start(self, setup: Callable[[], T]) -> T:
        """Start the hub thread, run ``setup`` on it, and return what it returned."""
        started: Future[T] = Future()
        # Greenlets per request: not recording where each was spawned makes one in 0.7 µs,
        # not 1.8 (a debugging aid nothing here reads).
        gevent.config.track_greenlet_tree = False

        def main() -> None:
            self._loop = gevent.get_hub().loop
            self._stop = gevent.event.Event()
            # A started async watcher keeps the loop alive while nothing else is pending,
            # so waiting for stop never ends in LoopExit.
            keepalive = self._loop.async_()
            keepalive.start(lambda: None)
            try:
                started.set_result(setup())
            except BaseException as exc:
                started.set_exception(exc)
                return
            try:
                self._stop.wait()
            finally:
                keepalive.close()

        self._thread = quiet_thread(main, self._name)
        self._thread.start()
        return started.result()

    def is_current(self) -> bool:
        """Whether the calling thread is the hub's."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a new greenlet on the hub; its outcome resolves the future.
        A future cancelled (``Future.cancel``) before the hub gets to it never runs."""
        future: Future[T] = Future()

        def launch() -> None:
            if not future.set_running_or_notify_cancel():
                return
            greenlet = gevent.spawn(_outcome, fn, *args)
            future.greenlet = greenlet  # type: ignore[attr-defined]
            greenlet.link(lambda g: _settle(future, g))

        self._loop.run_callback_threadsafe(launch)
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the hub and wait for it; Ctrl-C cancels it there."""
        future = self.submit(fn, *args)
        try:
            return result_heeding_signals(future)
        except KeyboardInterrupt:
            self.cancel(future)
            raise

    def call_to_the_end(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``call``, but Ctrl-C asks ``fn`` to stop (its greenlet gets GreenletExit)
        and then waits for what it returns: ``fn`` winds its work down and reports what
        became of it. A second Ctrl-C stops waiting."""
        future = self.submit(fn, *args)
        try:
            return result_heeding_signals(future)
        except KeyboardInterrupt:
            self.cancel(future)
        return result_heeding_signals(future)

    def cancel(self, future: Future[Any]) -> None:
        def kill() -> None:
            greenlet = getattr(future, "greenlet", None)
            if greenlet is not None:
                greenlet.kill(block=False)

        self._loop.run_callback_threadsafe(kill)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None or self._stop is None:
            return
        stop_event = self._stop
        self._loop.run_callback_threadsafe(stop_event.set)
        self._thread.join(timeout)


def result_heeding_signals(future: Future[T]) -> T:
    """``future.result()``, but a Ctrl-C is seen even when the kernel hands the SIGINT
    to another thread (the hub, a pool worker, cmd2's alert thread): Python then only sets
    a flag that the main thread reads when it runs, and a wait without a timeout would
    sleep through it. Waking every quarter second costs nothing while the future is
    pending and adds nothing once it resolves."""
    while not future.done():
        wait_for_futures((future,), timeout=SIGNAL_CHECK_INTERVAL)
    return future.result()


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """Run ``fn`` and hand back its exception as a value: an error is the caller's to
    report, and gevent would otherwise print it as if nobody had handled it."""
    try:
        return True, fn(*args)
    except Exception as exc:
        return False, exc


def _settle(future: Future[Any], greenlet: gevent.Greenlet) -> None:
    if future.done():
        return
    if greenlet.successful() and isinstance(greenlet.value, tuple):
        ok, value = greenlet.value
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    elif greenlet.successful():  # killed: the value is the GreenletExit
        future.set_exception(Cancelled("cancelled"))
    else:
        future.set_exception(greenlet.exception or Cancelled("cancelled"))
