"""What authenticating every frame costs: frames per second, and copy throughput.

1. Frames per second through ``FrameWriter`` and ``FrameReader`` (encode, tag, read,
   check, decode) in this process, for a heartbeat and for a 1 MiB file chunk. Baseline,
   in the same run: the same code with the MAC replaced by a constant tag (frames keep
   their layout and sequence numbers; only the MAC is not computed).
2. ``copy`` of one file to one real client process on this machine, by this tree and by
   the tree before frames were authenticated (protocol 1, exported from git: the parent of
   the commit that set ``PROTOCOL_VERSION = 2``, or ``--baseline REF``), alternating
   rounds, medians compared. Protocol 2 also drops protocol 1's SHA-256 of each file, a
   second hash of bytes the frame MACs already cover: that is part of what is compared.

    .venv/bin/python bench/frame_auth.py [--size-mib 1024] [--rounds 5] [--baseline REF]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.copy_throughput import make_file  # noqa: E402
from bench.rig import TOKEN, write_token  # noqa: E402
from common.frame_auth import TAG_BYTES, FrameMac, session_keys  # noqa: E402
from common.framing import FrameReader, FrameWriter  # noqa: E402
from common.messages import Heartbeat, PutChunk  # noqa: E402


@contextlib.contextmanager
def macs_skipped() -> Iterator[None]:
    """Constant tags instead of MACs, for the baseline; both ends must do the same."""
    real = FrameMac.next_tag

    def constant_tag(self: FrameMac, body: Any) -> bytes:
        self.sequence += 1
        return bytes(TAG_BYTES)

    FrameMac.next_tag = constant_tag  # type: ignore[method-assign]
    try:
        yield
    finally:
        FrameMac.next_tag = real  # type: ignore[method-assign]


# --- frames per second ----------------------------------------------------------------------

class _Replay:
    """A stream that hands back the same bytes over and over, as a socket would deliver."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def recv_into(self, buffer: Any, nbytes: int = 0, /) -> int:
        count = min(nbytes or len(buffer), len(self.data) - self.at)
        buffer[:count] = self.data[self.at:self.at + count]
        self.at = (self.at + count) % len(self.data)
        return count

    def sendall(self, data: Any, /) -> None:
        raise AssertionError("not used")


def frames_per_second(payload: dict[str, Any], seconds: float) -> float:
    keys = session_keys(b"bench", b"m" * 32, b"c" * 32)
    writer = FrameWriter()
    writer.authenticate(FrameMac(keys.client_to_master))
    sample = writer.frame(payload)  # what the reader is fed; its tag fits sequence 0 only
    reader = FrameReader(_Replay(sample))
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            reader.authenticate(FrameMac(keys.client_to_master))  # back to sequence 0
            writer.frame(payload)
            reader.read_frame()
        count += 100
    return count / (time.perf_counter() - started)


def report_frames(seconds: float) -> None:
    beat = Heartbeat(seq=1, load=[0.1, 0.2, 0.3], cpu_percent=1.5, mem_available=1 << 33,
                     mem_total=1 << 34, disk_free=1 << 36, processes=3).to_wire()
    chunk = PutChunk(req=1, data=os.urandom(1 << 20)).to_wire()
    print("frames per second, one core (make, tag, read, check, decode)")
    for label, payload in (("heartbeat", beat), ("1 MiB chunk", chunk)):
        with macs_skipped():
            constant = frames_per_second(payload, seconds)
        real = frames_per_second(payload, seconds)
        print(f"  {label:<12} baseline (no MAC) {constant:9.0f}/s   GMAC {real:9.0f}/s  "
              f"({100 * (constant - real) / constant:4.1f} % fewer; "
              f"{1e6 / real - 1e6 / constant:.1f} us more per frame)")


# --- copy throughput ------------------------------------------------------------------------

# Run in a tree (this one or the baseline's) with that tree first on sys.path: a master, one
# client, one copy; prints the seconds the copy took. Uses only what both protocols share.
COPY_ONCE = """
import subprocess, sys, time
from pathlib import Path
from master.api import MasterAPI
from master.server import MasterConfig
folder, source, token = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), token.encode())
client = subprocess.Popen([sys.executable, "-m", "client", "--master",
                           f"127.0.0.1:{api.address[1]}", "--name", "n1", "--token-file",
                           str(folder / "token"), "--state-dir", str(folder / "n1")],
                          stderr=subprocess.DEVNULL)
try:
    assert api.wait_ready(1, 60).reached
    started = time.perf_counter()
    group = api.copy("n1", [source], "copy.bin")
    print(time.perf_counter() - started)
    assert not group.errors, group.errors
finally:
    client.terminate()
    client.wait()
    api.shutdown()
"""


def baseline_ref() -> str:
    introduced = subprocess.run(
        ["git", "log", "--format=%H", "-S", "PROTOCOL_VERSION = 2", "--",
         "common/__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not introduced:
        raise SystemExit("no commit sets PROTOCOL_VERSION = 2: give --baseline REF")
    return introduced[-1] + "^"


def export(ref: str, folder: Path) -> Path:
    folder.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def copy_seconds(tree: Path, folder: Path, source: Path) -> float:
    folder.mkdir(exist_ok=True)
    write_token(folder)
    done = subprocess.run([sys.executable, "-c", COPY_ONCE, str(folder), str(source), TOKEN],
                          cwd=tree, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    (folder / "n1" / "work" / "copy.bin").unlink()
    return float(done.stdout.split()[-1])


def report_copy(size_mib: int, rounds: int, ref: str) -> None:
    with tempfile.TemporaryDirectory(dir=ROOT / "logs") as tmp:
        folder = Path(tmp)
        source = folder / "source.bin"
        make_file(source, size_mib << 20)
        trees = {"before": export(ref, folder / "baseline-tree"), "now": ROOT}
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(rounds):
            for label, tree in trees.items():
                times[label].append(copy_seconds(tree, folder / label, source))
    base, now = (statistics.median(times[label]) for label in ("before", "now"))
    print(f"copy of {size_mib} MiB to one node, median of {rounds} alternating rounds")
    spread = {label: f"(runs {min(t):.2f}-{max(t):.2f} s)" for label, t in times.items()}
    print(f"  baseline, the tree at {ref[:12]}: {base:6.2f} s {size_mib / base:6.0f} MiB/s "
          f"{spread['before']}")
    print(f"  this tree:                   {now:6.2f} s {size_mib / now:6.0f} MiB/s "
          f"{spread['now']}  {100 * (now - base) / base:+.1f} % time")
    print("goal: under 10 % slower on copy")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per frame measurement")
    parser.add_argument("--baseline", help="git ref of the code to compare copy against")
    args = parser.parse_args()
    print(f"cost of authenticating every frame ({os.cpu_count()} cores)")
    report_frames(args.seconds)
    report_copy(args.size_mib, args.rounds, args.baseline or baseline_ref())


if __name__ == "__main__":
    main()
