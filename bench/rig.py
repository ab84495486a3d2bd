"""What the benchmarks share: real client processes started against a master, and the
token they use. Imported as ``bench.rig`` (each benchmark puts the project root on
``sys.path``)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
# bench/report.py points this elsewhere when asked to
RESULTS = Path(os.environ.get("CORRAL_BENCH_RESULTS", ROOT / "bench" / "results"))


def goal(what: str, value: float, target: float, unit: str = "x",
         higher_is_better: bool = False) -> dict[str, Any]:
    """One figure against its goal, for the table of ratios and goals in the report."""
    met = value >= target if higher_is_better else value <= target
    return {"what": what, "value": value, "goal": target, "unit": unit,
            "higher_is_better": higher_is_better, "met": met}


def record(bench: str, figures: dict[str, Any],
           goals: list[dict[str, Any]] | None = None) -> None:
    """Keep a benchmark's figures for ``bench/report.py`` (bench/results/BENCH.json), with
    its figures that have a goal (see ``goal``) under ``goals``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{bench}.json").write_text(
        json.dumps({**figures, "goals": goals or []}, indent=1) + "\n")


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


SETTLE = 0.5  # seconds of quiet after the page cache is written back, before each round


def settle() -> None:
    """Write dirty pages back and pause: a round must not pay for the writes of the one
    before it (the first copy_throughput figures were 31 %, 106 % and 77 % of their
    baseline in three runs, the baseline always first and always in the other's wake)."""
    os.sync()
    time.sleep(SETTLE)


def alternate(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measure once per round, settled before each, the order reversed every other
    round so that neither always goes first; every figure kept for medians and spread."""
    figures: dict[str, list[float]] = {name: [] for name in measures}
    order = list(measures)
    for round_number in range(rounds):
        for name in order if round_number % 2 == 0 else reversed(order):
            settle()
            figures[name].append(measures[name]())
    return figures


def spread(values: list[float], unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    """``median (runs lowest-highest)``, as every benchmark reports a repeated figure."""
    low, mid, high = (f"{v * scale:,.{digits}f}" for v in
                      (min(values), statistics.median(values), max(values)))
    return f"{mid}{unit} (runs {low}-{high}{unit})" if len(values) > 1 else f"{mid}{unit}"


def ratio_line(what: str, ratios: list[float], goal: str) -> str:
    """One ratio against its baseline, with its spread over the rounds and its goal."""
    return f"{what}: {spread(ratios, ' %', 100)}; goal {goal}"
