"""``log -f`` behind a fast writer, to a redirected console, against ``cat`` of the file.

One real client; a process on it writes SIZE MB of lines as fast as ``yes`` can. The
console (``CorralConsole`` in this process, its stdout a file) runs ``log REF -n 0 -f`` from
the moment the process starts until it has shown the whole log of the ended process: its
rate is the log's size over that time. Baseline, in the same run: ``cat`` of the same log
file into a file in the same folder. Rounds alternate; medians are compared.

    .venv/bin/python bench/log_follow.py [--mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, start_client, stop_all, write_token  # noqa: E402
from common.malloc import keep_big_buffers  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.console import CorralConsole  # noqa: E402
from master.server import MasterConfig  # noqa: E402

LINE = "corral log-follow benchmark, a line of about sixty bytes 0123"


def follow_once(api: MasterAPI, folder: Path, size: int) -> tuple[float, Path]:
    writer = f"yes '{LINE}' | head -c {size}"
    out = folder / "followed.out"
    with open(out, "w") as stdout:
        console = CorralConsole(api, interactive=False, stdout=stdout)
        started = time.perf_counter()
        group = api.exec("n1", ["sh", "-c", writer])
        (info,) = group.results["n1"]
        console.onecmd_plus_hooks(f"log n1:{info.pid} -n 0 -f")
        elapsed = time.perf_counter() - started
    log = Path(info.log)
    written = log.stat().st_size
    if console.last_result.shown != written or out.stat().st_size != written:
        raise SystemExit(f"log -f showed {console.last_result.shown} bytes of {written}")
    return written / elapsed, log


def cat_once(log: Path, folder: Path) -> float:
    started = time.perf_counter()
    with open(folder / "cat.out", "wb") as out:
        subprocess.run(["cat", str(log)], stdout=out, check=True)
    return log.stat().st_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mb * 1_000_000
    keep_big_buffers()  # as corral-master does: the console runs in this process
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        api = MasterAPI.start(MasterConfig(port=0), TOKEN.encode())
        client = start_client(folder, api.address[1], "n1")
        try:
            if not api.wait_ready(1, 30).reached:
                raise SystemExit("the client did not connect")
            follow, cat = [], []
            for _ in range(args.rounds):
                rate, log = follow_once(api, folder, size)
                follow.append(rate)
                cat.append(cat_once(log, folder))
                log.unlink()
        finally:
            stop_all([client])
            api.shutdown()
    mb = 1_000_000
    print(f"{args.mb} MB log, {args.rounds} rounds (medians):")
    print(f"  cat LOG > file:           {statistics.median(cat) / mb:8.0f} MB/s")
    print(f"  log REF -n 0 -f > file:   {statistics.median(follow) / mb:8.0f} MB/s  "
          f"({statistics.median(follow) / statistics.median(cat):.0%} of cat; goal 50 %)")


if __name__ == "__main__":
    main()
