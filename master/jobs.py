"""The master's jobs: which processes each ``exec`` and ``run`` started, on which nodes and
with which ranks, kept in the state folder (``jobs.jsonl``) so that a restarted master
still knows them.

A job holds its placement (node -> first rank and copies), and the pids once the nodes
have answered. How its processes stand is never copied here: the clients' tables say it,
each process carrying its job and rank, so a job's members are the processes of its nodes
that carry its name (a pid reused by another process is never taken for a member).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import CorralError, ErrorCode, UsageError
from common.jobs import KEEP_JOBS, MAX_COPIES, MAX_JOB, job_name, parse_job
from common.journal import Journal
from common.procs import ProcInfo

log = logging.getLogger("corral.master.jobs")

FILE_NAME = "jobs.jsonl"
COMPACT_SLACK = 2_000  # journal lines beyond the table's own before it is rewritten
# Errors that leave open whether a node started its part of a job.
NO_ANSWER = frozenset({ErrorCode.NO_REPLY, ErrorCode.DISCONNECTED, ErrorCode.CANCELLED,
                       ErrorCode.PROTOCOL, ErrorCode.INTERNAL})


class UnknownJob(CorralError):
    code = ErrorCode.NOT_FOUND


@dataclasses.dataclass
class Job:
    number: int
    command: str
    origin: str  # exec, run or script
    created: float  # wall clock
    placement: dict[str, tuple[int, int]]  # node -> (first rank, copies), in node order
    pids: dict[int, int] = dataclasses.field(default_factory=dict)  # rank -> pid (0: none)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> why none ran

    @property
    def name(self) -> str:
        return job_name(self.number)

    @property
    def size(self) -> int:
        return sum(copies for _first, copies in self.placement.values())

    @property
    def nodes(self) -> list[str]:
        return list(self.placement)

    def ranks(self, node: str) -> range:
        first, copies = self.placement[node]
        return range(first, first + copies)

    def node_of(self, rank: int) -> str:
        for node in self.placement:
            if rank in self.ranks(node):
                return node
        raise UsageError(f"{self.name} has no rank {rank} (its ranks are 0 to "
                         f"{self.size - 1})")

    def owns(self, node: str, info: ProcInfo) -> bool:
        """Whether ``info``, from ``node``'s table, is a process of this job: its name and
        rank, on the node of that rank, with the pid that node answered (0 for each rank
        of a node that refused to start it). A job number comes back when jobs.jsonl was
        lost, while the nodes still list the old job's processes: never take one of those."""
        if info.job != self.name or info.rank is None or node not in self.placement:
            return False
        return info.rank in self.ranks(node) and self.pids.get(info.rank, info.pid) == info.pid

    def to_journal(self) -> dict[str, Any]:
        return {"seq": self.number, "command": self.command, "origin": self.origin,
                "created": self.created,
                "placement": [[node, first, copies]
                              for node, (first, copies) in self.placement.items()],
                "pids": {str(rank): pid for rank, pid in self.pids.items()},
                "errors": self.errors}

    @classmethod
    def from_journal(cls, data: dict[str, Any]) -> Job:
        """ValueError for a record this master could not have written (a hand-edited
        file): a billion ranks would stall every command that looks at the job."""
        job = cls._from_fields(data)
        if not 0 < job.number < MAX_JOB:
            raise ValueError(f"job number {job.number} is not 1 to {MAX_JOB - 1}")
        if any(not 1 <= copies <= MAX_COPIES for _first, copies in job.placement.values()):
            raise ValueError(f"copies per node are not 1 to {MAX_COPIES}")
        return job

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> Job:
        return cls(number=int(data["seq"]), command=str(data["command"]),
                   origin=str(data["origin"]), created=float(data["created"]),
                   placement={str(node): (int(first), int(copies))
                              for node, first, copies in data["placement"]},
                   pids={int(rank): int(pid) for rank, pid in data.get("pids", {}).items()},
                   errors={str(node): str(why)
                           for node, why in data.get("errors", {}).items()})


class JobStore:
    def __init__(self, folder: Path, keep: int = KEEP_JOBS) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._journal = Journal(folder / FILE_NAME, holds="job", owner="the master")
        self._keep = keep
        self._jobs: dict[int, Job] = {}
        for data in self._journal.load():
            try:
                job = Job.from_journal(data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping an unreadable job record %r: %s", data, exc)
                continue
            self._jobs[job.number] = job
        # Numbers go on from the highest ever used, so a job name is never given twice.
        self._next = max(self._jobs, default=0) + 1
        self._forget_oldest()
        self._write(lambda: self._journal.rewrite([j.to_journal() for j in self._jobs.values()]))

    def _write(self, write: Callable[[], None]) -> None:
        """A state folder that cannot be written to (full, read-only) costs the jobs their
        survival of a restart, never a command."""
        try:
            write()
        except OSError as exc:
            log.warning("cannot save the jobs to %s: %s; a restarted master will not know "
                        "the newest", self._journal.path, exc.strerror or exc)

    def create(self, command: str, origin: str, nodes: list[str], copies: int) -> Job:
        """A new job of ``copies`` processes on each of ``nodes`` (in that order)."""
        placement = {node: (index * copies, copies) for index, node in enumerate(nodes)}
        job = Job(self._next, command, origin, time.time(), placement)
        self._next += 1
        self._jobs[job.number] = job
        self._forget_oldest()
        self._save(job)
        return job

    def settle(self, job: Job, pids: dict[int, int], errors: dict[str, CorralError]) -> None:
        """What the nodes answered: the pid of each rank, why nothing ran on a node. A node
        that answered with a refusal runs none of its ranks (pid 0); one that did not
        answer in time may run them, so their pids stay unknown."""
        job.pids.update(pids)
        for node, error in errors.items():
            job.errors[node] = error.message
            if error.code not in NO_ANSWER:
                job.pids.update(dict.fromkeys(job.ranks(node), 0))
        if job.number in self._jobs:
            self._save(job, {"seq": job.number,
                             "pids": {str(rank): pid for rank, pid in job.pids.items()},
                             "errors": job.errors})

    def get(self, word: str) -> tuple[Job, int | None]:
        """The job ``J12`` (and None) or ``J12.3`` (and its rank 3); UsageError for a word
        that is not one, UnknownJob for a job this master does not know."""
        try:
            number, rank = parse_job(word)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        job = self._jobs.get(number)
        if job is None:
            known = (f"J{min(self._jobs)} to J{max(self._jobs)}" if self._jobs
                     else "none yet")
            raise UnknownJob(f"unknown job J{number} (jobs known: {known})")
        if rank is not None:
            job.node_of(rank)  # refuses a rank the job does not have
        return job, rank

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def _save(self, job: Job, changed: dict[str, Any] | None = None) -> None:
        """Append the whole record, or only its ``changed`` fields (with its ``seq``): a
        replay merges a record's lines field by field."""
        self._write(lambda: self._journal.append(changed or job.to_journal()))
        if self._journal.appended > COMPACT_SLACK + len(self._jobs):
            self._write(lambda: self._journal.rewrite(
                [j.to_journal() for j in self._jobs.values()]))

    def _forget_oldest(self) -> None:
        while len(self._jobs) > self._keep:
            del self._jobs[next(iter(self._jobs))]

    def close(self) -> None:
        self._journal.close()
