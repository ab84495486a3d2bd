"""The master's library API: what the console (and tests, and scripts) call. It never prints.

Every method is called from an ordinary thread and runs its work on the hub thread through
the bridge, so callers never touch gevent objects.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from common import auth
from common.errors import UsageError
from common.procs import ProcInfo
from master import transfers
from master.bridge import SIGNAL_CHECK_INTERVAL, HubThread, result_heeding_signals
from master.caller import OPERATOR
from master.events import Event
from master.front.results import GroupResult, JobMember, JobView, NodeView, WaitOutcome
from master.logstream import Fetcher, chunks_ahead
from master.operations import (
    LogChunk,
    Operations,
    RunResult,
    SignalOutcome,
    UsageReport,
    WaitResult,
)
from master.ready import wait_ready
from master.server import MasterConfig, MasterEngine
from master.transfers import ProgressCallback, RemoveOutcome, TransferResult

log = logging.getLogger("corral.master")

SHARED_POLL = 0.05  # seconds between looks at whether a shared operation has ended
# Requests submitted without waiting (``submit_exec``) and not yet answered: beyond this a
# caller waits, so a loop that submits faster than the nodes answer stays in bounded memory.
MAX_OUTSTANDING = 1_000


class MasterAPI:
    def __init__(self, engine: MasterEngine, hub: HubThread) -> None:
        self._engine = engine
        self._hub = hub
        self._ops = Operations(engine)
        self._outstanding = threading.BoundedSemaphore(MAX_OUTSTANDING)

    @classmethod
    def start(cls, config: MasterConfig, token: bytes,
              listeners: list[Callable[[Event], object]] | None = None) -> MasterAPI:
        """Start the engine on its own hub thread. ``listeners`` hear every event from the
        very first connection on (see ``subscribe``)."""
        engine = MasterEngine(config, token)
        for listener in listeners or []:
            engine.registry.subscribe(listener)
        hub = HubThread()
        hub.start(engine.start)
        return cls(engine, hub)

    @property
    def address(self) -> tuple[str, int]:
        return self._engine.address

    @property
    def web_url(self) -> str | None:
        """Where the dashboard is served (None without ``http`` in the config)."""
        web = self._engine.web
        return None if web is None else str(web.url)

    @property
    def config(self) -> MasterConfig:
        return self._engine.config

    @property
    def capacity(self) -> int:
        """How many client connections the master can hold (its open-file limit)."""
        return self._engine.capacity

    @property
    def capacity_warning(self) -> str | None:
        """Why the nodes expected cannot all be held, or None."""
        return self._engine.capacity_warning

    def shutdown(self) -> None:
        self._hub.call(self._engine.stop)
        self._hub.stop()

    def set_token(self, token: bytes) -> bool:
        """Use ``token`` for every connection from now on (those made stay up); True if it
        differs from the one in use. One attribute, replaced whole: safe from any thread."""
        changed = token != self._engine.token
        self._engine.token = token
        return changed

    def subscribe(self, listener: Callable[[Event], object]) -> None:
        """``listener`` is called on the hub thread: it must be quick and thread-safe."""
        self._hub.call(self._engine.registry.subscribe, listener)

    def nodes(self) -> list[NodeView]:
        return self._hub.call(self._engine.registry.views)

    def wait_ready(self, count: int, timeout: float | None = None) -> WaitOutcome:
        """Wait until ``count`` nodes are READY or ``timeout`` seconds pass (None: for ever)."""
        return self._hub.call(wait_ready, self._engine.registry, count, timeout)

    # --- processes (NODESET None: every READY node) ---------------------------------------

    def exec(self, nodeset: str | None, argv: list[str], cwd: str | None = None,
             env: dict[str, str] | None = None, stdin: bytes | None = None, count: int = 1
             ) -> GroupResult[list[ProcInfo]]:
        """Start ``count`` copies of ``argv`` on each target node."""
        return self._hub.call(self._ops.exec, nodeset, argv, cwd, env or {}, stdin, count)

    def submit_exec(self, nodeset: str | None, argv: list[str], cwd: str | None = None,
                    env: dict[str, str] | None = None, stdin: bytes | None = None,
                    count: int = 1) -> Future[GroupResult[list[ProcInfo]]]:
        """``exec`` without waiting for it: the future resolves to what ``exec`` returns
        (each node's processes or error), or raises what ``exec`` raises (a bad COUNT, no
        READY node). One thread can so keep many requests in flight, e.g. with
        ``concurrent.futures.wait(..., return_when=FIRST_COMPLETED)``. ``Future.cancel``
        stops a request only before it is sent. Past MAX_OUTSTANDING unanswered
        submissions this call waits for an answer. Callbacks added with
        ``add_done_callback`` run on the hub thread: they must be quick, and must not call
        this API (call it from threads of your own)."""
        if self._hub.is_current():  # it would wait for the thread it holds up
            raise UsageError("submit_exec called on the hub thread (from a done callback "
                             "or a listener): call it from a thread of your own")
        # A wait for room that still sees a Ctrl-C the kernel handed to another thread
        # (see ``result_heeding_signals``).
        while not self._outstanding.acquire(timeout=SIGNAL_CHECK_INTERVAL):
            pass
        future = self._hub.submit(self._ops.exec, nodeset, argv, cwd, env or {}, stdin, count)
        future.add_done_callback(self._answered)
        return future

    def _answered(self, _future: Future[Any]) -> None:
        self._outstanding.release()

    def processes(self, nodeset: str | None = None, job: str | None = None
                  ) -> GroupResult[list[ProcInfo]]:
        """The processes of the target nodes; with ``job`` (J12, or J12.3), only its."""
        return self._hub.call(self._ops.processes, nodeset, job)

    def setenv(self, pairs: dict[str, str]) -> dict[str, str]:
        """Add global environment entries (all or none); the environment after."""
        return self._hub.call(self._engine.environment.set, pairs)

    def unsetenv(self, names: list[str]) -> dict[str, str]:
        return self._hub.call(self._engine.environment.unset, names)

    def env(self) -> dict[str, str]:
        """The global environment every exec and run gets."""
        return self._hub.call(self._engine.environment.entries)

    def jobs(self) -> list[JobView]:
        """Every job the master remembers, oldest first, with how its processes stand."""
        return self._hub.call(self._ops.jobs_list)

    def job_names(self) -> list[str]:
        """The jobs the master remembers, newest first (for completion)."""
        return self._hub.call(self._ops.job_names)

    def job_members(self, job: str) -> list[JobMember]:
        """The processes of a job (J12) or one of them (J12.3), in rank order."""
        return self._hub.call(self._ops.job_members, job)

    def signal(self, refs: list[str], signum: int) -> list[SignalOutcome]:
        return self._hub.call(self._ops.signal, refs, signum)

    def signal_all(self, nodeset: str | None, signum: int) -> GroupResult[list[SignalOutcome]]:
        return self._hub.call(self._ops.signal_all, nodeset, signum)

    def forget_node(self, name: str) -> None:
        """Drop a GONE node from the list and from the nodes expected back."""
        self._hub.call(self._engine.registry.forget_node, name)

    def forget(self, refs: list[str]) -> list[SignalOutcome]:
        return self._hub.call(self._ops.forget, refs)

    def forget_ended(self, nodeset: str | None) -> GroupResult[list[SignalOutcome]]:
        return self._hub.call(self._ops.forget_ended, nodeset)

    def rusage(self, nodeset: str | None = None) -> GroupResult[UsageReport]:
        return self._hub.call(self._ops.rusage, nodeset)

    def log(self, ref: str, lines: int | None = None, offset: int | None = None) -> LogChunk:
        return self._hub.call(self._ops.log, ref, lines, offset)

    def log_chunks(self, ref: str, lines: int | None, follow: bool) -> Iterator[LogChunk]:
        """A log in chunks: its last ``lines`` lines (None or 0: all of it), then with
        ``follow`` what is written next, until the process has ended; the next few are
        fetched on the hub while one is shown (``master.logstream``)."""
        fetch: Fetcher[Future[LogChunk]] = Fetcher(
            lambda offset: self._hub.submit(self._ops.log, ref, None, offset),
            result_heeding_signals, self._hub.cancel, time.sleep)
        return chunks_ahead(self.log(ref, lines=lines), self._ops.log_chunk_size, follow,
                            fetch)

    def wait(self, refs: list[str], timeout: float | None = None) -> list[WaitResult]:
        return self._hub.call(self._ops.wait, refs, timeout)

    def run(self, nodeset: str | None, command: str, timeout: float = 30.0,
            cwd: str | None = None) -> GroupResult[RunResult]:
        """Ctrl-C cancels the command on the nodes; the result says what each did then."""
        return self._hub.call_to_the_end(self._ops.run, nodeset, command, timeout, cwd)

    def script(self, nodeset: str | None, local_file: str, args: list[str] | None = None,
               timeout: float = 30.0) -> GroupResult[RunResult]:
        """Push a local script to the nodes and run it there as one job; Ctrl-C cancels
        it as it does ``run``."""
        return self._hub.call_to_the_end(self._ops.script, nodeset, local_file, args or [],
                                         timeout)

    # --- files -------------------------------------------------------------------------

    def copy(self, nodeset: str | None, sources: list[str], dest: str, recursive: bool = False,
             progress: ProgressCallback | None = None, follow: bool = False,
             star: bool = False) -> GroupResult[TransferResult]:
        """Push local files (folders with ``recursive``) to DEST on each node, by ``cp``'s
        rules, through a chain of the nodes (each forwards to the next), or with ``star``
        from the master to each; ``follow`` follows links inside folders (``-L``).
        ``progress`` is called on the hub thread now and then."""
        return self._hub.call(self._engine.push, nodeset, sources, dest, recursive, progress,
                              follow, star)

    def pull(self, nodeset: str | None, remote_paths: list[str], local_dir: str,
             progress: ProgressCallback | None = None, follow: bool = False
             ) -> GroupResult[TransferResult]:
        """Fetch from each node into LOCAL_DIR/<node>/; ``?HOST`` becomes the node's name.
        ``follow`` follows links inside folders (``-L``)."""
        return self._hub.call(self._engine.pull, nodeset, remote_paths, local_dir, progress,
                              follow)

    def remove(self, nodeset: str | None, paths: list[str], recursive: bool = False
               ) -> GroupResult[list[RemoveOutcome]]:
        return self._hub.call(transfers.remove, self._engine.registry, nodeset, paths,
                              recursive, self._engine.config.request_timeout)

    def shared(self, op: str, args: dict[str, Any], on_item: Callable[[Any], object] | None
               ) -> Any:
        """A variable or barrier operation (``master.shared``) for the operator; what it
        streams (``var watch``) reaches ``on_item`` in this thread. Ctrl-C cancels it."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        future = self._hub.submit(self._engine.shared.perform, op, args, items.put, OPERATOR)
        try:
            while not (future.done() and items.empty()):
                try:
                    item = items.get(timeout=SHARED_POLL)
                except queue.Empty:
                    continue
                if on_item is not None:
                    on_item(item)
            return future.result()
        except KeyboardInterrupt:
            self._hub.cancel(future)
            raise

    def node_names(self) -> list[str]:
        return self._hub.call(self._ops.node_names)

    def process_refs(self, running_only: bool) -> list[str]:
        return self._hub.call(self._ops.process_refs, running_only)


def load_master_token(token_file: Path | None) -> tuple[bytes, Path, bool]:
    path = token_file or auth.default_token_path()
    token, created = auth.ensure_token(path)
    return token, path, created
