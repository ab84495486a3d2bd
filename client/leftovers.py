"""Scripts that the master's ``script`` pushed to this node's work folder and could not
remove because the node was away when their job ended (its client stopped, or cut off).
The master removes them when the node is READY again; a master restarted meanwhile has
forgotten them, so the client sweeps them itself when it starts, before it takes any new
script. A script still running then (a process the client finds again) keeps running:
its shell holds the file open."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from common.jobs import SCRIPT_FOLDER

_SCRIPT_NAME = re.compile(r"[0-9a-f]{12}-[A-Za-z0-9._-]{0,60}")  # master.scripts.script_path


def sweep_scripts(workdir: Path) -> list[str]:
    """Remove the scripts left in ``workdir``; the names removed."""
    folder = workdir / SCRIPT_FOLDER
    try:
        # Folders only, never a symbolic link to one: nothing outside is ever removed.
        if not all(stat.S_ISDIR(os.lstat(part).st_mode) for part in (folder.parent, folder)):
            return []
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        if _SCRIPT_NAME.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)
