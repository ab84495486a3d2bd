"""A master under a low open-file limit (``ulimit -n``): it raises its soft limit as far as
the hard one allows, says how many clients it can hold, warns when that is fewer than it
is asked to serve, and refuses a connection it has no room for at once, with a reason,
instead of leaving the client waiting."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.protocol import Identity, handshake
from common.errors import ErrorCode
from common.fdlimit import RESERVED
from common.framing import FrameChannel
from common.messages import ErrorFrame, decode
from tests.conftest import TOKEN
from tests.harness import PATIENCE, ROOT, python_env, wait_until


def open_files(soft: int, hard: int) -> Callable[[], None]:
    """A ``preexec_fn`` that starts the process with this open-file limit."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return limit


def first_frame(address: tuple[str, int]) -> object:
    """Connect and read what the master says first (a hello, or a refusal)."""
    with socket.create_connection(address, timeout=PATIENCE) as sock:
        sock.settimeout(PATIENCE)  # a hang fails here instead of passing
        return decode(FrameChannel(sock).read())


@contextlib.contextmanager
def held_connections(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """``count`` authenticated node connections, held open (they need not heartbeat within
    the test: the master runs with a long heartbeat interval)."""
    held: list[socket.socket] = []
    try:
        for index in range(count):
            sock = socket.create_connection(address, timeout=PATIENCE)
            held.append(sock)
            name = f"held{index}"
            handshake(FrameChannel(sock), Identity(node_id=f"held-node-{index}", name=name,
                                                   host="test"), TOKEN.encode())
        yield held
    finally:
        for sock in held:
            sock.close()


def test_the_soft_limit_is_raised_to_the_hard_limit(spawn_master) -> None:
    master = spawn_master([], extra=["--no-console"],
                          popen={"preexec_fn": open_files(256, 4096)})
    expected = f"can hold {4096 - RESERVED} client connections"
    wait_until(lambda: expected in master.log_text(), what=expected)
    assert "open-file limit 4096 (hard 4096, raised from 256)" in master.log_text()
    assert f"room for {4096 - RESERVED} clients" in master.banner


@pytest.mark.slow
def test_a_full_master_refuses_at_once_and_lets_a_client_in_when_room_is_made(
        spawn_master, spawn_client) -> None:
    limit = RESERVED + 12
    capacity = limit - RESERVED
    master = spawn_master([], extra=[
        "--expect-nodes", "20", "--heartbeat", "5"],
        popen={"preexec_fn": open_files(limit, limit)})
    assert (f"this master can hold {capacity} client connections (open-file limit {limit} "
            f"(hard {limit})) but 20 are expected (--expect-nodes 20)") in master.banner
    assert f"can hold {capacity} client connections" in master.log_text()
    with held_connections(master.address, capacity) as held:
        refusal = first_frame(master.address)
        assert isinstance(refusal, ErrorFrame), refusal
        assert refusal.code == ErrorCode.MASTER_FULL
        assert f"master full: it holds {capacity} connections" in refusal.message
        assert "ulimit -n" in refusal.message
        late = spawn_client("late", master.address)
        wait_until(lambda: "master refused: master full" in late.log_text(),
                   what="the client told why")
        wait_until(lambda: "refused: master full" in master.log_text(),
                   what="the master's log line")
        held.pop().close()  # room for one: the client backing off gets in
        wait_until(lambda: "late: CONNECTING -> READY" in master.log_text(),
                   what="the late client admitted")


STARVED_MASTER = textwrap.dedent("""
    import os, resource, sys
    from master.api import MasterAPI
    from master.server import MasterConfig
    api = MasterAPI.start(MasterConfig(port=0), sys.argv[1].encode())
    hoard = []
    try:  # every descriptor the limit allows is taken: the next accept fails
        while True:
            hoard.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(api.address[1], flush=True)
    sys.stdin.read()
    os._exit(0)
""")


def test_a_master_out_of_descriptors_refuses_at_once(tmp_path: Path) -> None:
    master = subprocess.Popen([sys.executable, "-c", STARVED_MASTER, TOKEN],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=python_env(), cwd=ROOT, preexec_fn=open_files(256, 256))
    try:
        assert master.stdout is not None
        port = int(master.stdout.readline())
        for _ in range(2):  # and again: the spare descriptor is taken back each time
            refusal = first_frame(("127.0.0.1", port))
            assert isinstance(refusal, ErrorFrame), refusal
            assert refusal.code == ErrorCode.MASTER_FULL
            assert "master out of file descriptors (open-file limit 256" in refusal.message
    finally:
        master.kill()
        master.wait()
