"""The work behind each console command, run on the hub thread: resolve the targets, send
the requests to all of them at once, and turn the replies into typed results."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from typing import Any

import gevent

from common.errors import CorralError, ErrorCode, UsageError
from common.messages import (
    ExecRequest,
    ListRequest,
    LogRequest,
    RunRequest,
    SignalRequest,
    UsageRequest,
)
from common.procs import ProcInfo
from common.replies import LogAnswer, RunAnswer, SignalAnswer, UsageAnswer
from common.text import printable
from master.fanout import GroupResult, fan_out, parse_ref, resolve_targets
from master.registry import Node
from master.server import MasterEngine

log = logging.getLogger("corral.master.ops")

RUN_GRACE = 5.0  # beyond a command's own timeout, for the reply to travel
FRAME_HEADROOM = 64 * 1024  # room in a frame for the rest of an exec request
PER_COPY = 0.02  # seconds of extra patience per copy that exec -n asks for


@dataclasses.dataclass(frozen=True)
class SignalOutcome:
    ref: str
    ok: bool
    message: str = ""  # the error, or what became of the process (``killed SIGINT``)
    still_running: int = 0  # other members of its process group alive after the signal

    @classmethod
    def from_answer(cls, node: str, answer: SignalAnswer) -> SignalOutcome:
        return cls(f"{node}:{answer.pid}", answer.ok, printable(answer.message),
                   answer.still_running)


UsageReport = UsageAnswer
LogChunk = LogAnswer
RunResult = RunAnswer


@dataclasses.dataclass(frozen=True)
class WaitResult:
    ref: str
    info: ProcInfo | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.info is not None and self.info.describe() == "exited 0"


def _procs(_node: Node, value: list[ProcInfo]) -> list[ProcInfo]:
    return value


def _same(_node: Node, value: Any) -> Any:
    return value


class Operations:
    def __init__(self, engine: MasterEngine) -> None:
        self.engine = engine
        self.registry = engine.registry

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
        room = self.engine.config.max_frame - FRAME_HEADROOM
        if stdin is not None and len(stdin) > room:
            raise UsageError(f"the stdin file is {len(stdin)} bytes, more than one frame "
                             f"carries ({room}); copy it to the nodes and redirect instead")
        nodes, errors = resolve_targets(self.registry, nodeset)
        log.info("exec %s x%d on %s", argv, count, ",".join(n.name for n in nodes))

        def make(_node: Node) -> Any:
            return lambda req: ExecRequest(req=req, argv=argv, cwd=cwd, env=env, stdin=stdin,
                                           count=count)

        # A big batch legitimately takes a while on a loaded node.
        return fan_out(nodes, make, self.timeout + count * PER_COPY, _procs, errors)

    def processes(self, nodeset: str | None) -> GroupResult[list[ProcInfo]]:
        nodes, errors = resolve_targets(self.registry, nodeset)
        return fan_out(nodes, lambda _n: lambda req: ListRequest(req=req), self.timeout,
                       _procs, errors)

    # --- signals -----------------------------------------------------------------------

    def signal(self, refs: list[str], signum: int) -> list[SignalOutcome]:
        by_node: dict[str, list[int]] = defaultdict(list)
        for ref in refs:
            name, pid = parse_ref(ref)
            by_node[name].append(pid)
        outcomes: dict[str, SignalOutcome] = {}

        def one_node(name: str, pids: list[int]) -> None:
            try:
                answers = self._ask(name, lambda req: SignalRequest(req=req, signum=signum,
                                                                   pids=pids))
            except CorralError as exc:
                for pid in pids:
                    outcomes[f"{name}:{pid}"] = SignalOutcome(f"{name}:{pid}", False, exc.message)
                return
            for answer in answers:
                outcome = SignalOutcome.from_answer(name, answer)
                outcomes[outcome.ref] = outcome

        gevent.joinall([gevent.spawn(one_node, n, p) for n, p in by_node.items()])
        return [outcomes[ref] for ref in dict.fromkeys(refs) if ref in outcomes]

    def signal_all(self, nodeset: str | None, signum: int) -> GroupResult[list[SignalOutcome]]:
        nodes, errors = resolve_targets(self.registry, nodeset)

        def convert(node: Node, answers: list[SignalAnswer]) -> list[SignalOutcome]:
            return [SignalOutcome.from_answer(node.name, answer) for answer in answers]

        def make(_node: Node) -> Any:
            return lambda req: SignalRequest(req=req, signum=signum, all_running=True)

        return fan_out(nodes, make, self.timeout, convert, errors)

    # --- rusage / log ------------------------------------------------------------------

    def rusage(self, nodeset: str | None) -> GroupResult[UsageReport]:
        nodes, errors = resolve_targets(self.registry, nodeset)

        return fan_out(nodes, lambda _n: lambda req: UsageRequest(req=req), self.timeout,
                       _same, errors)

    def log(self, ref: str, lines: int | None, offset: int | None) -> LogChunk:
        name, pid = parse_ref(ref)
        answer: LogAnswer = self._ask(name, lambda req: LogRequest(req=req, pid=pid, lines=lines,
                                                                   offset=offset))
        return answer

    # --- wait --------------------------------------------------------------------------

    def wait(self, refs: list[str], timeout: float | None) -> list[WaitResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        results: dict[str, WaitResult] = {}
        wanted = list(dict.fromkeys(refs))
        log.info("waiting for %s to end (timeout %s)", " ".join(wanted), timeout)
        by_node: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for ref in wanted:
            try:
                name, pid = parse_ref(ref)
            except UsageError as exc:
                results[ref] = WaitResult(ref, None, exc.message)
                continue
            by_node[name].append((ref, pid))

        def node_part(name: str, members: list[tuple[str, int]]) -> None:
            # Listen first, then look: an exit between the two is not missed.
            waiters = {ref: self.engine.exits.waiter(name, pid) for ref, pid in members}
            try:
                table = {p.pid: p for p in self._ask(name, lambda req: ListRequest(req=req))}
                for ref, pid in members:
                    current = table.get(pid)
                    if current is None:
                        results[ref] = WaitResult(ref, None, f"pid {pid} was not started by "
                                                             f"{name}")
                    elif current.ended_state:
                        results[ref] = WaitResult(ref, current)
                    else:
                        left = None if deadline is None else max(0.0, deadline - time.monotonic())
                        try:
                            results[ref] = WaitResult(ref, waiters[ref].get(timeout=left))
                        except gevent.Timeout:
                            results[ref] = WaitResult(ref, current, "still running at timeout")
            except CorralError as exc:
                for ref, _pid in members:
                    results.setdefault(ref, WaitResult(ref, None, exc.message))
            finally:
                for ref, pid in members:
                    self.engine.exits.forget(name, pid, waiters[ref])

        greenlets = [gevent.spawn(node_part, name, members) for name, members in by_node.items()]
        try:
            gevent.joinall(greenlets)
        finally:
            gevent.killall(greenlets)
        return [results[ref] for ref in wanted]

    # --- run ---------------------------------------------------------------------------

    def run(self, nodeset: str | None, command: str, timeout: float,
            cwd: str | None = None) -> GroupResult[RunResult]:
        nodes, errors = resolve_targets(self.registry, nodeset)
        log.info("run %r on %s", command, ",".join(n.name for n in nodes))

        def make(_node: Node) -> Any:
            return lambda req: RunRequest(req=req, command=command, timeout=timeout, cwd=cwd)

        return fan_out(nodes, make, timeout + RUN_GRACE, _same, errors)

    # --- completion --------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [node.name for node in self.registry.nodes()]

    def running_refs(self) -> list[str]:
        group = self.processes(None)
        return [f"{name}:{p.pid}" for name, procs in group.results.items() for p in procs
                if not p.ended_state]


