from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.spawn import WORKING_SPAWNERS
from common.text import EscapingFormatter
from master.api import MasterAPI
from master.server import MasterConfig
from tests.harness import ClientProcess, MasterProcess


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background (`make test &`, some CI runners) inherits SIGINT
    # ignored, and an ignored signal stays ignored across exec: the CLIs and consoles these
    # tests interrupt would never hear their Ctrl-C. Heard here, it is default again in them.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

TOKEN = "test-token-0123456789"
FAST_HEARTBEAT = 0.2


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def master_log(tmp_path: Path) -> Path:
    return tmp_path / "master.log"


@contextlib.contextmanager
def engine(tmp_path: Path, master_log: Path, **config: Any) -> Iterator[MasterAPI]:
    """The real master engine on its hub thread, in this process, on an ephemeral port,
    logging to ``master_log``; ``config``: more MasterConfig fields."""
    handler = logging.FileHandler(master_log)
    handler.setFormatter(EscapingFormatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("corral")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    api = MasterAPI.start(MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path,
                                       handshake_timeout=1.0, **config), TOKEN.encode())
    try:
        yield api
    finally:
        api.shutdown()
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def master(tmp_path: Path, master_log: Path) -> Iterator[MasterAPI]:
    """The real master engine on its hub thread, in this process, on an ephemeral port."""
    with engine(tmp_path, master_log) as api:
        yield api


@pytest.fixture
def spawn_client(tmp_path: Path, token_file: Path) -> Iterator[object]:
    """Start real client processes; every one is stopped when the test ends."""
    started: list[ClientProcess] = []

    def start(name: str, master: tuple[str, int], extra: list[str] | None = None,
              token: Path | None = None, popen: dict[str, Any] | None = None
              ) -> ClientProcess:
        client = ClientProcess(name, master, token or token_file, tmp_path, extra,
                               popen=popen).start()
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()


@pytest.fixture
def spawn_master(tmp_path: Path, token_file: Path) -> Iterator[object]:
    started: list[MasterProcess] = []

    def start(commands: list[str] | None = None, port: int = 0,
              extra: list[str] | None = None, **kwargs: object) -> MasterProcess:
        process = MasterProcess(tmp_path, token_file, port, extra).start(commands, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# `make check-spawn` sets CORRAL_SPAWN_METHODS=student to test a student's spawn method.
SPAWN_METHODS = os.environ.get("CORRAL_SPAWN_METHODS", ",".join(WORKING_SPAWNERS)).split(",")


@pytest.fixture(params=SPAWN_METHODS)
def spawn_method(request: pytest.FixtureRequest) -> str:
    """Run the test once with each way the client starts processes."""
    return str(request.param)


@pytest.fixture
def ready_client(master: MasterAPI, spawn_client, spawn_method: str):  # type: ignore[no-untyped-def]
    """Start one client with this test's spawn method and wait until it is READY."""

    def start(name: str, *extra: str, popen: dict[str, Any] | None = None) -> ClientProcess:
        client = spawn_client(name, master.address, extra=["--spawn", spawn_method, *extra],
                              popen=popen)
        assert master.wait_ready(1, timeout=30).reached
        return client

    return start
