"""``?HOST`` and ``?RANK`` in a command's arguments or a file's path, replaced per node
(ParaMgmt's ``?HOST``): one rule for ``exec``, ``run``, ``copy``, ``pull`` and ``remove``.

``?HOST`` becomes the node's name, ``?RANK`` the rank of the process (``exec``, ``run``)
or the node's place among the targets (``copy``, ``pull``, ``remove``). A doubled question
mark keeps the word: ``??HOST`` is a literal ``?HOST``. Any other ``?`` (a shell glob) is
left alone.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\?(\??)(HOST|RANK)")


def expand(text: str, host: str, rank: int) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):  # ??HOST: the word itself, one ? fewer
            return "?" + match.group(2)
        return host if match.group(2) == "HOST" else str(rank)

    return _PLACEHOLDER.sub(replace, text)


def has_placeholder(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None
