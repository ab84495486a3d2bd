"""Shared variables: a small store of named strings in the master, for the processes of a
job and the operator to coordinate through (``corral var ...``).

Every change is in memory at once (the hub runs one greenlet at a time, so a
compare-and-set is atomic without a lock) and the caller is answered once the store that
holds it is on disk: the whole store is written to a temporary file, fsync'd and renamed
over ``variables.json`` in the master's state folder. Changes made while a write is under
way share the next one, so twenty writers cost a few writes, not twenty.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.event
import gevent.queue

from common.errors import CorralError, ErrorCode
from common.statefile import load_state_file, write_state_file
from common.varnames import (
    MAX_TOTAL_BYTES,
    MAX_VARIABLES,
    timeout_problem,
    value_problem,
    var_name_problem,
)
from master.front.sharing import CasOutcome, VarChange, VarEntry

log = logging.getLogger("corral.master.variables")

FILE_NAME = "variables.json"
WATCH_QUEUE = 1_000  # changes a slow watcher may fall behind by before losing the oldest
MAX_SET_BY = 1_024  # who set a variable: a node, pid and job label, or "operator"
# The biggest store the limits allow, as this module writes it: every character of a value
# escaped by JSON (6 bytes for 1), and room for each entry's other fields. A file above this
# was not written by a master; it is refused before it is read.
MAX_STORE_FILE = 6 * MAX_TOTAL_BYTES + MAX_VARIABLES * (MAX_SET_BY + 256)


class VariableStore:
    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME
        self._entries: dict[str, VarEntry] = {}
        self._bytes = 0
        self._changed = gevent.event.Event()  # woken (and replaced) on every change
        self._watchers: dict[str, list[Callable[[VarChange], None]]] = {}
        self._dirty = False
        self._saved: gevent.event.AsyncResult | None = None  # the pending write's outcome
        self._writer: gevent.Greenlet | None = None
        self._load()

    # --- reading --------------------------------------------------------------------------

    def get(self, name: str, wait: bool = False, timeout: float | None = None) -> VarEntry:
        _check_name(name)
        if wait and (problem := timeout_problem(timeout)) is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        deadline = None if timeout is None else time.monotonic() + timeout
        while (entry := self._entries.get(name)) is None:
            if not wait:
                raise CorralError(f"no variable {name}", ErrorCode.NOT_FOUND)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise CorralError(f"no variable {name} after waiting {timeout:g} s",
                                  ErrorCode.NOT_FOUND)
            self._changed.wait(left)
        return entry

    def list(self, prefix: str = "") -> list[VarEntry]:
        return [self._entries[name] for name in sorted(self._entries)
                if name.startswith(prefix)]

    def watch(self, name: str, emit: Callable[[VarChange], object]) -> None:
        """Emit the variable as it is now, then each change, until the caller is killed.
        A watcher that does not keep up loses the oldest changes, never slows a writer."""
        _check_name(name)
        queue: gevent.queue.Queue[VarChange] = gevent.queue.Queue(WATCH_QUEUE)

        def hear(change: VarChange) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(change)

        self._watchers.setdefault(name, []).append(hear)
        try:
            emit(VarChange(name, self._entries.get(name)))
            while True:
                emit(queue.get())
        finally:
            self._watchers[name].remove(hear)
            if not self._watchers[name]:
                del self._watchers[name]

    # --- changing -------------------------------------------------------------------------

    def set(self, name: str, value: str, by: str) -> VarEntry:
        _check_name(name)
        entry = self._put(name, value, by)
        self._persist()
        return entry

    def cas(self, name: str, old: str | None, new: str, by: str) -> CasOutcome:
        """Set ``name`` to ``new`` only if it holds ``old`` now (None: only if absent)."""
        _check_name(name)
        current = self._entries.get(name)
        if (current.value if current is not None else None) != old:
            return CasOutcome(swapped=False, current=current)
        entry = self._put(name, new, by)
        self._persist()
        return CasOutcome(swapped=True, current=entry)

    def delete(self, name: str) -> bool:
        """False if there was no such variable."""
        _check_name(name)
        entry = self._entries.pop(name, None)
        if entry is None:
            return False
        self._bytes -= _size(entry)
        self._announce(VarChange(name, None))
        self._persist()
        return True

    def _put(self, name: str, value: str, by: str) -> VarEntry:
        if (problem := value_problem(value)) is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        old = self._entries.get(name)
        if old is None and len(self._entries) >= MAX_VARIABLES:
            raise CorralError(f"the store is full: {MAX_VARIABLES:,} variables (delete some "
                              "with var del)", ErrorCode.BAD_REQUEST)
        entry = VarEntry(name=name, value=value, set_by=by, set_at=time.time(),
                         version=(old.version + 1) if old is not None else 1)
        grown = self._bytes - (_size(old) if old is not None else 0) + _size(entry)
        if grown > MAX_TOTAL_BYTES:
            raise CorralError(f"the store is full: its variables may hold "
                              f"{MAX_TOTAL_BYTES // (1 << 20)} MiB together (delete some "
                              "with var del)", ErrorCode.BAD_REQUEST)
        self._entries[name] = entry
        self._bytes = grown
        self._announce(VarChange(name, entry))
        return entry

    def _announce(self, change: VarChange) -> None:
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()
        for hear in list(self._watchers.get(change.name, ())):
            hear(change)

    # --- on disk --------------------------------------------------------------------------

    def _persist(self) -> None:
        """Return once a write that began after this change has finished. If that write
        fails, the caller is told (the change stays in memory, so the variables still work,
        and the next change tries the write again)."""
        self._dirty = True
        if self._saved is None:
            self._saved = gevent.event.AsyncResult()
        saved = self._saved
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._write_while_dirty)
        saved.get()

    def _write_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            saved, self._saved = self._saved, None
            document = {"version": 1, "variables": [dataclasses.asdict(e)
                                                     for e in self._entries.values()]}
            try:
                gevent.get_hub().threadpool.apply(_write_atomically, (self.path, document))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                log.warning("cannot save the variables to %s: %s", self.path, reason)
                if saved is not None:
                    saved.set_exception(CorralError(
                        f"changed in the master's memory, but not saved to {self.path}: "
                        f"{reason} (lost if the master restarts)", ErrorCode.IO))
                continue
            if saved is not None:
                saved.set(None)

    def _load(self) -> None:
        entries = load_state_file(self.path, MAX_STORE_FILE, _parse_store, log,
                                  "the store starts empty")
        for entry in entries or ():
            self._entries[entry.name] = entry
            self._bytes += _size(entry)
        if entries is not None:
            log.info("loaded %d shared variables from %s", len(self._entries), self.path)


def _parse_store(raw: bytes) -> list[VarEntry]:
    """The entries of a store file, which must keep the limits a running master keeps:
    a hand-edited store is taken whole or not at all (ValueError saying why)."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("variables"), list):
        raise ValueError("not a store of variables")
    records = data["variables"]
    if len(records) > MAX_VARIABLES:
        raise ValueError(f"{len(records):,} variables, more than the {MAX_VARIABLES:,} a "
                         "store may hold")
    entries: dict[str, VarEntry] = {}
    total = 0
    for number, record in enumerate(records, 1):
        entry = _parse_entry(record)
        if isinstance(entry, str):
            raise ValueError(f"variable {number}: {entry}")
        if entry.name in entries:
            raise ValueError(f"variable {number}: {entry.name} is there twice")
        entries[entry.name] = entry
        total += _size(entry)
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"its variables hold {total:,} bytes, more than the "
                         f"{MAX_TOTAL_BYTES:,} a store may hold")
    return list(entries.values())


