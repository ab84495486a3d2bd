"""The processes this client started: spawn, state changes, signals and resource use.

Every state change goes through ``_change_state``, which checks the transition table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from client.groups import GroupScan, scan_groups
from client.reaper import Reaper
from client.spawn import (
    JobPlace,
    SpawnFailed,
    SpawnSpec,
    inheritable_environment,
    job_environment,
)
from common.errors import CorralError, ErrorCode
from common.journal import Journal
from common.procs import ProcInfo, not_started_here, rusage_dict, signal_name
from common.states import ENDED_STATES, LIVE_STATES, PROC_TRANSITIONS, ProcState

log = logging.getLogger("corral.client.procs")

Spawner = Callable[[SpawnSpec], int]
ChangeListener = Callable[[ProcInfo], None]  # ended, stopped or continued


@dataclasses.dataclass(slots=True)  # thousands are kept: no dict each
class ProcRecord:
    seq: int
    argv: list[str]
    cwd: Path
    log_path: str  # text, not a Path: building Paths cost a quick command more than its table
    state: ProcState = ProcState.STARTING
    pid: int = 0
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    rusage: dict[str, float] | None = None
    adopted: bool = False  # found running after a client restart: no longer our child
    group_gone: bool = False  # seen empty after the process ended: never signal it again
    origin: str = "exec"  # "run": a command whose output the client captures for the master
    job: str = ""  # the job it belongs to, and its rank there
    rank: int | None = None

    def to_journal(self) -> dict[str, Any]:
        return {"seq": self.seq, "argv": self.argv, "cwd": str(self.cwd),
                "log": self.log_path, "state": self.state.value, "pid": self.pid,
                "started": self.started, "ended": self.ended, "exit_code": self.exit_code,
                "signal": self.signal, "error": self.error, "rusage": self.rusage,
                "origin": self.origin, "job": self.job, "rank": self.rank}

    @classmethod
    def from_journal(cls, data: dict[str, Any]) -> ProcRecord:
        return cls(seq=data["seq"], argv=list(data["argv"]), cwd=Path(data["cwd"]),
                   log_path=str(data["log"]), state=ProcState(data["state"]),
                   pid=data["pid"], started=data["started"], ended=data.get("ended"),
                   exit_code=data.get("exit_code"), signal=data.get("signal"),
                   error=data.get("error"), rusage=data.get("rusage"),
                   origin=data.get("origin", "exec"), job=str(data.get("job") or ""),
                   rank=data.get("rank"))

    def ended_event(self) -> dict[str, Any]:
        return {"seq": self.seq, "state": self.state.value, "ended": self.ended,
                "exit_code": self.exit_code, "signal": self.signal, "rusage": self.rusage}

    def info(self, live: bool = False) -> ProcInfo:
        """``live``: add psutil's CPU time and RSS for a running process (reads /proc)."""
        cpu_time = rss = None
        if live and self.state in LIVE_STATES:
            cpu_time, rss = _live_usage(self.pid)
        return ProcInfo(
            seq=self.seq, pid=self.pid, argv=self.argv, cwd=str(self.cwd),
            log=self.log_path if self.pid else "",  # a failed spawn leaves no log
            state=self.state.value, started=self.started, ended=self.ended,
            exit_code=self.exit_code, signal=self.signal, error=self.error,
            rusage=self.rusage, cpu_time=cpu_time, rss=rss, origin=self.origin,
            job=self.job, rank=self.rank,
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


LOG_NAMES_KEPT = 1_000  # programs whose log-name part is remembered
KEEP_ENDED = 10_000  # ended processes a client remembers (default of --keep-ended)
COMPACT_SLACK = 10_000  # journal lines beyond twice the table before it is compacted
ADOPTED_POLL = 0.5  # seconds between checks on processes a previous client run started
SETTLE = 0.5  # seconds a signal is given to act before kill reports who still runs
SETTLE_POLL = 0.02
JOB_SOCKET_ENV = "CORRAL_SOCKET"
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
# Signals whose default action does not end a process.
HARMLESS_SIGNALS = STOP_SIGNALS | {signal.SIGCONT, signal.SIGCHLD, signal.SIGURG,
                                   signal.SIGWINCH}


class ProcTable:
    def __init__(self, reaper: Reaper, spawner: Spawner, log_dir: Path, workdir: Path,
                 journal: Journal | None = None, keep_ended: int = KEEP_ENDED) -> None:
        self._reaper = reaper
        self._journal = journal
        self._spawner = spawner
        self._log_prefix = os.path.join(log_dir, "")  # the folder, ending in a slash
        self._log_names: dict[str, str] = {}  # argv[0] -> the name part of its log files
        self._workdir = workdir
        self._by_pid: dict[int, ProcRecord] = {}
        self._records: dict[int, ProcRecord] = {}  # by seq, in start order
        # Ended records by seq, in the order they ended: the first is forgotten first.
        self._ended_order: dict[int, ProcRecord] = {}
        self._keep_ended = keep_ended
        # Kept beside the table so that neither the heartbeat nor the watch on adopted
        # processes walks a table of thousands of ended processes.
        self._running: set[int] = set()  # seqs of RUNNING records
        self._adopted: dict[int, ProcRecord] = {}  # adopted, not yet seen to end, by seq
        self._next_seq = _first_free_seq(log_dir)
        self.change_listeners: list[ChangeListener] = []
        # Copied once: copying os.environ costs more than the rest of a spawn's Python.
        self._base_env = inheritable_environment(dict(os.environ))
        if journal is not None:
            self._restore(journal)

    # --- surviving a restart --------------------------------------------------------------

    def _restore(self, journal: Journal) -> None:
        """Take back the table a previous run of this client left: processes still running
        (same pid *and* same start time, so a reused pid is never mistaken) are adopted;
        those that ended meanwhile are ``ended, status unknown``."""
        for data in journal.load():
            try:
                record = ProcRecord.from_journal(data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping an unreadable process record %r: %s", data, exc)
                continue
            if record.state is ProcState.RUNNING:
                if _same_process(record.pid, record.started):
                    record.adopted = True
                    self._by_pid[record.pid] = record
                else:
                    record.state = ProcState.ENDED_UNKNOWN
            elif record.state is ProcState.STARTING:
                continue
            if record.pid and not record.adopted:
                self._by_pid.setdefault(record.pid, record)
            self._records[record.seq] = record
            self._next_seq = max(self._next_seq, record.seq + 1)
        for record in sorted((r for r in self._records.values() if r.state in ENDED_STATES),
                             key=lambda r: r.ended or 0.0):
            self._ended_order[record.seq] = record
        self._limit_ended()
        self._running = {r.seq for r in self._records.values() if r.state is ProcState.RUNNING}
        self._adopted = {r.seq: r for r in self._records.values() if r.adopted}
        journal.rewrite([record.to_journal() for record in self._records.values()])
        adopted = [r.pid for r in self._records.values() if r.adopted]
        if self._records:
            log.info("restored %d processes from the state folder (%d still running: %s)",
                     len(self._records), len(adopted), adopted)

    def watch_adopted(self) -> None:
        """Notice when an adopted process ends; run as a greenlet. Its exit status went
        to whoever reaped it (init), so only the fact that it ended is known."""
        import gevent

        while True:
            self._check_adopted()
            gevent.sleep(ADOPTED_POLL)

    def _check_adopted(self) -> None:
        for record in list(self._adopted.values()):
            if not _same_process(record.pid, record.started):
                del self._adopted[record.seq]
                record.ended = time.time()
                self._change_state(record, ProcState.ENDED_UNKNOWN)
                self._ended(record)

    def _collect(self) -> None:
        """Bring every state up to date: reap our children, look in on adopted ones."""
        self._reaper.reap()  # as the seed did with waitpid(pid, &status, WNOHANG)
        self._check_adopted()

    # --- spawning -------------------------------------------------------------------------

    def spawn(self, program: str | None, argv: list[str], cwd: Path | None = None,
              env: dict[str, str] | None = None, stdin_path: Path | None = None,
              pipes: tuple[int, int] | None = None, place: JobPlace | None = None
              ) -> ProcRecord:
        """Start ``program`` (the path ``find_program`` gave for ``argv[0]``; None: nothing
        was found, which is recorded as a failed spawn). Its output goes to its log file,
        or with ``pipes`` onto those two descriptors (stdout, stderr) for a caller that
        captures it (``run``). ``place``: its job and rank, given to it as CORRAL_*
        variables."""
        if not argv or not argv[0]:
            raise CorralError("no program given", ErrorCode.BAD_REQUEST)
        seq = self._next_seq
        self._next_seq += 1
        log_name = self._log_name(argv[0])
        log_base = f"{self._log_prefix}{seq}-{log_name}"
        record = ProcRecord(seq=seq, argv=list(argv), cwd=cwd or self._workdir,
                            log_path=f"{log_base}.log",
                            origin="exec" if pipes is None else "run",
                            job=place.job if place else "", rank=place.rank if place else None)
        self._records[seq] = record
        full_env = job_environment(self._base_env, env, place)
        try:
            if program is None:
                raise SpawnFailed(f"No such file or directory: {argv[0]}")
            if pipes is None:
                spec = SpawnSpec(program=program, argv=record.argv, cwd=record.cwd,
                                 env=full_env, stdout_path=Path(record.log_path),
                                 stdin_path=stdin_path)
            else:
                spec = SpawnSpec(program=program, argv=record.argv, cwd=record.cwd,
                                 env=full_env, stdout_fd=pipes[0], stderr_fd=pipes[1],
                                 stdin_path=stdin_path)
            pid = self._spawner(spec)
        except SpawnFailed as exc:
            record.error = exc.message
            record.ended = time.time()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.log_path)
            self._change_state(record, ProcState.SPAWN_FAILED)
            self._record_event(record.to_journal())  # shown by pid after a restart too
            log.info("could not start %s: %s", argv, exc.message)
            self._ended_order[seq] = record
            self._limit_ended()
            return record
        # Watch before anything can yield, so the reaper never meets an unknown pid.
        self._reaper.watch(pid, self._on_exit, self._on_pause)
        record.pid = pid
        named = f"{log_base}-{pid}.log"
        if pipes is None:
            os.replace(record.log_path, named)  # the child keeps writing through its open fd
        record.log_path = named
        self._by_pid[pid] = record
        self._change_state(record, ProcState.RUNNING)
        self._record_event(record.to_journal())
        log.debug("started %s as pid %d (log %s)", argv, pid, named)
        return record

    def _log_name(self, program: str) -> str:
        """The part of a log file's name that says which program wrote it."""
        name = self._log_names.get(program)
        if name is None:
            if len(self._log_names) >= LOG_NAMES_KEPT:
                self._log_names.clear()
            name = re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(program))[:40] or "prog"
            self._log_names[program] = name
        return name

    def _on_exit(self, pid: int, status: int, usage: Any) -> None:
        record = self._by_pid[pid]
        record.ended = time.time()
        record.rusage = rusage_dict(usage)
        if os.WIFSIGNALED(status):
            record.signal = os.WTERMSIG(status)
            self._change_state(record, ProcState.KILLED)
        else:
            record.signal = None  # it may have been stopped by one before
            record.exit_code = os.WEXITSTATUS(status)
            self._change_state(record, ProcState.EXITED)
        self._ended(record)

    def _on_pause(self, pid: int, status: int) -> None:
        record = self._by_pid[pid]
        if os.WIFSTOPPED(status) and record.state is ProcState.RUNNING:
            record.signal = os.WSTOPSIG(status)
            self._change_state(record, ProcState.STOPPED)
        elif os.WIFCONTINUED(status) and record.state is ProcState.STOPPED:
            record.signal = None
            self._change_state(record, ProcState.RUNNING)
        else:
            return  # a repeat of what is known
        log.info("pid %d %s", pid, record.info().describe())
        self._tell(record)

    def _ended(self, record: ProcRecord) -> None:
        self._record_event(record.ended_event())
        self._ended_order[record.seq] = record
        self._limit_ended()
        if log.isEnabledFor(logging.DEBUG):  # describing it costs more than the rest
            log.debug("pid %d %s", record.pid, record.info().describe())
        self._tell(record)

    def _tell(self, record: ProcRecord) -> None:
        info = record.info()
        for listener in list(self.change_listeners):
            listener(info)

    def _record_event(self, event: dict[str, Any]) -> None:
        # Two lines per process (start, end) at most: the file stays within twice its
        # compact size, which the next start restores, so no rewrite is needed meanwhile.
        if self._journal is not None:
            self._journal.append(event)
            # Forgotten processes still have lines in the journal: compact it now and then
            # so that it stays a few times the size of what it describes.
            if self._journal.appended > COMPACT_SLACK + 2 * len(self._records):
                self._journal.rewrite([r.to_journal() for r in self._records.values()])

    def _change_state(self, record: ProcRecord, new: ProcState) -> None:
        if new not in PROC_TRANSITIONS[record.state]:
            raise AssertionError(f"process {record.seq}: illegal {record.state} -> {new}")
        record.state = new
        if new is ProcState.RUNNING:
            self._running.add(record.seq)
        else:
            self._running.discard(record.seq)

    # --- queries and signals --------------------------------------------------------------

    def snapshot(self) -> list[ProcInfo]:
        self._collect()
        return [record.info(live=True) for record in self._records.values()]

    def running_count(self) -> int:
        return len(self._running)

    def give_job_socket(self, path: Path) -> None:
        """Every process started from now on finds the client's job socket in
        ``CORRAL_SOCKET`` (``client.jobsocket``)."""
        self._base_env = {**self._base_env, JOB_SOCKET_ENV: str(path)}

    def job_place(self, pid: int) -> str:
        """``J12.3`` for a process of a job, else ""."""
        record = self._by_pid.get(pid)
        if record is None or not record.job or record.rank is None:
            return ""
        return f"{record.job}.{record.rank}"

    def is_running_here(self, pid: int) -> bool:
        """Whether ``pid`` is a process this client started (or adopted) that has not
        ended: who may use the job socket."""
        record = self._by_pid.get(pid)
        return record is not None and record.state not in ENDED_STATES

    def find(self, pid: int) -> ProcRecord:
        record = self._by_pid.get(pid)
        if record is None:
            raise CorralError(not_started_here(pid), ErrorCode.PERMISSION)
        return record

    def signal(self, pids: list[int] | None, signum: int) -> list[dict[str, Any]]:
        """Send ``signum`` to the process group of each pid (None: of every process whose
        group still runs), give it time to act, and say per pid what became of the process
        and how many others of its group still run."""
        self._collect()
        outcomes: dict[int, dict[str, Any]] = {}
        if pids is None:
            records = [r for r in self._records.values() if r.pid and not r.group_gone]
        else:
            records = []
            for pid in dict.fromkeys(pids):
                try:
                    records.append(self.find(pid))
                except CorralError as exc:
                    outcomes[pid] = _failure(pid, exc)
        ended_before = {r.pid for r in records if r.state not in LIVE_STATES}
        scan = scan_groups(ended_before)
        targets = []
        for record in records:
            if record.pid in ended_before and not self._group_lives(record, scan):
                if pids is not None:
                    outcomes[record.pid] = _failure(record.pid, CorralError(
                        f"pid {record.pid} already ended ({record.info().describe()}), and "
                        "so has its process group", ErrorCode.ALREADY_ENDED))
                continue
            try:
                self._send(record, signum)
            except OSError as exc:
                outcomes[record.pid] = _failure(record.pid, CorralError(
                    f"pid {record.pid}: {exc.strerror}", ErrorCode.PERMISSION))
                continue
            targets.append(record)
        was = {record.pid: record.state for record in targets}
        self._settle(targets, signum)
        self._collect()  # a leader seen gone from its group may be a zombie until now
        scan = scan_groups([record.pid for record in targets])
        for record in targets:
            others = [pid for pid in scan.live(record.pid) if pid != record.pid]
            outcomes[record.pid] = {
                "pid": record.pid, "ok": True, "code": 0,
                "message": _what_became(record, was[record.pid], signum),
                "still_running": len(others)}
        order = pids if pids is not None else [record.pid for record in records]
        return [outcomes[pid] for pid in dict.fromkeys(order) if pid in outcomes]

    def _group_lives(self, record: ProcRecord, scan: GroupScan) -> bool:
        """Does the group of an ended process still have members? Once seen empty, never
        again: its number may then go to another process, which might lead a group."""
        if not record.group_gone and (record.pid in scan.pids or not scan.live(record.pid)):
            record.group_gone = True  # (a live process with that pid is another one)
        return not record.group_gone

    def _send(self, record: ProcRecord, signum: int) -> None:
        # The child leads its own process group (setsid), so the signal reaches everything
        # it started too, as a terminal's Ctrl-C would.
        os.killpg(record.pid, signum)
        if record.state is ProcState.STOPPED and signum not in HARMLESS_SIGNALS:
            # As a shell does for a stopped job: a stopped process acts on a signal only
            # once continued (SIGKILL aside).
            os.killpg(record.pid, signal.SIGCONT)
        log.info("sent %s to the group of pid %d", signal_name(signum), record.pid)

    def _settle(self, targets: list[ProcRecord], signum: int) -> None:
        """Wait, at most SETTLE seconds, until the signal has done what it does by default:
        groups emptied, leaders stopped or continued. Other greenlets run meanwhile."""
        import gevent

        def settled() -> bool:
            self._collect()
            if signum in STOP_SIGNALS:
                return all(r.state is not ProcState.RUNNING for r in targets)
            if signum == signal.SIGCONT:
                return all(r.state is not ProcState.STOPPED for r in targets)
            scan = scan_groups([r.pid for r in targets])
            return not any(scan.live(r.pid) for r in targets)

        if signum in HARMLESS_SIGNALS - STOP_SIGNALS - {signal.SIGCONT} or not targets:
            return
        deadline = time.monotonic() + SETTLE
        while not settled() and time.monotonic() < deadline:
            gevent.sleep(SETTLE_POLL)

    # --- forgetting ended processes -------------------------------------------------------

    def _drop(self, record: ProcRecord) -> None:
        del self._records[record.seq]
        self._ended_order.pop(record.seq, None)
        if self._by_pid.get(record.pid) is record:
            del self._by_pid[record.pid]

    def _limit_ended(self) -> None:
        """Keep at most ``keep_ended`` ended processes: the one that ended first goes first.
        (Their lines leave the journal at its next compaction; logs are kept.)"""
        while len(self._ended_order) > self._keep_ended:
            self._drop(next(iter(self._ended_order.values())))

    def forget(self, pids: list[int] | None) -> list[tuple[int, CorralError | None]]:
        """Drop ended processes from the table and the journal: those of ``pids``, or every
        ended one (None). Returns each pid with why it was not forgotten, if it was not."""
        self._collect()
        outcomes: list[tuple[int, CorralError | None]] = []
        if pids is None:
            for record in list(self._ended_order.values()):
                self._drop(record)
                outcomes.append((record.pid, None))
        else:
            for pid in pids:
                try:
                    record = self.find(pid)
                    if record.state not in ENDED_STATES:
                        raise CorralError(f"pid {pid} is still running", ErrorCode.BAD_REQUEST)
                except CorralError as exc:
                    outcomes.append((pid, exc))
                    continue
                self._drop(record)
                outcomes.append((pid, None))
        if self._journal is not None and any(error is None for _pid, error in outcomes):
            self._journal.rewrite([r.to_journal() for r in self._records.values()])
        return outcomes

    def is_ended(self, pid: int) -> bool:
        return self.find(pid).state in ENDED_STATES


def _failure(pid: int, exc: CorralError) -> dict[str, Any]:
    return {"pid": pid, "ok": False, "code": int(exc.code), "message": exc.message,
            "still_running": 0}


def _what_became(record: ProcRecord, was: ProcState, signum: int) -> str:
    """``killed SIGINT``, ``stopped (SIGSTOP)``, ``sent SIGUSR1; still running``, ..."""
    now = record.info().describe()
    name = signal_name(signum)
    if was not in LIVE_STATES:
        return f"sent {name} to its group (the process itself had {now})"
    if record.state is ProcState.RUNNING:
        return "continued, running" if was is ProcState.STOPPED else f"sent {name}; still running"
    return now


def _same_process(pid: int, started: float) -> bool:
    """Is ``pid`` alive and the very process started at ``started`` (wall clock)?"""
    try:
        process = psutil.Process(pid)
        alive = process.status() != psutil.STATUS_ZOMBIE
        return alive and abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _first_free_seq(log_dir: Path) -> int:
    """Continue numbering after the logs already in the folder, so none is overwritten."""
    highest = 0
    for path in log_dir.glob("*.log"):
        head = path.name.split("-", 1)[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1
