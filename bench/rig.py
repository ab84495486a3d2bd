"""What the benchmarks share: real client processes started against a master, and the
token they use. Imported as ``bench.rig`` (each benchmark puts the project root on
``sys.path``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
# bench/report.py points this elsewhere when asked to
RESULTS = Path(os.environ.get("CORRAL_BENCH_RESULTS", ROOT / "bench" / "results"))


def record(bench: str, figures: dict[str, Any]) -> None:
    """Keep a benchmark's figures for ``bench/report.py`` (bench/results/BENCH.json)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{bench}.json").write_text(json.dumps(figures, indent=1) + "\n")


def write_token(folder: Path) -> Path:
    token = folder / "token"
    token.write_text(TOKEN)
    return token


def start_client(folder: Path, port: int, name: str, *extra: str) -> subprocess.Popen[bytes]:
    """A real client named ``name``, its state under ``folder/name``, output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "client", "--master", f"127.0.0.1:{port}", "--name", name,
         "--token-file", str(folder / "token"), "--state-dir", str(folder / name), *extra],
        cwd=ROOT, stderr=subprocess.DEVNULL)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()
