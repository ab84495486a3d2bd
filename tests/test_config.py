"""corral.toml: every option settable in a file, options on the command line win, and a file
that says something no option means is a clear error naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from master.api import MasterAPI
from tests.harness import PATIENCE, ROOT, python_env, wait_until


def run(module: str, args: list[str], cwd: Path = ROOT, **env: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, env={**python_env(), **env}, timeout=PATIENCE,
                          stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_client_configured_by_file_joins_and_flags_win(master: MasterAPI, tmp_path: Path,
                                                         token_file: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "token").write_text(token_file.read_text())
    (folder / "token").chmod(0o600)
    config = folder / "corral.toml"
    config.write_text(f"""
# a client that reaches the test master
[client]
master = "127.0.0.1:{master.address[1]}"
name = "from-file"
token-file = "token"          # beside this file
state-dir = "state"
keep-ended = 50
allow = ["sh", "echo"]
verbose = true

[master]
heartbeat = 0.5               # not read by a client
""")
    client = subprocess.Popen(
        [sys.executable, "-m", "client", "--config", str(config), "--name", "n1"],
        cwd=tmp_path, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert master.wait_ready(1, timeout=PATIENCE).reached
        assert [node.name for node in master.nodes()] == ["n1"]  # the flag won
        assert (folder / "state" / "node-id").exists()  # relative to the file's folder
        assert master.run("n1", "echo configured").results["n1"].stdout == b"configured\n"
        refused = master.exec("n1", ["true"])
        assert "not allowed" in refused.errors["n1"].message  # the file's allow-list
    finally:
        client.terminate()
        output, _ = client.communicate(timeout=PATIENCE)
    assert " DEBUG " in output  # verbose = true


@pytest.mark.parametrize(("text", "wanted"), [
    ("[client]\ntls-cret = 'a.pem'\n", "unknown key 'tls-cret' in [client]"),
    ("[clients]\nname = 'x'\n", "unknown key 'clients' at the top level"),
    ("name = 'x'\n", "unknown key 'name' at the top level"),
    ("[client]\nkeep-ended = 'many'\n", "[client] keep-ended: invalid literal"),
    ("[client]\nspawn = 'vfork'\n", "[client] spawn: 'vfork' is not one of fork, posix"),
    ("[client]\nverbose = 'yes'\n", "[client] verbose must be true or false"),
    ("[client]\nallow = 'sh'\n", "[client] allow must be a list"),
    ("[client]\nname = 'a b'\n", "[client] name:"),
    ("[client\n", "is not valid TOML"),
])
def test_a_bad_client_file_is_a_clear_error(tmp_path: Path, text: str, wanted: str) -> None:
    config = tmp_path / "corral.toml"
    config.write_text(text)
    result = run("client", ["--config", str(config), "--master", "127.0.0.1:1"])
    assert result.returncode == 2
    assert str(config) in result.stderr and wanted in result.stderr, result.stderr


def test_a_bad_master_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "corral.toml"
    config.write_text("[master]\nport = 0\nheartbeet = 2\n")
    result = run("master", ["--config", str(config), "quit"])
    assert result.returncode == 2
    assert f"{config}: unknown key 'heartbeet' in [master]" in result.stderr


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run("master", ["--config", str(tmp_path / "nope.toml"), "quit"])
    assert result.returncode == 2
    assert f"cannot read {tmp_path / 'nope.toml'}: No such file" in result.stderr


def test_the_master_reads_the_default_file(tmp_path: Path, token_file: Path) -> None:
    (tmp_path / "corral").mkdir()
    (tmp_path / "corral" / "corral.toml").write_text(f"""
[master]
port = 0
token-file = "{token_file}"
log-dir = "master-logs"
no-passthrough = true
""")
    result = run("master", ["hostname", "quit"], XDG_CONFIG_HOME=str(tmp_path))
    assert result.returncode == 1  # the passthrough is off: a word is no command
    assert "listening on 127.0.0.1:" in result.stderr
    wait_until(lambda: (tmp_path / "corral" / "master-logs" / "master.log").exists())


def test_version_on_every_command() -> None:
    for module, prog in (("master", "corral-master"), ("client", "corral-client")):
        result = run(module, ["--version"])
        assert result.returncode == 0
        assert result.stdout.startswith(f"{prog} ")
