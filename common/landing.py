"""A file being received, on either side: written to a hidden temporary file beside its
destination, hashed as it arrives, and only after the sender's SHA-256 matches, fsync'd,
given its mode and renamed into place. A reader never sees half a file; a failed or
interrupted transfer leaves nothing at the destination."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from common.errors import CorralError, ErrorCode

TEMP_PREFIX = ".corral-partial-"


def io_error(path: Path | None, exc: OSError) -> CorralError:
    return CorralError(f"{path}: {exc.strerror or exc}", ErrorCode.IO)


class IncomingFile:
    def __init__(self, final: Path, mode: int, expected_size: int | None = None,
                 flush: Callable[[int], None] = os.fsync) -> None:
        """``flush`` is how to fsync; an event loop passes one that runs in a thread."""
        self.final = final
        self.mode = mode & 0o7777
        self.expected_size = expected_size
        self.size = 0
        self._flush = flush
        self._hasher = hashlib.sha256()
        self.temp = final.parent / f"{TEMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.temp, "xb")  # noqa: SIM115 (closed in commit or discard)
        except OSError as exc:
            raise io_error(final, exc) from None

    def write(self, data: bytes) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            raise io_error(self.final, exc) from None
        self._hasher.update(data)
        self.size += len(data)

    def commit(self, sha256: bytes) -> None:
        """Check, flush and rename into place; on any failure nothing is left behind."""
        try:
            if self.expected_size is not None and self.size != self.expected_size:
                raise CorralError(f"{self.final}: got {self.size} bytes of "
                                  f"{self.expected_size}", ErrorCode.IO)
            if self._hasher.digest() != sha256:
                raise CorralError(f"{self.final}: SHA-256 mismatch", ErrorCode.IO)
            try:
                self._out.flush()
                self._flush(self._out.fileno())
                os.fchmod(self._out.fileno(), self.mode)
                self._out.close()
                os.replace(self.temp, self.final)
            except OSError as exc:
                raise io_error(self.final, exc) from None
        except CorralError:
            self.discard()
            raise

    def discard(self) -> None:
        self._out.close()
        self.temp.unlink(missing_ok=True)