def _parse_entry(record: object) -> VarEntry | str:
    """One stored variable, or why it cannot be one."""
    if not isinstance(record, dict):
        return "not a record"
    name, value = record.get("name"), record.get("value")
    set_by, set_at, version = record.get("set_by"), record.get("set_at"), record.get("version")
    problem = var_name_problem(name) if isinstance(name, str) else "a name must be text"
    if problem is None:
        problem = value_problem(value) if isinstance(value, str) else "a value must be text"
    if problem is None and not (isinstance(set_by, str) and len(set_by) <= MAX_SET_BY):
        problem = f"set_by must be text of at most {MAX_SET_BY} characters"
    if problem is None and (isinstance(set_at, bool) or not isinstance(set_at, (int, float))
                            or not math.isfinite(set_at)):
        problem = "set_at must be a time in seconds"
    if problem is None and (isinstance(version, bool) or not isinstance(version, int)
                            or version < 1):
        problem = "version must be a whole number from 1"
    if problem is not None:
        return problem
    assert isinstance(name, str) and isinstance(value, str) and isinstance(set_by, str)
    assert isinstance(set_at, (int, float)) and isinstance(version, int)
    return VarEntry(name=name, value=value, set_by=set_by, set_at=float(set_at),
                    version=version)


def _check_name(name: str) -> None:
    if (problem := var_name_problem(name)) is not None:
        raise CorralError(problem, ErrorCode.BAD_REQUEST)


def _size(entry: VarEntry) -> int:
    return len(entry.name) + len(entry.value.encode())


def _write_atomically(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_state_file(path, json.dumps(document, ensure_ascii=False).encode(),
                     sync_folder=True)
