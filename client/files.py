"""Files for the master: receive pushed files, stream files back, remove them.

Each file of a push is written to a hidden temporary file beside its destination and its
size checked (every frame that carried it was authenticated); at the end of the push one
sync per file system puts them all on disk, then they are renamed into place (and synced
again, for the renames). A reader never sees half a file, and a failed or interrupted push
leaves none of its files at the destination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from client.chain import DataLinks, Inbound, Relay
from client.sandbox import OutsideSandbox, Sandbox
from common.errors import CorralError, ErrorCode
from common.landing import (
    IncomingFile,
    IncomingFolder,
    IncomingLink,
    PartialLedger,
    io_error,
    sync_folders,
)
from common.links import check_link, relpath_problem
from common.messages import (
    FailReply,
    GetChunk,
    GetFile,
    GetFileEnd,
    GetRequest,
    LinkLost,
    Message,
    PutBegin,
    PutChunk,
    PutEnd,
    PutEntry,
    PutProgress,
    RemoveRequest,
    Reply,
)
from common.stream_digest import StreamDigest
from common.tree import scan

log = logging.getLogger("corral.client.files")

CHUNK = 1024 * 1024
PROGRESS_EVERY = 0.25  # seconds between a chained copy's progress reports to the master


def make_folder(path: Path) -> None:
    """``mkdir -p``, saying ``not a directory`` when a file stands where a folder must."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()),
                       path)
        raise CorralError(f"{blocker}: not a directory", ErrorCode.NOT_A_DIRECTORY) from None
    except OSError as exc:
        raise io_error(path, exc) from None


Landing = IncomingFile | IncomingLink


