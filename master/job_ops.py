"""A job's processes as their nodes see them now, for ``jobs``, ``pid --job`` and the
commands that take a job where a process reference goes (``wait``, ``kill``, ``sKill``,
``log``). Runs on the hub thread.

A job's members are found in its nodes' process tables by the job name each process
carries: one ``ps`` per node, however many jobs are looked at.
"""

from __future__ import annotations

from common.errors import CorralError, ErrorCode
from common.jobs import looks_like_job
from common.messages import ListRequest
from common.procs import ProcInfo
from master.fanout import fan_out
from master.front.results import (
    NEVER_STARTED,
    STATUS_NOT_STARTED,
    GroupResult,
    JobMember,
    JobView,
)
from master.jobs import Job, JobStore
from master.registry import Node, NodeRegistry


def _procs(_node: Node, value: list[ProcInfo]) -> list[ProcInfo]:
    return value


class JobOps:
    def __init__(self, registry: NodeRegistry, store: JobStore, timeout: float) -> None:
        self.registry = registry
        self.store = store
        self.timeout = timeout

    def tables(self, names: list[str]) -> GroupResult[list[ProcInfo]]:
        """The process tables of these nodes; a node not connected (or forgotten) is an
        error, never a silent gap."""
        nodes: list[Node] = []
        errors: dict[str, CorralError] = {}
        for name in dict.fromkeys(names):
            try:
                node = self.registry.by_name(name)
            except CorralError:
                errors[name] = CorralError("not known to this master any more (forgotten)",
                                           ErrorCode.DISCONNECTED)
                continue
            if node.session is None:
                errors[name] = CorralError(f"not connected ({node.state})",
                                           ErrorCode.DISCONNECTED)
            else:
                nodes.append(node)
        return fan_out(nodes, lambda _n: lambda req: ListRequest(req=req), self.timeout,
                       _procs, errors)

    def members(self, job: Job, rank: int | None = None,
                tables: GroupResult[list[ProcInfo]] | None = None) -> list[JobMember]:
        """Every member of ``job`` (or the one of ``rank``), in rank order."""
        if tables is None:
            tables = self.tables([job.node_of(rank)] if rank is not None else job.nodes)
        found: dict[int, ProcInfo] = {}
        for name in tables.succeeded:
            for info in tables.results[name]:
                if job.owns(name, info) and info.rank is not None:
                    found[info.rank] = info
        members = []
        for node in job.nodes:
            for each in job.ranks(node):
                if rank is not None and each != rank:
                    continue
                members.append(self._member(job, each, node, found.get(each), tables))
        return members

    @staticmethod
    def _member(job: Job, rank: int, node: str, info: ProcInfo | None,
                tables: GroupResult[list[ProcInfo]]) -> JobMember:
        pid = info.pid if info is not None else job.pids.get(rank, 0)
        if info is not None:
            return JobMember(job.name, rank, node, pid, info)
        if node in job.errors and job.pids.get(rank) == 0:  # the node refused the job
            why = f"{NEVER_STARTED}{job.errors[node]}"
        elif node in tables.errors:
            why = f"lost: {node} {tables.errors[node].message}"
        elif node in job.errors:
            why = f"not known to {node}: {job.errors[node]}"
        elif pid:
            why = f"forgotten by {node} (forget, or beyond its --keep-ended)"
        else:
            why = f"not known to {node} (its answer to the start never came)"
        return JobMember(job.name, rank, node, pid, None, why)

    def resolve(self, word: str) -> list[JobMember]:
        """The members a word names: a job (``J12``) or one member (``J12.3``)."""
        job, rank = self.store.get(word)
        return self.members(job, rank)

    def views(self) -> list[JobView]:
        jobs = self.store.jobs()
        tables = self.tables([node for job in jobs for node in job.nodes])
        return [self._view(job, self.members(job, tables=tables)) for job in jobs]

    @staticmethod
    def _view(job: Job, members: list[JobMember]) -> JobView:
        running = [m for m in members if m.info is not None and not m.info.ended_state]
        ended = [m for m in members if (m.info is not None and m.info.ended_state)
                 or m.status == STATUS_NOT_STARTED]
        statuses = [m.status for m in ended]
        return JobView(job=job.name, command=job.command, origin=job.origin,
                       created=job.created, nodes=job.nodes, size=job.size,
                       running=len(running), ended=len(ended),
                       lost=len(members) - len(running) - len(ended),
                       worst=max(statuses) if statuses else None)


def split_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(the jobs and job members, the NODE:PID references), each in the order given."""
    jobs = [word for word in words if looks_like_job(word)]
    return jobs, [word for word in words if not looks_like_job(word)]
