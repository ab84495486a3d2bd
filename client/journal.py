"""The client's process table on disk, so a restarted client finds its processes again.

An append-only journal of JSON lines, one per event (a process started, a process ended):
appending costs one small write, whatever the table's size. A client killed in the middle
of a write leaves at most a truncated last line, which is dropped with a warning. At start
the journal is replayed and then rewritten compactly through a temporary file and a rename,
so the file on disk is always whole. Anything else unreadable is set aside with a warning
and the client starts with an empty table.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("corral.client.journal")


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: Any = None
        self.appended = 0  # lines appended since the last rewrite

    def load(self) -> list[dict[str, Any]]:
        """Replay the journal: the last known state of each process, by start order."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            return self._set_aside(f"unreadable ({exc})")
        records: dict[int, dict[str, Any]] = {}
        lines = text.split("\n")
        complete, last = lines[:-1], lines[-1]
        if last:
            log.warning("state file %s ends in a truncated line (the client was stopped "
                        "while writing it); that last event is lost", self.path)
        for number, line in enumerate(complete, 1):
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                    raise ValueError("not a process event")
                records.setdefault(event["seq"], {}).update(event)
            except ValueError as exc:
                return self._set_aside(f"line {number} is corrupt ({exc})")
        return [records[seq] for seq in sorted(records)]

    def _set_aside(self, why: str) -> list[dict[str, Any]]:
        aside = self.path.with_name(self.path.name + ".corrupt")
        log.warning("state file %s is %s; it is kept as %s and the client starts with an "
                    "empty process table", self.path, why, aside)
        os.replace(self.path, aside)
        return []

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the journal with one line per process, atomically."""
        temp = self.path.with_name(f".{self.path.name}.tmp")
        with open(temp, "w") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        self.close()
        self.appended = 0

    def append(self, event: dict[str, Any]) -> None:
        if self._out is None:
            self._out = open(self.path, "a")  # noqa: SIM115 (kept open; closed in close)
        # One write of a whole line: a crash can cut only this line, never an earlier one.
        self._out.write(json.dumps(event) + "\n")
        self._out.flush()
        self.appended += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
