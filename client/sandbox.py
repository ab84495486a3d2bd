"""Where copy, pull and remove may touch, and where processes may start: inside the work
folder, or an explicit --root.

Paths from the master are taken relative to the work folder. A path is refused when its
folder, or the entry itself if it is a symbolic link, resolves outside the root: ``..``
that climbs out, an absolute path elsewhere, a link that leads out.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import CorralError, ErrorCode


class OutsideSandbox(CorralError):
    code = ErrorCode.OUTSIDE_SANDBOX


class Sandbox:
    def __init__(self, workdir: Path, root: Path | None = None) -> None:
        self.workdir = Path(os.path.realpath(workdir))
        self.root = Path(os.path.realpath(root)) if root else self.workdir
        if not self._inside(self.workdir):
            raise ValueError(f"work folder {self.workdir} is outside the root {self.root}")

    def _inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def locate(self, path: str) -> Path:
        """The entry ``path`` names, checked; a final symlink is returned as the link."""
        if not path or "\0" in path:
            raise CorralError(f"bad path {path!r}", ErrorCode.BAD_REQUEST)
        candidate = Path(path) if os.path.isabs(path) else self.workdir / path
        if candidate.name in ("", ".", ".."):
            entry = Path(os.path.realpath(candidate))
        else:
            entry = Path(os.path.realpath(candidate.parent)) / candidate.name
        if not self._inside(entry.parent if entry != self.root else entry):
            raise OutsideSandbox(f"{path}: outside the sandbox ({self.root})")
        if entry.is_symlink() and not self._inside(Path(os.path.realpath(entry))):
            raise OutsideSandbox(f"{path}: a link that leads outside the sandbox ({self.root})")
        if not self._inside(entry):
            raise OutsideSandbox(f"{path}: outside the sandbox ({self.root})")
        return entry

    def entry(self, path: str) -> Path:
        """The entry ``path`` names, itself: its folder must be inside, but a final link
        may point anywhere (removing a link touches the link, never what it points at)."""
        if not path or "\0" in path:
            raise CorralError(f"bad path {path!r}", ErrorCode.BAD_REQUEST)
        candidate = Path(path) if os.path.isabs(path) else self.workdir / path
        if candidate.name in ("", ".", "..") or not os.path.islink(candidate):
            return self.locate(path)
        entry = Path(os.path.realpath(candidate.parent)) / candidate.name
        if not self._inside(entry.parent):
            raise OutsideSandbox(f"{path}: outside the sandbox ({self.root})")
        return entry

    def inside(self, path: Path) -> bool:
        """Whether ``path``, every link in it followed, is inside the root."""
        return self._inside(Path(os.path.realpath(path)))

    def folder(self, path: str | None) -> Path:
        """The folder a process starts in: ``path`` (the work folder when empty), fully
        resolved, inside the root, and a folder."""
        if not path:
            return self.workdir
        if "\0" in path:
            raise CorralError(f"bad path {path!r}", ErrorCode.BAD_REQUEST)
        folder = Path(os.path.realpath(self.workdir / path))
        if not self._inside(folder):
            raise OutsideSandbox(f"{path}: outside the sandbox ({self.root})")
        if not folder.is_dir():
            raise CorralError(f"no such folder: {path}", ErrorCode.NOT_FOUND)
        return folder
