"""The work behind each console command, run on the hub thread: resolve the targets, send
the requests to all of them at once, and turn the replies into typed results."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from common.errors import CorralError, ErrorCode, UsageError
from common.jobs import MAX_COPIES, env_size, looks_like_job
from common.messages import (
    Cancel,
    ExecRequest,
    ForgetRequest,
    ListRequest,
    LogRequest,
    Message,
    RunRequest,
    SignalRequest,
    UsageRequest,
)
from common.nodeset import select as select_nodes
from common.procs import ProcInfo, not_started_here
from common.replies import LogAnswer, SignalAnswer
from master.events import ProcessesStarted
from master.fanout import fan_out, gathered, parse_ref, resolve_targets
from master.front.results import (
    GroupResult,
    JobMember,
    JobView,
    LogChunk,
    RunResult,
    SignalOutcome,
    UsageReport,
    WaitResult,
)
from master.job_ops import JobOps, split_words
from master.jobs import Job
from master.registry import Node
from master.scripts import run_script
from master.server import MasterEngine
from master.session import Session

log = logging.getLogger("corral.master.ops")

RUN_GRACE = 5.0  # beyond a command's own timeout, for the reply to travel
CANCEL_GRACE = 5.0  # for a node to stop a cancelled command and answer
FRAME_HEADROOM = 64 * 1024  # room in a frame for the rest of an exec request
LOG_CHUNK = 1024 * 1024  # bytes of a log asked for at a time
PER_COPY = 0.02  # seconds of extra patience per copy that exec -n asks for
MAX_JOB_COMMAND = 500  # characters of a job's command that ``jobs`` keeps


def _procs(_node: Node, value: list[ProcInfo]) -> list[ProcInfo]:
    return value


def _as_error(exc: BaseException | None) -> CorralError:
    if isinstance(exc, CorralError):
        return exc
    if isinstance(exc, OSError):
        return CorralError(f"connection lost: {exc.strerror or exc}", ErrorCode.DISCONNECTED)
    return CorralError(repr(exc), ErrorCode.INTERNAL)


def _same(_node: Node, value: Any) -> Any:
    return value


class Operations:
    def __init__(self, engine: MasterEngine) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.jobs = JobOps(engine.registry, engine.jobs, engine.config.request_timeout)

    @property
    def timeout(self) -> float:
        return self.engine.config.request_timeout

    def _node(self, name: str) -> Node:
        node = self.registry.by_name(name)
        if node.session is None:
            raise CorralError(f"{name}: not connected ({node.state})", ErrorCode.DISCONNECTED)
        return node

    def _ask(self, node_name: str, make: Any, timeout: float | None = None) -> Any:
        node = self._node(node_name)
        assert node.session is not None
        try:
            return node.session.request(make, timeout or self.timeout)
        except CorralError as exc:
            raise CorralError(f"{node_name}: {exc.message}", exc.code) from None

    # --- exec / pid --------------------------------------------------------------------

    def exec(self, nodeset: str | None, argv: list[str], cwd: str | None,
             env: dict[str, str], stdin: bytes | None, count: int
             ) -> GroupResult[list[ProcInfo]]:
        if not 1 <= count <= MAX_COPIES:  # (a job of a billion ranks would stall the hub)
            raise UsageError(f"-n COUNT must be 1 to {MAX_COPIES:,} copies per node, not "
                             f"{count:,}")
        env = self.engine.environment.merged(env)  # (bad --env: refused before anything)
        # The environment rides in the same frame as the stdin bytes.
        room = self.engine.config.max_frame - FRAME_HEADROOM - env_size(env)
        if stdin is not None and len(stdin) > room:
            raise UsageError(f"the stdin file is {len(stdin)} bytes, more than one frame "
                             f"carries ({room}); copy it to the nodes and redirect instead")
        nodes, errors = resolve_targets(self.registry, nodeset)
        if not nodes:  # every named node is disconnected: their errors are the result
            return gathered({}, errors, nodes)
        job = self._new_job(shlex.join(argv), "exec", nodes, count)
        log.info("exec %s x%d on %s as %s", argv, count, ",".join(n.name for n in nodes),
                 job.name)

        def make(node: Node) -> Any:
            first = job.ranks(node.name).start
            return lambda req: ExecRequest(req=req, argv=argv, cwd=cwd, env=env, stdin=stdin,
                                           count=count, job=job.name, rank=first,
                                           size=job.size)

        # A big batch legitimately takes a while on a loaded node.
        group = fan_out(nodes, make, self.timeout + count * PER_COPY, _procs, errors)
        self.engine.jobs.settle(  # (a node speaks only for its own ranks)
            job, {info.rank: info.pid for name, infos in group.results.items() for info in infos
                  if info.rank is not None and info.rank in job.ranks(name)},
            {name: group.errors[name] for name in group.failed if name in job.placement})
        for name in group.succeeded:
            if any(info.pid for info in group.results[name]):
                self.registry.publish(ProcessesStarted(name, group.results[name]))
        return group

    def _new_job(self, command: str, origin: str, nodes: list[Node], copies: int) -> Job:
        return self.engine.jobs.create(command[:MAX_JOB_COMMAND], origin,
                                       [node.name for node in nodes], copies)

    def processes(self, nodeset: str | None, job: str | None = None
                  ) -> GroupResult[list[ProcInfo]]:
        """The processes of the target nodes; with ``job``, only that job's (or member's),
        from its own nodes unless ``nodeset`` narrows them."""
        if job is not None:
            return self._job_processes(nodeset, job)
        nodes, errors = resolve_targets(self.registry, nodeset)
        return fan_out(nodes, lambda _n: lambda req: ListRequest(req=req), self.timeout,
                       _procs, errors)

    def _job_processes(self, nodeset: str | None, word: str) -> GroupResult[list[ProcInfo]]:
        found, rank = self.engine.jobs.get(word)
        names = found.nodes if rank is None else [found.node_of(rank)]
        if nodeset is not None:
            wanted = set(select_nodes(nodeset, [n.name for n in self.registry.nodes()]))
            names = [name for name in names if name in wanted]
        tables = self.jobs.tables(names)
        chosen = {name: [info for info in tables.results[name]
                         if found.owns(name, info) and (rank is None or info.rank == rank)]
                  for name in tables.succeeded}
        return dataclasses.replace(tables, results=chosen)

    def jobs_list(self) -> list[JobView]:
        return self.jobs.views()

    def job_members(self, job: str) -> list[JobMember]:
        return self.jobs.resolve(job)

    def job_names(self) -> list[str]:
        return [job.name for job in reversed(self.engine.jobs.jobs())]

    # --- signals -----------------------------------------------------------------------

    def signal(self, refs: list[str], signum: int) -> list[SignalOutcome]:
        """Signal processes; a job (``J12``) or a member (``J12.3``) stands for its
        processes. A member that has ended, with its whole group, is reported so, not
        as a failure: the job as a whole was signalled."""
        words, plain = split_words(refs)
        outcomes: list[SignalOutcome] = []
        member_refs: list[str] = []
        for word in words:
            for member in self.jobs.resolve(word):
                if member.unreachable is not None:
                    outcomes.append(SignalOutcome(member.ref, False, member.unreachable))
                else:
                    member_refs.append(member.ref)
        sent = self._per_ref(member_refs + plain, lambda pids: lambda req: SignalRequest(
            req=req, signum=signum, pids=pids))
        members = set(member_refs)
        for outcome in sent:
            if outcome.ref in members and outcome.code == ErrorCode.ALREADY_ENDED:
                outcome = dataclasses.replace(outcome, ok=True, code=0)
            outcomes.append(outcome)
        return outcomes

    def signal_all(self, nodeset: str | None, signum: int) -> GroupResult[list[SignalOutcome]]:
        return self._per_node(nodeset, lambda req: SignalRequest(req=req, signum=signum,
                                                                 all_running=True))

    # --- forget ------------------------------------------------------------------------

    def forget(self, refs: list[str]) -> list[SignalOutcome]:
        """Drop these ended processes from their clients' tables and journals."""
        return self._per_ref(refs, lambda pids: lambda req: ForgetRequest(req=req, pids=pids))

    def forget_ended(self, nodeset: str | None) -> GroupResult[list[SignalOutcome]]:
        """Drop every ended process of the target nodes."""
        return self._per_node(nodeset, lambda req: ForgetRequest(req=req, all_ended=True))

    def _per_ref(self, refs: list[str], make: Callable[[list[int]], Callable[[int], Message]]
                 ) -> list[SignalOutcome]:
        """One request per node for the pids of ``refs`` on it (``make(pids)``); an outcome
        per ref, in the order given."""
        by_node: dict[str, list[int]] = defaultdict(list)
        for ref in refs:
            name, pid = parse_ref(ref)
            by_node[name].append(pid)
        outcomes: dict[str, SignalOutcome] = {}

        def one_node(name: str, pids: list[int]) -> None:
            try:
                answers = self._ask(name, make(pids))
            except CorralError as exc:
                for pid in pids:
                    outcomes[f"{name}:{pid}"] = SignalOutcome(f"{name}:{pid}", False, exc.message)
                return
            for answer in answers:
                outcome = SignalOutcome.from_answer(name, answer)
                outcomes[outcome.ref] = outcome

        gevent.joinall([gevent.spawn(one_node, n, p) for n, p in by_node.items()])
        return [outcomes[ref] for ref in dict.fromkeys(refs) if ref in outcomes]

    def _per_node(self, nodeset: str | None, make: Callable[[int], Message]
                  ) -> GroupResult[list[SignalOutcome]]:
        """The same request to every target node; an outcome per pid each answers for."""
        nodes, errors = resolve_targets(self.registry, nodeset)

        def convert(node: Node, answers: list[SignalAnswer]) -> list[SignalOutcome]:
            return [SignalOutcome.from_answer(node.name, answer) for answer in answers]

        return fan_out(nodes, lambda _node: make, self.timeout, convert, errors)

    # --- rusage / log ------------------------------------------------------------------

    def rusage(self, nodeset: str | None) -> GroupResult[UsageReport]:
        nodes, errors = resolve_targets(self.registry, nodeset)

        return fan_out(nodes, lambda _n: lambda req: UsageRequest(req=req), self.timeout,
                       _same, errors)

    @property
    def log_chunk_size(self) -> int:
        return min(LOG_CHUNK, self.engine.config.max_frame - FRAME_HEADROOM)

    def log(self, ref: str, lines: int | None, offset: int | None) -> LogChunk:
        """One chunk of a log: from ``offset``, or from where the last ``lines`` lines begin
        (None or 0: from the start)."""
        name, pid = parse_ref(ref)
        size = self.log_chunk_size
        answer: LogAnswer = self._ask(name, lambda req: LogRequest(
            req=req, pid=pid, lines=lines, offset=offset, max_bytes=size))
        # The answer must follow its request: at most the bytes asked for, and an offset
        # just past them. Otherwise a chunk could come back again and again, and ``log``
        # never end.
        start = answer.offset - len(answer.data)
        if len(answer.data) > size or start < 0 or (offset is not None and start != offset):
            reason = (f"protocol error: log answer of {len(answer.data)} bytes ending at "
                      f"{answer.offset} does not follow its request (from "
                      f"{'the last lines' if offset is None else offset}, at most {size})")
            if (session := self._node(name).session) is not None:
                session.close(reason)
            raise CorralError(f"{name}: {reason}", ErrorCode.PROTOCOL)
        return LogChunk(data=answer.data, offset=answer.offset, ended=answer.ended,
                        more=len(answer.data) >= size)

    # --- wait --------------------------------------------------------------------------

    def wait(self, refs: list[str], timeout: float | None) -> list[WaitResult]:
        """Wait until each process has ended; a job (``J12``) or a member (``J12.3``)
        stands for its processes, in rank order. A process whose node goes GONE meanwhile
        is reported lost, never waited on for ever."""
        deadline = None if timeout is None else time.monotonic() + timeout
        results: dict[str, WaitResult] = {}
        ranks: dict[str, int] = {}
        wanted: list[str] = []
        log.info("waiting for %s to end (timeout %s)", " ".join(refs), timeout)
        by_node: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for word in dict.fromkeys(refs):
            if not looks_like_job(word):
                wanted.append(word)
                try:
                    name, pid = parse_ref(word)
                except UsageError as exc:
                    results[word] = WaitResult(word, None, exc.message)
                    continue
                by_node[name].append((word, pid))
                continue
            for member in self.jobs.resolve(word):
                wanted.append(member.ref)
                ranks[member.ref] = member.rank
                if member.info is None or not member.pid:  # lost, or never started
                    results[member.ref] = WaitResult(member.ref, member.info, member.error,
                                                     member.rank)
                else:
                    by_node[member.node].append((member.ref, member.pid))
        wanted = list(dict.fromkeys(wanted))

        def node_part(name: str, members: list[tuple[str, int]]) -> None:
            # Listen first, then look: an exit between the two is not missed.
            waiters = {ref: self.engine.exits.waiter(name, pid) for ref, pid in members}
            try:
                table = {p.pid: p for p in self._ask(name, lambda req: ListRequest(req=req))}
                for ref, pid in members:
                    current = table.get(pid)
                    if current is None:
                        results[ref] = WaitResult(ref, None, not_started_here(pid))
                    elif current.ended_state:
                        results[ref] = WaitResult(ref, current)
                    else:
                        left = None if deadline is None else max(0.0, deadline - time.monotonic())
                        try:
                            results[ref] = WaitResult(ref, waiters[ref].get(timeout=left))
                        except gevent.Timeout:
                            results[ref] = WaitResult(ref, current, "still running at timeout")
            except CorralError as exc:
                message = exc.message
                if exc.code is ErrorCode.DISCONNECTED and not message.startswith("lost: "):
                    message = f"lost: {message}"
                for ref, _pid in members:
                    results.setdefault(ref, WaitResult(ref, None, message))
            finally:
                for ref, pid in members:
                    self.engine.exits.forget(name, pid, waiters[ref])

        greenlets = [gevent.spawn(node_part, name, members) for name, members in by_node.items()]
        try:
            gevent.joinall(greenlets)
        finally:
            gevent.killall(greenlets)
        return [dataclasses.replace(results[ref], rank=ranks.get(ref)) for ref in wanted]

    # --- run ---------------------------------------------------------------------------

    def run(self, nodeset: str | None, command: str, timeout: float,
            cwd: str | None = None, origin: str = "run") -> GroupResult[RunResult]:
        """Run ``command`` on the nodes. Cancelled (Ctrl-C: the greenlet is killed) or past
        the master's own patience, the command is cancelled on the nodes still running it,
        and what each then answers (``cancelled``, or its status if it had just ended) is
        the result."""
        nodes, errors = resolve_targets(self.registry, nodeset)
        env = self.engine.environment.merged({})
        if not nodes:
            return gathered({}, errors, nodes)
        job = self._new_job(command, origin, nodes, 1)
        log.info("run %r on %s as %s", command, ",".join(n.name for n in nodes), job.name)
        asked: dict[str, tuple[Session, int, gevent.event.AsyncResult]] = {}

        def request_for(node: Node) -> Callable[[int], Message]:
            rank = job.ranks(node.name).start
            return lambda req: RunRequest(req=req, command=command, timeout=timeout, cwd=cwd,
                                          env=env, job=job.name, rank=rank, size=job.size)

        cancelled: list[str] = []
        why = "cancelled"
        try:
            try:
                for node in nodes:
                    assert node.session is not None
                    try:
                        req, reply = node.session.begin(request_for(node))
                    except (CorralError, OSError) as exc:
                        errors[node.name] = _as_error(exc)
                        continue
                    asked[node.name] = (node.session, req, reply)
                gevent.wait([reply for _s, _r, reply in asked.values()],
                            timeout=timeout + RUN_GRACE)
                why = f"no reply within {timeout + RUN_GRACE:g} s"
            except gevent.GreenletExit:
                pass  # Ctrl-C: cancel below what has not ended yet
            cancelled = self._cancel_unanswered(asked)
        finally:
            for session, req, _reply in asked.values():
                session.end(req, cancel=False)
        results: dict[str, RunResult] = {}
        for name, (_session, _req, reply) in asked.items():
            if not reply.ready():
                errors[name] = CorralError(f"{why}; no answer to the cancel within "
                                           f"{CANCEL_GRACE:g} s", ErrorCode.NO_REPLY)
            elif not reply.successful():
                error = _as_error(reply.exception)
                if name in cancelled and why != "cancelled":
                    error = CorralError(f"{why}: {error.message}", ErrorCode.NO_REPLY)
                errors[name] = error
            elif name in cancelled and why != "cancelled":
                errors[name] = CorralError(f"{why}: cancelled on the node", ErrorCode.NO_REPLY)
            else:
                results[name] = reply.value
        self.engine.jobs.settle(
            job, {job.ranks(name).start: result.pid for name, result in results.items()},
            {name: error for name, error in errors.items() if name in job.placement})
        return gathered(results, errors, nodes)

    def _cancel_unanswered(self, asked: dict[str, tuple[Session, int, gevent.event.AsyncResult]]
                           ) -> list[str]:
        """Tell each node still running the command to stop it, wait a moment for what it
        answers, and return their names."""
        names = [name for name, (_s, _r, reply) in asked.items() if not reply.ready()]
        if names:
            log.info("cancelling the command on %s", ",".join(names))
        for name in names:
            session, req, _reply = asked[name]
            with contextlib.suppress(OSError):
                session.send(Cancel(req=req))
        gevent.wait([asked[name][2] for name in names], timeout=CANCEL_GRACE)
        return names

    def script(self, nodeset: str | None, local_file: str, args: list[str], timeout: float
               ) -> GroupResult[RunResult]:
        """Push ``local_file`` and run it with ``args`` on the nodes, as one job."""
        return run_script(self, nodeset, local_file, args, timeout)

    # --- completion --------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [node.name for node in self.registry.nodes()]

    def process_refs(self, running_only: bool) -> list[str]:
        group = self.processes(None)
        return [f"{name}:{p.pid}" for name in group.succeeded for p in group.results[name]
                if p.pid and not (running_only and p.ended_state)]


