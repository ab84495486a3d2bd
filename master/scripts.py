"""``script LOCAL_FILE ARGS...``: push a local script to the nodes and run it there as one
job (ParaMgmt's ``rscript``). Runs on the hub thread.

The script lands in the work folder of each node, under ``.corral/scripts/`` with a name
of its own (``<random>-<name>``, mode 0700, so two scripts never meet), and runs from the
work folder as ``run`` runs a command: under the node's sandbox rules (with an allow-list
only listed programs run, so a pushed script is refused there), with the job's
``CORRAL_*`` variables and the global environment. It is removed once the job has ended
(or was cancelled); a node where the push failed runs nothing and says why. A node that
was away then (GONE during the script) has its script removed when it is READY again, or
by its client at its next start if this master was restarted meanwhile.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import uuid
from typing import TYPE_CHECKING

import gevent

from common.errors import CorralError, UsageError
from common.jobs import SCRIPT_FOLDER
from common.nodeset import fold
from common.states import NodeState
from master import transfers
from master.events import Event, NodeEvent
from master.fanout import gathered, resolve_targets
from master.front.results import GroupResult, RunResult

if TYPE_CHECKING:
    from master.operations import Operations
    from master.registry import NodeRegistry

log = logging.getLogger("corral.master.scripts")

SCRIPT_MODE = 0o700


class ScriptLeftovers:
    """Scripts that could not be removed because their node was away, removed when it is
    READY again (a registry listener, on the hub)."""

    def __init__(self, registry: NodeRegistry, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout
        self._left: dict[str, set[str]] = {}  # node name -> script paths in its work folder
        registry.subscribe(self.node_changed)

    def note(self, node: str, remote: str) -> None:
        self._left.setdefault(node, set()).add(remote)

    def node_changed(self, event: Event) -> None:
        if (isinstance(event, NodeEvent) and event.new is NodeState.READY
                and event.name in self._left):
            gevent.spawn(self._remove, event.name)  # a listener must not wait on a node

    def _remove(self, node: str) -> None:
        paths = sorted(self._left.pop(node, ()))
        if not paths:
            return
        gone = transfers.remove(self.registry, node, paths, False, self.timeout)
        if node in gone.errors:  # away again: next time
            self._left.setdefault(node, set()).update(paths)
            return
        for outcome in gone.results.get(node, []):
            log.info("%s: removed the script %s, left while the node was away%s", node,
                     outcome.path, "" if outcome.ok else f" ({outcome.message})")


def script_path(local_file: str) -> str:
    """Where a script lands, relative to a node's work folder: a name no other script has,
    and nothing in it that a shell, a placeholder or a path would read otherwise."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(local_file))[:60]
    return f"{SCRIPT_FOLDER}/{uuid.uuid4().hex[:12]}-{name}"


def run_script(ops: Operations, nodeset: str | None, local_file: str, args: list[str],
               timeout: float) -> GroupResult[RunResult]:
    if not isinstance(local_file, str) or not all(isinstance(a, str) for a in args):
        raise UsageError("script takes a file name and a list of arguments, all text")
    if not os.path.isfile(local_file):
        raise UsageError(f"{local_file}: not a file")
    nodes, errors = resolve_targets(ops.registry, nodeset)
    if not nodes:
        return gathered({}, errors, [])
    remote = script_path(local_file)
    pushed = transfers.push(ops.registry, fold([node.name for node in nodes]), [local_file],
                            remote, False, None, file_mode=SCRIPT_MODE)
    for name in pushed.failed:
        errors[name] = CorralError(f"script not pushed: {pushed.errors[name].message}",
                                   pushed.errors[name].code)
    if not pushed.succeeded:
        return gathered({}, errors, nodes)
    targets = fold(pushed.succeeded)
    log.info("script %s %s on %s as %s", local_file, args, targets, remote)
    try:
        ran = ops.run(targets, shlex.join([f"./{remote}", *args]), timeout, origin="script")
    finally:  # (run itself winds down when cancelled, so this runs then too)
        gone = transfers.remove(ops.registry, targets, [remote], False, ops.timeout)
        for name in gone.failed:
            log.warning("%s: could not remove the script %s: %s (removed when it is READY "
                        "again)", name, remote, gone.errors[name].message)
            ops.engine.script_leftovers.note(name, remote)
    return gathered(ran.results, {**errors, **ran.errors}, nodes)
