"""``corral-client``: parse options, set up logging, and run the daemon until signalled."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import gevent

from client import jobsocket
from client.allow import AllowList
from client.daemon import ClientConfig, ClientDaemon
from client.handlers import RequestHandlers
from client.identity import default_state_dir, load_node_id
from client.leftovers import sweep_scripts
from client.proctable import KEEP_ENDED, ProcTable
from client.protocol import Identity
from client.reaper import Reaper
from client.sandbox import Sandbox
from client.spawn import SPAWNERS
from common import auth
from common.argtypes import port_number, positive_int, positive_seconds
from common.config import add_common_options, parse_with_config
from common.errors import CorralError
from common.jobs import SCRIPT_FOLDER
from common.journal import Journal
from common.logfiles import add_log_options, log_file_handler, reopen_log_files
from common.malloc import keep_big_buffers
from common.names import NAME_RULE, name_problem
from common.paths import absolute_path_options
from common.procs import signal_name
from common.standard_fds import ensure_standard_streams
from common.text import EscapingFormatter
from common.tls import TlsFiles


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def node_name(text: str) -> str:
    problem = name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral-client", description="Run a corral client daemon on this machine."
    )
    parser.add_argument("--master", required=True, type=parse_master, metavar="HOST:PORT")
    parser.add_argument("--name", type=node_name, default=socket.gethostname(),
                        help="default: the host name. " + NAME_RULE)
    parser.add_argument("--token-file", type=Path, help="default: $CORRAL_TOKEN, then "
                        f"{auth.default_token_path()}")
    parser.add_argument("--state-dir", type=Path,
                        help="where the node id and state live (default: "
                        "$XDG_STATE_HOME/corral/NAME)")
    parser.add_argument("--workdir", type=Path, help="default: STATE_DIR/work")
    parser.add_argument("--log-dir", type=Path, help="process logs (default: STATE_DIR/logs)")
    parser.add_argument("--root", type=Path,
                        help="copy, pull and remove may reach anywhere below this folder "
                        "(default: only inside the work folder)")
    parser.add_argument("--tls-cert", type=Path, help="this client's certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="the CA that signs the master's certificate")
    parser.add_argument("--data-port", type=port_number, default=0, metavar="PORT",
                        help="where other nodes send chained copies (default: any free port, "
                        "told to the master)")
    parser.add_argument("--allow", action="append", default=[], metavar="PROGRAM",
                        help="run only these programs (repeatable; a name on PATH or a path)")
    parser.add_argument("--allow-file", type=Path, metavar="FILE",
                        help="allowed programs, one a line (# comments)")
    parser.add_argument("--spawn", choices=sorted(SPAWNERS), default="posix",
                        help="how processes are started: posix_spawn (default), fork (the "
                        "explicit fork/dup2/execve version) or student (client/spawn.py's "
                        "spawn_student, yours to write)")
    parser.add_argument("--keep-ended", type=positive_int, default=KEEP_ENDED, metavar="N",
                        help="ended processes to remember; beyond N the one that ended "
                        f"first is forgotten (default {KEEP_ENDED:,})")
    parser.add_argument("--job-socket-timeout", type=positive_seconds,
                        default=jobsocket.FIRST_FRAME_TIMEOUT, metavar="SECONDS",
                        help="a process connecting to the job socket must send its call "
                        "within this time, or it is told so and closed (default "
                        f"{jobsocket.FIRST_FRAME_TIMEOUT:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug lines too")
    parser.add_argument("--log-file", type=Path, metavar="PATH",
                        help="this client's own log (default: standard error)")
    add_log_options(parser)
    add_common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    ensure_standard_streams()  # before anything opens a descriptor
    args = parse_with_config(build_parser(), argv, "client")
    absolute_path_options(args)  # before any chdir: relative paths are the operator's
    keep_big_buffers()  # chunks of logs and files reuse freed buffers
    # A greenlet per request: not recording where each was spawned makes one in 0.7 µs,
    # not 1.8 (a debugging aid nothing here reads).
    gevent.config.track_greenlet_tree = False
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if args.log_file is not None:
        try:
            args.log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = log_file_handler(args.log_file, args.log_max_bytes, args.log_keep)
        except OSError as exc:
            print(f"corral-client: cannot open log file {args.log_file}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
    handler.setFormatter(EscapingFormatter(
        f"%(asctime)s corral-client[{args.name}] %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler])
    token_path = args.token_file or (
        None if os.environ.get(auth.TOKEN_ENV, "").strip() else auth.default_token_path())
    try:
        token = auth.client_token(args.token_file)
    except CorralError as exc:
        print(f"corral-client: {exc.message}", file=sys.stderr)
        return 2
    if token_path is not None and (warning := auth.exposure_warning(token_path)):
        logging.getLogger("corral.client").warning("%s", warning)
    state_dir = (args.state_dir or default_state_dir(args.name)).resolve()
    workdir = (args.workdir or state_dir / "work").resolve()
    log_dir = (args.log_dir or state_dir / "logs").resolve()
    for folder in (state_dir, workdir, log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        allow = AllowList.from_options(args.allow, args.allow_file, args.name)
    except OSError as exc:
        print(f"corral-client: cannot read {args.allow_file}: {exc.strerror}", file=sys.stderr)
        return 2
    os.chdir(workdir)  # where processes start unless told otherwise
    identity = Identity(
        node_id=load_node_id(state_dir), name=args.name, host=socket.gethostname(),
        pid=os.getpid(),
    )
    try:
        tls_files = TlsFiles.from_options(args.tls_cert, args.tls_key, args.tls_ca)
    except CorralError as exc:
        print(f"corral-client: {exc.message}", file=sys.stderr)
        return 2
    config = ClientConfig(
        master=args.master, name=args.name, workdir=workdir, log_dir=log_dir,
        state_dir=state_dir, tls=tls_files, data_port=args.data_port,
    )
    # Made before anything touches the state folder: a second client on the same folder
    # stops here.
    job_socket_path = state_dir / jobsocket.FILE_NAME
    too_long = jobsocket.path_problem(job_socket_path)
    os.environ.pop(jobsocket.ENV_NAME, None)  # this client may run in a job: not ours
    job_socket = jobsocket.JobSocket(job_socket_path, args.name, config.max_frame,
                                     args.job_socket_timeout)
    try:
        if too_long is None:
            job_socket.start()
        else:
            logging.getLogger("corral.client").warning(
                "%s; processes of this node cannot use corral commands", too_long)
    except (CorralError, OSError) as exc:
        message = exc.message if isinstance(exc, CorralError) else exc.strerror or str(exc)
        print(f"corral-client: job socket {job_socket_path}: {message}", file=sys.stderr)
        return 2
    reaper = Reaper()
    reaper.start()
    spawner = SPAWNERS[args.spawn]
    procs = ProcTable(reaper, spawner, log_dir, workdir, Journal(state_dir / "processes.jsonl"),
                      keep_ended=args.keep_ended)
    gevent.spawn(procs.watch_adopted)
    try:
        sandbox = Sandbox(workdir, args.root)
    except ValueError as exc:
        print(f"corral-client: {exc}", file=sys.stderr)
        return 2
    handlers = RequestHandlers(procs, state_dir, sandbox, allow, node=args.name)
    handlers.sweep_stdin()
    if left := sweep_scripts(workdir):
        logging.getLogger("corral.client").info(
            "removed %d script(s) left in %s by jobs that ended while this node was away: %s",
            len(left), workdir / SCRIPT_FOLDER, " ".join(left))
    try:
        daemon = ClientDaemon(config, identity, token, handlers.table(), procs.running_count,
                              sandbox)
        daemon.listen_for_links()
    except CorralError as exc:
        print(f"corral-client: {exc.message}", file=sys.stderr)
        return 2
    procs.change_listeners.append(daemon.publish_change)
    job_socket.serve(procs, daemon.forwarder)
    if too_long is None:
        procs.give_job_socket(job_socket_path)
    log = logging.getLogger("corral.client")
    log.info("node %s (id %s) work folder %s, master %s:%d, data port %d",
             args.name, identity.node_id, workdir, *args.master, daemon.data_port)
    runner = gevent.spawn(daemon.run_forever)
    # What start-up built (modules, classes, the restored table) lives as long as the
    # client: out of the collector's sight, a collection walks only what requests make,
    # and a fork (--spawn fork) does not copy pages just because the collector wrote to
    # their objects' headers.
    gc.freeze()

    def stop(signum: int) -> None:
        # The children run in sessions of their own: they live on, and the journal lets
        # the next start of this client find them again.
        log.info("stopping on %s; %d running processes are left running and will be found "
                 "again when this client starts next", signal_name(signum),
                 procs.running_count())
        daemon.stop()
        runner.kill(block=False)  # out of whatever it waits on: connect, read, back-off

    def hangup() -> None:
        """Re-read the token (connections from now on prove the new one; the current one
        stays up) and reopen the log file after logrotate moved it."""
        reopen_log_files(logging.getLogger())
        try:
            new_token = auth.client_token(args.token_file)
        except CorralError as exc:
            log.warning("SIGHUP: %s; the token in use stays", exc.message)
            return
        changed = new_token != daemon.token
        daemon.token = new_token
        log.info("SIGHUP: token re-read (%s)", "changed: used from the next connection on"
                 if changed else "unchanged")

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    gevent.signal_handler(signal.SIGHUP, hangup)
    runner.join()
    job_socket.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
