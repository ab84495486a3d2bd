"""A table of records on disk that survives a restart: the client's processes
(``processes.jsonl``), the master's jobs (``jobs.jsonl``).

An append-only journal of JSON lines, one per event (a process started, a process ended),
each holding its record's ``seq`` and the fields that changed: appending costs one small
write, whatever the table's size. A program killed in the middle
of a write leaves at most a truncated last line, which is dropped with a warning. At start
the journal is replayed and then rewritten compactly through a temporary file and a rename,
so the file on disk is always whole. Anything else unreadable, or not a plain file of a
sane size (``common.statefile``), is set aside with a warning and the program starts with
an empty table.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from common.statefile import load_state_file, write_state_file

log = logging.getLogger("corral.journal")

# Far above what a table of its size takes (the client keeps 10,000 ended processes, the
# master 1,000 jobs, and both rewrite the journal compactly as it grows): a bigger file
# was not written by corral, and reading it could exhaust memory.
MAX_FILE = 256 * 1024 * 1024


class Journal:
    def __init__(self, path: Path, holds: str = "process", owner: str = "the client"
                 ) -> None:
        self.path = path
        self.holds = holds  # what a record is, and whose table it is, for warnings
        self.owner = owner
        self._out: int | None = None  # the descriptor appends go through
        self.appended = 0  # lines appended since the last rewrite

    def load(self) -> list[dict[str, Any]]:
        """Replay the journal: the last known state of each record, in ``seq`` order."""
        records = load_state_file(self.path, MAX_FILE, self._replay, log,
                                  f"{self.owner} starts with an empty {self.holds} table")
        return records or []

    def _replay(self, raw: bytes) -> list[dict[str, Any]]:
        records: dict[int, dict[str, Any]] = {}
        lines = raw.decode().split("\n")
        complete, last = lines[:-1], lines[-1]
        if last:
            log.warning("state file %s ends in a truncated line (the program was stopped "
                        "while writing it); that last event is lost", self.path)
        for number, line in enumerate(complete, 1):
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                    raise ValueError(f"not a {self.holds} event")
            except ValueError as exc:
                raise ValueError(f"line {number} is corrupt ({exc})") from None
            records.setdefault(event["seq"], {}).update(event)
        return [records[seq] for seq in sorted(records)]

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the journal with one line per record, atomically."""
        write_state_file(self.path, "".join(json.dumps(record) + "\n"
                                            for record in records).encode())
        self.close()
        self.appended = 0

    def append(self, event: dict[str, Any]) -> None:
        """Hand one line to the kernel at once (a killed program loses none of it; it is
        not fsync'd, so a power cut may)."""
        if self._out is None:
            # Never through a link put in its place, never waiting on a FIFO for a reader.
            self._out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        # One write of a whole line: a crash can cut only this line, never an earlier one.
        line = memoryview((json.dumps(event) + "\n").encode())
        while line:
            line = line[os.write(self._out, line):]
        self.appended += 1

    def close(self) -> None:
        if self._out is not None:
            os.close(self._out)
            self._out = None