class _Push:
    """One copy arriving, landed whole at the end: one sync, then the renames, then one
    more sync for the renames. A folder of the copy that is new on the node (``copy -r
    fold newfold``, or ``fold`` into a folder without one) is built inside a hidden staging
    folder beside its destination, its files written in place there, and the staging
    folder is renamed into place: one rename, however many files. Otherwise each file goes
    to a temporary file beside its destination, and each is renamed."""

    def __init__(self, sandbox: Sandbox, begin: PutBegin, ledger: PartialLedger | None) -> None:
        self.sandbox = sandbox
        self.ledger = ledger
        self.dest = sandbox.locate(begin.dest)
        self.into = begin.into or self.dest.is_dir()
        if begin.into:
            make_folder(self.dest)
        self.staged: dict[str, IncomingFolder] = {}  # by the source's name: new folders
        self.waiting: list[Landing] = []
        self.current: IncomingFile | None = None
        self.folders: set[Path] = set()
        self._checked: dict[Path, Path] = {}  # folders found inside the sandbox, resolved
        self._made: set[Path] = set()  # folders known to exist
        self.files = self.bytes = 0
        # A chained copy passed through other nodes: checked end to end before it lands.
        self.digest = StreamDigest() if begin.transfer else None

    def landing(self, relpath: str) -> Path:
        """Where an entry is written, by ``cp``'s rules: inside DEST, or, when the one
        source becomes DEST, with the source's own name replaced by DEST. Checked against
        the sandbox; each folder's check holds for the rest of the copy, since the copy
        never puts a link where a folder is (its own links land only at the end, or inside
        a staging folder, where they are checked as they are made)."""
        problem = relpath_problem(relpath)
        if problem is not None:
            raise CorralError(problem, ErrorCode.BAD_REQUEST)
        top, _, rest = relpath.partition("/")
        base, inner = (self.dest, relpath) if self.into else (self.dest, rest)
        if top in self.staged:
            base, inner = self.staged[top].temp, rest
        if not inner:
            return base
        candidate = base / inner
        folder = self._checked.get(candidate.parent)
        if folder is None:
            if not self.sandbox.inside(candidate.parent):
                raise OutsideSandbox(f"{relpath}: outside the sandbox ({self.sandbox.root})")
            folder = Path(os.path.realpath(candidate.parent))
            self._checked[candidate.parent] = folder
        target = folder / candidate.name
        if target.is_symlink() and not self.sandbox.inside(target):
            raise OutsideSandbox(f"{relpath}: a link that leads outside the sandbox "
                                 f"({self.sandbox.root})")
        return target

    def entry(self, entry: PutEntry) -> None:
        self._finish_current()
        if self.digest is not None:
            self.digest.entry(entry.relpath, entry.kind, entry.mode, entry.size, entry.target)
        target = self.landing(entry.relpath)
        if (entry.kind == "dir" and "/" not in entry.relpath and not os.path.lexists(target)
                and entry.relpath not in self.staged):
            make_folder(target.parent)
            self.staged[entry.relpath] = IncomingFolder(target, self.ledger)
            self.folders.add(target.parent)
            return
        if entry.kind == "dir":
            make_folder(target)
            self._made.add(target)
            return
        staged = entry.relpath.partition("/")[0] in self.staged
        if not staged:  # in a new staging folder nothing can be in the way
            if target.is_dir() and not target.is_symlink():
                raise CorralError(f"{target}: is a directory, cannot put a {entry.kind} "
                                  "there", ErrorCode.BAD_REQUEST)
            # a staging folder is new: on the file system of its parent, already listed
            self.folders.add(target.parent)
        if target.parent not in self._made:
            make_folder(target.parent)
            self._made.add(target.parent)
        if entry.kind == "link":
            check_link(entry.relpath, entry.target)
            link = IncomingLink(target, entry.target, None if staged else self.ledger,
                                in_place=staged)
            self.waiting.append(link)
            return
        self.current = IncomingFile(target, entry.mode, entry.size,
                                    ledger=None if staged else self.ledger, in_place=staged)
        self.waiting.append(self.current)
        self.chunk(entry.data)

    def chunk(self, data: bytes) -> None:
        if self.current is None:
            raise CorralError("file data outside a file", ErrorCode.BAD_REQUEST)
        if self.digest is not None:
            self.digest.data(data)
        self.current.write(data)

    def _finish_current(self) -> None:
        current, self.current = self.current, None
        if current is not None:
            current.finish()
            self.files += 1
            self.bytes += current.size

    def end(self, digest: bytes) -> dict[str, Any]:
        self._finish_current()
        if self.digest is not None and not hmac.compare_digest(self.digest.digest(), digest):
            self.discard()
            raise CorralError("what came through the chain does not match the master's "
                              "SHA-256 (altered on the way); nothing landed",
                              ErrorCode.PROTOCOL)
        gevent.get_hub().threadpool.apply(self._land_all)
        log.info("received %d files (%d bytes) into %s", self.files, self.bytes, self.dest)
        return {"path": str(self.dest), "files": self.files, "bytes": self.bytes}

    def _land_all(self) -> None:
        """In a native thread: the syncs can take seconds, and heartbeats must flow."""
        try:
            sync_folders(self.folders)
            for landing in self.waiting:
                landing.land()
            for folder in self.staged.values():
                folder.land()
            sync_folders(self.folders)
        except OSError as exc:
            raise io_error(self.dest, exc) from None
        except CorralError:
            self.discard()
            raise

    def discard(self) -> None:
        for landing in self.waiting:
            landing.discard()
        self.waiting.clear()
        self.current = None
        for folder in self.staged.values():
            folder.discard()
        self.staged.clear()


@dataclasses.dataclass
class _Leg:
    """This node's part in a chained copy: where its data comes from, where it goes on,
    and what of the stream's end has come (the master's digest, the last frame)."""

    transfer: str
    upstream: str  # the node that feeds it ("" for the master)
    relay: Relay | None
    inbound: Inbound | None = None
    seal: bytes | None = None
    streamed: bool = False
    received: int = 0
    reported: float = 0.0


