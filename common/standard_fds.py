"""Descriptors 0, 1 and 2 open before anything else is.

A daemon started with one of them closed (``corral-client <&-``, some supervisors) would
get its first socket or pipe as descriptor 0, 1 or 2: a log line printed to "stderr" would
then go into a connection, and a child's ``dup2(log, 1)`` would close the client's own
pipe. So each program opens ``/dev/null`` onto any of the three that is closed, first.
"""

from __future__ import annotations

import os
import sys


def open_missing_standard_descriptors() -> list[int]:
    """Put /dev/null on whichever of 0, 1, 2 is closed; return the ones that were."""
    missing = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            missing.append(fd)
    for fd in missing:
        # open() returns the lowest free number, which is the missing one (the lower ones
        # are open by now); dup2 covers the case where it is not.
        opened = os.open(os.devnull, os.O_RDWR)
        if opened == fd:
            os.set_inheritable(fd, True)  # Python opens close-on-exec; 0-2 never are
        else:
            os.dup2(opened, fd)
            os.close(opened)
    return missing


def ensure_standard_streams() -> None:
    """The three descriptors open, and ``sys.stdout``/``sys.stderr`` usable: Python sets
    them to None when it started with 1 or 2 closed, and every ``print`` is then lost."""
    open_missing_standard_descriptors()
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
