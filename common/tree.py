"""What a copy or a pull sends: a file, or a folder and everything in it, listed in full
before the first byte goes, so that a link the rule refuses (``common.links``) stops the
transfer before anything is written anywhere.

Used by the master for ``copy`` and by the client for ``pull``: one walk, one link rule.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path

from common.errors import CorralError, ErrorCode
from common.links import check_link, dangling, dangling_note

PERMISSION_BITS = 0o777


@dataclasses.dataclass(frozen=True)
class Entry:
    path: Path  # where to read it; a followed link's own path
    relpath: str  # from the source's parent: the first part is the source's name
    kind: str  # "file", "dir" or "link"
    mode: int
    size: int
    target: str = ""  # a link's text


NOTE_LIMIT = 100  # notes kept per transfer; the rest are counted (one reply frame each way)


@dataclasses.dataclass
class Tree:
    entries: list[Entry] = dataclasses.field(default_factory=list)
    _notes: list[str] = dataclasses.field(default_factory=list)  # reported, not refused
    _more: int = 0

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    def note(self, text: str) -> None:
        if len(self._notes) < NOTE_LIMIT:
            self._notes.append(text)
        else:
            self._more += 1

    @property
    def notes(self) -> list[str]:
        more = [f"... and {self._more} more like these"] if self._more else []
        return self._notes + more


Check = Callable[[Path, str], None]  # may refuse a link to follow (a sandbox); raises


def scan(top: Path, name: str, follow: bool, check_followed: Check | None = None,
         tree: Tree | None = None) -> Tree:
    """List ``top`` (named ``name`` in the transfer) and, if it is a folder, everything in
    it. ``top`` itself is always followed when it is a link, as ``cp`` follows the links
    named on its command line; inside a folder, links follow the rule in ``common.links``.
    ``check_followed(path, relpath)`` is asked before any link is followed."""
    tree = tree if tree is not None else Tree()
    try:
        info = top.stat()
    except FileNotFoundError:
        if top.is_symlink():
            raise dangling(name, os.readlink(top)) from None
        raise CorralError(f"{name}: no such file or folder", ErrorCode.NOT_FOUND) from None
    except OSError as exc:
        raise _unreadable(name, exc) from None
    if top.is_symlink() and check_followed is not None:
        check_followed(top, name)
    _add(tree, top, name, info, follow, check_followed, set())
    return tree


def _add(tree: Tree, path: Path, relpath: str, info: os.stat_result, follow: bool,
         check_followed: Check | None, ancestors: set[tuple[int, int]]) -> None:
    mode = stat.S_IMODE(info.st_mode) & PERMISSION_BITS
    if stat.S_ISREG(info.st_mode):
        tree.entries.append(Entry(path, relpath, "file", mode, info.st_size))
    elif stat.S_ISDIR(info.st_mode):
        here = (info.st_dev, info.st_ino)
        if here in ancestors:
            raise CorralError(f"{relpath}: a link loop (it leads back to a folder above it)",
                              ErrorCode.BAD_REQUEST)
        tree.entries.append(Entry(path, relpath, "dir", mode, 0))
        for child in _listing(path, relpath):
            _add_child(tree, child, f"{relpath}/{child.name}", follow, check_followed,
                       ancestors | {here})
    else:
        tree.note(f"{relpath}: not a file, folder or link; skipped")


def _add_child(tree: Tree, child: os.DirEntry[str], relpath: str, follow: bool,
               check_followed: Check | None, ancestors: set[tuple[int, int]]) -> None:
    path = Path(child.path)
    try:
        if not child.is_symlink():
            _add(tree, path, relpath, child.stat(follow_symlinks=False), follow,
                 check_followed, ancestors)
            return
        target = os.readlink(path)
        if not follow:
            check_link(relpath, target)
            if not path.exists():
                tree.note(dangling_note(relpath, target))
            tree.entries.append(Entry(path, relpath, "link", 0o777, 0, target))
            return
        if check_followed is not None:
            check_followed(path, relpath)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise dangling(relpath, target) from None
        _add(tree, path, relpath, info, follow, check_followed, ancestors)
    except OSError as exc:
        raise _unreadable(relpath, exc) from None


def _listing(path: Path, relpath: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        raise _unreadable(relpath, exc) from None


def _unreadable(relpath: str, exc: OSError) -> CorralError:
    return CorralError(f"{relpath}: cannot read: {exc.strerror or exc}", ErrorCode.IO)
