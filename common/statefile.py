"""Reading the files a program keeps in its state folder (the master's variables, jobs,
environment and known nodes; the client's process journal and node id), which a person
or a stray program may have replaced by something else.

A plain ``read_text`` of such a path trusts what it finds: a FIFO blocks the program at
start until someone writes to it, a symbolic link to ``/dev/zero`` or a huge file makes it
read until memory runs out. Here the file is opened without following a final symbolic
link and without blocking (a FIFO opens at once), must be a regular file, and is read only
up to a size the caller gives, which is above anything the program itself writes. What
fails these checks is refused with its reason; the caller sets it aside as it does a
corrupt file.

Writing one goes through a temporary file beside it that is made afresh (a FIFO or a
symbolic link planted under the temporary name would otherwise block the writer or send
the content elsewhere), fsync'd, then renamed over the file: a reader, or a program
started after a crash, sees the old content or the new, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class StateFileRefused(Exception):
    """The path holds something a state file cannot be; ``str()`` says what."""


def read_state_file(path: Path, max_bytes: int) -> bytes | None:
    """The whole content of the regular file at ``path``, or None when there is none.
    Raises StateFileRefused for a symbolic link, anything not a regular file, or a file
    over ``max_bytes``; OSError when it cannot be read."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileRefused("a symbolic link, not a file (never followed)") from None
        if exc.errno == errno.ENXIO:  # a UNIX socket
            raise StateFileRefused("not a regular file (a socket)") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateFileRefused(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise StateFileRefused(f"{info.st_size:,} bytes, more than the {max_bytes:,} "
                                   "this file may hold")
        return _read_at_most(fd, max_bytes)
    finally:
        os.close(fd)


def write_state_file(path: Path, data: bytes, mode: int = 0o600,
                     sync_folder: bool = False) -> None:
    """Replace the file at ``path`` with ``data``, atomically; ``sync_folder``: also
    fsync the folder, so the rename itself survives a crash. Raises OSError."""
    temp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)  # whatever was left there: a crashed write, or something planted
    fd = os.open(temp, _CREATE_FLAGS, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, path)
    if sync_folder:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_state_file(path: Path, max_bytes: int, parse: Callable[[bytes], T],
                    log: logging.Logger, starts: str) -> T | None:
    """``parse`` of the file's content; None when there is no file, or when it was refused
    or ``parse`` raised ValueError (or KeyError, TypeError: a record of the wrong shape;
    RecursionError: JSON nested deeper than Python's stack). Then the file is set aside and
    one warning says why and that the program ``starts`` (``"the store starts empty"``)
    without it."""
    try:
        raw = read_state_file(path, max_bytes)
        return None if raw is None else parse(raw)
    except (StateFileRefused, OSError, ValueError, KeyError, TypeError,
            RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        set_aside(path, why, log, starts)
        return None


def set_aside(path: Path, why: str, log: logging.Logger, starts: str) -> None:
    """Move a refused or corrupt state file out of the way, kept for a person to look at,
    and say so in one line."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        kept = f"kept as {aside}"
    except OSError as exc:
        kept = f"could not be moved aside ({exc.strerror or exc})"
    log.warning("state file %s refused: %s; %s, and %s", path, why, kept, starts)


def _read_at_most(fd: int, max_bytes: int) -> bytes:
    """Read to the end, but not past ``max_bytes``: the file may grow while it is read."""
    chunks = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise StateFileRefused(f"more than the {max_bytes:,} bytes this file may hold")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
