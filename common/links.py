"""The one rule for symbolic links inside a copied or pulled folder, used by both ends of
both directions.

Without ``-L`` a link is recreated as a link when its target, read as text from where the
link sits, stays inside the copied folder (a relative target that does not climb out with
``..``); any other link (absolute, or climbing out) is refused with a named error, since on
the other machine it would point at something that was never copied. With ``-L`` links are
followed, as ``cp -L`` does, and a link that points at nothing cannot be. A link whose
target stays inside but does not exist (dangling) is recreated and reported.
"""

from __future__ import annotations

import posixpath

from common.errors import CorralError, ErrorCode


def relpath_problem(relpath: str) -> str | None:
    """What is wrong with a path inside a transfer (None: nothing): it must be relative,
    plain (no ``.`` or ``..`` parts, no empty part) and free of NUL bytes."""
    parts = relpath.split("/")
    if not relpath or "\0" in relpath or relpath.startswith("/"):
        return f"bad path {relpath!r}"
    if any(part in ("", ".", "..") for part in parts):
        return f"path {relpath!r} is not plain"
    return None


def stays_inside(relpath: str, target: str) -> bool:
    """True when the link at ``relpath`` (whose first part is the copied folder's name)
    with target ``target`` points inside that folder, judged on the text alone."""
    if not target or "\0" in target or target.startswith("/"):
        return False
    top = relpath.split("/", 1)[0]
    landing = posixpath.normpath(posixpath.join(posixpath.dirname(relpath), target))
    return landing == top or landing.startswith(top + "/")


def check_link(relpath: str, target: str) -> None:
    """Refuse a link the rule does not let through, naming it and where it points."""
    if not stays_inside(relpath, target):
        raise CorralError(f"{relpath}: link leads outside the copied folder (-> {target}); "
                          "use -L to copy what it points to", ErrorCode.LINK_OUTSIDE)


def dangling(relpath: str, target: str) -> CorralError:
    return CorralError(f"{relpath}: dangling link (-> {target}), nothing to follow",
                       ErrorCode.DANGLING_LINK)


def dangling_note(relpath: str, target: str) -> str:
    return f"{relpath}: dangling link (-> {target}), copied as a link"
