"""Second check of what a peer holding the token can make the master keep, log or show."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.states import NodeState
from master.api import MasterAPI
from tests.harness import wait_until
from tests.peers import good_heartbeat
from tests.test_hardening import scripted

HUGE = 1_000_000


def gone(master: MasterAPI, name: str) -> bool:
    return all(n.state is NodeState.GONE for n in master.nodes() if n.name == name)


@pytest.mark.parametrize("wire", [
    {**good_heartbeat(1), "\x00" * HUGE: 1},  # an unknown field with a huge name
    {"t": "\x01" * HUGE},  # an unknown type
    {**good_heartbeat(1), "load": ["\x02" * HUGE, 0.0, 0.0]},  # a huge wrong value
], ids=["field", "type", "value"])
def test_a_huge_bad_message_costs_one_short_log_line(master: MasterAPI, master_log: Path,
                                                     wire: dict) -> None:
    node = scripted(master, "evil")
    node.send_wire(wire)
    wait_until(lambda: gone(master, "evil") and "closed evil" in master_log.read_text(),
               what="evil closed")
    assert master_log.stat().st_size < 20_000


def test_a_huge_failure_message_is_one_short_row(master: MasterAPI, master_log: Path) -> None:
    from common.messages import ExecRequest, FailReply

    def answer(request):  # type: ignore[no-untyped-def]
        if isinstance(request, ExecRequest):
            return FailReply(req=request.req, code=1, message="\x1b" * HUGE)
        return None

    scripted(master, "evil", answer)
    group = master.exec("evil", ["true"])
    message = group.errors["evil"].message
    assert len(message) < 1000 and "\x1b" not in message
    assert "more characters" in message


def test_a_huge_closing_reason_is_one_short_line(master: MasterAPI, master_log: Path) -> None:
    node = scripted(master, "evil")
    node.send_wire({"t": "error", "code": 1, "message": "why " * HUGE})
    wait_until(lambda: gone(master, "evil") and "closed evil" in master_log.read_text(),
               what="evil closed")
    assert master_log.stat().st_size < 20_000


@pytest.mark.parametrize("changes", [
    {"started": 1e300}, {"started": -1e300}, {"state": "exited", "ended": 1e300,
                                              "exit_code": 0},
    {"state": "killed", "signal": 2 ** 63, "ended": 2.0},
    {"state": "exited", "exit_code": -(2 ** 63), "ended": 2.0},
    {"cpu_time": 1e300}, {"rss": 2 ** 64 - 1},
], ids=["started-huge", "started-negative", "ended-huge", "signal-huge", "exit-huge",
        "cpu-huge", "rss-huge"])
@pytest.mark.parametrize("command", ["pid", "pid --last 1", "pid --state ended",
                                     "usage"])
def test_odd_figures_in_a_process_table_never_break_a_command(
        master: MasterAPI, command: str, changes: dict) -> None:
    import io

    from common.messages import ListRequest, UsageRequest
    from master.console import CorralConsole
    from tests.test_hardening import proc_wire

    def answer(request):  # type: ignore[no-untyped-def]
        if isinstance(request, ListRequest):
            return [proc_wire(**changes)]
        if isinstance(request, UsageRequest):
            return {"children": {}, "processes": [proc_wire(**changes)]}
        return None

    scripted(master, "evil", answer)
    out, err = io.StringIO(), io.StringIO()
    console = CorralConsole(master, interactive=False, stdout=out)
    import contextlib
    with contextlib.redirect_stderr(err):
        console.onecmd_plus_hooks(command)
    assert "Error:" not in err.getvalue() and "Traceback" not in err.getvalue()
    assert "Overflow" not in err.getvalue() and "ValueError" not in err.getvalue(), err.getvalue()


@pytest.mark.parametrize("answer_for", [
    lambda request: {"data": b"x" * request.max_bytes, "offset": 0, "ended": False},
    lambda request: {"data": b"x" * (request.max_bytes + 1),
                     "offset": (request.offset or 0) + request.max_bytes + 1, "ended": True},
    lambda request: {"data": b"abc", "offset": 1, "ended": True},
], ids=["never-advances", "more-than-asked", "offset-before-its-data"])
def test_a_log_answer_that_does_not_follow_its_request_is_a_protocol_error(
        master: MasterAPI, answer_for) -> None:  # type: ignore[no-untyped-def]
    from common.errors import CorralError
    from common.messages import LogRequest

    evil = scripted(master, "evil", lambda request: answer_for(request)
                    if isinstance(request, LogRequest) else None)
    chunks = 0
    with pytest.raises(CorralError) as failed:
        for _chunk in master.log_chunks("evil:7", None, follow=False):
            chunks += 1
            assert chunks < 100, "the log never ends"
    assert "protocol error" in failed.value.message
    evil.closed.wait(30)
    assert evil.closed.is_set()


def test_an_impostor_master_cannot_fill_the_clients_log(spawn_client) -> None:
    """Before the handshake anyone on the master's address can answer: one huge refusal
    per connection attempt must cost the client one short line."""
    import socket
    import threading

    from common.framing import pack_frame

    server = socket.create_server(("127.0.0.1", 0))
    answered = threading.Event()

    def impostor() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                # under the handshake's frame limit (a bigger frame is refused unread)
                conn.sendall(pack_frame({"t": "error", "code": 1, "message": "no " * 20_000}))
        answered.set()

    threading.Thread(target=impostor, daemon=True).start()
    client = spawn_client("n1", server.getsockname())
    try:
        wait_until(lambda: client.log_text().count("master refused") >= 2, what="refusals")
        assert len(client.log_text()) < 10_000
    finally:
        server.close()


def test_an_unauthenticated_peer_cannot_send_a_big_frame(master: MasterAPI,
                                                         master_log: Path) -> None:
    """Anyone who can connect must not make the master read, hold or decode megabytes."""
    import socket
    import struct

    sock = socket.create_connection(master.address, timeout=30)
    sock.sendall(struct.pack(">I", 4 * 1024 * 1024))  # a length prefix only: no body yet
    wait_until(lambda: "closed 127.0.0.1" in master_log.read_text(), what="closed")
    sock.close()
    assert "exceeds the 65536-byte limit before authentication" in master_log.read_text()
