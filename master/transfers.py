"""copy, pull and remove on the hub thread: files streamed in chunks, each in an
authenticated frame, landed only when whole.

A push reads each local file once and sends every chunk to all target nodes at once; the
slowest node sets the pace (TCP back-pressure), so memory stays flat however large the
file. A node that fails drops out with its reason; the others carry on. A pull writes each
node's files under ``LOCAL_DIR/<node>/`` through a temporary file, verified, then renamed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import gevent
import gevent.event

from common.errors import CorralError, ErrorCode, UsageError
from common.landing import IncomingFile, PartialLedger, io_error
from common.messages import (
    GetChunk,
    GetFile,
    GetFileEnd,
    GetRequest,
    Message,
    PutBegin,
    PutChunk,
    PutEnd,
    RemoveRequest,
)
from common.names import name_problem
from common.replies import RemoveAnswer
from common.text import peer_message
from master.fanout import GroupResult, fan_out, resolve_targets
from master.registry import Node, NodeRegistry, natural_key
from master.session import Session

log = logging.getLogger("corral.master.files")

CHUNK = 1024 * 1024
STALL_TIMEOUT = 30.0  # a node that accepts nothing for this long is given up on
PROGRESS_EVERY = 0.25  # seconds between progress reports


@dataclasses.dataclass(frozen=True)
class Progress:
    done: int  # bytes sent to (or received from) all nodes so far
    total: int  # bytes expected; 0 when not known in advance (a pull)
    elapsed: float


@dataclasses.dataclass(frozen=True)
class TransferResult:
    files: int
    bytes: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class RemoveOutcome:
    path: str
    ok: bool
    message: str = ""


ProgressCallback = Callable[[Progress], Any]


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
class _Item:
    """One thing to create on the nodes: a folder, or a local file to send."""

    local: Path
    remote: str  # the destination path on the node
    kind: str
    mode: int
    size: int


def plan_push(sources: list[str], dest: str, recursive: bool) -> list[_Item]:
    """What ``copy SOURCES DEST`` creates, with ``cp``'s rules: one file to DEST (or into
    DEST when it is a folder there, or ends with /); several sources or a folder go into
    the folder DEST, a folder keeping its name."""
    if not sources:
        raise UsageError("nothing to copy")
    items: list[_Item] = []
    into_folder = len(sources) > 1 or dest.endswith("/")
    roots = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise UsageError(f"{source}: no such file or folder")
        if path.is_dir():
            if not recursive:
                raise UsageError(f"{source}: is a folder (use -r)")
            into_folder = True
        elif not path.is_file():
            raise UsageError(f"{source}: not a regular file")
        roots.append(path)
    if into_folder:
        items.append(_Item(Path("."), dest.rstrip("/") or ".", "dir", 0o755, 0))
    for root in roots:
        for local in _walk_local(root):
            _check_readable(local)  # the whole plan is made before anything is sent
            info = local.stat()
            if into_folder:
                remote = str(PurePosixPath(dest.rstrip("/") or ".") /
                             local.relative_to(root.parent).as_posix())
            else:
                remote = dest
            kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
            items.append(_Item(local, remote, kind, stat.S_IMODE(info.st_mode),
                               info.st_size if kind == "file" else 0))
    return items


def _check_readable(path: Path) -> None:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb") as source:
                source.read(1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _walk_local(top: Path) -> Iterator[Path]:
    yield top
    if top.is_dir():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = Path(dirpath)
            for name in dirnames:
                yield base / name
            for name in sorted(filenames):
                if (base / name).is_file():
                    yield base / name


@dataclasses.dataclass
class _Target:
    node: Node
    session: Session
    files: int = 0
    bytes: int = 0
    error: CorralError | None = None


def push(registry: NodeRegistry, nodeset: str | None, sources: list[str], dest: str,
         recursive: bool, progress: ProgressCallback | None) -> GroupResult[TransferResult]:
    items = plan_push(sources, dest, recursive)
    nodes, errors = resolve_targets(registry, nodeset)
    targets = [_Target(node, node.session) for node in nodes if node.session is not None]
    meter = _Meter(progress, sum(item.size for item in items) * len(targets))
    started = time.monotonic()
    for item in items:
        live = [t for t in targets if t.error is None]
        if not live:
            break
        _push_item(item, live, meter)
    seconds = time.monotonic() - started
    results = {}
    for target in targets:
        if target.error is not None:
            errors[target.node.name] = target.error
        else:
            results[target.node.name] = TransferResult(target.files, target.bytes, seconds)
    log.info("copy %s -> %s on %d nodes: %d failed", sources, dest, len(targets),
             sum(1 for t in targets if t.error))
    return GroupResult(results=results, errors=errors,
                       order=sorted(set(results) | set(errors), key=natural_key))


def _push_item(item: _Item, targets: list[_Target], meter: _Meter) -> None:
    name = item.local.name
    begun: dict[int, tuple[int, gevent.event.AsyncResult]] = {}
    for index, target in enumerate(targets):
        try:
            begun[index] = target.session.begin(
                lambda req: PutBegin(req=req, path=item.remote, name=name, kind=item.kind,
                                     mode=item.mode, size=item.size))
        except (CorralError, OSError) as exc:
            _fail(target, exc)
    try:
        if item.kind == "file":
            _stream_file(item, targets, begun, meter)
        for index, (req, result) in begun.items():
            target = targets[index]
            if target.error is None:
                try:
                    result.get(timeout=STALL_TIMEOUT)
                except gevent.Timeout:
                    _fail(target, CorralError(f"no reply within {STALL_TIMEOUT:g} s",
                                              ErrorCode.NO_REPLY))
                except CorralError as exc:
                    _fail(target, exc)
                else:
                    target.files += item.kind == "file"
                    target.bytes += item.size
            target.session.end(req, cancel=target.error is not None)
    except BaseException:
        for index, (req, _result) in begun.items():  # cancelled: the clients discard
            targets[index].session.end(req, cancel=True)
        raise


def _stream_file(item: _Item, targets: list[_Target],
                 begun: dict[int, tuple[int, gevent.event.AsyncResult]], meter: _Meter) -> None:
    def deliver(index: int, message_for: Callable[[int], Message]) -> None:
        target = targets[index]
        req, result = begun[index]
        if target.error is not None:
            return
        if result.ready():  # the node refused early (sandbox, disk full): its reason
            try:
                result.get()
            except CorralError as exc:
                _fail(target, exc)
                return
        try:
            with gevent.Timeout(STALL_TIMEOUT, CorralError(
                    f"accepted nothing for {STALL_TIMEOUT:g} s", ErrorCode.NO_REPLY)):
                target.session.send(message_for(req))
        except (CorralError, OSError) as exc:
            _fail(target, exc)

    def broadcast(message_for: Callable[[int], Message]) -> None:
        gevent.joinall([gevent.spawn(deliver, index, message_for) for index in begun])

    with open(item.local, "rb") as source:
        while data := source.read(CHUNK):
            broadcast(lambda req, data=data: PutChunk(req=req, data=data))  # type: ignore[misc]
            meter.add(len(data) * sum(1 for t in targets if t.error is None))
    broadcast(lambda req: PutEnd(req=req))


def _fail(target: _Target, exc: BaseException) -> None:
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
        self.error: CorralError | None = None
        self._file: IncomingFile | None = None

    def _place(self, relpath: str) -> Path:
        """Where a node's relative path lands; never outside its folder, whatever the path
        or the links already on disk say."""
        parts = PurePosixPath(relpath).parts
        unsafe = (not parts or PurePosixPath(relpath).is_absolute() or ".." in parts
                  or "\0" in relpath)
        target = self.base.joinpath(*parts)
        if unsafe or not target.resolve().is_relative_to(self.base):
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

    def discard(self) -> None:
        if self._file is not None:
            self._file.discard()
            self._file = None


def _flush(fd: int) -> None:
    # In a native thread: the hub must keep serving every other node meanwhile.
    gevent.get_hub().threadpool.apply(os.fsync, (fd,))


def pull(registry: NodeRegistry, nodeset: str | None, remote_paths: list[str], local_dir: str,
         progress: ProgressCallback | None, ledger: PartialLedger | None = None
         ) -> GroupResult[TransferResult]:
    if not remote_paths:
        raise UsageError("nothing to pull")
    nodes, errors = resolve_targets(registry, nodeset)
    meter = _Meter(progress, 0)
    base = Path(local_dir).resolve()
    results: dict[str, TransferResult] = {}

    def from_node(node: Node) -> None:
        started = time.monotonic()
        folder = node_folder(base, node.name)
        if folder is None:
            errors[node.name] = CorralError(f"node name {node.name!r} is not a plain folder "
                                            "name; nothing pulled", ErrorCode.BAD_NAME)
            return
        download = _Download(folder, meter, ledger)
        try:
            for remote in remote_paths:
                _pull_one(node, remote.replace("?HOST", node.name), download)
        except CorralError as exc:
            errors[node.name] = exc
        finally:
            download.discard()
        if node.name not in errors:
            results[node.name] = TransferResult(download.files, download.bytes,
                                                time.monotonic() - started)

    gevent.joinall([gevent.spawn(from_node, node) for node in nodes], raise_error=True)
    return GroupResult(results=results, errors=errors,
                       order=sorted(set(results) | set(errors), key=natural_key))


def node_folder(base: Path, name: str) -> Path | None:
    """``base/name``, resolved, if it lies directly inside ``base`` (None otherwise)."""
    if name_problem(name) is not None:
        return None
    folder = (base / name).resolve()
    return folder if folder.parent == base else None


def _pull_one(node: Node, remote: str, download: _Download) -> None:
    session = node.session
    if session is None:
        raise CorralError(f"not connected ({node.state})", ErrorCode.DISCONNECTED)
    req, result = session.begin(lambda req: GetRequest(req=req, path=remote), sink=download)
    finished = False
    try:
        while True:
            seen = download.meter.done
            try:
                result.get(timeout=STALL_TIMEOUT)
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

    def make(node: Node) -> Callable[[int], Message]:
        node_paths = [path.replace("?HOST", node.name) for path in paths]
        return lambda req: RemoveRequest(req=req, paths=node_paths, recursive=recursive)

    def convert(_node: Node, answers: list[RemoveAnswer]) -> list[RemoveOutcome]:
        return [RemoveOutcome(a.path, a.ok, peer_message(a.message)) for a in answers]

    return fan_out(nodes, make, timeout, convert, errors)


