"""Reading a process's log for the master: where its last N lines begin, and chunks from
an offset. Whatever the log's size, only one block is in memory at a time."""

from __future__ import annotations

import os
from typing import BinaryIO

BLOCK = 64 * 1024  # read backwards this much at a time when looking for line starts


def start_of_last_lines(log_file: BinaryIO, size: int, lines: int) -> int:
    """Offset where the last ``lines`` lines of the first ``size`` bytes begin (0 for a
    log with no more lines than that). A final line without a newline counts as a line."""
    if lines <= 0 or size == 0:
        return 0
    # The newline that ends the last line is not a boundary to look for.
    log_file.seek(size - 1)
    end = size - 1 if log_file.read(1) == b"\n" else size
    wanted = lines  # newlines still to find, going backwards
    position = end
    while position > 0:
        step = min(BLOCK, position)
        position -= step
        log_file.seek(position)
        block = log_file.read(step)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            wanted -= 1
            if wanted == 0:
                return position + index + 1
    return 0


def read_chunk(log_file: BinaryIO, offset: int, size: int, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` from ``offset``, never beyond ``size``."""
    log_file.seek(offset)
    return log_file.read(min(max_bytes, max(0, size - offset)))


def file_size(log_file: BinaryIO) -> int:
    return os.fstat(log_file.fileno()).st_size
