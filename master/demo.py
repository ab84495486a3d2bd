"""``make run``: a master on 127.0.0.1 with local demo clients, for trying corral out.

The clients run in their own sessions (Ctrl-C at the prompt is for the console, not for
them) and are stopped when the prompt exits. Everything they write lands under logs/demo/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from client.spawn import SPAWNERS
from master import cli
from master.api import load_master_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral-demo")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--spawn", choices=sorted(SPAWNERS), default="posix",
                        help="how the demo clients start processes (see corral-client --spawn)")
    parser.add_argument("--http", metavar="[HOST:]PORT",
                        help="serve the web dashboard there too (log in with the token in "
                             "logs/demo/token)")
    parser.add_argument("commands", nargs="*", help="console commands to run first")
    args = parser.parse_args(argv)

    demo_dir = Path("logs") / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    token_file = demo_dir / "token"
    load_master_token(token_file)
    # The demo's jobs, variables and known nodes stay with the demo, never in the state of
    # the master the user runs for real; its control socket stays where `corral` looks.
    state_dir = demo_dir / "master-state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    # Processes the demo clients start find `corral` (for var and barrier) beside Python.
    client_env = {**os.environ, "PATH": os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])}
    names = [f"n{i}" for i in range(1, args.clients + 1)]
    clients = []
    for name in names:
        node_dir = demo_dir / name
        node_dir.mkdir(exist_ok=True)
        with open(demo_dir / f"{name}.log", "ab") as out:
            clients.append(subprocess.Popen(
                [sys.executable, "-m", "client", "--master", f"127.0.0.1:{args.port}",
                 "--name", name, "--token-file", str(token_file),
                 "--state-dir", str(node_dir / "state"), "--workdir", str(node_dir / "work"),
                 "--log-dir", str(node_dir / "logs"), "--spawn", args.spawn],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=client_env,
            ))
    print(f"started demo clients {', '.join(names)} with --spawn {args.spawn} "
          f"(their logs: {demo_dir}/NAME.log)")
    commands = args.commands or [f"list --wait {len(names)} --timeout 20"]
    try:
        web = ["--http", args.http] if args.http else []
        return cli.main(["--port", str(args.port), "--token-file", str(token_file),
                         "--log-dir", "logs", "--state-dir", str(state_dir),
                         "--control", str(cli.default_state_dir() / "control.sock"),
                         *web, *commands])
    finally:
        stop_clients(clients)


def stop_clients(clients: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each client (it stops at once), SIGKILL one that has not within 5 s."""
    for client in clients:
        client.terminate()
    for client in clients:
        try:
            client.wait(timeout=5)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()


if __name__ == "__main__":
    raise SystemExit(main())
