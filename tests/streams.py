"""A socket stand-in for frame readers: hands out a byte string in the pieces given."""

from __future__ import annotations

import typing


class Chunks:
    """Delivers ``data`` cut at ``cuts``: one read returns at most the rest of one piece,
    as a socket returns what has arrived so far. Counts the reads."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        self.pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        self.reads = 0

    def recv_into(self, buffer: typing.Any, nbytes: int = 0, /) -> int:
        self.reads += 1
        while self.pieces and not self.pieces[0]:
            self.pieces.pop(0)
        if not self.pieces:
            return 0
        piece = self.pieces[0][: nbytes or len(buffer)]
        self.pieces[0] = self.pieces[0][len(piece):]
        buffer[: len(piece)] = piece
        return len(piece)

    def sendall(self, data: typing.Any, /) -> None:
        raise AssertionError("not used")


class Flood:
    """A peer that keeps the socket full: every read fills all the room it is given, until
    ``data`` runs out. Records the room of each read."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0
        self.rooms: list[int] = []

    def recv_into(self, buffer: typing.Any, nbytes: int = 0, /) -> int:
        room = nbytes or len(buffer)
        self.rooms.append(room)
        piece = self._data[self._at:self._at + room]
        buffer[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)

    def sendall(self, data: typing.Any, /) -> None:
        raise AssertionError("not used")
