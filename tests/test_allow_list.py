"""The allow-list decides which program runs, whatever the request says; and one rule finds
a program under both spawn methods. Real clients, both methods."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from master.api import MasterAPI
from master.console import CorralConsole

PLANTED = "#!/bin/sh\necho planted > {marker}\n"


@pytest.fixture
def lab(ready_client):  # type: ignore[no-untyped-def]
    return ready_client("lab", "--allow", "echo")


@pytest.fixture
def open_node(ready_client):  # type: ignore[no-untyped-def]
    return ready_client("n1")


def plant(folder: Path, name: str, marker: Path) -> Path:
    """An executable named ``name`` in ``folder`` that leaves ``marker`` if it ever runs."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / name
    fake.write_text(PLANTED.format(marker=marker))
    fake.chmod(0o755)
    return fake


def nothing_started(master: MasterAPI, node: str) -> bool:
    return master.processes(node).results[node] == []


def test_loader_variables_are_refused(master: MasterAPI, lab) -> None:
    console = CorralConsole(master, interactive=False, stdout=io.StringIO())
    console.onecmd_plus_hooks("exec -w lab --env LD_PRELOAD=evil.so -- echo hi")
    assert console.exit_code == 1
    assert console.last_result.errors["lab"].message == (
        "environment variables that change what runs are refused on lab (it has an "
        "allow-list): LD_PRELOAD")
    group = master.exec("lab", ["echo", "hi"], env={"LD_LIBRARY_PATH": "/tmp", "PYTHONPATH":
                                                    "x", "BASH_ENV": "x", "COLOR": "teal"})
    assert group.errors["lab"].message.endswith(": BASH_ENV, LD_LIBRARY_PATH, PYTHONPATH")
    # Compilers' helpers, options that can name a command, graphics layers.
    more = master.exec("lab", ["echo", "hi"], env={
        "TAR_OPTIONS": "--to-command=sh", "GCC_EXEC_PREFIX": "/tmp/x", "VK_LAYER_PATH": "x"})
    assert more.errors["lab"].message.endswith(": GCC_EXEC_PREFIX, TAR_OPTIONS, VK_LAYER_PATH")
    locale = master.exec("lab", ["echo", "hi"], env={"LC_ALL": "../../planted"})
    assert locale.errors["lab"].message.endswith(": LC_ALL")
    assert nothing_started(master, "lab")
    # Variables that only carry data still pass.
    started = master.exec("lab", ["echo", "hi"], env={"COLOR": "teal", "LANG": "C.UTF-8"})
    assert started.ok


def test_a_request_path_never_chooses_the_program(master: MasterAPI, lab,
                                                  tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = plant(tmp_path / "evil", "echo", marker).parent
    refused = master.exec("lab", ["echo", "hi"], env={"PATH": str(evil)})
    assert refused.errors["lab"].message.endswith("(it has an allow-list): PATH")
    assert nothing_started(master, "lab") and not marker.exists()


def test_one_path_rule_without_a_list(master: MasterAPI, open_node, tmp_path: Path) -> None:
    # The client's own PATH finds the program; the request's PATH reaches only the child.
    marker = tmp_path / "ran"
    evil = plant(tmp_path / "evil", "echo", marker).parent
    (info,) = master.exec("n1", ["echo", "hi"], env={"PATH": str(evil)}).results["n1"]
    ref = f"n1:{info.pid}"
    assert master.wait([ref], timeout=30)[0].ok
    assert master.log(ref).data == b"hi\n" and not marker.exists()
    (info,) = master.exec("n1", ["sh", "-c", 'echo "$PATH"'],
                          env={"PATH": str(evil)}).results["n1"]
    master.wait([f"n1:{info.pid}"], timeout=30)
    assert master.log(f"n1:{info.pid}").data.decode().strip() == str(evil)


def test_a_relative_program_is_found_where_it_starts(master: MasterAPI, lab,
                                                     tmp_path: Path) -> None:
    # Planted at work/usr/bin/echo: from work/x/1/2/3/4/5, six ".." lead to work, not to /.
    marker = tmp_path / "ran"
    plant(lab.workdir / "usr" / "bin", "echo", marker)
    (lab.workdir / "x/1/2/3/4/5").mkdir(parents=True)
    refused = master.exec("lab", ["../../../../../../usr/bin/echo", "hi"], cwd="x/1/2/3/4/5")
    assert refused.errors["lab"].message == (
        "program '../../../../../../usr/bin/echo' is not allowed on lab")
    run = master.run("lab", "../../../../../../usr/bin/echo hi", cwd="x/1/2/3/4/5")
    assert not run.ok and "is not allowed on lab" in run.errors["lab"].message
    assert nothing_started(master, "lab") and not marker.exists()
    # The listed program itself, by another path to the same file, is allowed.
    (info,) = master.exec("lab", ["/bin/echo", "allowed"]).results["lab"]
    assert master.wait([f"lab:{info.pid}"], timeout=30)[0].ok


@pytest.mark.parametrize("folder", ["/tmp", "..", "../..", "sub/../../.."])
def test_processes_start_inside_the_root(master: MasterAPI, open_node, folder: str) -> None:
    (open_node.workdir / "sub").mkdir()
    refused = master.exec("n1", ["pwd"], cwd=folder)
    assert refused.errors["n1"].message.startswith(f"{folder}: outside the sandbox")
    run = master.run("n1", "pwd", cwd=folder)
    assert run.errors["n1"].message.startswith(f"{folder}: outside the sandbox")
    assert nothing_started(master, "n1")
    inside = master.run("n1", "pwd", cwd="sub/../sub")
    assert inside.results["n1"].stdout.decode().strip() == str(
        (open_node.workdir / "sub").resolve())


def test_a_missing_folder_is_a_clear_error(master: MasterAPI, open_node) -> None:
    refused = master.exec("n1", ["pwd"], cwd="nowhere")
    assert refused.errors["n1"].message == "no such folder: nowhere"
    assert nothing_started(master, "n1")


MULTI_CALL = """#!/bin/sh
case "$(basename "$0")" in
  safe) echo safe ;;
  *) echo ran > {marker} ;;
esac
"""


def test_a_listed_file_under_another_name_is_another_program(ready_client, master: MasterAPI,
                                                             tmp_path: Path) -> None:
    # One file, two names, as busybox or vim/rvim: the name is part of which program runs.
    tools = tmp_path / "tools"
    tools.mkdir()
    marker = tmp_path / "ran"
    multi = tools / "multi"
    multi.write_text(MULTI_CALL.format(marker=marker))
    multi.chmod(0o755)
    (tools / "safe").symlink_to(multi)
    (tools / "danger").symlink_to(multi)
    ready_client("lab", "--allow", str(tools / "safe"))
    refused = master.exec("lab", [str(tools / "danger")])
    assert refused.errors["lab"].message == (
        f"program {str(tools / 'danger')!r} is not allowed on lab")
    (info,) = master.exec("lab", [str(tools / "safe")]).results["lab"]
    assert master.wait([f"lab:{info.pid}"], timeout=30)[0].ok
    assert master.log(f"lab:{info.pid}").data == b"safe\n"
    assert not marker.exists()
