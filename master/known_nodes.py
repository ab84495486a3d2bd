"""The nodes this master has seen, kept in its state folder (``nodes.json``), so that after a
restart the ones not back yet are listed as GONE with when they were last seen, instead of
silently missing from the list.

The file is rewritten whole (temporary file, rename): a master killed while writing leaves
the previous version. An unreadable file is set aside with a warning; the master then
starts knowing no nodes, as it did before it kept any.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from common.names import name_problem
from common.statefile import load_state_file, write_state_file

log = logging.getLogger("corral.master.nodes")

FILE_NAME = "nodes.json"
MAX_FILE = 64 * 1024 * 1024  # some 200,000 nodes: far beyond what one master serves


@dataclasses.dataclass(frozen=True)
class KnownNode:
    node_id: str
    name: str
    host: str
    seen: float  # wall-clock time it was last known connected


class KnownNodes:
    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME

    def load(self) -> list[KnownNode]:
        nodes = load_state_file(self.path, MAX_FILE, _parse, log, "no nodes are expected")
        return [node for node in nodes or () if name_problem(node.name) is None]

    def save(self, nodes: list[KnownNode]) -> None:
        entries = [{"id": n.node_id, "name": n.name, "host": n.host, "seen": n.seen}
                   for n in nodes]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_state_file(self.path, (json.dumps({"nodes": entries}, indent=0)
                                         + "\n").encode())
        except OSError as exc:
            log.warning("cannot save the known nodes to %s: %s", self.path,
                        exc.strerror or exc)


def _parse(raw: bytes) -> list[KnownNode]:
    nodes = [KnownNode(str(entry["id"]), str(entry["name"]), str(entry["host"]),
                       float(entry["seen"])) for entry in json.loads(raw)["nodes"]]
    if not all(0 <= node.seen < 1e11 for node in nodes):  # a date a person could read
        raise ValueError("a node's last-seen time is not a time")
    return nodes
