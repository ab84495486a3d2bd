"""The ``corral`` CLI as a whole process against a running headless master.

1. ``corral run -w n[1-50] -- true`` with 50 real clients, from fork to exit (goal
   ≤ 0.25 s here), beside ``python -c pass`` (the interpreter's own start), the CLI's
   start-up alone (``corral --help``, which imports what a command imports and connects
   to nothing), and ``pdsh -R exec`` running ``true`` 50 times when pdsh is installed.
2. 20 CLI processes at once each running ``exec`` on 10 nodes: every one answered (exit 0
   with 10 processes started), and the master's CPU time over the burst.

    .venv/bin/python bench/cli.py [--nodes 50] [--repeat 10] [--concurrent 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import start_client, stop_all, write_token  # noqa: E402

CORRAL = [sys.executable, "-m", "master.front.cli"]


def timed(argv: list[str], repeat: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env, cwd=ROOT)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed: {done.stderr.decode()}")
    return times


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def row(label: str, times: list[float]) -> None:
    print(f"  {label:<44} median {statistics.median(times) * 1000:7.1f} ms   "
          f"min {min(times) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        token = write_token(folder)
        control = folder / "state" / "control.sock"
        master = subprocess.Popen(
            [sys.executable, "-m", "master", "--no-console", "--port", "0", "--token-file",
             str(token), "--log-dir", str(folder), "--state-dir", str(folder / "state")],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert master.stderr is not None
        line = master.stderr.readline()
        while "listening on" not in line:
            line = master.stderr.readline()
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        clients = [start_client(folder, port, f"n{i}") for i in range(1, args.nodes + 1)]
        env = dict(os.environ, CORRAL_CONTROL=str(control),
                   PYTHONPATH=str(ROOT))
        try:
            subprocess.run([*CORRAL, "list", "--wait", str(args.nodes), "--timeout", "300"],
                           check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
            print(f"corral CLI as a whole process ({os.cpu_count()} cores, {args.nodes} real "
                  f"clients on this machine, {args.repeat} runs each)")
            target = f"n[1-{args.nodes}]"
            row(f"corral run -w {target} -- true",
                timed([*CORRAL, "run", "-w", target, "--", "true"], args.repeat, env))
            row("python -c pass", timed([sys.executable, "-c", "pass"], args.repeat, env))
            row("corral --help (start-up, no master)",
                timed([*CORRAL, "--help"], args.repeat, env))
            imported = subprocess.run(
                [sys.executable, "-c", "import sys, master.front.cli; print(sorted(m for m "
                 "in sys.modules if m.startswith(('gevent', 'cmd2', 'master.api', "
                 "'master.server'))))"], capture_output=True, text=True, env=env, cwd=ROOT)
            print(f"  modules of gevent, cmd2 or the engine the CLI imports: "
                  f"{imported.stdout.strip()}")
            if shutil.which("pdsh"):
                hosts = ",".join(f"h{i}" for i in range(args.nodes))
                row(f"pdsh -R exec -w {args.nodes} hosts true",
                    timed(["pdsh", "-R", "exec", "-w", hosts, "true"], args.repeat, env))
            else:
                print("  pdsh: not installed here")

            concurrent = args.concurrent
            nodes = f"n[1-{min(10, args.nodes)}]"
            before = cpu_seconds(master.pid)
            started = time.perf_counter()
            calls = [subprocess.Popen([*CORRAL, "--json", "exec", "-w", nodes, "--", "true"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env, cwd=ROOT) for _ in range(concurrent)]
            answered = 0
            for call in calls:
                out, _err = call.communicate()
                if call.returncode == 0 and out.count(b'"pid"') == min(10, args.nodes):
                    answered += 1
            elapsed = time.perf_counter() - started
            used = cpu_seconds(master.pid) - before
            print(f"{concurrent} CLI processes at once, each `exec -w {nodes} -- true`: "
                  f"{answered} of {concurrent} answered in full in {elapsed:.2f} s; "
                  f"master CPU {used:.2f} s ({used / elapsed * 100:.0f} % of one core)")
        finally:
            stop_all(clients)
            master.terminate()
            master.wait()


if __name__ == "__main__":
    main()
