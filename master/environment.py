"""The master's global environment (WISH's global shell environment): entries that
``setenv`` adds and ``unsetenv`` removes, merged into every later ``exec`` and ``run``
beneath what the command sets itself. Kept in the state folder (``environment.json``,
rewritten whole through a temporary file and a rename), so it survives a restart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from common.errors import CorralError, ErrorCode, UsageError
from common.jobs import MAX_ENV_TOTAL, env_entry_problem, env_name_problem, env_size
from common.statefile import load_state_file, write_state_file

log = logging.getLogger("corral.master.environment")

FILE_NAME = "environment.json"
# What a global environment at its limit takes on disk with every character escaped by
# JSON (6 bytes for 1); a bigger file was not written by a master.
MAX_FILE = 6 * MAX_ENV_TOTAL + 4096


class GlobalEnvironment:
    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME
        self._entries: dict[str, str] = {}
        entries = load_state_file(self.path, MAX_FILE, _parse, log,
                                  "the global environment starts empty")
        for name, value in (entries or {}).items():
            problem = env_entry_problem(name, value)
            if problem is None:
                self._entries[name] = value
            else:
                log.warning("%s: entry dropped: %s", self.path, problem)

    def entries(self) -> dict[str, str]:
        return dict(sorted(self._entries.items()))

    def set(self, pairs: dict[str, str]) -> dict[str, str]:
        """Add or replace entries, all or none; the environment after."""
        if not isinstance(pairs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()):
            raise UsageError("setenv takes a map of names to values, all text")
        for name, value in pairs.items():
            problem = env_entry_problem(name, value)
            if problem is not None:
                raise UsageError(problem)
        after = {**self._entries, **pairs}
        if env_size(after) > MAX_ENV_TOTAL:
            raise UsageError(f"the global environment would hold {env_size(after):,} bytes, "
                             f"more than {MAX_ENV_TOTAL:,}")
        self._save(after)
        return self.entries()

    def unset(self, names: list[str]) -> dict[str, str]:
        """Remove entries (a name not set is not an error, as with the shell's unset)."""
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError("unsetenv takes a list of names")
        for name in names:
            problem = env_name_problem(name)
            if problem is not None:
                raise UsageError(problem)
        self._save({k: v for k, v in self._entries.items() if k not in names})
        return self.entries()

    def merged(self, requested: dict[str, str]) -> dict[str, str]:
        """What a command's own entries add to (and override in) the global ones."""
        for name, value in requested.items():
            problem = env_entry_problem(name, value)
            if problem is not None:
                raise UsageError(problem)
        return {**self._entries, **requested} if self._entries else requested

    def _save(self, entries: dict[str, str]) -> None:
        """Write ``entries`` to disk, then use them: a failed write changes nothing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_state_file(self.path, (json.dumps({"environment": entries}, indent=0)
                                         + "\n").encode())
        except OSError as exc:
            raise CorralError(f"cannot save the global environment to {self.path}: "
                              f"{exc.strerror or exc}", ErrorCode.IO) from None
        self._entries = entries


def _parse(raw: bytes) -> dict[str, str]:
    data: Any = json.loads(raw)
    entries = data["environment"]
    if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entries.items()):
        raise ValueError("not a map of names to text")
    if env_size(entries) > MAX_ENV_TOTAL:
        raise ValueError(f"it holds {env_size(entries):,} bytes, more than the "
                         f"{MAX_ENV_TOTAL:,} a global environment may")
    return entries
