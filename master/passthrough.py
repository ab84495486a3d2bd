"""When an unknown console word may run as a shell command on every node, and when not.

A word that is not a command runs through ``/bin/sh`` on every READY node, so a typo of a
console command (``lsit``) would run on the whole fleet. A word within a small edit
distance of a command is taken for such a typo and refused with a suggestion; the
passthrough can also be turned off altogether, leaving ``run``.
"""

from __future__ import annotations

from collections.abc import Iterable

SHORT_WORD = 4  # up to this length one edit makes a typo; longer words may have two

_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


def on_off(text: str) -> bool:
    """The value of ``set passthrough on|off`` (true/false and yes/no work too)."""
    word = str(text).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be on or off")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance where swapping two neighbours also counts as one edit
    (``lsit`` is one edit from ``list``)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            best = min(previous[j] + 1, current[j - 1] + 1,
                       previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                best = min(best, previous2[j - 2] + 1)
            current.append(best)
        previous2, previous = previous, current
    return previous[-1]


def likely_typo(word: str, commands: Iterable[str]) -> str | None:
    """The command ``word`` is most likely a mistyping of, or None. Case is ignored, so
    ``skill`` is taken for ``sKill``."""
    limit = 1 if len(word) <= SHORT_WORD else 2
    folded = word.lower()
    scored = sorted((edit_distance(folded, command.lower()), command) for command in commands)
    if scored and scored[0][0] <= limit:
        return scored[0][1]
    return None


def refusal(word: str, commands: Iterable[str], enabled: bool) -> str | None:
    """Why ``word`` must not be sent to the nodes, or None when it may."""
    suggestion = likely_typo(word, commands)
    hint = f"`run -- {word} ...` sends it to the nodes"
    if suggestion is not None:
        return f"unknown command '{word}' (did you mean {suggestion}?); {hint}"
    if not enabled:
        return f"unknown command '{word}' (passthrough is off); {hint}"
    return None
