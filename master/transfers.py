"""copy, pull and remove on the hub thread: files streamed in chunks, each in an
authenticated frame, landed only when whole.

A push to several nodes goes through a chain of them (``master.chain``). To one node, or
as a star (``--star``), it reads each local file once and sends every chunk to all target
nodes at once; the slowest node sets the pace (TCP back-pressure), so memory stays flat
however large the file. A node that fails drops out with its reason; the others carry on.
A pull writes each node's files under ``LOCAL_DIR/<node>/`` through a temporary file,
verified, then renamed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import gevent
import gevent.event

from common.errors import CorralError, ErrorCode, UsageError
from common.landing import IncomingFile, IncomingLink, PartialLedger, io_error
from common.links import check_link
from common.messages import (
    GetChunk,
    GetFile,
    GetFileEnd,
    GetRequest,
    Message,
    PutBegin,
    PutChunk,
    PutEnd,
    PutEntry,
    RemoveRequest,
)
from common.names import name_problem
from common.placeholders import expand
from common.replies import RemoveAnswer
from common.text import peer_message
from common.tree import NOTE_LIMIT, Tree, scan
from master.chain import PushTarget, push_chain
from master.fanout import fan_out, resolve_targets
from master.front.results import (
    GroupResult,
    Progress,
    ProgressCallback,
    RemoveOutcome,
    TransferResult,
    natural_key,
)
from master.registry import Node, NodeRegistry

log = logging.getLogger("corral.master.files")

CHUNK = 1024 * 1024
STALL_TIMEOUT = 30.0  # a node that accepts nothing for this long is given up on
SLOWEST_DISK = 20 * 1024 * 1024  # bytes/s: how long a node may take to sync a push, at worst
PROGRESS_EVERY = 0.25  # seconds between progress reports


class _Meter:
    """Counts bytes and calls the progress callback now and then, never too often."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total = callback, total
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.callback is not None and now - self._last >= PROGRESS_EVERY:
            self._last = now
            self.callback(Progress(self.done, self.total, now - self.started))


# --- push ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PushPlan:
    """What ``copy SOURCES DEST`` sends: every entry, listed before anything is sent."""

    dest: str
    into: bool  # DEST is a folder to copy into, whatever the node has there
    tree: Tree


def plan_push(sources: list[str], dest: str, recursive: bool, follow: bool = False
              ) -> PushPlan:
    """The entries of a copy, and where they go by ``cp``'s rules: several sources, or a
    file and a DEST ending with ``/``, go into the folder DEST; one source goes into DEST
    if the node has a folder there, and otherwise becomes DEST (decided by each node)."""
    if not sources:
        raise UsageError("nothing to copy")
    if not dest:
        raise UsageError("no destination")
    tree = Tree()
    for source in sources:
        path = Path(source)
        if path.is_dir() and not recursive:
            raise UsageError(f"{source}: is a folder (use -r)")
        try:
            scan(path, path.name or path.resolve().name, follow, tree=tree)
        except CorralError as exc:
            raise UsageError(exc.message) from None
    for entry in tree.entries:  # the whole plan is checked before anything is sent
        if entry.kind == "file":
            _check_readable(entry.path)
    # As cp: a trailing slash makes DEST a folder to copy a file into, while a folder
    # given alone still becomes DEST when DEST is new.
    into = len(sources) > 1 or (dest.endswith("/") and not Path(sources[0]).is_dir())
    return PushPlan(dest.rstrip("/") or dest, into, tree)


