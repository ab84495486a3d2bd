"""Nodes are listed in ClusterShell's natural order everywhere: n1 n2 n10, then n001."""

from __future__ import annotations

import random

import pytest
from ClusterShell.NodeSet import NodeSet

from master.front.results import natural_key
from tests.harness import PATIENCE

NAMES = ["n1", "n001", "n2", "n002", "n10", "web3", "n", "x", "n0", "n00", "n9", "n010",
         "n100", "n99", "node7", "node07", "rack1"]


def test_order_is_nodesets() -> None:
    names = list(NAMES)
    for _ in range(50):
        random.shuffle(names)
        assert sorted(names, key=natural_key) == list(NodeSet.fromlist(names))


@pytest.mark.slow
def test_tables_list_nodes_in_natural_order(spawn_master, spawn_client) -> None:
    names = ["n10", "n001", "n2", "n1"]
    master = spawn_master([f"list --wait {len(names)} --timeout 30", "run -- true", "quit"])
    for name in names:
        spawn_client(name, master.address)
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert master.proc.returncode == 0, err
    listed = [line.split()[0] for line in out.splitlines() if " READY " in line]
    assert listed == ["n1", "n2", "n10", "n001"]
    reported = [line.split()[0] for line in out.splitlines() if line.startswith("[")]
    assert reported == ["[n1]", "[n2]", "[n10]", "[n001]"]
