"""The systemd units in contrib/systemd/ pass ``systemd-analyze verify`` where it exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT

UNITS = ROOT / "contrib" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    # The units run the programs from ~/.local/bin; here they are the ones in this venv.
    programs = Path(sys.executable).parent
    assert (programs / "corral-master").exists() and (programs / "corral-client").exists()
    names = {"corral-master.service": "corral-master.service",
             "corral-client@.service": "corral-client@n1.service"}
    for source, target in names.items():
        text = (UNITS / source).read_text().replace("%h/.local/bin", str(programs))
        (tmp_path / target).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify",
                           *(str(tmp_path / name) for name in names.values())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
