"""Many requests in flight from one thread: ``MasterAPI.submit_exec`` (a future per
request) and calls with ids on one connection to the control socket
(``master.front.control.Pipeline``), through a real master and real clients."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from common.errors import CorralError, ErrorCode, UsageError
from common.framing import FrameChannel
from master.api import MasterAPI
from master.control import MAX_CALLS_IN_FLIGHT
from master.front.control import Pipeline, SocketBackend
from tests.harness import PATIENCE, MasterProcess, peak_rss_kib, wait_until
from tests.test_service import control_of, corral

EXEC_ARGS = {"nodeset": "n1", "argv": ["true"], "cwd": None, "env": None, "stdin": None,
             "count": 1}


def test_one_thread_keeps_many_execs_in_flight(master: MasterAPI, ready_client) -> None:
    client = ready_client("n1")
    client.signal(signal.SIGSTOP)  # nothing is answered until it is continued
    try:
        pending = [master.submit_exec("n1", ["true"]) for _ in range(16)]
        assert not any(future.done() for future in pending)
    finally:
        client.signal(signal.SIGCONT)
    _done, not_done = futures.wait(pending, timeout=PATIENCE)
    assert not not_done
    groups = [future.result() for future in pending]
    assert all(group.ok for group in groups), [group.errors for group in groups]
    pids = {info.pid for group in groups for info in group.results["n1"]}
    assert len(pids) == 16 and 0 not in pids


def test_submitted_exec_reports_errors_as_exec_does(master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    for nodeset, count in (("n1", 0), ("n9", 1), ("n[1-", 1)):
        with pytest.raises(UsageError) as blocking:
            master.exec(nodeset, ["true"], count=count)
        with pytest.raises(UsageError) as submitted:
            master.submit_exec(nodeset, ["true"], count=count).result(PATIENCE)
        assert submitted.value.message == blocking.value.message
        assert "\n" not in submitted.value.message
    missing = master.submit_exec("n1", ["no-such-program-here"]).result(PATIENCE)
    assert missing.results["n1"][0].error == master.exec(
        "n1", ["no-such-program-here"]).results["n1"][0].error
    assert "no-such-program-here" in str(missing.results["n1"][0].error)


def test_submit_exec_refuses_the_hub_thread(master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    refusals: futures.Future[str] = futures.Future()

    def submit_again(_done: futures.Future[Any]) -> None:  # runs on the hub thread
        try:
            master.submit_exec("n1", ["true"])
        except UsageError as exc:
            refusals.set_result(exc.message)
        else:
            refusals.set_result("")

    master.submit_exec("n1", ["true"]).add_done_callback(submit_again)
    assert "from a thread of your own" in refusals.result(PATIENCE)
    assert master.exec("n1", ["true"]).ok  # the hub is unharmed


def test_a_submission_waiting_for_room_sees_ctrl_c(master: MasterAPI, monkeypatch) -> None:
    """Ctrl-C stops a submission waiting past the bound even when the kernel hands the
    SIGINT to another thread (Python then only sets a flag for the main thread)."""
    room = threading.BoundedSemaphore(1)
    room.acquire()  # as if one submission were unanswered
    monkeypatch.setattr(master, "_outstanding", room)
    interrupted, gave_up = threading.Event(), threading.Event()
    main = threading.get_ident()

    def interrupt_once_waiting() -> None:
        wait_until(lambda: "acquire" in _functions_running(main), what="waiting for room")
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this bystander thread
        if not interrupted.wait(PATIENCE):  # it slept through it: let it go on, to fail
            gave_up.set()
            room.release()

    threading.Thread(target=interrupt_once_waiting, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        master.submit_exec("n1", ["true"])
    interrupted.set()
    assert not gave_up.is_set()


def _functions_running(thread_id: int) -> list[str]:
    frame: Any = sys._current_frames().get(thread_id)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


@pytest.fixture
def pipelined(spawn_master, spawn_client) -> tuple[MasterProcess, Path]:  # type: ignore[no-untyped-def]
    master = spawn_master(extra=["--no-console"])
    spawn_client("n1", master.address)
    control = control_of(master)
    done = corral(control, "list", "--wait", "1", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    return master, control


@pytest.mark.slow
def test_calls_with_ids_share_one_connection(pipelined) -> None:
    _master, control = pipelined
    with Pipeline(SocketBackend(control)) as pipeline:
        pending = [pipeline.submit("exec", EXEC_ARGS) for _ in range(32)]
        bad_op = pipeline.submit("no-such-op", {})
        bad_args = pipeline.submit("exec", {**EXEC_ARGS, "count": "many"})
        later = [pipeline.submit("exec", EXEC_ARGS) for _ in range(8)]
        groups = [future.result(PATIENCE) for future in pending + later]
        for future, words in ((bad_op, "not a call of a known operation"),
                              (bad_args, "count")):
            with pytest.raises(CorralError) as failed:
                future.result(PATIENCE)
            assert words in failed.value.message and "\n" not in failed.value.message
    assert all(group.ok for group in groups)
    assert len({info.pid for group in groups for info in group.results["n1"]}) == 40


@pytest.mark.slow
def test_a_cancelled_call_ends_alone(pipelined) -> None:
    _master, control = pipelined
    with Pipeline(SocketBackend(control)) as pipeline:
        started = pipeline.submit("exec", {**EXEC_ARGS, "argv": ["sleep", "60"]})
        pid = started.result(PATIENCE).results["n1"][0].pid
        waiting = pipeline.submit("wait", {"refs": [f"n1:{pid}"], "timeout": None})
        other = pipeline.submit("nodes", {})
        assert [view.name for view in other.result(PATIENCE)] == ["n1"]
        assert not waiting.done()
        pipeline.cancel(waiting)
        with pytest.raises(CorralError) as cancelled:
            waiting.result(PATIENCE)
        assert cancelled.value.code is ErrorCode.CANCELLED
        killed = pipeline.submit("signal", {"refs": [f"n1:{pid}"], "signum": 9})
        assert killed.result(PATIENCE)[0].ok
    with pytest.raises(CorralError):  # closed: no more calls
        pipeline.submit("nodes", {})


@pytest.mark.slow
def test_a_frame_without_an_id_ends_a_connection_of_calls_with_ids(pipelined) -> None:
    _master, control = pipelined
    with _frames_to(control) as (sock, channel):
        channel.send({"t": "call", "id": 1, "op": "nodes", "args": {}})
        assert channel.read()["id"] == 1
        channel.send({"t": "call", "op": "nodes", "args": {}})
        answer = channel.read()
        assert answer["t"] == "error" and "without a call id" in answer["message"]
        assert sock.recv(1) == b""  # closed
    assert corral(control, "list").returncode == 0  # the master serves on


@pytest.mark.slow
@pytest.mark.parametrize(("call_id", "words"), [
    ("7", "a call id must be an integer, not '7' (str)"),
    (True, "a call id must be an integer, not True (bool)"),
    (1.5, "a call id must be an integer, not 1.5 (float)"),
    (None, "a frame without a call id")])
def test_a_call_id_not_an_integer_is_named(pipelined, call_id: Any, words: str) -> None:
    _master, control = pipelined
    with _frames_to(control) as (sock, channel):
        channel.send({"t": "call", "id": call_id, "op": "nodes", "args": {}})
        answer = channel.read()
        assert answer["t"] == "error" and words in answer["message"], answer
        assert sock.recv(1) == b""  # closed
    assert corral(control, "list").returncode == 0  # the master serves on


@pytest.mark.slow
def test_a_bad_call_is_told_what_is_wrong_with_it(pipelined) -> None:
    _master, control = pipelined
    with _frames_to(control) as (_sock, channel):
        channel.send({"t": "call", "id": 1, "op": "nodes"})
        channel.send({"t": "result", "id": 2, "op": "nodes", "args": {}})
        channel.send({"t": "call", "id": 3, "op": "nodes", "args": [1]})
        channel.send({"t": "call", "id": 4, "op": "nodes", "args": {}})
        answers = {answer["id"]: answer for answer in (channel.read() for _ in range(4))}
    assert answers[1]["message"] == "nodes: the call's args must be a map, not NoneType"
    assert answers[2]["message"] == "expected a call, not a 'result' frame"
    assert answers[3]["message"] == "nodes: the call's args must be a map, not list"
    assert answers[4]["t"] == "result"


def test_submissions_beyond_the_bound_wait_for_an_answer(master: MasterAPI, ready_client,
                                                          monkeypatch) -> None:
    client = ready_client("n1")
    monkeypatch.setattr(master, "_outstanding", threading.BoundedSemaphore(4))
    client.signal(signal.SIGSTOP)
    try:
        pending = [master.submit_exec("n1", ["true"]) for _ in range(4)]
        fifth: futures.Future[futures.Future[Any]] = futures.Future()
        submitter = threading.Thread(
            target=lambda: fifth.set_result(master.submit_exec("n1", ["true"])))
        submitter.start()
        submitter.join(0.5)
        assert submitter.is_alive() and not fifth.done()  # waits while none is answered
    finally:
        client.signal(signal.SIGCONT)
    submitter.join(PATIENCE)
    assert all(future.result(PATIENCE).ok for future in [*pending, fifth.result(PATIENCE)])


@pytest.mark.slow
def test_calls_in_flight_on_one_connection_are_bounded(pipelined) -> None:
    _master, control = pipelined
    waiting_args = {"count": 5, "timeout": None}  # only one node: waits until cancelled
    with Pipeline(SocketBackend(control)) as pipeline:
        waiting = [pipeline.submit("wait_ready", waiting_args)
                   for _ in range(MAX_CALLS_IN_FLIGHT)]
        with pytest.raises(CorralError) as refused:
            pipeline.submit("wait_ready", waiting_args).result(PATIENCE)
        assert f"more than {MAX_CALLS_IN_FLIGHT} calls in flight" in refused.value.message
        pipeline.cancel(waiting[0])
        with pytest.raises(CorralError):
            waiting[0].result(PATIENCE)
        assert pipeline.submit("nodes", {}).result(PATIENCE)[0].name == "n1"
    assert not any(future.done() and not future.exception() for future in waiting)


@pytest.mark.slow
def test_an_id_in_flight_is_not_taken_twice(pipelined) -> None:
    _master, control = pipelined
    with _frames_to(control) as (_sock, channel):
        waiting = {"t": "call", "id": 5, "op": "wait_ready",
                   "args": {"count": 5, "timeout": None}}
        channel.send(waiting)
        channel.send(waiting)
        answer = channel.read()
        assert (answer["t"], answer["id"]) == ("error", 5)
        assert "call id 5 is already in flight" in answer["message"]
        channel.send({"t": "cancel", "id": 5})
        answer = channel.read()
        assert (answer["t"], answer["id"], answer["code"]) == ("error", 5,
                                                                ErrorCode.CANCELLED)


@contextlib.contextmanager
def _frames_to(control: Path) -> Iterator[tuple[socket.socket, FrameChannel]]:
    """A bare connection to the control socket, to send it frames no front end would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PATIENCE)
        sock.connect(str(control))
        yield sock, FrameChannel(sock)


@pytest.mark.slow
def test_a_front_end_that_does_not_read_cannot_pile_answers_up(pipelined) -> None:
    """Calls whose answers wait to be sent count as in flight: a front end that sends
    calls and never reads is stopped (the master stops reading it), not served into the
    master's memory, even when it sends them slower than the master answers."""
    master, control = pipelined
    assert master.proc is not None
    before = peak_rss_kib(master.proc.pid)
    calls = 20_000
    frame = FrameChannel(socket.socket()).frame
    with _frames_to(control) as (sock, _channel), _frames_to(control) as (_, other):
        sock.settimeout(10)  # the master has stopped reading: this ends the sending
        sent = 0
        with contextlib.suppress(TimeoutError):
            for call_id in range(1, calls + 1):
                sock.sendall(frame({"t": "call", "id": call_id, "op": "nodes", "args": {}}))
                sent = call_id
                if call_id % 100 == 0:  # the master has answered these before more come
                    other.send({"t": "call", "id": call_id, "op": "nodes", "args": {}})
                    assert other.read()["t"] == "result"
    grown = peak_rss_kib(master.proc.pid) - before
    assert sent < calls and grown < 64 * 1024, (sent, grown)
    assert corral(control, "list").returncode == 0  # the master serves on
