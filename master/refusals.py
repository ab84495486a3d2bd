"""Refused connection attempts (a wrong token, a name in use or malformed, a certificate for
another node) told to the operator once per source and reason, then counted: a client
retrying every few seconds must not bury the console in identical lines."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from master.events import NodeEvent

SUMMARY_EVERY = 60.0  # seconds between the counts of repeated refusals


@dataclasses.dataclass
class _Seen:
    name: str
    total: int = 1
    unreported: int = 0
    reported_at: float = 0.0


class Refusals:
    def __init__(self, publish: Callable[[NodeEvent], None],
                 every: float = SUMMARY_EVERY) -> None:
        self._publish = publish
        self._every = every
        self._seen: dict[tuple[str, str], _Seen] = {}  # by (source host, reason)

    def note(self, source: str, name: str, reason: str, now: float) -> None:
        seen = self._seen.get((source, reason))
        if seen is None:
            self._seen[(source, reason)] = _Seen(name, reported_at=now)
            self._publish(NodeEvent(name, None, None, f"{reason} (from {source})"))
            return
        seen.total += 1
        seen.unreported += 1

    def flush(self, now: float) -> None:
        """Publish one count per source and reason that repeated since it was last told."""
        for (source, reason), seen in self._seen.items():
            if seen.unreported and now - seen.reported_at >= self._every:
                self._publish(NodeEvent(seen.name, None, None, (
                    f"{reason} (from {source}; {seen.unreported} more attempts in the last "
                    f"{now - seen.reported_at:.0f} s, {seen.total} in all)")))
                seen.unreported, seen.reported_at = 0, now
        if len(self._seen) > 10_000:  # a scan from many sources: keep only what repeats
            self._seen = {key: s for key, s in self._seen.items() if s.unreported}
