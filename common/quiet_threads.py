"""Threads that leave the operator's signals to the main thread.

The kernel hands a signal sent to the process (Ctrl-C's SIGINT, SIGTERM, SIGHUP) to any
thread that does not block it, and Python runs its handler only when the main thread next
runs: a main thread blocked in a read or a lock would sleep through a Ctrl-C that landed
on a helper thread. Threads started here block those signals, so the kernel must give them
to a thread that takes them. (Threads of libraries, such as cmd2's alert thread, are not
started here: the master's waits also wake every so often, ``master.bridge``.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def quiet_thread(target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()
                 ) -> threading.Thread:
    """A daemon thread running ``target(*args)`` with the main thread's signals blocked
    (not started); threads it starts inherit the mask."""
    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)
