"""``corral-master``: start the engine on its hub thread, then the console in this thread,
or with ``--no-console`` serve headless until SIGTERM or SIGINT.

Positional arguments are console commands run in order first (cmd2's convention), so a
script can drive the real console: ``corral-master "list --wait 3 --timeout 20" quit``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from common import auth, collector, fdlimit, tls
from common.argtypes import http_address, positive_seconds, web_origin
from common.config import add_common_options, parse_with_config
from common.errors import CorralError
from common.logfiles import DEFAULT_KEEP, add_log_options, log_file_handler
from common.malloc import keep_big_buffers
from common.standard_fds import ensure_standard_streams
from common.text import EscapingFormatter
from common.tls import TlsFiles
from master import certs, hangup
from master.api import MasterAPI, load_master_token
from master.bridge import SIGNAL_CHECK_INTERVAL
from master.console import CorralConsole
from master.forwarded import JOB_CALLS
from master.server import MasterConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral-master",
        description="Run the corral master and its console.",
        epilog="Commands after the options run in order before (or instead of) the prompt.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7070, help="0 picks a free port")
    parser.add_argument("--token-file", type=Path, help="created (mode 0600) if missing")
    parser.add_argument("--heartbeat", type=positive_seconds, default=1.0, metavar="SECONDS")
    parser.add_argument("--log-dir", type=Path, default=Path("logs"))
    parser.add_argument("--handshake-timeout", type=positive_seconds, default=5.0,
                        metavar="SECONDS")
    parser.add_argument("--request-timeout", type=positive_seconds, default=10.0,
                        metavar="SECONDS",
                        help="how long a node may take to answer before it is reported")
    parser.add_argument("--stall-timeout", type=positive_seconds,
                        default=MasterConfig.stall_timeout,
                        metavar="SECONDS",
                        help="how long a node in a chained copy may accept nothing before it "
                             "is cut out of the chain")
    parser.add_argument("--tls-cert", type=Path, help="this master's certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="the CA that signs client certificates")
    parser.add_argument("--max-frame", type=int, default=8 * 1024 * 1024, metavar="BYTES")
    parser.add_argument("--no-console", dest="console", action="store_false",
                        help="run headless as a service until SIGTERM or SIGINT; drive it "
                             "with the corral command")
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(),
                        help="the master's own files (0700): control socket, pull ledger")
    parser.add_argument("--control", type=Path, metavar="PATH",
                        help="the control socket the corral command talks to "
                             "(default: STATE_DIR/control.sock)")
    parser.add_argument("--http", type=http_address, metavar="[HOST:]PORT",
                        help="serve the web dashboard, /metrics and /healthz here (without "
                             "HOST: 127.0.0.1); HTTPS with --tls-cert/--tls-key")
    parser.add_argument("--web-origin", action="append", type=web_origin, default=[],
                        metavar="URL",
                        help="also take the dashboard's actions from pages of this origin "
                             "(repeatable): the https://NAME of a TLS-terminating proxy in "
                             "front of it; its name is also answered to when the dashboard "
                             "is bound to a loopback address")
    parser.add_argument("--expect-nodes", type=int, default=0, metavar="N",
                        help="how many nodes this master should hold: it warns at start if "
                             "its open-file limit leaves room for fewer")
    parser.add_argument("--no-passthrough", dest="passthrough", action="store_false",
                        help="never run an unknown console word on the nodes (use run)")
    parser.add_argument("--job-calls", choices=JOB_CALLS, default="all",
                        help="what processes of jobs may ask through their client: every "
                             "command but copy, pull and script (all), or only variables "
                             "and barriers (shared)")
    parser.add_argument("commands", nargs="*", help="console commands to run first")
    add_log_options(parser)
    add_common_options(parser)
    return parser


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "corral" / "master"


def state_dir_problem(path: Path) -> str | None:
    """Create the state folder for this user alone: it holds the control socket, and
    whoever can reach that socket commands every node. A folder that exists already is
    never chmod-ed behind the operator's back (``--state-dir /tmp`` must not close /tmp):
    if others can enter it, say so."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
    except OSError as exc:
        return f"cannot use state folder {path}: {exc.strerror or exc}"
    if info.st_uid != os.getuid():
        return f"state folder {path} belongs to uid {info.st_uid}, not to this user"
    if info.st_mode & 0o077:
        return (f"state folder {path} is open to other users (mode "
                f"{info.st_mode & 0o777:o}): chmod 700 it, or choose another --state-dir")
    return None


