"""Typed results survive the control socket: encoded, decoded against the type their
operation promises, they are equal to what the engine built; what does not fit is a
protocol error, never a half-built result."""

from __future__ import annotations

import json

import msgpack
import pytest

from common.errors import CorralError, ErrorCode, ProtocolError
from common.procs import ProcInfo
from common.states import NodeState
from master.events import NodeEvent, ProcessEvent
from master.front import codec
from master.front.ops import OPS
from master.front.results import (
    GroupResult,
    NodeView,
    RunResult,
    SignalOutcome,
    WaitOutcome,
    WaitResult,
)

PROC = ProcInfo(seq=1, pid=42, argv=["sleep", "1"], cwd="/w", log="/l/1-sleep-42.log",
                state="exited", started=1.0, ended=2.0, exit_code=0,
                rusage={"ru_utime": 0.1, "ru_stime": 0.0, "ru_maxrss": 10.0,
                        "ru_minflt": 1.0, "ru_majflt": 0.0, "ru_nvcsw": 1.0,
                        "ru_nivcsw": 0.0})
NODE = NodeView("n1", "id1", "host", "127.0.0.1:1", NodeState.READY, 0.5, 1.25,
                (0.1, 0.2, 0.3), 5.0, 1, 2, 3, 0)


def over_the_wire(value: object) -> object:
    return msgpack.unpackb(msgpack.packb(codec.encode(value), use_bin_type=True), raw=False)


@pytest.mark.parametrize(("op", "value"), [
    ("nodes", [NODE]),
    ("wait_ready", WaitOutcome(True, 1, 1, 0.25, [NODE])),
    ("exec", GroupResult({"n1": [PROC]}, {"n2": CorralError("gone", ErrorCode.DISCONNECTED)},
                         ["n1", "n2"])),
    ("signal", [SignalOutcome("n1:42", False, "not started here")]),
    ("wait", [WaitResult("n1:42", PROC), WaitResult("n1:43", None, "unknown")]),
    ("run", GroupResult({"n1": RunResult(0, None, b"\xffout", b"", 0, False, 0.5)}, {},
                        ["n1"])),
])
def test_results_round_trip(op: str, value: object) -> None:
    back = codec.decode(OPS[op].result, over_the_wire(value))
    if isinstance(value, GroupResult):
        assert back.results == value.results and back.order == value.order
        assert {k: (e.code, e.message) for k, e in back.errors.items()} == {
            k: (e.code, e.message) for k, e in value.errors.items()}
        assert back.ok == value.ok
    else:
        assert back == value


def test_events_round_trip_as_their_own_kind() -> None:
    for event in (NodeEvent("n1", NodeState.READY, NodeState.MISSING, "late"),
                  ProcessEvent("n1", PROC)):
        assert codec.decode(OPS["events"].item, over_the_wire(event)) == event


@pytest.mark.parametrize("bad", [
    {"results": {"n1": [{"pid": "not a number"}]}, "errors": {}, "order": ["n1"]},
    {"results": {}, "errors": {"n1": {"code": 999, "message": "x"}}, "order": ["n1"]},
    [1, 2],
    None,
])
def test_what_does_not_fit_is_a_protocol_error(bad: object) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(OPS["exec"].result, bad)


def test_json_gives_bytes_as_text() -> None:
    document = {"command": "run", "ok": True,
                "result": GroupResult({"n1": RunResult(0, None, b"caf\xc3\xa9 \xff", b"", 0,
                                                       False, 0.5)}, {}, ["n1"])}
    parsed = json.loads(codec.to_json(document))
    assert parsed["result"]["results"]["n1"]["stdout"] == "café \ufffd"
