"""copy and pull follow cp's rules for where things land, and one rule for links, both
ways; remove takes a link itself. Real master engine, real clients."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest

from common.errors import UsageError
from master.api import MasterAPI
from master.console import CorralConsole
from master.transfers import Progress
from tests.harness import wait_until
from tests.test_files import partials, random_file


@pytest.fixture
def node(master: MasterAPI, spawn_client):  # type: ignore[no-untyped-def]
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    return client


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with a file, a subfolder, and links that stay inside it."""
    top = tmp_path / "src" / "fold"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_text("a\n")
    (top / "sub" / "b.txt").write_text("b\n")
    (top / "link-to-a").symlink_to("a.txt")
    (top / "sub" / "up-to-a").symlink_to("../a.txt")
    (top / "link-to-sub").symlink_to("sub")
    return top


def listing(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: a link as its text, a file as its contents."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_text()
        else:
            found[rel] = "/"
    return found


# --- where things land (cp's rules) -----------------------------------------------------


def test_copy_r_to_a_new_name_makes_the_copy_under_that_name(master: MasterAPI, node,
                                                             tree: Path) -> None:
    assert master.copy("n1", [str(tree)], "newfold", recursive=True).ok
    assert listing(node.workdir / "newfold") == listing(tree)
    assert not (node.workdir / "newfold" / "fold").exists()
    assert master.copy("n1", [str(tree)], "newfold", recursive=True).ok  # exists: inside
    assert listing(node.workdir / "newfold" / "fold") == listing(tree)
    assert master.copy("n1", [str(tree / "a.txt")], "renamed.txt").ok
    assert (node.workdir / "renamed.txt").read_text() == "a\n"
    assert master.copy("n1", [str(tree / "a.txt")], "newfold").ok
    assert (node.workdir / "newfold" / "a.txt").read_text() == "a\n"
    assert master.copy("n1", [str(tree)], "slashed/", recursive=True).ok  # as cp -r
    assert listing(node.workdir / "slashed") == listing(tree)
    assert master.copy("n1", [str(tree / "a.txt")], "made/").ok  # a file: into a folder
    assert (node.workdir / "made" / "a.txt").read_text() == "a\n"


@pytest.mark.parametrize("sources, dest", [
    (["fold/a.txt", "fold/sub/b.txt"], "plain"),  # several sources need a folder
    (["fold/a.txt"], "plain/"),  # so does a trailing slash
    (["fold"], "plain"),  # a folder cannot replace a file
    (["fold/a.txt"], "plain/inside"),  # nor can a file hold another
])
def test_a_file_where_a_folder_is_needed_is_not_a_directory(
        master: MasterAPI, node, tree: Path, sources: list[str], dest: str) -> None:
    (node.workdir / "plain").write_text("keep\n")
    paths = [str(tree.parent / source) for source in sources]
    group = master.copy("n1", paths, dest, recursive=True)
    assert group.failed == ["n1"]
    assert "not a directory" in group.errors["n1"].message
    assert (node.workdir / "plain").read_text() == "keep\n"
    assert not partials(node.workdir)


def test_a_failed_copy_lands_none_of_its_files(master: MasterAPI, node, tree: Path) -> None:
    blocker = node.workdir / "dest" / "fold" / "sub" / "b.txt"
    blocker.mkdir(parents=True)  # a folder where a file of the copy goes
    group = master.copy("n1", [str(tree)], "dest", recursive=True)
    assert "is a directory" in group.errors["n1"].message
    assert not (node.workdir / "dest" / "fold" / "a.txt").exists()
    assert not partials(node.workdir)


# --- links, copy ------------------------------------------------------------------------


def test_links_inside_the_folder_are_copied_as_links(master: MasterAPI, node,
                                                     tree: Path) -> None:
    group = master.copy("n1", [str(tree)], "copied", recursive=True)
    assert group.ok and group.results["n1"].notes == []
    copied = node.workdir / "copied"
    assert os.readlink(copied / "link-to-a") == "a.txt"
    assert os.readlink(copied / "sub" / "up-to-a") == "../a.txt"
    assert (copied / "link-to-sub" / "b.txt").read_text() == "b\n"


@pytest.mark.parametrize("target", ["/etc/hostname", "../../outside", "../.."])
def test_a_link_leading_out_of_the_folder_is_refused_by_name(master: MasterAPI, node,
                                                             tree: Path, target: str) -> None:
    (tree / "sub" / "escape").symlink_to(target)
    with pytest.raises(UsageError, match=r"fold/sub/escape: link leads outside the copied "
                                         r"folder .*use -L"):
        master.copy("n1", [str(tree)], "copied", recursive=True)
    assert not (node.workdir / "copied").exists()


def test_minus_L_copies_what_links_point_to(master: MasterAPI, node, tree: Path,
                                            tmp_path: Path) -> None:
    (tmp_path / "elsewhere.txt").write_text("far\n")
    (tree / "far").symlink_to(tmp_path / "elsewhere.txt")
    assert master.copy("n1", [str(tree)], "copied", recursive=True, follow=True).ok
    copied = node.workdir / "copied"
    assert not any(p.is_symlink() for p in copied.rglob("*"))
    assert (copied / "far").read_text() == "far\n"
    assert (copied / "link-to-sub" / "b.txt").read_text() == "b\n"


def test_dangling_links_are_reported(tmp_path: Path, master: MasterAPI, node,
                                     tree: Path) -> None:
    (tree / "broken").symlink_to("not-there")
    console = CorralConsole(master, interactive=False, stdout=io.StringIO())
    console.onecmd_plus_hooks(f"copy -r {tree} copied")
    assert console.exit_code == 0
    assert os.readlink(node.workdir / "copied" / "broken") == "not-there"
    report = console.stdout.getvalue()  # type: ignore[attr-defined]
    assert "note (n1): fold/broken: dangling link (-> not-there), copied as a link" in report
    with pytest.raises(UsageError, match=r"fold/broken: dangling link \(-> not-there\)"):
        master.copy("n1", [str(tree)], "followed", recursive=True, follow=True)
    assert not (node.workdir / "followed").exists()


# --- links, pull ------------------------------------------------------------------------


def test_pull_applies_the_same_link_rule(master: MasterAPI, node, tree: Path,
                                         tmp_path: Path) -> None:
    assert master.copy("n1", [str(tree)], "fold", recursive=True).ok
    (node.workdir / "fold" / "broken").symlink_to("gone")
    group = master.pull("n1", ["fold"], str(tmp_path / "got"))
    assert group.ok, group.errors
    pulled = tmp_path / "got" / "n1" / "fold"
    assert listing(pulled) == listing(node.workdir / "fold")
    assert os.readlink(pulled / "sub" / "up-to-a") == "../a.txt"
    assert group.results["n1"].notes == [
        "fold/broken: dangling link (-> gone), copied as a link"]

    (node.workdir / "fold" / "broken").unlink()
    (node.workdir / "fold" / "out").symlink_to("/etc/hostname")
    refused = master.pull("n1", ["fold"], str(tmp_path / "refused"))
    assert "fold/out: link leads outside the copied folder" in refused.errors["n1"].message
    assert not (tmp_path / "refused" / "n1" / "fold").exists()  # nothing sent at all

    (node.workdir / "fold" / "out").unlink()
    followed = master.pull("n1", ["fold"], str(tmp_path / "followed"), follow=True)
    assert followed.ok
    assert not any(p.is_symlink() for p in (tmp_path / "followed").rglob("*"))
    assert (tmp_path / "followed" / "n1" / "fold" / "link-to-a").read_text() == "a\n"


def test_pull_minus_L_stays_inside_the_sandbox(master: MasterAPI, node, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret\n")
    (node.workdir / "fold").mkdir()
    (node.workdir / "fold" / "out").symlink_to(tmp_path / "secret")
    group = master.pull("n1", ["fold"], str(tmp_path / "got"), follow=True)
    assert "outside the sandbox" in group.errors["n1"].message
    assert not (tmp_path / "got" / "n1" / "fold").exists()


def test_pull_of_a_link_by_name_takes_what_it_points_to(master: MasterAPI, node,
                                                        tmp_path: Path) -> None:
    (node.workdir / "real.txt").write_text("real\n")
    (node.workdir / "named").symlink_to("real.txt")
    assert master.pull("n1", ["named"], str(tmp_path / "got")).ok
    assert (tmp_path / "got" / "n1" / "named").read_text() == "real\n"


# --- remove -------------------------------------------------------------------------------


@pytest.mark.parametrize("recursive", [False, True])
def test_remove_takes_the_link_never_its_target(master: MasterAPI, node, tmp_path: Path,
                                                recursive: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    (node.workdir / "to-folder").symlink_to(outside)
    (node.workdir / "to-file").symlink_to(outside / "keep")
    group = master.remove("n1", ["to-folder", "to-file"], recursive=recursive)
    assert all(outcome.ok for outcome in group.results["n1"]), group.results
    assert not os.path.lexists(node.workdir / "to-folder")
    assert not os.path.lexists(node.workdir / "to-file")
    assert (outside / "keep").read_text() == "keep\n"
    refused = master.remove("n1", [str(outside / "keep")]).results["n1"][0]
    assert not refused.ok and "outside the sandbox" in refused.message


@pytest.mark.slow
def test_a_new_folder_lands_whole_or_not_at_all(master: MasterAPI, spawn_client,
                                                tmp_path: Path) -> None:
    """A copy that makes a new folder builds it under a hidden name and renames it once: a
    client killed in the middle leaves no folder, and its restart removes the hidden one."""

    top = tmp_path / "many"
    top.mkdir()
    for index in range(50):
        (top / f"small{index:02d}").write_text(f"{index}\n")
    random_file(top / "zz-big.bin", 128 * 1024 * 1024)
    victim = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached

    def kill_once_under_way(_progress: Progress) -> None:
        if victim.proc.poll() is None:
            wait_until(lambda: partials(victim.workdir), what="the hidden folder made")
            victim.signal(signal.SIGKILL)

    group = master.copy("n1", [str(top)], "newfold", recursive=True,
                        progress=kill_once_under_way)
    assert group.failed == ["n1"]
    victim.proc.wait()
    assert not (victim.workdir / "newfold").exists()
    assert partials(victim.workdir)  # the hidden folder, until the client starts again
    spawn_client("n1", master.address)
    wait_until(lambda: not partials(victim.workdir), what="the hidden folder removed")
    assert not (victim.workdir / "newfold").exists()


@pytest.mark.parametrize("target", ["/etc", "../..", "x/../../.."])
def test_master_refuses_a_node_that_sends_a_link_leading_out(master: MasterAPI, node,
                                                             tmp_path: Path,
                                                             target: str) -> None:
    """The rule is checked again by the receiver: a node that breaks it (holding the token)
    gets its pull refused, and nothing lands through the link."""
    from tests.test_hardening import pulling, scripted

    frames = [{"t": "getf", "relpath": "fold", "kind": "dir", "mode": 0o755, "size": 0},
              {"t": "getf", "relpath": "fold/out", "kind": "link", "mode": 0o777, "size": 0,
               "target": target},
              {"t": "getf", "relpath": "fold/out/planted", "kind": "file", "mode": 0o644,
               "size": 3},
              {"t": "getc", "data": b"bad"}, {"t": "gete"}]
    scripted(master, "evil", pulling(frames))
    (node.workdir / "fold").mkdir()
    group = master.pull(None, ["fold"], str(tmp_path / "out"))
    assert "link leads outside the copied folder" in group.errors["evil"].message
    assert group.succeeded == ["n1"]
    assert not os.path.lexists(tmp_path / "out" / "evil" / "fold" / "out")
    assert not list(tmp_path.rglob("planted"))