def setup_logging(log_dir: Path, max_bytes: int = 0, keep: int = DEFAULT_KEEP) -> Path:
    """Log to a file: a handler writing to the terminal from the hub thread would garble
    the prompt."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "master.log"
    handler = log_file_handler(path, max_bytes, keep)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("corral")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return path


def main(argv: list[str] | None = None) -> int:
    ensure_standard_streams()  # before anything opens a descriptor
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["certs"]:
        return certs.main(words[1:])
    args = parse_with_config(build_parser(), argv, "master")
    keep_big_buffers()  # chunks of logs and files reuse freed buffers
    collector.tune_for_many_connections()  # thousands of sessions: see common.collector
    open_files = fdlimit.raise_soft_limit()  # one socket per node: 1,024 is too few
    log_path = setup_logging(args.log_dir, args.log_max_bytes, args.log_keep)
    try:
        token, token_path, created = load_master_token(args.token_file)
    except (CorralError, OSError) as exc:
        print(f"corral-master: {exc}", file=sys.stderr)
        return 2
    if created:
        print(f"corral-master: created token file {token_path} (mode 0600); "
              "give it to the clients", file=sys.stderr)
    elif (warning := auth.exposure_warning(token_path)) is not None:
        print(f"corral-master: warning: {warning}", file=sys.stderr)
    try:
        tls_files = TlsFiles.from_options(args.tls_cert, args.tls_key, args.tls_ca)
    except CorralError as exc:
        print(f"corral-master: {exc.message}", file=sys.stderr)
        return 2
    if not args.console and args.commands:
        print("corral-master: commands need the console; with --no-console run them with "
              "the corral command", file=sys.stderr)
        return 2
    if (problem := state_dir_problem(args.state_dir)) is not None:
        print(f"corral-master: {problem}", file=sys.stderr)
        return 2
    config = MasterConfig(
        host=args.host, port=args.port, token_file=token_path, heartbeat=args.heartbeat,
        log_dir=args.log_dir, max_frame=args.max_frame,
        handshake_timeout=args.handshake_timeout, request_timeout=args.request_timeout,
        stall_timeout=args.stall_timeout,
        tls=tls_files, state_dir=args.state_dir,
        control=args.control or args.state_dir / "control.sock", http=args.http,
        web_origins=tuple(args.web_origin),
        job_calls=args.job_calls, expect_nodes=args.expect_nodes, open_files=open_files,
    )
    try:
        api = MasterAPI.start(config, token)
    except CorralError as exc:
        print(f"corral-master: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"corral-master: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    collector.freeze_startup_objects()
    on_hangup = hangup.install(api, token_path)
    host, port = api.address
    # Information, not a report: on stderr, so a redirected batch run's output holds only
    # what its commands printed.
    tls_note = ("TLS off" if tls_files is None else
                f"TLS on, master certificate SHA-256 {tls.fingerprint(tls_files.cert)}")
    if (web_url := api.web_url) is not None:
        print(f"corral master dashboard on {web_url} (/metrics and /healthz need no login)",
              file=sys.stderr, flush=True)
    if api.capacity_warning is not None:
        print(f"corral-master: warning: {api.capacity_warning}", file=sys.stderr)
    print(f"corral master listening on {host}:{port} (token {token_path}, log {log_path}; "
          f"{tls_note}; room for {api.capacity} clients)", file=sys.stderr, flush=True)
    try:
        if not args.console:
            serve_until_signalled()
            return 0
        return run_console(api, args.commands, args.passthrough, on_hangup)
    finally:
        api.shutdown()


def serve_until_signalled() -> None:
    """Wait in the main thread for SIGTERM or SIGINT; the hub thread does the work."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    while not stop.wait(SIGNAL_CHECK_INTERVAL):  # short: see result_heeding_signals
        pass
    logging.getLogger("corral.master").info(
        "stopping on %s; the clients keep their processes and report to the next master",
        signal.Signals(received[0]).name)


def run_console(api: MasterAPI, commands: list[str], passthrough: bool,
                on_hangup: Callable[[], None]) -> int:
    interactive = sys.stdin.isatty()
    console = CorralConsole(api, interactive=interactive, passthrough=passthrough)
    console.on_hangup = on_hangup
    stopped = console.runcmds_plus_hooks(commands) if commands else False
    if not stopped:
        console.cmdloop()
    if not interactive and not commands and console.commands_run == 0:
        # Started without a terminal and given nothing to do: exiting 0 would look like a
        # service that ran and stopped cleanly.
        print("corral-master: no terminal and no commands (stdin ended at once): nothing "
              "to do; run it with --no-console to serve headless", file=sys.stderr)
        return 2
    return console.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
