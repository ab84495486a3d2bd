"""Bad input that does not end a connection, logged once per kind with a count.

A peer that repeats the same mistake (or does it on purpose) must not fill the master's
log: the first occurrence of each kind is logged with an example, the rest are counted and
summed up in one line when the connection closes.
"""

from __future__ import annotations

import logging
from collections import Counter


class Complaints:
    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._counts: Counter[str] = Counter()

    def note(self, peer: str, kind: str, example: str) -> None:
        self._counts[kind] += 1
        if self._counts[kind] == 1:
            self._log.warning("%s: %s (%s); repeats are counted, not logged", peer, kind,
                              example)

    def summarise(self, peer: str) -> None:
        for kind, count in self._counts.items():
            if count > 1:
                self._log.warning("%s: %s, %d times in all", peer, kind, count)
        self._counts.clear()
