"""The one place where the client's children are reaped.

SIGCHLD reaches us through the self-pipe trick: ``signal.set_wakeup_fd`` makes the
interpreter's C-level handler write a byte to a pipe the moment a signal lands, and a
greenlet sleeping on that pipe wakes and calls ``wait4(-1, WNOHANG | WUNTRACED |
WCONTINUED)`` until nothing is left, collecting each child's status and resource usage.
The two extra flags also report a child that was stopped (SIGSTOP, SIGTSTP, ...) or
continued (SIGCONT); such a report is not an end: the child stays watched. A 1 s backstop
covers a lost wake-up.

No gevent child watcher may ever exist in the client: libev would reap every child itself
with ``waitpid(-1)``, and ``wait4`` would then get ECHILD and lose the rusage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket

log = logging.getLogger("corral.client.reaper")

ExitHandler = Callable[[int, int, Any], None]  # pid, wait status, struct_rusage
PauseHandler = Callable[[int, int], None]  # pid, wait status (stopped or continued)
BACKSTOP = 1.0
WAIT_FLAGS = os.WNOHANG | os.WUNTRACED | os.WCONTINUED


class Reaper:
    def __init__(self) -> None:
        self._handlers: dict[int, ExitHandler] = {}
        self._pause_handlers: dict[int, PauseHandler] = {}
        self._wake_read = -1

    def start(self) -> None:
        """Install the SIGCHLD wake-up; call once, from the main thread."""
        self._wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        # A Python-level handler must exist for the C handler to write the wake-up byte;
        # the work itself happens in the greenlet.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        gevent.spawn(self._run)

    def watch(self, pid: int, on_exit: ExitHandler, on_pause: PauseHandler | None = None
              ) -> None:
        """Call ``on_exit`` when ``pid`` is reaped, and ``on_pause`` each time it is
        stopped or continued. Register before yielding after spawn."""
        self._handlers[pid] = on_exit
        if on_pause is not None:
            self._pause_handlers[pid] = on_pause

    def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                gevent.socket.wait_read(self._wake_read, timeout=BACKSTOP)
            self._drain_wakeups()
            self.reap()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def reap(self) -> int:
        """Collect every child that has ended (and every stop and continue); return how
        many ended."""
        reaped = 0
        while True:
            try:
                pid, status, usage = os.wait4(-1, WAIT_FLAGS)
            except ChildProcessError:
                return reaped  # no children at all
            if pid == 0:
                return reaped  # children exist, none has changed
            if os.WIFSTOPPED(status) or os.WIFCONTINUED(status):
                self._paused(pid, status)  # still alive: not an end, keep watching
                continue
            reaped += 1
            self._pause_handlers.pop(pid, None)
            handler = self._handlers.pop(pid, None)
            if handler is None:
                log.warning("reaped pid %d that nobody was watching", pid)
                continue
            try:
                handler(pid, status, usage)
            except Exception:
                log.exception("exit handler for pid %d failed", pid)

    def _paused(self, pid: int, status: int) -> None:
        handler = self._pause_handlers.get(pid)
        if handler is None:
            return  # a child that only its exit matters for (a ``run`` command)
        try:
            handler(pid, status)
        except Exception:
            log.exception("stop/continue handler for pid %d failed", pid)