class Uploads:
    """The receiving end of pushes on one connection, and this node's legs of chained
    copies: each frame of a leg is forwarded to the next node first, then written here
    (a node that cannot write a copy still forwards it)."""

    def __init__(self, sandbox: Sandbox, ledger: PartialLedger | None = None,
                 links: DataLinks | None = None,
                 notify: Callable[[Message], None] | None = None) -> None:
        self.sandbox = sandbox
        self.ledger = ledger
        self.links = links
        self.notify = notify or (lambda message: None)  # to the master, unsolicited
        self._open: dict[int, _Push] = {}
        self._failed: set[int] = set()
        self._legs: dict[int, _Leg] = {}
        self._by_transfer: dict[str, int] = {}

    def handle(self, message: PutBegin | PutEntry | PutChunk | PutEnd) -> Message | None:
        """Apply one frame of a push from the master; return the reply to send, if this
        frame ends it."""
        req = message.req
        if isinstance(message, PutBegin) and message.transfer:
            problem = self._begin_leg(message)
            if problem is not None:
                self._failed.add(req)
                return FailReply(req=req, code=int(ErrorCode.BAD_REQUEST), message=problem)
        leg = self._legs.get(req)
        if leg is None or isinstance(message, PutBegin):
            return self._apply(message)
        if isinstance(message, PutEnd) and leg.upstream:  # the seal; data comes by link
            leg.seal = message.digest
            return self._finish_leg(req, leg) if leg.streamed else None
        if leg.upstream:
            self.cancel(req)
            return FailReply(req=req, code=int(ErrorCode.PROTOCOL),
                             message="copy data from the master for a node fed by a link")
        if isinstance(message, PutEnd):
            leg.seal = message.digest
        return self._stream_frame(req, leg, message)

    def _begin_leg(self, begin: PutBegin) -> str | None:
        if self.links is None:
            return "this client has no data port for chained copies"
        if begin.req in self._legs or begin.transfer in self._by_transfer:
            return f"chained copy {begin.transfer} is already open"
        relay = (None if begin.downstream is None
                 else self.links.relay(begin.downstream, begin.stall))
        self._legs[begin.req] = _Leg(begin.transfer, begin.upstream, relay)
        self._by_transfer[begin.transfer] = begin.req
        if begin.upstream:
            self.links.gate.expect(begin.transfer, begin.upstream, begin.clock or None)
        return None

    def attach(self, inbound: Inbound) -> bool:
        """A data link admitted for ``inbound.transfer``: True if it feeds a leg here
        that has no link yet."""
        leg = self._leg_of(inbound.transfer)
        if leg is None or leg.inbound is not None or not leg.upstream:
            return False
        leg.inbound = inbound
        return True

    def from_link(self, transfer: str, message: PutEntry | PutChunk | PutEnd) -> bool:
        """One frame from the data link of ``transfer``; True once the stream has ended
        (or the copy is gone here: the link has nothing more to bring)."""
        req = self._by_transfer.get(transfer)
        leg = None if req is None else self._legs.get(req)
        if req is None or leg is None:
            return True
        reply = self._stream_frame(req, leg, dataclasses.replace(message, req=req))
        if reply is not None:
            self.notify(reply)
        return leg.streamed

    def link_lost(self, transfer: str, reason: str) -> None:
        """The link feeding ``transfer`` ended before the stream did: this node's copy
        fails (the master retries it in a chain re-formed without the node before), and
        the nodes after it lose their link too."""
        req = self._by_transfer.get(transfer)
        leg = None if req is None else self._legs.get(req)
        if req is None or leg is None or leg.streamed:
            return
        upstream = leg.upstream
        self.cancel(req)
        self._failed.add(req)  # the master's seal or cancel may still come
        self.notify(FailReply(req=req, code=int(ErrorCode.UPSTREAM_LOST),
                              message=f"the data link from {upstream} ended: {reason}"))

    def _stream_frame(self, req: int, leg: _Leg,
                      message: PutEntry | PutChunk | PutEnd) -> Message | None:
        relay = leg.relay
        if relay is not None and not relay.forward(message):
            leg.relay = None
            self.notify(LinkLost(req=req, node=relay.node, reason=relay.error or "failed"))
        if isinstance(message, PutEnd):
            leg.streamed = True
            self._report(req, leg, force=True)
            return self._finish_leg(req, leg) if leg.seal is not None else None
        leg.received += len(message.data)
        self._report(req, leg)
        return self._apply(message)

    def _report(self, req: int, leg: _Leg, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - leg.reported >= PROGRESS_EVERY:
            leg.reported = now
            self.notify(PutProgress(req=req, received=leg.received))

    def _finish_leg(self, req: int, leg: _Leg) -> Message | None:
        self._drop_leg(req)
        return self._apply(PutEnd(req=req, digest=leg.seal or b""))

    def _leg_of(self, transfer: str) -> _Leg | None:
        req = self._by_transfer.get(transfer)
        return None if req is None else self._legs.get(req)

    def _drop_leg(self, req: int) -> None:
        leg = self._legs.pop(req, None)
        if leg is None:
            return
        self._by_transfer.pop(leg.transfer, None)
        if self.links is not None:
            self.links.gate.forget(leg.transfer)
        if leg.relay is not None:
            leg.relay.close()  # after the last frame: the next node has it all
        if leg.inbound is not None and not leg.streamed:
            with contextlib.suppress(OSError):
                leg.inbound.sock.close()

    def _apply(self, message: PutBegin | PutEntry | PutChunk | PutEnd) -> Message | None:
        req = message.req
        if req in self._failed:
            if isinstance(message, PutEnd):
                self._failed.discard(req)
            return None  # the error reply has gone already
        try:
            if isinstance(message, PutBegin):
                if req in self._open:
                    raise CorralError(f"push {req} is already open", ErrorCode.BAD_REQUEST)
                self._open[req] = _Push(self.sandbox, message, self.ledger)
            elif isinstance(message, PutEntry):
                self._push(req).entry(message)
            elif isinstance(message, PutChunk):
                self._push(req).chunk(message.data)
            else:
                push = self._push(req)
                del self._open[req]
                try:
                    return Reply(req=req, value=push.end(message.digest))
                except BaseException:
                    push.discard()
                    raise
            return None
        except CorralError as exc:
            failed = self._open.pop(req, None)
            if failed is not None:
                failed.discard()
            if not isinstance(message, PutEnd):
                self._failed.add(req)
            return FailReply(req=req, code=int(exc.code), message=exc.message)

    def _push(self, req: int) -> _Push:
        push = self._open.get(req)
        if push is None:
            raise CorralError(f"no push {req} in progress", ErrorCode.BAD_REQUEST)
        return push

    def cancel(self, req: int) -> None:
        self._drop_leg(req)
        push = self._open.pop(req, None)
        if push is not None:
            push.discard()
        self._failed.discard(req)

    def abort_all(self) -> None:
        """The connection ended: nothing half-received may stay behind."""
        for req in list(self._legs):
            self._drop_leg(req)
        for push in self._open.values():
            push.discard()
        self._open.clear()
        self._failed.clear()


def stream_out(sandbox: Sandbox, request: GetRequest, send: Callable[[Message], None]
               ) -> dict[str, Any]:
    """Send ``request.path`` back, entry by entry, as GetFile/GetChunk/GetFileEnd frames;
    the whole listing is made first, so a link the rule refuses stops it before any."""
    top = sandbox.locate(request.path)
    if not top.exists() and not top.is_symlink():
        raise CorralError(f"{request.path}: no such file or folder", ErrorCode.NOT_FOUND)

    def inside_only(path: Path, relpath: str) -> None:
        if not sandbox.inside(path):
            raise OutsideSandbox(f"{relpath}: a link that leads outside the sandbox "
                                 f"({sandbox.root})")

    tree = scan(top, top.name or ".", request.follow, inside_only)
    files = sent = 0
    for entry in tree.entries:
        send(GetFile(req=request.req, relpath=entry.relpath, kind=entry.kind, mode=entry.mode,
                     size=entry.size, target=entry.target))
        if entry.kind != "file":
            continue
        try:
            with open(entry.path, "rb") as source:
                # The size announced and no more: a file still being written (a running
                # process's log) is sent as it was, not chased while it grows.
                left = entry.size
                while left and (data := source.read(min(CHUNK, left))):
                    send(GetChunk(req=request.req, data=data))
                    sent += len(data)
                    left -= len(data)
        except OSError as exc:
            raise io_error(entry.path, exc) from None
        send(GetFileEnd(req=request.req))
        files += 1
    return {"files": files, "bytes": sent, "notes": tree.notes}


def remove(sandbox: Sandbox, request: RemoveRequest) -> list[dict[str, Any]]:
    outcomes = []
    for path in request.paths:
        try:
            target = sandbox.entry(path)
            if target == sandbox.root or target == sandbox.workdir:
                raise CorralError(f"{path}: refusing to remove the work folder itself",
                                  ErrorCode.PERMISSION)
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                if not request.recursive:
                    raise CorralError(f"{path}: is a folder (use -r)", ErrorCode.BAD_REQUEST)
                shutil.rmtree(target)  # does not follow links inside the tree
            elif not target.exists():
                raise CorralError(f"{path}: no such file or folder", ErrorCode.NOT_FOUND)
            else:
                target.unlink()
        except CorralError as exc:
            outcomes.append({"path": path, "ok": False, "code": int(exc.code),
                             "message": exc.message})
        except OSError as exc:
            outcomes.append({"path": path, "ok": False, "code": int(ErrorCode.IO),
                             "message": f"{path}: {exc.strerror or exc}"})
        else:
            log.info("removed %s", target)
            outcomes.append({"path": path, "ok": True, "code": 0, "message": ""})
    return outcomes
