"""Many small files: 1,000 files of 1-4 KiB copied to one node.

Baseline, in the same run: ``tar -c`` of the folder streamed over a TCP socket to a
receiver process that unpacks it with ``tar -x`` and then syncs the file system once
(``syncfs``), so both sides end with everything on disk. Through corral: ``copy -r`` from a
master (in this process) to a real client process on this machine, which also ends with
everything on disk before it answers: once into a new folder (built under a hidden name,
renamed once), once more into the folders now there (each file written beside the one it
replaces, then renamed). Rounds alternate; the medians are compared.

    .venv/bin/python bench/small_files.py [--files 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, start_client, stop_all, write_token  # noqa: E402
from common.landing import sync_folders  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402

GOAL = 5.0  # corral within this many times the baseline


def make_tree(top: Path, count: int) -> int:
    """``count`` files of 1-4 KiB in ten subfolders; returns their total size."""
    rng = random.Random(13)
    total = 0
    for index in range(count):
        folder = top / f"d{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 4096)
        (folder / f"f{index:04d}.dat").write_bytes(rng.randbytes(size))
        total += size
    return total


def receive(port_file: str, dest: str) -> None:
    """The baseline's receiving end: unpack the tar stream, then sync once."""
    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file + ".tmp").write_text(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = listener.accept()
    Path(dest).mkdir(parents=True)
    untar = subprocess.Popen(["tar", "-x", "-f", "-", "-C", dest], stdin=subprocess.PIPE)
    assert untar.stdin is not None
    while data := conn.recv(1 << 20):
        untar.stdin.write(data)
    untar.stdin.close()
    untar.wait()
    sync_folders([Path(dest)])
    conn.sendall(b"k")


def tar_over_tcp(top: Path, dest: Path) -> float:
    port_file = dest.parent / f"{dest.name}.port"
    dest.parent.mkdir(parents=True, exist_ok=True)
    receiver = subprocess.Popen([sys.executable, __file__, "--receive", str(port_file),
                                 str(dest)])
    while not port_file.exists():
        if receiver.poll() is not None:
            raise SystemExit("the baseline's receiver failed")
        time.sleep(0.005)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", int(port_file.read_text()))) as sock:
        tar = subprocess.Popen(["tar", "-c", "-f", "-", "-C", str(top.parent), top.name],
                               stdout=subprocess.PIPE)
        assert tar.stdout is not None
        while block := tar.stdout.read(1 << 20):
            sock.sendall(block)
        tar.wait()
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    elapsed = time.perf_counter() - started
    receiver.wait()
    return elapsed


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--receive":
        receive(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "logs") as tmp:
        folder = Path(tmp)
        top = folder / "source" / "small"
        total = make_tree(top, args.files)
        write_token(folder)
        api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
        clients = [start_client(folder, api.address[1], "n1")]
        try:
            assert api.wait_ready(1, 60).reached
            landed = folder / "n1" / "work"
            tar_times, corral_times, replace_times = [], [], []
            subfolders = sorted(str(path) for path in top.iterdir())
            for round_ in range(args.rounds):
                tar_times.append(tar_over_tcp(top, folder / "tar" / f"r{round_}"))
                started = time.perf_counter()
                group = api.copy("n1", [str(top)], f"r{round_}", recursive=True)
                corral_times.append(time.perf_counter() - started)
                assert group.ok, group.errors
                assert group.results["n1"].files == args.files
                # the same files again, into the folders now there: each file replaced
                started = time.perf_counter()
                group = api.copy("n1", subfolders, f"r{round_}", recursive=True)
                replace_times.append(time.perf_counter() - started)
                assert group.ok, group.errors
            assert len(list((landed / "r0").rglob("*.dat"))) == args.files
            tar_median = statistics.median(tar_times)
            corral_median = statistics.median(corral_times)
            replace_median = statistics.median(replace_times)
            print(f"{args.files} files of 1-4 KiB ({total / 2**20:.1f} MiB) to one node, "
                  f"median of {args.rounds} alternating rounds ({os.cpu_count()} cores)")
            print(f"  baseline, tar over TCP + one sync: {1000 * tar_median:7.1f} ms  "
                  f"(runs {1000 * min(tar_times):.0f}-{1000 * max(tar_times):.0f})")
            print(f"  corral copy -r:                    {1000 * corral_median:7.1f} ms  "
                  f"(runs {1000 * min(corral_times):.0f}-{1000 * max(corral_times):.0f})  "
                  f"{corral_median / tar_median:.1f}x the baseline")
            print(f"  corral, replacing those files:     {1000 * replace_median:7.1f} ms  "
                  f"(runs {1000 * min(replace_times):.0f}-{1000 * max(replace_times):.0f})  "
                  f"{replace_median / tar_median:.1f}x the baseline")
            print(f"goal: within {GOAL:g}x the baseline")
        finally:
            stop_all(clients)
            api.shutdown()


if __name__ == "__main__":
    main()
