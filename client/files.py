"""Files for the master: receive pushed files, stream files back, remove them.

A received file is written to a hidden temporary file beside its destination, its size
checked (every frame that carried it was authenticated), fsync'd, given its mode, and then
renamed into place: a reader never sees half a file, and a failed or interrupted transfer
leaves nothing at the destination.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent

from client.sandbox import Sandbox
from common.errors import CorralError, ErrorCode
from common.landing import IncomingFile, PartialLedger, io_error
from common.messages import (
    FailReply,
    GetChunk,
    GetFile,
    GetFileEnd,
    GetRequest,
    Message,
    PutBegin,
    PutChunk,
    PutEnd,
    RemoveRequest,
    Reply,
)

log = logging.getLogger("corral.client.files")

CHUNK = 1024 * 1024


def flush_to_disk(fd: int) -> None:
    """fsync in a native thread: flushing a large file can take a second, and the event
    loop (heartbeats, other requests) must not wait for it."""
    gevent.get_hub().threadpool.apply(os.fsync, (fd,))


class Uploads:
    """The receiving end of pushes on one connection."""

    def __init__(self, sandbox: Sandbox, ledger: PartialLedger | None = None) -> None:
        self.sandbox = sandbox
        self.ledger = ledger
        self._open: dict[int, IncomingFile] = {}
        self._failed: set[int] = set()

    def handle(self, message: PutBegin | PutChunk | PutEnd) -> Message | None:
        """Apply one frame of a push; return the reply to send, if this frame ends it."""
        req = message.req
        if req in self._failed:
            if isinstance(message, PutEnd):
                self._failed.discard(req)
            return None  # the error reply has gone already
        try:
            if isinstance(message, PutBegin):
                return self._begin(message)
            if isinstance(message, PutChunk):
                self._chunk(message)
                return None
            return Reply(req=req, value=self._end(message))
        except CorralError as exc:
            upload = self._open.pop(req, None)
            if upload is not None:
                upload.discard()
            if not isinstance(message, PutEnd):
                self._failed.add(req)
            return FailReply(req=req, code=int(exc.code), message=exc.message)

    def _begin(self, begin: PutBegin) -> Message | None:
        target = self.sandbox.locate(begin.path)
        if begin.kind == "dir":
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise io_error(target, exc) from None
            return Reply(req=begin.req, value={"path": str(target)})
        if begin.kind != "file":
            raise CorralError(f"unknown kind {begin.kind!r}", ErrorCode.BAD_REQUEST)
        if target.is_dir():
            target = self.sandbox.locate(str(target / begin.name))
        self._open[begin.req] = IncomingFile(target, begin.mode, begin.size, flush_to_disk,
                                             self.ledger)
        return None

    def _upload(self, req: int) -> IncomingFile:
        upload = self._open.get(req)
        if upload is None:
            raise CorralError(f"no transfer {req} in progress", ErrorCode.BAD_REQUEST)
        return upload

    def _chunk(self, chunk: PutChunk) -> None:
        self._upload(chunk.req).write(chunk.data)

    def _end(self, end: PutEnd) -> dict[str, Any]:
        upload = self._upload(end.req)
        del self._open[end.req]
        upload.commit()
        log.info("received %s (%d bytes)", upload.final, upload.size)
        return {"path": str(upload.final)}

    def cancel(self, req: int) -> None:
        upload = self._open.pop(req, None)
        if upload is not None:
            upload.discard()
        self._failed.discard(req)

    def abort_all(self) -> None:
        """The connection ended: nothing half-received may stay behind."""
        for upload in self._open.values():
            upload.discard()
        self._open.clear()
        self._failed.clear()


def _walk(top: Path) -> Iterator[Path]:
    """``top`` and, for a folder, everything below it (folders before their contents),
    without following symbolic links."""
    yield top
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = Path(dirpath)
            for name in dirnames:
                yield base / name
            for name in sorted(filenames):
                yield base / name


def stream_out(sandbox: Sandbox, request: GetRequest, send: Callable[[Message], None]
               ) -> dict[str, int]:
    """Send ``request.path`` back, file by file, as GetFile/GetChunk/GetFileEnd frames."""
    top = sandbox.locate(request.path)
    if not top.exists():
        raise CorralError(f"{request.path}: no such file or folder", ErrorCode.NOT_FOUND)
    files = sent = 0
    for entry in _walk(top):
        relpath = str(entry.relative_to(top.parent))
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # links are not followed, so none can lead out
        if stat.S_ISDIR(info.st_mode):
            send(GetFile(req=request.req, relpath=relpath, kind="dir",
                         mode=stat.S_IMODE(info.st_mode), size=0))
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        send(GetFile(req=request.req, relpath=relpath, kind="file",
                     mode=stat.S_IMODE(info.st_mode), size=info.st_size))
        try:
            with open(entry, "rb") as source:
                while data := source.read(CHUNK):
                    send(GetChunk(req=request.req, data=data))
                    sent += len(data)
        except OSError as exc:
            raise io_error(entry, exc) from None
        send(GetFileEnd(req=request.req))
        files += 1
    return {"files": files, "bytes": sent}


def remove(sandbox: Sandbox, request: RemoveRequest) -> list[dict[str, Any]]:
    outcomes = []
    for path in request.paths:
        try:
            target = sandbox.locate(path)
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
