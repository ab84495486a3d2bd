"""What authenticating every frame costs: frames per second, and copy throughput.

Baseline, in the same run: the same code with the HMAC replaced by a constant tag (frames
keep their layout and their sequence numbers; only the MAC computation is skipped), which
is what corral cost before frames were authenticated.

1. Frames per second through ``FrameWriter`` and ``FrameReader`` (encode, tag, read,
   check, decode) in this process, for a heartbeat and for a 1 MiB file chunk.
2. ``copy`` of one file to one real client process, alternating rounds with and without
   the MAC (a master and a client are started for each round), medians compared.

    .venv/bin/python bench/frame_auth.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.copy_throughput import make_file  # noqa: E402
from bench.rig import TOKEN, start_client, stop_all, write_token  # noqa: E402
from common.frame_auth import TAG_BYTES, FrameMac, session_keys  # noqa: E402
from common.framing import FrameReader, FrameWriter  # noqa: E402
from common.messages import Heartbeat, PutChunk  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402

WITHOUT_MAC = "--client-without-mac"


@contextlib.contextmanager
def macs_skipped() -> Iterator[None]:
    """Constant tags instead of HMACs, for the baseline; both ends must do the same."""
    real = FrameMac.next_tag

    def constant_tag(self: FrameMac, header: Any, body: Any) -> bytes:
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


def frames_per_second(payload: dict[str, Any], authenticated: bool, seconds: float) -> float:
    keys = session_keys(b"bench", b"m" * 32, b"c" * 32)
    writer = FrameWriter()
    if authenticated:
        writer.authenticate(FrameMac(keys.client_to_master))
    sample = writer.frame(payload)  # what the reader is fed; its tag fits sequence 0 only
    reader = FrameReader(_Replay(sample))
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            if authenticated:
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
        plain = frames_per_second(payload, False, seconds)
        with macs_skipped():
            constant = frames_per_second(payload, True, seconds)
        real = frames_per_second(payload, True, seconds)
        print(f"  {label:<12} baseline (no MAC) {constant:9.0f}/s   HMAC {real:9.0f}/s  "
              f"({100 * (constant - real) / constant:4.1f} % fewer; unframed {plain:.0f}/s)")


# --- copy throughput ------------------------------------------------------------------------

def copy_seconds(folder: Path, source: Path, with_mac: bool) -> float:
    program = ["-m", "client"] if with_mac else [__file__, WITHOUT_MAC]
    skipping = contextlib.nullcontext() if with_mac else macs_skipped()
    with skipping:
        api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
        client = start_client(folder, api.address[1], "n1", program=program)
        try:
            assert api.wait_ready(1, 60).reached
            started = time.perf_counter()
            group = api.copy("n1", [str(source)], "copy.bin")
            elapsed = time.perf_counter() - started
            assert not group.errors, group.errors
        finally:
            stop_all([client])
            api.shutdown()
    (folder / "n1" / "work" / "copy.bin").unlink()
    return elapsed


def report_copy(size_mib: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(dir=ROOT / "logs") as tmp:
        folder = Path(tmp)
        source = folder / "source.bin"
        make_file(source, size_mib << 20)
        write_token(folder)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for with_mac in (False, True):
                times[with_mac].append(copy_seconds(folder, source, with_mac))
    base, real = (statistics.median(times[m]) for m in (False, True))
    print(f"copy of {size_mib} MiB to one node, median of {rounds} alternating rounds")
    print(f"  baseline (no MAC) {base:6.2f} s {size_mib / base:6.0f} MiB/s")
    print(f"  HMAC              {real:6.2f} s {size_mib / real:6.0f} MiB/s  "
          f"({100 * (real - base) / base:.1f} % slower)")
    print("goal: under 10 % slower on copy")


def run_client_without_mac(argv: list[str]) -> int:
    from client.cli import main as client_main

    with macs_skipped():
        return client_main(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == WITHOUT_MAC:
        raise SystemExit(run_client_without_mac(sys.argv[2:]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per frame measurement")
    args = parser.parse_args()
    print(f"cost of authenticating every frame ({os.cpu_count()} cores)")
    report_frames(args.seconds)
    report_copy(args.size_mib, args.rounds)

if __name__ == "__main__":
    main()
