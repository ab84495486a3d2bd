"""`make lab` and `make lab-down` for real: namespaces, a bridge, three clients on their own
addresses and host names, then nothing left behind. Needs root; skipped elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness import ROOT, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def make(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *words], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def leftovers(name: str) -> list[str]:
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return ([line.split()[0] for line in spaces.splitlines()
             if line.startswith(f"corral-{name}-")]
            + re.findall(rf"\d+: (crl-{name}-[\w]+)", links))


@pytest.fixture
def lab_name() -> Iterator[str]:
    """A name of its own, so a lab a person has up (or another suite's) is never touched."""
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip("no ip netns here")
    name = f"t{os.getpid() % 1000}"
    yield name
    make("lab-down", f"ARGS=--name {name}")
    shutil.rmtree(ROOT / "logs" / name, ignore_errors=True)


def test_lab_runs_three_hosts_then_leaves_nothing(lab_name: str) -> None:
    done = make("lab", f"ARGS=--name {lab_name} --heartbeat 0.2 "
                "'list --wait 3 --timeout 60' 'run -- hostname' quit")
    assert done.returncode == 0, done.stderr
    rows = {match[0]: (match[1], match[2]) for match in re.findall(
        r"^(h\d)\s+\w+\s+([\d.]+):\d+\s+(\w+)", done.stdout, re.M)}
    assert rows == {"h1": ("10.77.0.11", "READY"), "h2": ("10.77.0.12", "READY"),
                    "h3": ("10.77.0.13", "READY")}, done.stdout
    for host in ("h1", "h2", "h3"):  # each answers with a host name of its own
        assert re.search(rf"^\[{host}\] exit 0\n{host}$", done.stdout, re.M), done.stdout
    assert leftovers(lab_name) == []
    assert "no lab to remove" in make("lab-down", f"ARGS=--name {lab_name}").stdout


def test_lab_down_removes_what_a_killed_lab_left(lab_name: str) -> None:
    namespace = f"corral-{lab_name}-h1"
    subprocess.run(["ip", "link", "add", f"crl-{lab_name}-br", "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "300"])
    wait_until(lambda: subprocess.run(["ip", "netns", "pids", namespace], capture_output=True,
                                      text=True).stdout.strip(), what="sleep in the namespace")
    refused = make("lab", f"ARGS=--name {lab_name} quit")
    assert refused.returncode != 0 and "a lab is already up" in refused.stderr
    done = make("lab-down", f"ARGS=--name {lab_name}")
    assert done.returncode == 0, done.stderr
    assert f"namespace {namespace} (1 process ended)" in done.stdout
    assert orphan.wait(timeout=30) != 0
    assert leftovers(lab_name) == []


def test_bad_options_are_one_line_and_leave_nothing(lab_name: str) -> None:
    for args, error in [("--hosts 0", "--hosts 0: between 1 and 99"),
                        ("--delay fast", "expected a number with a unit"),
                        ("--name Lab!", "1 to 4 lower-case letters")]:
        done = make("lab", f"ARGS=--name {lab_name} {args} quit" if "--name" not in args
                    else f"ARGS={args} quit")
        assert done.returncode != 0 and error in done.stderr, done.stderr
    shaped = make("lab", f"ARGS=--name {lab_name} --delay 20ms --heartbeat 0.2 "
                  "'list --wait 3 --timeout 60' quit")
    if shaped.returncode != 0:  # a kernel without sch_netem says so, and starts nothing
        assert "has no tc netem" in shaped.stderr, shaped.stderr
    assert leftovers(lab_name) == []
