"""Every argument of every call is checked where the call comes in (the control socket,
a job's call through its client, the console): msgpack's and JSON's ``true`` is Python's
1, and nan never times out, so neither may stand for a number. Real processes, plus the
checker itself."""

from __future__ import annotations

import json
import math
import shlex
import sys

import pytest

from common.errors import CorralError, ErrorCode
from master.front.control import SocketBackend
from master.front.ops import OPS, args_problem
from tests.harness import wait_until
from tests.test_job_socket import run_on, start_cluster
from tests.test_variables import control_of, corral


def test_the_checker() -> None:
    assert args_problem("run", {"nodeset": None, "command": "true", "timeout": 30}) is None
    assert args_problem("run", {"nodeset": "n1", "command": "x", "timeout": True}) == (
        "run: timeout must be a number, not true")
    assert args_problem("wait", {"refs": ["n1:1"], "timeout": math.nan}) == (
        "wait: timeout must be a finite number, not nan")
    assert args_problem("wait", {"refs": ["n1:1"], "timeout": None}) is None
    assert args_problem("signal", {"refs": ["n1:1"], "signum": False}) == (
        "signal: signum must be a whole number, not false")
    assert args_problem("signal", {"refs": [1], "signum": 9}) == (
        "signal: refs item 0: must be text, not int")
    assert args_problem("setenv", {"pairs": {"A": 1}}) == "setenv: pairs 'A': must be text, not int"
    assert args_problem("exec", {"nodeset": None, "argv": ["x"], "count": 1}) is None
    assert args_problem("var_set", {"name": "x"}) == "var_set: argument 'value' is missing"
    assert args_problem("nodes", {"all": True}) == "nodes: unknown argument 'all'"
    assert args_problem("copy", {"nodeset": None, "sources": ["a"], "dest": "b",
                                 "recursive": 1, "follow": False, "star": False}) == (
        "copy: recursive must be true or false, not int")


def test_every_operation_declares_its_arguments() -> None:
    """An operation that takes arguments but declares none would refuse every call."""
    takes_none = {"nodes", "node_names", "jobs", "job_names", "env", "events", "barriers"}
    assert {name for name, op in OPS.items() if not op.args} == takes_none


@pytest.mark.slow
def test_booleans_and_nan_are_refused_on_the_control_socket_and_from_jobs(  # type: ignore[no-untyped-def]
        spawn_master, spawn_client, monkeypatch) -> None:
    master, _clients = start_cluster(spawn_master, spawn_client, monkeypatch, names=("n1",))
    control = control_of(master)
    started = corral(control, "--json", "exec", "-w", "n1", "--", "sleep", "300")
    ref = f"n1:{json.loads(started.stdout)['result']['results']['n1'][0]['pid']}"
    backend = SocketBackend(control)
    refused = {
        # signum true would have been SIGHUP, which ends a sleep
        "signal": ({"refs": [ref], "signum": True},
                   "signal: signum must be a whole number, not true"),
        "exec": ({"nodeset": "n1", "argv": ["true"], "cwd": None, "env": None,
                  "stdin": None, "count": True},
                 "exec: count must be a whole number, not true"),
        "run": ({"nodeset": "n1", "command": "sleep 3", "timeout": True},
                "run: timeout must be a number, not true"),
        "wait": ({"refs": [ref], "timeout": math.nan},
                 "wait: timeout must be a finite number, not nan"),
        "log": ({"ref": ref, "lines": True, "follow": False},
                "log: lines must be a whole number, not true"),
        "barrier": ({"name": "b", "count": 2, "timeout": math.inf},
                    "barrier: timeout must be a finite number, not inf"),
    }
    for op, (args, message) in refused.items():
        with pytest.raises(CorralError) as raised:
            backend.call(op, args)
        assert (raised.value.code, raised.value.message) == (ErrorCode.BAD_REQUEST,
                                                             message), op
    assert "running" in corral(control, "pid", "-w", "n1").stdout
    # The same checks meet a job's call through its client.
    script = (
        "import os, socket, struct, msgpack\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['CORRAL_SOCKET'])\n"
        "body = msgpack.packb({'t': 'call', 'op': 'var_get', 'args': {'name': 'x', "
        "'wait': True, 'timeout': True}})\n"
        "s.sendall(struct.pack('>I', len(body)) + body)\n"
        "data = s.recv(65536); print(msgpack.unpackb(data[4:])['message'])\n")
    answer = run_on(master, "n1", f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}")
    assert answer["stdout"] == "var_get: timeout must be a number, not true\n", answer
    corral(control, "kill", "-s", "KILL", "-w", "n1", "--all")
    wait_until(lambda: "running" not in corral(control, "pid", "-w", "n1").stdout,
               what="the sleep ended")


def test_an_argument_that_may_be_left_out_can_be(spawn_master) -> None:  # type: ignore[no-untyped-def]
    """``wait_ready``'s timeout may be left out (wait for ever), as declared: not a
    "bad arguments" refusal from the operation underneath."""
    control = control_of(spawn_master(extra=["--no-console"]))
    outcome = SocketBackend(control).call("wait_ready", {"count": 0})
    assert outcome.reached and outcome.wanted == 0
