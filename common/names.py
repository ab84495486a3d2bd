"""The one rule for node names, checked by the client at start and by the master when a
client registers.

A node's name becomes a folder on the master (``pull`` writes under ``LOCAL_DIR/NAME/``),
a word in tables and a part of ``NODE:PID`` references, so it must be a plain file name:
no separator, no ``..``, nothing a terminal would interpret.
"""

from __future__ import annotations

import re

MAX_NAME = 64
NAME_RULE = (f"a node name is 1 to {MAX_NAME} characters of letters, digits, '-', '_' and "
             "'.', and not '.' or '..'")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid node name (None when it is)."""
    if not name:
        return f"empty node name: {NAME_RULE}"
    if len(name) > MAX_NAME or not _NAME.fullmatch(name) or name in (".", ".."):
        return f"bad node name {printable_name(name)}: {NAME_RULE}"
    return None


def printable_name(name: str) -> str:
    shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "..."
    return ascii(shown)
