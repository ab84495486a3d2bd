"""The programs a client will run, when it was started with an allow-list.

An entry without a slash names a program found on PATH (``sleep``); an entry with a slash
is an exact path (``/opt/lab/bin/sim``). With a list in force, a command for ``run`` must
be one simple command (no pipes, redirections, ``;``, ``$`` or backquotes), because a shell
line could start anything; it is then started directly, without a shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from common.errors import CorralError, ErrorCode

SHELL_SYNTAX = set(";|&$`<>(){}\n\\*?[]~")


class NotAllowed(CorralError):
    code = ErrorCode.PERMISSION


class AllowList:
    def __init__(self, entries: list[str], node: str) -> None:
        self.node = node
        self.names = {entry for entry in entries if "/" not in entry}
        self.paths = {os.path.realpath(entry) for entry in entries if "/" in entry}

    @classmethod
    def from_options(cls, allow: list[str], allow_file: Path | None, node: str
                     ) -> AllowList | None:
        entries = list(allow)
        if allow_file is not None:
            for line in allow_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entries.append(line)
        return cls(entries, node) if entries or allow_file is not None else None

    def check(self, argv: list[str]) -> None:
        program = argv[0]
        if "/" in program:
            allowed = os.path.realpath(program) in self.paths
        else:
            found = shutil.which(program)
            allowed = program in self.names or (
                found is not None and os.path.realpath(found) in self.paths)
        if not allowed:
            raise NotAllowed(f"program {program!r} is not allowed on {self.node}")

    def command_argv(self, command: str) -> list[str]:
        """The argv of an allowed simple command, or NotAllowed saying why not."""
        if any(ch in SHELL_SYNTAX for ch in command):
            raise NotAllowed(f"only simple commands may run on {self.node} (it has an "
                             "allow-list): no pipes, redirections, ; or $")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise CorralError(f"cannot parse command: {exc}", ErrorCode.BAD_REQUEST) from None
        if not argv:
            raise CorralError("empty command", ErrorCode.BAD_REQUEST)
        self.check(argv)
        return argv
