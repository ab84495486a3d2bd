"""docs/concepts.md points students at code: every file and function it names must exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.harness import ROOT

DOCS = [ROOT / "docs" / "concepts.md", ROOT / "docs" / "processes.md", ROOT / "docs" / "lab.md"]
# `client/spawn.py`, `client/spawn.py:spawn_fork`, `client/reaper.py:Reaper.reap`
FILE_REF = re.compile(r"`([\w/]+\.py)(?::([\w.]+))?`")
# `os.wait4`, `common.frame_auth.session_keys`: checked when the first word is one of these
MODULE_REF = re.compile(r"`([a-z_]+(?:\.\w+)+)`")
CHECKED_MODULES = {"os", "signal", "resource", "hmac", "socket", "fcntl", "select",
                   "common", "client", "master"}


def defined_names(tree: ast.AST, dotted: str) -> bool:
    """True if ``dotted`` (``name`` or ``Class.method``) is defined in the module ``tree``."""
    scope: list[ast.stmt] = list(getattr(tree, "body", []))
    for part in dotted.split("."):
        found: ast.stmt | None = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == part:
                    found = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    found = node
        if found is None:
            return False
        scope = list(getattr(found, "body", []))
    return True


def references(doc: Path) -> list[tuple[str, str | None]]:
    return FILE_REF.findall(doc.read_text()) if doc.exists() else []


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_file_and_function_exists(doc: Path) -> None:
    if not doc.exists():
        pytest.skip(f"{doc.name} not written yet")
    missing = []
    for path, name in references(doc):
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not defined_names(ast.parse(source.read_text()), name):
            missing.append(f"{path}:{name}")
    for dotted in MODULE_REF.findall(doc.read_text()):
        if dotted.split(".")[0] in CHECKED_MODULES and not resolves(dotted):
            missing.append(dotted)
    assert not missing, f"{doc.name} names code that does not exist: {missing}"


def test_concepts_names_code_for_every_concept() -> None:
    text = (ROOT / "docs" / "concepts.md").read_text()
    assert len(references(ROOT / "docs" / "concepts.md")) >= 30
    for heading in ["fork", "exec", "dup2", "posix_spawn", "wait4", "SIGCHLD",
                    "Process groups", "rusage", "framing", "Heartbeats", "HMAC",
                    "Atomic file"]:
        assert re.search(rf"^## .*{re.escape(heading)}", text, re.M | re.I), heading


def test_the_checker_catches_a_stale_name(tmp_path: Path) -> None:
    tree = ast.parse("class Reaper:\n    def reap(self): pass\ndef spawn_fork(): pass\nX = 1\n")
    assert defined_names(tree, "Reaper.reap") and defined_names(tree, "spawn_fork")
    assert defined_names(tree, "X")
    assert not defined_names(tree, "Reaper.sow") and not defined_names(tree, "spawn_vfork")
    assert resolves("os.wait4") and not resolves("os.wait5")
    assert not resolves("client.spawn.spawn_vfork")
