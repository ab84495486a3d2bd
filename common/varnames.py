"""The rules for shared variables and barriers: which names, how big a value, how many.

Checked by the master for every request, whoever sends it; the CLI's own check only says
the same thing sooner.
"""

from __future__ import annotations

import math
import re

MAX_NAME = 128
MAX_VALUE = 64 * 1024  # bytes of one value, as UTF-8
MAX_VARIABLES = 10_000
MAX_TOTAL_BYTES = 16 * 1024 * 1024  # names and values together: the store is rewritten whole
NAME_RULE = (f"a name is 1 to {MAX_NAME} characters: letters, digits and '_', then also "
             "'.', '-', ':' and '/'")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")


def var_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a variable or a barrier (None when it can)."""
    if not isinstance(name, str):
        return f"a name must be text, not {type(name).__name__}"
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        return f"bad name {shown!a}: {NAME_RULE}"
    return None


def value_problem(value: str) -> str | None:
    if not isinstance(value, str):
        return f"a value must be text, not {type(value).__name__}"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "the value is not valid UTF-8 text"
    if size > MAX_VALUE:
        return f"the value is {size:,} bytes; at most {MAX_VALUE:,} (64 KiB) are allowed"
    return None


def timeout_problem(timeout: object) -> str | None:
    """A wait's timeout: None (wait forever) or a finite number of seconds; nan would never
    time out."""
    if timeout is None:
        return None
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not math.isfinite(timeout) or timeout < 0):
        return "--timeout must be a finite number of seconds, not negative"
    return None
