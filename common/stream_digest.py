"""The end-to-end check of a chained copy: one SHA-256 over every entry of the stream
(its path, kind, mode, size and link target) and every byte of its files, in order.

The master computes it while it reads the files and gives it to each node over that node's
own authenticated connection; each node computes it over what it received through the
chain and lands nothing unless the two agree. The frame MACs of a data link prove only that
the previous node sent the frames: this proves that they are the master's.
"""

from __future__ import annotations

import hashlib

import msgpack


class StreamDigest:
    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def entry(self, relpath: str, kind: str, mode: int, size: int, target: str) -> None:
        # Packed, not joined: no two different entries may feed the same bytes.
        self._sha.update(msgpack.packb([relpath, kind, mode, size, target]))

    def data(self, data: bytes) -> None:
        self._sha.update(data)

    def digest(self) -> bytes:
        return self._sha.digest()
