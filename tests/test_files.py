"""copy, pull and remove between the real master engine and real clients."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
from pathlib import Path

import pytest

from common.errors import UsageError
from common.landing import TEMP_PREFIX
from common.states import NodeState
from master.api import MasterAPI
from master.console import CorralConsole
from master.transfers import Progress
from tests.harness import wait_until


@pytest.fixture
def nodes(master: MasterAPI, spawn_client) -> list:
    clients = [spawn_client(name, master.address) for name in ("n1", "n2", "n3")]
    assert master.wait_ready(3, timeout=30).reached
    return clients


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            out.write(block)
            remaining -= len(block)
    return path


def partials(folder: Path) -> list[Path]:
    """Hidden temporary files of transfers still under way (or left behind)."""
    return [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.slow
@pytest.mark.parametrize("size", [0, 1, 64 * 1024 * 1024])
def test_copy_to_three_nodes_verified_by_hash(console: CorralConsole, nodes, tmp_path: Path,
                                              size: int) -> None:
    source = random_file(tmp_path / "payload.bin", size)
    console.onecmd_plus_hooks(f"copy {source} data/payload.bin")
    assert console.exit_code == 0, console.stdout.getvalue()  # type: ignore[attr-defined]
    group = console.last_result
    assert group.ok and sorted(group.results) == ["n1", "n2", "n3"]
    assert all(r.files == 1 and r.bytes == size for r in group.results.values())
    for client in nodes:
        copied = client.workdir / "data" / "payload.bin"
        assert copied.stat().st_size == size and sha(copied) == sha(source)
        assert not partials(client.workdir)
    assert console.stdout.getvalue().splitlines()[-1] == "3 succeeded, 0 failed, 3 total"  # type: ignore[attr-defined]


def test_mode_bits_and_into_an_existing_folder(master: MasterAPI, nodes, tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho tool\n")
    script.chmod(0o750)
    (nodes[0].workdir / "bin").mkdir()
    assert master.copy("n1", [str(script)], "bin").ok
    placed = nodes[0].workdir / "bin" / "tool.sh"
    assert placed.read_text() == "#!/bin/sh\necho tool\n"
    assert placed.stat().st_mode & 0o777 == 0o750
    assert master.run("n1", "./bin/tool.sh").results["n1"].stdout == b"tool\n"


def test_folder_tree_with_r(master: MasterAPI, nodes, tmp_path: Path) -> None:
    tree = tmp_path / "project"
    (tree / "src" / "deep").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "README").write_text("read me\n")
    (tree / "src" / "deep" / "code.py").write_text("print(1)\n")
    with pytest.raises(UsageError, match="is a folder"):
        master.copy("n2", [str(tree)], "dest")
    group = master.copy("n2", [str(tree)], "dest", recursive=True)
    assert group.ok and group.results["n2"].files == 2
    copied = nodes[1].workdir / "dest"  # as cp -r: a new DEST is the copy of the folder
    assert (copied / "README").read_text() == "read me\n"
    assert (copied / "src" / "deep" / "code.py").read_text() == "print(1)\n"
    assert (copied / "empty").is_dir()
    assert master.copy("n2", [str(tree)], "dest", recursive=True).ok
    again = nodes[1].workdir / "dest" / "project"  # DEST exists now: the copy goes inside
    assert (again / "src" / "deep" / "code.py").read_text() == "print(1)\n"


def test_folder_without_r_is_refused(console: CorralConsole, nodes, tmp_path: Path,
                                     capsys) -> None:
    (tmp_path / "folder").mkdir()
    console.onecmd_plus_hooks(f"copy {tmp_path / 'folder'} x")
    assert console.exit_code == 1
    assert "is a folder (use -r)" in capsys.readouterr().err


def test_pull_from_three_nodes_into_separate_folders(console: CorralConsole, nodes,
                                                     tmp_path: Path) -> None:
    for client in nodes:
        (client.workdir / "results").mkdir()
        (client.workdir / "results" / "out.txt").write_text(f"from {client.name}\n")
        (client.workdir / f"{client.name}.log").write_text(f"log of {client.name}\n")
        os.chmod(client.workdir / "results" / "out.txt", 0o640)
    local = tmp_path / "collected"
    console.onecmd_plus_hooks(f"pull results ?HOST.log {local}")
    assert console.exit_code == 0, console.stdout.getvalue()  # type: ignore[attr-defined]
    for client in nodes:
        mine = local / client.name
        assert (mine / "results" / "out.txt").read_text() == f"from {client.name}\n"
        assert (mine / "results" / "out.txt").stat().st_mode & 0o777 == 0o640
        assert (mine / f"{client.name}.log").read_text() == f"log of {client.name}\n"
    assert all(r.files == 2 for r in console.last_result.results.values())
    assert not partials(local)


def test_remove(console: CorralConsole, master: MasterAPI, nodes) -> None:
    for client in nodes:
        (client.workdir / "junk" / "inner").mkdir(parents=True)
        (client.workdir / "junk" / "inner" / "f").write_text("x")
        (client.workdir / "single").write_text("x")
    console.onecmd_plus_hooks("remove junk")
    assert console.exit_code == 1  # a folder needs -r
    assert all((c.workdir / "junk").exists() for c in nodes)
    console.exit_code = 0
    console.onecmd_plus_hooks("remove -r junk single")
    assert console.exit_code == 0
    assert not any((c.workdir / "junk").exists() or (c.workdir / "single").exists()
                   for c in nodes)
    outcome = master.remove("n1", ["never-there"]).results["n1"][0]
    assert not outcome.ok and "no such file or folder" in outcome.message


@pytest.fixture
def escape_routes(nodes, tmp_path: Path) -> tuple[Path, list[str]]:
    """Paths that lead out of n1's work folder, and the folder outside they point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep me\n")
    workdir = nodes[0].workdir
    (workdir / "link-out").symlink_to(outside)
    (workdir / "file-link-out").symlink_to(outside / "secret")
    return outside, ["../outside-x", str(outside / "secret"), "link-out/secret",
                     "file-link-out", "a/../../b"]


