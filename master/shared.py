"""The operations on what processes share through the master: variables and barriers.

Every front end reaches them the same way (the console, the control socket, a job's
request forwarded by its client), with the caller named, so a variable records who set it
and a barrier says who waits at it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from master.barriers import Barriers
from master.caller import Caller
from master.registry import NodeRegistry
from master.variables import VariableStore

log = logging.getLogger("corral.master.shared")

SHARED_OPS = frozenset({"var_set", "var_get", "var_cas", "var_del", "var_list", "var_watch",
                        "barrier", "barriers"})


class SharedState:
    def __init__(self, folder: Path, registry: NodeRegistry) -> None:
        self.variables = VariableStore(folder)
        self.barriers = Barriers()
        registry.subscribe(self.barriers.node_changed)

    def perform(self, op: str, args: dict[str, Any], emit: Callable[[Any], Any],
                caller: Caller) -> Any:
        variables = self.variables
        if caller.node is not None:
            log.debug("%s from %s", op, caller.label)
        if op == "var_set":
            return variables.set(args["name"], args["value"], caller.label)
        if op == "var_get":
            return variables.get(args["name"], args["wait"], args["timeout"])
        if op == "var_cas":
            return variables.cas(args["name"], args["old"], args["new"], caller.label)
        if op == "var_del":
            return variables.delete(args["name"])
        if op == "var_list":
            return variables.list(args["prefix"])
        if op == "var_watch":
            return variables.watch(args["name"], emit)
        if op == "barrier":
            return self.barriers.arrive(args["name"], args["count"], args["timeout"], caller)
        if op == "barriers":
            return self.barriers.views()
        raise KeyError(op)