def _check_readable(path: Path) -> None:
    """Opening and reading a byte is the only sure test: root passes ``access(R_OK)`` for
    files that still refuse to be read."""
    try:
        with open(path, "rb") as source:
            source.read(1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def push(registry: NodeRegistry, nodeset: str | None, sources: list[str], dest: str,
         recursive: bool, progress: ProgressCallback | None, follow: bool = False,
         file_mode: int | None = None, token: bytes = b"", star: bool = False,
         stall: float = STALL_TIMEOUT) -> GroupResult[TransferResult]:
    """Copy to the target nodes: through a chain (``master.chain``) to several nodes when
    given the token to sign the chain's tickets with, else (one node, ``star``, no token) as
    a star: every byte from the master to each node. ``file_mode``: every file lands with
    these permission bits instead of its own (a script pushed to be run)."""
    plan = plan_push(sources, dest, recursive, follow)
    if file_mode is not None:
        plan.tree.entries[:] = [dataclasses.replace(e, mode=file_mode) if e.kind == "file"
                                else e for e in plan.tree.entries]
    nodes, errors = resolve_targets(registry, nodeset)
    if len(nodes) > 1 and token and not star:
        return _push_chained(plan, nodes, errors, token, progress, stall)
    targets = [PushTarget(node, node.session) for node in nodes if node.session is not None]
    meter = _Meter(progress, plan.tree.size * len(targets))
    started = time.monotonic()
    for index, target in enumerate(targets):
        try:
            target.req, target.result = target.session.begin(
                _put_begin(expand(plan.dest, target.node.name, index), plan.into))
        except (CorralError, OSError) as exc:
            _fail(target, exc)
    try:
        _send_entries(plan.tree, targets, meter)
        _broadcast(targets, lambda req: PutEnd(req=req))
        _await_answers(targets, plan.tree.size)
    finally:
        for target in targets:
            if target.req:
                target.session.end(target.req, cancel=target.answer is None)
    seconds = time.monotonic() - started
    results = {}
    for target in targets:
        if target.error is not None or target.answer is None:
            errors[target.node.name] = target.error or CorralError("no answer")
        else:
            results[target.node.name] = TransferResult(
                target.answer.files, target.answer.bytes, seconds, list(plan.tree.notes))
    log.info("copy %s -> %s on %d nodes: %d failed", sources, dest, len(targets),
             sum(1 for t in targets if t.error))
    return GroupResult(results=results, errors=errors,
                       order=sorted(set(results) | set(errors), key=natural_key))


def _push_chained(plan: PushPlan, nodes: list[Node], errors: dict[str, CorralError],
                  token: bytes, progress: ProgressCallback | None, stall: float
                  ) -> GroupResult[TransferResult]:
    started = time.monotonic()
    answers, failed = push_chain(token, plan.dest, plan.into, plan.tree, nodes, progress,
                                 stall)
    seconds = time.monotonic() - started
    errors.update(failed)
    results = {name: TransferResult(answer.files, answer.bytes, seconds, list(plan.tree.notes))
               for name, answer in answers.items()}
    log.info("chained copy -> %s on %d nodes: %d failed", plan.dest, len(nodes), len(failed))
    return GroupResult(results=results, errors=errors,
                       order=sorted(set(results) | set(errors), key=natural_key))


def _send_entries(tree: Tree, targets: list[PushTarget], meter: _Meter) -> None:
    """Each entry once to every node still in the copy; a file's first chunk rides in its
    entry, so a small file costs one frame."""
    for entry in tree.entries:
        if not any(t.error is None for t in targets):
            return
        if entry.kind != "file":
            _broadcast(targets, lambda req, e=entry: PutEntry(  # type: ignore[misc]
                req=req, relpath=e.relpath, kind=e.kind, mode=e.mode, size=0, target=e.target))
            continue
        try:
            with open(entry.path, "rb") as source:
                # The size announced and no more: a file still being written is sent as
                # it was when the copy was planned, which is what each node expects.
                left = entry.size
                data = source.read(min(CHUNK, left))
                _broadcast(targets, lambda req, e=entry, d=data: PutEntry(  # type: ignore[misc]
                    req=req, relpath=e.relpath, kind="file", mode=e.mode, size=e.size, data=d))
                while True:
                    left -= len(data)
                    meter.add(len(data) * sum(1 for t in targets if t.error is None))
                    data = source.read(min(CHUNK, left)) if left else b""
                    if not data:
                        break
                    _broadcast(targets, lambda req, d=data: PutChunk(  # type: ignore[misc]
                        req=req, data=d))
        except OSError as exc:
            raise CorralError(f"{entry.path}: {exc.strerror or exc}", ErrorCode.IO) from None


def _broadcast(targets: list[PushTarget], message_for: Callable[[int], Message]) -> None:
    """Send one frame to every node still in the copy; with several, at once, so the
    slowest sets the pace without holding up the others' sends."""
    live = [t for t in targets if t.error is None]
    if len(live) == 1:
        _deliver(live[0], message_for)
    elif live:
        gevent.joinall([gevent.spawn(_deliver, t, message_for) for t in live])


def _deliver(target: PushTarget, message_for: Callable[[int], Message]) -> None:
    assert target.result is not None
    if target.result.ready():  # the node refused early (sandbox, disk full): its reason
        try:
            target.result.get()
        except CorralError as exc:
            _fail(target, exc)
            return
        _fail(target, CorralError("answered before the end of the copy", ErrorCode.PROTOCOL))
        return
    try:
        with gevent.Timeout(STALL_TIMEOUT, CorralError(
                f"accepted nothing for {STALL_TIMEOUT:g} s", ErrorCode.NO_REPLY)):
            target.session.send(message_for(target.req))
    except (CorralError, OSError) as exc:
        _fail(target, exc)


def _await_answers(targets: list[PushTarget], size: int) -> None:
    """Each node's answer, which comes after it has synced and renamed everything."""
    timeout = STALL_TIMEOUT + size / SLOWEST_DISK

    def wait(target: PushTarget) -> None:
        assert target.result is not None
        try:
            target.answer = target.result.get(timeout=timeout)
        except gevent.Timeout:
            _fail(target, CorralError(f"no reply within {timeout:g} s", ErrorCode.NO_REPLY))
        except CorralError as exc:
            _fail(target, exc)

    gevent.joinall([gevent.spawn(wait, t) for t in targets if t.error is None])


def _fail(target: PushTarget, exc: BaseException) -> None:
    if target.error is None:
        if isinstance(exc, CorralError):
            target.error = exc
        else:
            target.error = CorralError(f"connection lost: {exc}", ErrorCode.DISCONNECTED)


# --- pull ---------------------------------------------------------------------------------


class _Download:
    """Writes one node's streamed files under its own folder, each verified then renamed."""

    def __init__(self, base: Path, meter: _Meter, ledger: PartialLedger | None) -> None:
        self.base = base  # resolved: LOCAL_DIR/NODE
        self.ledger = ledger
        self.meter = meter
        self.files = 0
        self.bytes = 0
        self.notes: list[str] = []
        self.error: CorralError | None = None
        self._file: IncomingFile | None = None
        self._links: list[tuple[Path, Path]] = []  # (link landed, the folder it must stay in)

    def _place(self, relpath: str) -> Path:
        """Where a node's relative path lands; never outside its folder, whatever the path
        or the links already on disk say."""
        parts = PurePosixPath(relpath).parts
        unsafe = (not parts or PurePosixPath(relpath).is_absolute() or ".." in parts
                  or "\0" in relpath)
        target = self.base.joinpath(*parts)
        if unsafe or not _real(target).is_relative_to(self.base):
            raise CorralError(f"node sent an unsafe path {relpath!r}", ErrorCode.PROTOCOL)
        return target

    def __call__(self, message: Message) -> None:
        if self.error is not None:
            return
        try:
            if isinstance(message, GetFile):
                if self._file is not None:  # each would hold a descriptor and a temp file
                    raise CorralError(f"node began {message.relpath!r} before "
                                      f"{self._file.final.name!r} ended", ErrorCode.PROTOCOL)
                target = self._place(message.relpath)
                if message.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                elif message.kind == "link":
                    check_link(message.relpath, message.target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    IncomingLink(target, message.target, self.ledger).land()
                    top = self.base / PurePosixPath(message.relpath).parts[0]
                    self._links.append((target, top))
                else:
                    self._file = IncomingFile(target, message.mode, message.size, _flush,
                                              self.ledger)
            elif isinstance(message, GetChunk):
                self._current().write(message.data)
                self.meter.add(len(message.data))
            elif isinstance(message, GetFileEnd):
                incoming, self._file = self._current(), None
                incoming.commit()
                self.files += 1
                self.bytes += incoming.size
        except OSError as exc:
            self.error = io_error(self.base, exc)
            self.discard()
        except CorralError as exc:
            self.error = exc
            self.discard()

    def _current(self) -> IncomingFile:
        if self._file is None:
            raise CorralError("file data outside a file", ErrorCode.PROTOCOL)
        return self._file

    def unfinished(self) -> bool:
        return self._file is not None

    def remove_links_leading_out(self) -> None:
        """Each link's target was judged on its text; through links that came before or
        after it (``q -> .``, then ``p -> q/..``) the kernel may still lead it out of its
        folder. Judged again on disk once all have landed: any that leads out is removed
        and is this node's error."""
        for link, folder in self._links:
            if not _real(link).is_relative_to(folder):
                link.unlink(missing_ok=True)
                if self.error is None:
                    self.error = CorralError(
                        f"{link.relative_to(self.base)}: link leads outside the pulled "
                        "folder through other links; removed", ErrorCode.LINK_OUTSIDE)
        self._links.clear()

    def discard(self) -> None:
        if self._file is not None:
            self._file.discard()
            self._file = None


def _real(path: Path) -> Path:
    """``path`` with every link followed; a loop of links (which ``Path.resolve`` raises
    RuntimeError for) is left where it stops."""
    return Path(os.path.realpath(path))


def _flush(fd: int) -> None:
    # In a native thread: the hub must keep serving every other node meanwhile.
    gevent.get_hub().threadpool.apply(os.fsync, (fd,))


def _put_begin(dest: str, into: bool) -> Callable[[int], Message]:
    return lambda req: PutBegin(req=req, dest=dest, into=into)


def pull(registry: NodeRegistry, nodeset: str | None, remote_paths: list[str], local_dir: str,
         progress: ProgressCallback | None, ledger: PartialLedger | None = None,
         follow: bool = False) -> GroupResult[TransferResult]:
    if not remote_paths:
        raise UsageError("nothing to pull")
    nodes, errors = resolve_targets(registry, nodeset)
    meter = _Meter(progress, 0)
    base = Path(local_dir).resolve()
    results: dict[str, TransferResult] = {}

    places = {node.name: index for index, node in enumerate(nodes)}

    def from_node(node: Node) -> None:
        started = time.monotonic()
        folder = node_folder(base, node.name)
        if folder is None:
            errors[node.name] = CorralError(f"node name {node.name!r} is not a plain folder "
                                            "name; nothing pulled", ErrorCode.BAD_NAME)
            return
        download = _Download(folder, meter, ledger)
        refused: list[CorralError] = []  # paths this node could not send; the rest still come
        try:
            for remote in remote_paths:
                try:
                    _pull_one(node, expand(remote, node.name, places[node.name]), follow,
                              download)
                except CorralError as exc:
                    if download.error is not None or exc.code in _LINK_FAILURES:
                        raise
                    refused.append(exc)
            if refused:
                errors[node.name] = CorralError(
                    "; ".join(exc.message for exc in refused)
                    + f" ({download.files} files of the other paths pulled)", refused[0].code)
        except CorralError as exc:
            errors[node.name] = exc
        finally:
            download.discard()
            download.remove_links_leading_out()
        if download.error is not None and node.name not in errors:
            errors[node.name] = download.error
        if node.name not in errors:
            results[node.name] = TransferResult(download.files, download.bytes,
                                                time.monotonic() - started, download.notes)

    gevent.joinall([gevent.spawn(from_node, node) for node in nodes], raise_error=True)
    return GroupResult(results=results, errors=errors,
                       order=sorted(set(results) | set(errors), key=natural_key))


# Failures after which the node's other paths would fail too.
_LINK_FAILURES = frozenset({ErrorCode.DISCONNECTED, ErrorCode.NO_REPLY, ErrorCode.PROTOCOL,
                            ErrorCode.CANCELLED})


def node_folder(base: Path, name: str) -> Path | None:
    """``base/name``, resolved, if it lies directly inside ``base`` (None otherwise)."""
    if name_problem(name) is not None:
        return None
    folder = (base / name).resolve()
    return folder if folder.parent == base else None


def _pull_one(node: Node, remote: str, follow: bool, download: _Download) -> None:
    session = node.session
    if session is None:
        raise CorralError(f"not connected ({node.state})", ErrorCode.DISCONNECTED)
    req, result = session.begin(lambda req: GetRequest(req=req, path=remote, follow=follow),
                                sink=download)
    finished = False
    try:
        while True:
            seen = download.meter.done
            try:
                answer = result.get(timeout=STALL_TIMEOUT)
                download.notes.extend(peer_message(note) for note in answer.notes[:NOTE_LIMIT + 1])
                break
            except gevent.Timeout:
                if download.meter.done == seen:
                    raise CorralError(f"nothing received for {STALL_TIMEOUT:g} s",
                                      ErrorCode.NO_REPLY) from None
            if download.error is not None:
                break
        if download.error is None and download.unfinished():
            download.error = CorralError("node ended the pull in the middle of a file",
                                         ErrorCode.PROTOCOL)
        if download.error is not None:
            raise download.error
        finished = True
    finally:
        session.end(req, cancel=not finished)


# --- remove -------------------------------------------------------------------------------


def remove(registry: NodeRegistry, nodeset: str | None, paths: list[str], recursive: bool,
           timeout: float) -> GroupResult[list[RemoveOutcome]]:
    nodes, errors = resolve_targets(registry, nodeset)
    places = {node.name: index for index, node in enumerate(nodes)}

    def make(node: Node) -> Callable[[int], Message]:
        node_paths = [expand(path, node.name, places[node.name]) for path in paths]
        return lambda req: RemoveRequest(req=req, paths=node_paths, recursive=recursive)

    def convert(_node: Node, answers: list[RemoveAnswer]) -> list[RemoveOutcome]:
        return [RemoveOutcome(a.path, a.ok, peer_message(a.message)) for a in answers]

    return fan_out(nodes, make, timeout, convert, errors)