def test_sandbox_refuses_escapes(master: MasterAPI, nodes, escape_routes,
                                 tmp_path: Path) -> None:
    outside, routes = escape_routes
    payload = tmp_path / "payload"
    payload.write_text("intruder\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    for route in routes:
        copied = master.copy("n1", [str(payload)], route)
        assert "n1" in copied.errors, route
        assert "outside the sandbox" in copied.errors["n1"].message
        pulled = master.pull("n1", [route], str(tmp_path / "pulled"))
        assert "outside the sandbox" in pulled.errors["n1"].message
        removed = master.remove("n1", [route], recursive=True).results["n1"][0]
        if route == "file-link-out":  # a link itself may go; what it points at stays
            assert removed.ok and not os.path.lexists(nodes[0].workdir / route)
        else:
            assert not removed.ok and "outside the sandbox" in removed.message
    assert (outside / "secret").read_text() == "keep me\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing pulled either


def test_explicit_root_widens_the_sandbox(master: MasterAPI, spawn_client,
                                          tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    client = spawn_client("wide", master.address, extra=["--root", str(tmp_path)])
    assert master.wait_ready(1, timeout=30).reached
    payload = tmp_path / "payload"
    payload.write_text("ok\n")
    assert master.copy("wide", [str(payload)], str(shared / "p")).ok
    assert (shared / "p").read_text() == "ok\n"
    assert "outside the sandbox" in master.copy("wide", [str(payload)], "/etc/p").errors[
        "wide"].message
    assert client.proc.poll() is None


@pytest.mark.slow
def test_client_killed_mid_transfer_leaves_no_partial_file(master: MasterAPI, nodes,
                                                           tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", 128 * 1024 * 1024)
    victim = nodes[1]

    def kill_part_way(progress: Progress) -> None:
        # At the first report, which comes with the first chunk a node reports (later ones
        # are throttled to 4 a second, and a fast machine can finish 128 MiB between two).
        if victim.proc.poll() is None:
            victim.signal(signal.SIGKILL)

    group = master.copy("n[1-2]", [str(source)], "big.bin", progress=kill_part_way)
    assert group.succeeded == ["n1"] and group.failed == ["n2"]
    assert "connection" in group.errors["n2"].message
    assert sha(nodes[0].workdir / "big.bin") == sha(source)
    victim.proc.wait()
    assert not (victim.workdir / "big.bin").exists()


@pytest.mark.slow
def test_heartbeats_and_requests_flow_during_a_large_copy(master: MasterAPI, nodes,
                                                          tmp_path: Path) -> None:
    source = random_file(tmp_path / "large.bin", 256 * 1024 * 1024)
    done = threading.Event()
    outcome: list[object] = []

    def copy() -> None:
        outcome.append(master.copy("n1", [str(source)], "large.bin"))
        done.set()

    worker = threading.Thread(target=copy)
    worker.start()
    ages, answered = [], 0
    while not done.is_set():
        n1 = next(n for n in master.nodes() if n.name == "n1")
        assert n1.state is NodeState.READY
        ages.append(n1.since_heartbeat)
        answered += master.processes("n1").ok
    worker.join()
    assert outcome[0].ok  # type: ignore[attr-defined]
    assert answered > 0 and max(a for a in ages if a is not None) < 3 * 0.2
    wait_until(lambda: sha(nodes[0].workdir / "large.bin") == sha(source))


@pytest.mark.slow
def test_master_killed_mid_transfer_leaves_no_partial_file(spawn_master, spawn_client,
                                                           tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", 512 * 1024 * 1024)
    master = spawn_master(["list --wait 1 --timeout 30", f"copy {source} big.bin", "quit"])
    client = spawn_client("n1", master.address)
    wait_until(lambda: partials(client.workdir), what="the transfer under way")
    master.proc.kill()
    master.proc.wait()
    wait_until(lambda: not partials(client.workdir), what="the partial file removed")
    assert not (client.workdir / "big.bin").exists()
    assert client.proc.poll() is None


@pytest.mark.slow
def test_ctrl_c_cancels_a_copy_and_leaves_nothing(tmp_path: Path, token_file: Path,
                                                  spawn_client) -> None:
    from tests.harness import MasterProcess
    from tests.test_master_process import spawn_console

    source = random_file(tmp_path / "big.bin", 1024 * 1024 * 1024)
    child = spawn_console(MasterProcess(tmp_path, token_file).argv([]))
    try:
        client = spawn_client("n1", ("127.0.0.1", int(child.match.group(1))))
        child.expect(r"node n1: CONNECTING -> READY")
        child.sendline(f"copy {source} big.bin")
        wait_until(lambda: partials(client.workdir), what="the transfer under way")
        child.expect(r"of 1\.0G .*left")  # the progress line
        child.sendcontrol("c")
        child.expect("cancelled")
        wait_until(lambda: not partials(client.workdir), what="the partial file removed")
        assert not (client.workdir / "big.bin").exists()
        child.sendline("run -- echo still here")
        child.expect("1 succeeded, 0 failed, 1 total")
    finally:
        child.close(force=True)


def test_disk_full_is_reported_and_cleaned_up(master: MasterAPI, spawn_client,
                                              tmp_path: Path) -> None:
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = os.system(f"mount -t tmpfs -o size=2m tmpfs {small} 2>/dev/null") == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        client = spawn_client("tiny", master.address, extra=["--workdir", str(small)])
        assert master.wait_ready(1, timeout=30).reached
        source = random_file(tmp_path / "four.bin", 4 * 1024 * 1024)
        group = master.copy("tiny", [str(source)], "four.bin")
        assert group.failed == ["tiny"]
        assert "No space left on device" in group.errors["tiny"].message
        assert not (small / "four.bin").exists() and not partials(small)
        client.stop()
    finally:
        os.system(f"umount {small}")
