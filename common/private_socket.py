"""A UNIX socket only its user can use, as the master's control socket and a client's job
socket are: born mode 0600 (no moment open to others), a stale one left by a killed
process replaced, a live one never taken over."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from common.errors import CorralError


def bind_private(listener: socket.socket, path: Path, taken: str) -> None:
    """Bind ``listener`` at ``path``; ``taken`` is the error when a live process already
    answers there."""
    _remove_stale(path, taken)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)


def _remove_stale(path: Path, taken: str) -> None:
    if not os.path.lexists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise CorralError(taken)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
