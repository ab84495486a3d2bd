"""Helpers that start real master and client processes on 127.0.0.1 and clean them up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATIENCE = 30.0  # generous upper bound for any condition a test waits on


def wait_until(predicate: Callable[[], Any], timeout: float = PATIENCE, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ClientProcess:
    """A real ``corral-client`` process with its own state folder and log file."""

    def __init__(self, name: str, master: tuple[str, int], token_file: Path, base: Path,
                 extra: list[str] | None = None, prefix: list[str] | None = None,
                 popen: dict[str, Any] | None = None) -> None:
        self.name = name
        self.popen = popen or {}  # more subprocess.Popen options (pass_fds, preexec_fn)
        self.prefix = prefix or []  # e.g. ip netns exec NS
        self.master = master
        self.token_file = token_file
        self.state_dir = base / name / "state"
        self.workdir = base / name / "work"
        self.log_dir = base / name / "logs"
        self.output = base / f"{name}.out"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ClientProcess:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "client",
                 "--master", f"{self.master[0]}:{self.master[1]}", "--name", self.name,
                 "--token-file", str(self.token_file),
                 "--state-dir", str(self.state_dir), "--workdir", str(self.workdir),
                 "--log-dir", str(self.log_dir), *self.extra],
                stdout=out, stderr=subprocess.STDOUT, env=python_env(), cwd=ROOT,
                **self.popen,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def node_id(self) -> str:
        return wait_until(lambda: _read(self.state_dir / "node-id").strip(), what="node id")

    def log_text(self) -> str:
        return _read(self.output)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with _suppress_lookup():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MasterProcess:
    """A real ``corral-master`` process; ``commands`` run as its command-line commands."""

    def __init__(self, base: Path, token_file: Path, port: int = 0,
                 extra: list[str] | None = None) -> None:
        self.base = base
        self.token_file = token_file
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen[str] | None = None
        self.banner = ""  # what it printed before it listened

    def argv(self, commands: list[str]) -> list[str]:
        return [sys.executable, "-m", "master", "--port", str(self.port), "--token-file",
                str(self.token_file), "--log-dir", str(self.base / "master-logs"),
                "--state-dir", str(self.base / "master-state"), *self.extra,
                *commands]

    def start(self, commands: list[str] | None = None, stdin: Any = subprocess.PIPE,
              popen: dict[str, Any] | None = None) -> MasterProcess:
        """``popen``: more subprocess.Popen options (``preexec_fn``...)."""
        self.proc = subprocess.Popen(
            self.argv(commands or []), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=python_env(), cwd=ROOT, **(popen or {}),
        )
        assert self.proc.stderr is not None
        seen = []
        match = None
        while match is None and (line := self.proc.stderr.readline()):  # information
            seen.append(line)
            match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, f"master did not start: {''.join(seen)!r}"
        self.port = int(match.group(1))
        self.banner = "".join(seen)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log_text(self) -> str:
        return _read(self.base / "master-logs" / "master.log")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        return kind is ProcessLookupError


def peak_rss_kib(pid: int) -> int:
    """The most memory process ``pid`` has held (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")
