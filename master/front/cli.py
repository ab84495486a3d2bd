"""``corral``: run one console command against a running master and exit.

``corral COMMAND ARGS...`` takes the console's commands with the same arguments and prints
the same tables (``master.front.commands`` defines both). ``--json`` prints the result as
one JSON document (a log as JSON lines, then the document). ``corral console`` opens the
full console on the running master. Exit status: 0 all succeeded; 1 the command ran and
something failed on a node; 2 usage error; 3 no master at the control socket; 130 Ctrl-C.

This module must start fast: it imports neither gevent nor the master's engine.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common.errors import CorralError, ErrorCode
from common.text import printable_bytes
from master.front import codec, render
from master.front.commands import COMMANDS, PlainKit
from master.front.control import NoMaster, SocketBackend, default_backend
from master.front.results import LogChunk, Progress
from master.passthrough import likely_typo

OK, FAILED, USAGE, NO_MASTER, INTERRUPTED = 0, 1, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="Run one command on a running corral master.",
        epilog=f"commands: {', '.join(COMMANDS)}, console. `corral COMMAND -h` for one.")
    parser.add_argument("--control", metavar="PATH",
                        help="the master's control socket (default: inside a job, its "
                             "client's $CORRAL_SOCKET; else $CORRAL_CONTROL, then "
                             "~/.local/state/corral/master/control.sock)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (see docs/cli.md)")
    parser.add_argument("command", metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    return parser


class CliOutput:
    def __init__(self, as_json: bool, ref: str = "") -> None:
        self.as_json = as_json
        self.ref = ref
        self.progress_shown = False

    def log_data(self, chunk: LogChunk) -> None:
        if self.as_json:
            print(codec.to_json({"ref": self.ref, "data": chunk.data, "offset": chunk.offset,
                                 "ended": chunk.ended}), flush=True)
            return
        if sys.stdout.isatty():
            sys.stdout.write(printable_bytes(chunk.data))
            sys.stdout.flush()
        else:
            sys.stdout.buffer.write(chunk.data)
            sys.stdout.buffer.flush()

    def record(self, line: str, value: Any) -> None:
        if self.as_json:
            print(codec.to_json(value), flush=True)
        else:
            self.log_data(LogChunk((line + "\n").encode(), 0, False, False))

    def progress(self, progress: Progress) -> None:
        if not self.as_json and sys.stderr.isatty() and progress.elapsed >= 0.5:
            sys.stderr.write("\r" + render.progress_line(progress) + "\x1b[K")
            sys.stderr.flush()
            self.progress_shown = True


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if (word := _undecodable(options.args)) is not None:
        # Python keeps argv bytes that are not UTF-8 as lone surrogates, which no frame
        # can carry: say which word, rather than fail while sending it.
        print(f"corral: error: {word!a} is not UTF-8 text: corral sends commands and "
              "paths as text", file=sys.stderr)
        return USAGE
    backend = default_backend(options.control)
    try:
        if options.command == "console":
            return _console(backend, options.args)
        return _one_command(backend, options.command, options.args, options.json)
    except NoMaster as exc:
        print(f"corral: {exc.message}", file=sys.stderr)
        return NO_MASTER
    except CorralError as exc:
        print(f"corral: error: {exc.message}", file=sys.stderr)
        return USAGE if exc.code is ErrorCode.BAD_REQUEST else FAILED
    except KeyboardInterrupt:
        print("corral: cancelled", file=sys.stderr)
        return INTERRUPTED


def _undecodable(words: list[str]) -> str | None:
    for word in words:
        try:
            word.encode()
        except UnicodeEncodeError:
            return word
    return None


def _one_command(backend: SocketBackend, name: str, words: list[str], as_json: bool) -> int:
    command = COMMANDS.get(name)
    if command is None:
        guess = likely_typo(name, COMMANDS)
        hint = f" (did you mean {guess}?)" if guess else ""
        print(f"corral: unknown command {name!r}{hint}; commands: {', '.join(COMMANDS)}, "
              "console", file=sys.stderr)
        return USAGE
    args = command.build(PlainKit()).parse_args(words)
    args.color = sys.stdout.isatty() and not as_json
    out = CliOutput(as_json, getattr(args, "ref", ""))
    try:
        report = command.perform(args, backend, out)
    finally:
        if out.progress_shown:
            sys.stderr.write("\n")
    if as_json:
        print(codec.to_json({"command": name, "ok": not report.failed,
                             "result": report.result}))
    elif report.rendered is not None:
        if report.rendered.text:
            print(report.rendered.text)
        for line in report.rendered.errors:
            print(line, file=sys.stderr)
    if report.status is not None:
        return report.status
    return FAILED if report.failed else OK


def _console(backend: SocketBackend, words: list[str]) -> int:
    if words:
        print("corral: console takes no arguments", file=sys.stderr)
        return USAGE
    backend.call("node_names", {})  # no master: say so before a prompt appears
    from master.console import CorralConsole  # cmd2 is slow to import: only here

    console: Any = CorralConsole(backend, interactive=sys.stdin.isatty())
    console.intro = f"corral console on the master at {backend.path}. quit leaves it; " \
                    "the master runs on."
    console.cmdloop()
    return int(console.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
