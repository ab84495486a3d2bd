"""The client's state folder and the stable node id kept in it."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from common.statefile import load_state_file, write_state_file

log = logging.getLogger("corral.client")


def default_state_dir(name: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "corral" / name


def load_node_id(state_dir: Path) -> str:
    """The id this client registers under; the same across restarts of this state folder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "node-id"
    existing = load_state_file(path, 4096, _text, log, "this client takes a new node id")
    if existing and len(existing) == 32 and all(ch in "0123456789abcdef" for ch in existing):
        return existing
    node_id = uuid.uuid4().hex
    write_state_file(path, (node_id + "\n").encode(), mode=0o644)
    return node_id


def _text(raw: bytes) -> str:
    return raw.decode().strip()
