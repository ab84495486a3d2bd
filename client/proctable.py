"""The processes this client started: spawn, state changes, signals and resource use.

Every state change goes through ``_change_state``, which checks the transition table.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from client.reaper import Reaper
from client.spawn import SpawnFailed, SpawnSpec
from common.errors import CorralError, ErrorCode
from common.procs import ProcInfo, rusage_dict, signal_name
from common.states import ENDED_STATES, PROC_TRANSITIONS, SIGNALLABLE_STATES, ProcState

log = logging.getLogger("corral.client.procs")

Spawner = Callable[[SpawnSpec], int]
ExitListener = Callable[[ProcInfo], None]


@dataclasses.dataclass
class ProcRecord:
    seq: int
    argv: list[str]
    cwd: Path
    log_path: Path
    state: ProcState = ProcState.STARTING
    pid: int = 0
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    rusage: dict[str, float] | None = None

    def info(self, live: bool = False) -> ProcInfo:
        """``live``: add psutil's CPU time and RSS for a running process (reads /proc)."""
        cpu_time = rss = None
        if live and self.state is ProcState.RUNNING:
            cpu_time, rss = _live_usage(self.pid)
        return ProcInfo(
            seq=self.seq, pid=self.pid, argv=self.argv, cwd=str(self.cwd),
            log=str(self.log_path) if self.pid else "",  # a failed spawn leaves no log
            state=self.state.value, started=self.started, ended=self.ended,
            exit_code=self.exit_code, signal=self.signal, error=self.error,
            rusage=self.rusage, cpu_time=cpu_time, rss=rss,
        )


def _live_usage(pid: int) -> tuple[float | None, int | None]:
    # The pid cannot have been reused: it is our unreaped child.
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return times.user + times.system, process.memory_info().rss
    except psutil.Error:
        return None, None


class ProcTable:
    def __init__(self, reaper: Reaper, spawner: Spawner, log_dir: Path, workdir: Path) -> None:
        self._reaper = reaper
        self._spawner = spawner
        self._log_dir = log_dir
        self._workdir = workdir
        self._by_pid: dict[int, ProcRecord] = {}
        self._records: list[ProcRecord] = []
        self._next_seq = _first_free_seq(log_dir)
        self.exit_listeners: list[ExitListener] = []
        # Copied once: copying os.environ costs more than the rest of a spawn's Python.
        self._base_env = dict(os.environ)

    # --- spawning -------------------------------------------------------------------------

    def spawn(self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
              stdin_path: Path | None = None) -> ProcRecord:
        if not argv or not argv[0]:
            raise CorralError("no program given", ErrorCode.BAD_REQUEST)
        seq = self._next_seq
        self._next_seq += 1
        program = re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(argv[0]))[:40] or "prog"
        record = ProcRecord(seq=seq, argv=list(argv), cwd=cwd or self._workdir,
                            log_path=self._log_dir / f"{seq}-{program}.log")
        self._records.append(record)
        full_env = {**self._base_env, **env} if env else self._base_env
        try:
            pid = self._spawner(SpawnSpec(argv=record.argv, cwd=record.cwd, env=full_env,
                                          stdout_path=record.log_path, stdin_path=stdin_path))
        except SpawnFailed as exc:
            record.error = exc.message
            record.ended = time.time()
            record.log_path.unlink(missing_ok=True)
            self._change_state(record, ProcState.SPAWN_FAILED)
            log.info("could not start %s: %s", argv, exc.message)
            return record
        # Watch before anything can yield, so the reaper never meets an unknown pid.
        self._reaper.watch(pid, self._on_exit)
        record.pid = pid
        named = self._log_dir / f"{seq}-{program}-{pid}.log"
        os.replace(record.log_path, named)  # the child keeps writing through its open fd
        record.log_path = named
        self._by_pid[pid] = record
        self._change_state(record, ProcState.RUNNING)
        log.debug("started %s as pid %d (log %s)", argv, pid, named)
        return record

    def _on_exit(self, pid: int, status: int, usage: Any) -> None:
        record = self._by_pid[pid]
        record.ended = time.time()
        record.rusage = rusage_dict(usage)
        if os.WIFSIGNALED(status):
            record.signal = os.WTERMSIG(status)
            self._change_state(record, ProcState.KILLED)
        else:
            record.exit_code = os.WEXITSTATUS(status)
            self._change_state(record, ProcState.EXITED)
        info = record.info()
        log.debug("pid %d %s", pid, info.describe())
        for listener in list(self.exit_listeners):
            listener(info)

    def _change_state(self, record: ProcRecord, new: ProcState) -> None:
        if new not in PROC_TRANSITIONS[record.state]:
            raise AssertionError(f"process {record.seq}: illegal {record.state} -> {new}")
        record.state = new

    # --- queries and signals --------------------------------------------------------------

    def snapshot(self) -> list[ProcInfo]:
        self._reaper.reap()  # as the seed did with waitpid(pid, &status, WNOHANG)
        return [record.info(live=True) for record in self._records]

    def running_count(self) -> int:
        return sum(1 for r in self._records if r.state is ProcState.RUNNING)

    def find(self, pid: int) -> ProcRecord:
        record = self._by_pid.get(pid)
        if record is None:
            raise CorralError(f"pid {pid} was not started by this client", ErrorCode.PERMISSION)
        return record

    def send_signal(self, pid: int, signum: int) -> ProcInfo:
        self._reaper.reap()
        record = self.find(pid)
        if record.state not in SIGNALLABLE_STATES:
            raise CorralError(f"pid {pid} already ended ({record.info().describe()})",
                              ErrorCode.ALREADY_ENDED)
        # The child leads its own process group (setsid), so the signal reaches everything
        # it started too, as a terminal's Ctrl-C would.
        os.killpg(pid, signum)
        log.info("sent %s to pid %d", signal_name(signum), pid)
        return record.info()

    def running_pids(self) -> list[int]:
        self._reaper.reap()
        return [r.pid for r in self._records if r.state is ProcState.RUNNING]

    def is_ended(self, pid: int) -> bool:
        return self.find(pid).state in ENDED_STATES


def _first_free_seq(log_dir: Path) -> int:
    """Continue numbering after the logs already in the folder, so none is overwritten."""
    highest = 0
    for path in log_dir.glob("*.log"):
        head = path.name.split("-", 1)[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1
