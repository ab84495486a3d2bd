"""``make bench``: run every benchmark, show its output as it comes, and write
bench/results/REPORT.md: the machine, every figure that has a goal beside its goal (ratios
to baselines measured in the same run), every benchmark's figures as it printed them, and
charts (PNG, with matplotlib from the optional ``bench`` extra) of fan-out time against node
count beside the local spawn floor, heartbeat CPU against node count beside the bare
server, and copy throughput beside a raw socket.

    .venv/bin/python bench/report.py                  # every benchmark, then the report
    .venv/bin/python bench/report.py --quick          # small sizes: a minute, for trying
    .venv/bin/python bench/report.py --only fanout    # some benchmarks only
    .venv/bin/python bench/report.py --report-only    # the report from the last results
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# name -> options of a full run: each benchmark's defaults (the figures the README quotes),
# with more points where a chart draws a line through them
FULL: dict[str, list[str]] = {
    "heartbeat_scale": ["--counts", "1000", "5000", "10000"],  # 10,000: the goal scale
    "fanout": ["--nodes", "1", "10", "50", "100"],
}
NEEDS_ROOT = {"shaped_copy"}
# name -> options for --quick
BENCHMARKS: dict[str, list[str]] = {
    "heartbeat_scale": ["--counts", "100", "500", "--window", "3"],
    "spawn_rate": ["--count", "300", "--rounds", "1", "--full-table", "1000"],
    "fanout": ["--nodes", "1", "5", "20", "--repeat", "5"],
    "copy_throughput": ["--size-mib", "64", "--fanout", "2"],
    "small_files": ["--files", "200", "--rounds", "1"],
    "shaped_copy": ["--size-mib", "10", "--nodes", "2"],  # needs root (namespaces, tc)
    "frame_auth": ["--size-mib", "64", "--rounds", "1", "--seconds", "0.5"],
    "reliability": ["--clients", "5", "--simulated", "100"],
    "log_follow": ["--mb", "20", "--rounds", "1"],
    "cli": ["--nodes", "10", "--repeat", "3", "--concurrent", "5"],
    "job_wait": ["--repeat", "5"],
    "dashboard": ["--nodes", "200", "--window", "3", "--rounds", "1"],
    "sharing": ["--nodes", "5", "--processes", "20", "--rounds", "3", "--cas-processes",
                "10", "--cas-ops", "200"],
    "client_idle": ["--clients", "2", "--window", "5"],
}


def run_benchmark(name: str, options: list[str], results: Path) -> int:
    """Run one benchmark, echoing its output, and keep the output in results/NAME.txt."""
    print(f"== {name} {' '.join(options)}", flush=True)
    lines = []
    env = {**os.environ, "CORRAL_BENCH_RESULTS": str(results)}
    # A group of its own, so that clients a failed benchmark left behind (which would also
    # hold its output pipe open) end with it.
    with subprocess.Popen([sys.executable, str(ROOT / "bench" / f"{name}.py"), *options],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) as bench:
        assert bench.stdout is not None
        stream = bench.stdout

        def echo() -> None:
            for line in stream:
                print(line, end="", flush=True)
                lines.append(line)

        reader = threading.Thread(target=echo)
        reader.start()
        bench.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        reader.join()
    if bench.returncode != 0:
        lines.append(f"(exited {bench.returncode})\n")
    (results / f"{name}.txt").write_text("".join(lines))
    return bench.returncode


def loads(results: Path) -> str:
    """The load averages at the start and the end of the last run (other work on the
    machine slows every figure)."""
    path = results / "load.json"
    if not path.exists():
        return "not recorded"
    seen = json.loads(path.read_text())
    return "; ".join(f"{when} {'/'.join(f'{v:.1f}' for v in seen[when])}"
                     for when in ("start", "end") if when in seen)


def note_load(results: Path, when: str) -> None:
    path = results / "load.json"
    seen = json.loads(path.read_text()) if path.exists() and when != "start" else {}
    seen[when] = list(os.getloadavg())
    path.write_text(json.dumps(seen) + "\n")


def machine(results: Path) -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        memory = "unknown"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return [f"- CPU: {model}, {os.cpu_count()} cores", f"- memory: {memory}",
            f"- system: {platform.system()} {platform.release()} ({platform.machine()})",
            f"- Python {platform.python_version()}; corral at {commit}",
            f"- load average (1/5/15 min) during the run: {loads(results)} (other work on "
            "the machine slows every figure)",
            f"- report written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"]


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fanout_chart(pyplot: Any, figures: dict[str, Any], path: Path) -> str:
    figure, axes = pyplot.subplots(figsize=(6.4, 4))
    axes.plot(figures["nodes"], figures["median_ms"], "o-", label="corral `run true` (median)")
    axes.plot(figures["nodes"], figures["p90_ms"], "o:", color="C0", alpha=0.5,
              label="corral, 90th percentile")
    axes.plot(figures["nodes"], figures["local_floor_ms"], "s--", color="C2",
              label="local floor: as many sh -c true spawned and reaped here")
    axes.set(xscale="log", yscale="log", xlabel="nodes", ylabel="ms until every exit code",
             title="Fan-out: run true on N nodes")
    axes.legend(fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    return _save(pyplot, figure, path)


def heartbeat_chart(pyplot: Any, figures: dict[str, Any], path: Path) -> str:
    figure, axes = pyplot.subplots(figsize=(6.4, 4))
    axes.plot(figures["clients"], figures["master_cpu_percent"], "o-", label="corral master")
    axes.plot(figures["clients"], figures["bare_cpu_percent"], "s--", color="C2",
              label="bare gevent server (reads frames only)")
    axes.set(xlabel="simulated clients heartbeating at 1 Hz", ylabel="% of one core",
             title="Heartbeat cost on the master")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize="small")
    axes.grid(True, alpha=0.3)
    return _save(pyplot, figure, path)


def copy_chart(pyplot: Any, figures: dict[str, Any], path: Path) -> str:
    size = figures["size_mib"]
    labels = ["raw socket\n+ write + fsync", "corral copy\nto 1 node",
              f"corral copy\nto {figures['nodes']} nodes (total)"]
    rates = [size / figures["raw_socket_s"], size / figures["one_node_s"],
             size * figures["nodes"] / figures["all_nodes_s"]]
    figure, axes = pyplot.subplots(figsize=(6.4, 4))
    bars = axes.bar(labels, rates, color=["C2", "C0", "C1"])
    axes.bar_label(bars, fmt="%.0f MiB/s")
    axes.set(ylabel="MiB/s", title=f"Copy of {size} MiB on this machine")
    return _save(pyplot, figure, path)


def _save(pyplot: Any, figure: Any, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path.name


CHARTS = [("fanout", fanout_chart, "fanout.png", "Fan-out time against node count"),
          ("heartbeat_scale", heartbeat_chart, "heartbeat.png",
           "Heartbeat CPU against node count"),
          ("copy_throughput", copy_chart, "copy.png", "Copy throughput")]


def charts(results: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        return ["Charts need matplotlib: `.venv/bin/pip install -e '.[bench]'` (`make bench` "
                "does it), then `.venv/bin/python bench/report.py --report-only`.", ""]
    lines = []
    for name, draw, file_name, title in CHARTS:
        figures = load(results, name)
        if figures is None:
            lines += [f"{title}: no figures (bench/{name}.py did not run).", ""]
            continue
        lines += [f"### {title}", "", f"![{title}]({draw(pyplot, figures, results / file_name)})",
                  ""]
    return lines


def ssh_comparison() -> list[str]:
    here = f"{os.environ.get('PATH', os.defpath)}{os.pathsep}{Path(sys.executable).parent}"
    tools = [tool for tool in ("pdsh", "clush") if shutil.which(tool, path=here)]
    reachable = shutil.which("ssh") is not None and subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "localhost", "true"],
        capture_output=True).returncode == 0
    if tools and reachable:
        return [f"ssh fan-out: {', '.join(tools)} and a local sshd are here; their comparison "
                "is not measured yet (bench/report.py)."]
    missing = "no local sshd accepting a key" if tools else "neither pdsh nor clush"
    return [f"ssh fan-out (pdsh or clush beside corral): not measured, {missing} here."]


def goals_table(results: Path) -> list[str]:
    """Every figure a benchmark recorded with its goal, in one table."""
    rows = []
    for name in BENCHMARKS:
        figures = load(results, name)
        for entry in (figures or {}).get("goals", []):
            sign = ">=" if entry["higher_is_better"] else "<="
            rows.append(f"| {entry['what']} | {entry['value']:,.2f}{entry['unit']} | "
                        f"{sign} {entry['goal']:,g}{entry['unit']} | "
                        f"{'met' if entry['met'] else '**not met**'} | `{name}` |")
    if not rows:
        return ["No figure with a goal was recorded.", ""]
    return ["| figure | measured | goal | | bench |", "|---|---|---|---|---|", *rows, ""]


def write_report(results: Path) -> Path:
    lines = ["# corral benchmarks", "", "Written by `make bench` (bench/report.py); every "
             "figure beside the baseline measured in the same run.", "", "## Machine", "",
             *machine(results), "", "## Ratios and goals", "", *goals_table(results),
             "## Charts", "", *charts(results), *ssh_comparison(), "", "## Figures", ""]
    for name in BENCHMARKS:
        output = results / f"{name}.txt"
        if output.exists():
            lines += [f"### bench/{name}.py", "", "```", output.read_text().rstrip(), "```", ""]
        else:
            lines += [f"### bench/{name}.py", "", "(not run)", ""]
    report = results / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="BENCH",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for trying")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the last results, run nothing")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.report_only:
        note_load(args.results, "start")
        for name in args.only or BENCHMARKS:
            if name in NEEDS_ROOT and os.geteuid() != 0:
                (args.results / f"{name}.txt").write_text("(needs root: not run)\n")
                continue
            options = BENCHMARKS[name] if args.quick else FULL.get(name, [])
            if run_benchmark(name, options, args.results):
                failed.append(name)
        note_load(args.results, "end")
    report = write_report(args.results)
    print("\n".join(goals_table(args.results)))
    print(f"report: {report.relative_to(ROOT) if report.is_relative_to(ROOT) else report}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
