"""Node-set expressions in ClusterShell's syntax (``n[1-4,7]``, ``web*``) over known names."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from ClusterShell.NodeSet import NodeSet, NodeSetParseError

from common.errors import UsageError


def select(expression: str, names: Iterable[str]) -> list[str]:
    """Names among ``names`` that ``expression`` picks, in the order given.

    Ranges and lists use ClusterShell; a part with ``*`` or ``?`` is a glob over the known
    names. A name that matches no node is an error naming it, so a typo never silently
    shrinks the target set.
    """
    known = list(names)
    if expression in known:
        return [expression]  # the common case, without parsing
    wanted: set[str] = set()
    for part in _split_top_level(expression):
        if any(ch in part for ch in "*?"):
            matched = fnmatch.filter(known, part)
            if not matched:
                raise UsageError(f"no node matches {part!r}")
            wanted.update(matched)
            continue
        try:
            expanded = list(NodeSet(part))
        except NodeSetParseError as exc:
            raise UsageError(f"bad node set {part!r}: {exc}") from None
        unknown = [name for name in expanded if name not in known]
        if unknown:
            raise UsageError(f"unknown node{'s' if len(unknown) > 1 else ''}: {fold(unknown)}")
        wanted.update(expanded)
    if not wanted:  # -w "$(corral select ...)" once select has failed: run nowhere, loudly
        raise UsageError(f"empty node set {expression!r}: name at least one node")
    return [name for name in known if name in wanted]


def fold(names: Iterable[str]) -> str:
    """The shortest node-set text for ``names`` (``n[1-3]``)."""
    return str(NodeSet.fromlist(list(names)))


def _split_top_level(expression: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in expression.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]
