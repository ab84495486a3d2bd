"""``log`` on logs of any size, through the console over real clients: all of it with
``-n 0``, exactly N lines with ``-n N``, in chunks, with memory flat on both sides."""

from __future__ import annotations

import hashlib
import io
import resource
from pathlib import Path

import pytest

from master.api import MasterAPI
from master.console import CorralConsole
from tests.harness import peak_rss_kib

MIB = 1024 * 1024


def write_log(master: MasterAPI, lines: int) -> tuple[str, Path]:
    group = master.exec("n1", ["seq", "1", str(lines)])
    (info,) = group.results["n1"]
    ref = f"n1:{info.pid}"
    (done,) = master.wait([ref], timeout=60)
    assert done.ok
    return ref, Path(info.log)


@pytest.fixture
def node(master: MasterAPI, spawn_client):  # type: ignore[no-untyped-def]
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    return client


def test_n_lines_and_all_of_a_log(master: MasterAPI, node, tmp_path: Path) -> None:
    ref, path = write_log(master, 300_000)  # 2 MB: more than one chunk
    with open(tmp_path / "out", "w") as out:
        console = CorralConsole(master, interactive=False, stdout=out)
        console.onecmd_plus_hooks(f"log {ref} -n 20000")
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines == [str(i) for i in range(280_001, 300_001)]
    console = CorralConsole(master, interactive=False, stdout=io.StringIO())
    console.onecmd_plus_hooks(f"log {ref} -n 0")
    assert console.stdout.getvalue() == path.read_text()  # type: ignore[attr-defined]
    assert console.last_result.shown == path.stat().st_size and console.last_result.ended
    console.onecmd_plus_hooks(f"log {ref} -n -3")
    assert console.exit_code == 1


@pytest.mark.slow
def test_a_big_log_streams_with_flat_memory(master: MasterAPI, node, tmp_path: Path) -> None:
    ref, path = write_log(master, 11_000_000)  # about 84 MB
    size = path.stat().st_size
    client_before = peak_rss_kib(node.pid)
    master_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        console = CorralConsole(master, interactive=False, stdout=out)
        console.onecmd_plus_hooks(f"log {ref} -n 0")
    master_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - master_before
    assert console.exit_code == 0 and console.last_result.shown == size
    assert master_growth < 32 * 1024
    assert peak_rss_kib(node.pid) - client_before < 32 * 1024
    assert digest(out_path) == digest(path)


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(MIB):
            sha.update(block)
    return sha.hexdigest()


@pytest.mark.slow
def test_follow_keeps_every_byte_of_a_fast_burst(master: MasterAPI, node,
                                                 tmp_path: Path) -> None:
    """``log -f`` behind a writer much faster than it (``seq`` writes tens of MB a
    second): nothing lost, nothing twice, and memory flat on both sides."""
    client_before = peak_rss_kib(node.pid)
    master_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    group = master.exec("n1", ["seq", "1", "9000000"])  # about 69 MB
    (info,) = group.results["n1"]
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        console = CorralConsole(master, interactive=False, stdout=out)
        console.onecmd_plus_hooks(f"log n1:{info.pid} -n 0 -f")
    size = Path(info.log).stat().st_size
    assert console.exit_code == 0 and console.last_result.ended
    assert console.last_result.shown == size == out_path.stat().st_size
    assert digest(out_path) == digest(Path(info.log))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - master_before < 32 * 1024
    assert peak_rss_kib(node.pid) - client_before < 32 * 1024
