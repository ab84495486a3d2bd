"""What the client does for each request from the master: one function per request type.

Each returns the reply's value or raises a CorralError, which the connection turns into an
error reply; the handlers know nothing of sockets.
"""

from __future__ import annotations

import os
import resource
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from client.allow import AllowList, check_environment_names
from client.files import remove
from client.logread import file_size, read_chunk, start_of_last_lines
from client.proctable import ProcTable
from client.sandbox import Sandbox
from client.shell import run_shell
from client.spawn import JobPlace, find_program
from common.errors import CorralError, ErrorCode
from common.jobs import MAX_COPIES
from common.messages import (
    ExecRequest,
    ForgetRequest,
    ListRequest,
    LogRequest,
    Message,
    Ping,
    RemoveRequest,
    RunRequest,
    SignalRequest,
    UsageRequest,
)
from common.placeholders import expand
from common.procs import rusage_dict
from common.turns import Turns

MAX_LOG_CHUNK = 4 * 1024 * 1024  # bytes of a log in one reply


class RequestHandlers:
    def __init__(self, procs: ProcTable, state_dir: Path, sandbox: Sandbox,
                 allow: AllowList | None = None, node: str = "") -> None:
        self.node = node  # this client's name: CORRAL_NODE and ?HOST
        self.sandbox = sandbox
        self.allow = allow
        self.procs = procs
        self.stdin_dir = state_dir / "stdin"

    def table(self) -> dict[type[Message], Callable[[Any], Any]]:
        return {
            Ping: lambda _request: None,
            ExecRequest: self.exec,
            ListRequest: self.list_processes,
            SignalRequest: self.signal,
            ForgetRequest: self.forget,
            UsageRequest: self.usage,
            LogRequest: self.log,
            RunRequest: self.run,
            RemoveRequest: lambda request: remove(self.sandbox, request),
        }

    def _program(self, argv: list[str], folder: Path) -> str | None:
        """Where ``argv[0]`` resolves, checked against the allow-list when there is one."""
        if not argv or not argv[0] or any("\0" in arg for arg in argv):
            raise CorralError("no program given, or a NUL byte in an argument",
                              ErrorCode.BAD_REQUEST)
        program = find_program(argv[0], folder)
        if self.allow is not None:
            self.allow.check(argv[0], program)
        return program

    def exec(self, request: ExecRequest) -> list[dict[str, Any]]:
        if not 1 <= request.count <= MAX_COPIES:
            raise CorralError(f"count must be 1 to {MAX_COPIES}", ErrorCode.BAD_REQUEST)
        self._check_environment(request.env)
        folder = self.sandbox.folder(request.cwd)
        places = [self._place(request.job, request.rank + copy, request.size)
                  for copy in range(request.count)]
        argvs = [self._expand(request.argv, place) for place in places]
        # Every copy is checked before any starts: ?RANK may name another program per copy.
        # (Looked up once per name: a batch of 10,000 copies need not search PATH 10,000
        # times.)
        found: dict[str, str | None] = {}
        for argv in argvs:
            if not argv or argv[0] not in found:
                found[argv[0] if argv else ""] = self._program(argv, folder)
        programs = [found[argv[0]] for argv in argvs]
        stdin_path = None if request.stdin is None else self._stage_stdin(request.stdin)
        started = []
        turns = Turns(gevent.sleep)  # a big batch must not hold up heartbeats
        try:
            for program, argv, place in zip(programs, argvs, places, strict=True):
                started.append(self.procs.spawn(program, argv, folder, request.env,
                                                 stdin_path, place=place))
                turns.take()
        finally:
            # Every copy has opened it by now (a spawn returns after exec), so the bytes
            # live on only in those open descriptors.
            if stdin_path is not None:
                stdin_path.unlink(missing_ok=True)
        return [record.info().to_wire() for record in started]

    def _check_environment(self, env: dict[str, str]) -> None:
        check_environment_names(env)
        if self.allow is not None:
            self.allow.check_environment(env)

    def _place(self, job: str, rank: int, size: int) -> JobPlace | None:
        return JobPlace(self.node, job, rank, size) if job else None

    def _expand(self, words: list[str], place: JobPlace | None) -> list[str]:
        """?HOST and ?RANK replaced, in a job's requests (an older master sends none)."""
        if place is None:
            return words
        return [expand(word, self.node, place.rank) for word in words]

    def _stage_stdin(self, data: bytes) -> Path:
        """The request's stdin bytes in a file only this user can read, in a folder only
        this user can enter: they may be a secret."""
        self.stdin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.stdin_dir, 0o700)  # an older client made it 0755
        path = self.stdin_dir / uuid.uuid4().hex
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path

    def sweep_stdin(self) -> None:
        """Stdin files left by a client killed between staging and spawning."""
        if self.stdin_dir.is_dir():
            for leftover in self.stdin_dir.iterdir():
                leftover.unlink(missing_ok=True)

    def list_processes(self, _request: ListRequest) -> list[dict[str, Any]]:
        return [info.to_wire() for info in self.procs.snapshot()]

    def signal(self, request: SignalRequest) -> list[dict[str, Any]]:
        return self.procs.signal(None if request.all_running else request.pids,
                                 request.signum)

    def forget(self, request: ForgetRequest) -> list[dict[str, Any]]:
        outcomes = self.procs.forget(None if request.all_ended else request.pids)
        return [{"pid": pid, "ok": error is None, "code": int(error.code) if error else 0,
                 "message": error.message if error else ""} for pid, error in outcomes]

    def usage(self, _request: UsageRequest) -> dict[str, Any]:
        processes = [info.to_wire() for info in self.procs.snapshot()]
        children = rusage_dict(resource.getrusage(resource.RUSAGE_CHILDREN))
        return {"children": children, "processes": processes}

    def log(self, request: LogRequest) -> dict[str, Any]:
        """A chunk of a process's log: from ``offset``, or from where its last ``lines``
        lines begin (all of it for 0). The master asks again from the offset it gets back
        for the rest, so a log of any size travels in chunks."""
        record = self.procs.find(request.pid)
        ended = self.procs.is_ended(request.pid)  # checked before reading: no lost tail
        path = record.log_path
        if not 1 <= request.max_bytes <= MAX_LOG_CHUNK:
            raise CorralError(f"max_bytes must be 1 to {MAX_LOG_CHUNK}", ErrorCode.BAD_REQUEST)
        if request.offset is not None and request.offset < 0:
            raise CorralError("offset must not be negative", ErrorCode.BAD_REQUEST)
        try:
            with open(path, "rb") as log_file:
                size = file_size(log_file)
                if request.offset is not None:
                    start = request.offset
                else:
                    start = start_of_last_lines(log_file, size, request.lines or 0)
                data = read_chunk(log_file, start, size, request.max_bytes)
        except FileNotFoundError:
            if record.origin == "run":  # a run command's log exists once it has output
                return {"data": b"", "offset": request.offset or 0, "ended": ended}
            raise CorralError(f"log of pid {request.pid} is gone: {path}",
                              ErrorCode.NOT_FOUND) from None
        offset = start + len(data)
        return {"data": data, "offset": offset, "ended": ended and offset >= size}

    def run(self, request: RunRequest) -> dict[str, Any]:
        if request.timeout <= 0:
            raise CorralError("timeout must be positive", ErrorCode.BAD_REQUEST)
        self._check_environment(request.env)
        folder = self.sandbox.folder(request.cwd)
        place = self._place(request.job, request.rank, request.size)
        (command,) = self._expand([request.command], place)
        if self.allow is None:
            argv = ["/bin/sh", "-c", command]
        else:
            argv = self.allow.command_argv(command)
        program = self._program(argv, folder)
        assert program is not None  # /bin/sh, or an allowed program, which is there
        answer = run_shell(self.procs, program, argv, folder, request.timeout,
                           request.env, place)
        return {**answer, "job": request.job}


