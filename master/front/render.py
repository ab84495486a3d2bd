"""Turn API results into the tables the console prints (tabulate: never wraps, greps well)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from common.procs import ProcInfo, signal_name
from common.states import ProcState
from common.text import printable, printable_bytes
from master.events import short_command
from master.front.results import (
    STATUS_NOT_STARTED,
    GroupResult,
    JobView,
    NodeView,
    Progress,
    RemoveOutcome,
    RunResult,
    SignalOutcome,
    TransferResult,
    UsageReport,
    WaitResult,
    natural_key,
)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def node_state(node: NodeView) -> str:
    if node.seen_at is None:
        return str(node.state)
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.seen_at))
    return f"{node.state} (not seen since {seen})"


def nodes_table(nodes: Sequence[NodeView]) -> str:
    headers = ["name", "id", "address", "state", "hb age s", "rtt ms", "load 1/5/15",
               "free mem", "free disk", "procs"]
    rows = [
        [
            node.name,
            node.node_id[:8],
            node.address,
            node_state(node),
            _number(node.since_heartbeat, ".1f"),
            _number(node.rtt_ms, ".2f"),
            "-" if node.load is None else "/".join(f"{v:.2f}" for v in node.load),
            human_bytes(node.mem_available),
            human_bytes(node.disk_free),
            "-" if node.processes is None else str(node.processes),
        ]
        for node in nodes
    ]
    return _table(rows, headers)


# --- processes -------------------------------------------------------------------------------

GREEN, YELLOW, RED, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def ref(node: str, info: ProcInfo) -> str:
    return f"{node}:{info.pid}" if info.pid else f"{node}:-"


def cpu_seconds(info: ProcInfo) -> float | None:
    if info.rusage is not None:
        return info.rusage["ru_utime"] + info.rusage["ru_stime"]
    return info.cpu_time


def _table(rows: Sequence[Sequence[Any]], headers: list[str]) -> str:
    # Imported when a table is drawn: it costs the corral CLI a third of its start-up, and
    # ``run`` draws none.
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A report and, apart from it, its errors (one line each): the console prints the
    report on stdout and the errors on stderr, so a redirected report holds only data."""

    text: str
    errors: list[str]


def failure_lines(group: GroupResult[Any]) -> list[str]:
    return [f"{name}: error: {group.errors[name].message}" for name in group.failed]


def exec_table(group: GroupResult[list[ProcInfo]]) -> Rendered:
    rows = []
    errors = []
    for name in group.succeeded:
        for info in group.results[name]:
            if info.proc_state is ProcState.SPAWN_FAILED:
                errors.append(f"{name}: {short_command(info.argv)}: error: "
                              f"{printable(info.error or '')}")
            else:
                rows.append([name, ref(name, info), short_command(info.argv),
                             printable(info.log)])
    rows.sort(key=lambda row: natural_key(row[0]))
    table = _table(rows, ["node", "ref", "program", "log file"])
    jobs = sorted({info.job for infos in group.results.values() for info in infos if info.job})
    for job in jobs:
        count = sum(info.job == job for infos in group.results.values() for info in infos)
        table += f"\njob {job}: {count} process{'es' if count != 1 else ''}"
    return Rendered(table, errors + failure_lines(group))


def process_table(group: GroupResult[list[ProcInfo]], now: float) -> Rendered:
    rows: list[list[Any]] = []
    for name in group.succeeded:
        for info in group.results[name]:
            ran = (info.ended or now) - info.started
            rows.append([
                ref(name, info), short_command(info.argv), info.describe(), clock(info.started),
                duration(ran), duration(cpu_seconds(info)),
                human_bytes(info.rss) if info.rss is not None else "-",
                f"{info.job}.{info.rank}" if info.job else "-",
            ])
    table = _table(rows, ["ref", "command", "state", "started", "run time", "cpu time", "rss",
                          "job"])
    return Rendered(table, failure_lines(group))


def signal_table(outcomes: list[SignalOutcome], signame: str) -> Rendered:
    return outcome_table(outcomes, lambda outcome: _signal_result(outcome, signame))


def outcome_table(outcomes: list[SignalOutcome], done: Callable[[SignalOutcome], str]
                  ) -> Rendered:
    """A row per ref saying what was ``done``; an error line for each where nothing was."""
    rows = [[o.ref, done(o)] for o in outcomes if o.ok]
    errors = [f"{o.ref}: error: {o.message}" for o in outcomes if not o.ok]
    return Rendered(_table(rows, ["ref", "result"]), errors)


def forgotten_counts(group: GroupResult[list[SignalOutcome]]) -> Rendered:
    rows = [[name, f"{sum(o.ok for o in group.results[name]):,}"] for name in group.succeeded]
    return Rendered(_table(rows, ["node", "ended processes forgotten"]), failure_lines(group))


def _signal_result(outcome: SignalOutcome, signame: str) -> str:
    text = outcome.message or f"sent {signame}"
    left = outcome.still_running
    if left:
        text += (f"; {left} process{'es' if left > 1 else ''} of its group still "
                 f"run{'' if left > 1 else 's'}")
        if signame != "SIGKILL":
            text += f" (sKill to end {'them' if left > 1 else 'it'})"
    return text


# Linux's execve credits the peak of the address space it replaces to the new program.
MAXRSS_NOTE = ("note: max rss includes the client's memory that exec replaced (with --spawn "
               "posix its peak), so even `sh -c true` shows about the client's size; "
               "RUSAGE_CHILDREN max rss is the largest child's, not a sum (docs/concepts.md)")
RUSAGE_HEADERS = ["user s", "sys s", "max rss", "minflt", "majflt", "nvcsw", "nivcsw"]


def _usage_cells(usage: dict[str, float]) -> list[str]:
    return [f"{usage['ru_utime']:.3f}", f"{usage['ru_stime']:.3f}",
            human_bytes(int(usage["ru_maxrss"]) * 1024), *(
                str(int(usage[key])) for key in ("ru_minflt", "ru_majflt", "ru_nvcsw",
                                                 "ru_nivcsw"))]


def rusage_tables(group: GroupResult[UsageReport]) -> Rendered:
    totals = [[name, *_usage_cells(group.results[name].children)] for name in group.succeeded]
    per_process = []
    for name in group.succeeded:
        for info in group.results[name].processes:
            if info.rusage is not None:
                cells = _usage_cells(info.rusage)
            else:  # still running: psutil's view
                cells = ["-", "-", human_bytes(info.rss), "-", "-", "-", "-"]
                if info.cpu_time is not None:
                    cells[0] = f"{info.cpu_time:.3f} (u+s)"
            per_process.append([ref(name, info), short_command(info.argv, 30), info.describe(),
                                *cells])
    parts = ["getrusage(RUSAGE_CHILDREN) per node:", _table(totals, ["node", *RUSAGE_HEADERS])]
    if per_process:
        parts += ["", "per process (wait4 rusage once ended; psutil while running):",
                  _table(per_process, ["ref", "command", "state", *RUSAGE_HEADERS])]
    parts += ["", MAXRSS_NOTE]
    return Rendered("\n".join(parts), failure_lines(group))


def wait_table(results: list[WaitResult], status: int | None = None) -> Rendered:
    """A row per process; with a job's ``status``, its rank and the job's status line."""
    errors = [f"{r.ref}: error: {r.error}" for r in results if r.error]
    if status is None:
        rows = [[r.ref, r.info.describe()] for r in results if r.info is not None]
        return Rendered(_table(rows, ["ref", "state"]), errors)
    rows = [["-" if r.rank is None else str(r.rank), r.ref,
             r.info.describe() if r.info is not None else "lost" if r.error and
             r.error.startswith("lost") else "never started"
             if r.status == STATUS_NOT_STARTED else "unknown", str(r.status)]
            for r in results]
    return Rendered(_table(rows, ["rank", "ref", "state", "status"]) + f"\nstatus {status}",
                    errors)


def environment_lines(entries: dict[str, str]) -> Rendered:
    return Rendered("\n".join(f"{name}={printable(value)}"
                              for name, value in entries.items()), [])


def jobs_table(views: list[JobView]) -> Rendered:
    from common.nodeset import fold  # ClusterShell: slow to import, needed only here

    rows = [[view.job, view.origin, short_command([view.command]), fold(view.nodes),
             str(view.size), str(view.running), str(view.ended), str(view.lost),
             "-" if view.worst is None else str(view.worst), clock(view.created)]
            for view in views]
    return Rendered(_table(rows, ["job", "by", "command", "nodes", "procs", "running",
                                  "ended", "lost", "worst", "started"]), [])


def run_report(group: GroupResult[RunResult], color: bool) -> Rendered:
    def paint(text: str, shade: str) -> str:
        return f"{shade}{text}{RESET}" if color else text

    parts = []
    for name in group.succeeded:
        result = group.results[name]
        if result.cancelled:
            status = "cancelled"
        elif result.timed_out:
            status = f"timed out after {result.duration:.1f} s"
        elif result.signal is not None:
            status = f"killed {signal_name(result.signal)}"
        else:
            status = f"exit {result.exit_code}"
        shade = RED if not result.ok else YELLOW if result.stderr else GREEN
        parts.append(paint(f"[{name}] {status}", shade))
        if result.stdout:
            parts.append(printable_bytes(result.stdout).rstrip("\n"))
        if result.stderr:
            parts.extend(paint(f"stderr: {line}", shade) for line in
                         printable_bytes(result.stderr).rstrip("\n").split("\n"))
        if result.dropped:
            parts.append(f"({result.dropped} more bytes of output dropped)")
    failed = [n for n in group.order if n in group.errors or not group.results[n].ok]
    summary = summary_line(len(group.order) - len(failed), len(failed))
    if failed:
        from common.nodeset import fold  # ClusterShell: slow to import, needed only here

        summary += f"; failed: {fold(failed)}"
    parts.append(summary)
    errors = [paint(f"[{name}] error: {group.errors[name].message}", RED)
              for name in group.failed]
    return Rendered("\n".join(parts), errors)


def transfer_report(group: GroupResult[TransferResult]) -> Rendered:
    rows = []
    for name in group.succeeded:
        result = group.results[name]
        rows.append([name, str(result.files), human_bytes(result.bytes),
                     duration(result.seconds), "ok"])
    table = _table(rows, ["node", "files", "bytes", "time", "result"])
    summary = summary_line(len(group.succeeded), len(group.failed))
    notes = "".join(line + "\n" for line in _transfer_notes(group))
    return Rendered(table + "\n" + notes + summary, failure_lines(group))


def _transfer_notes(group: GroupResult[TransferResult]) -> list[str]:
    """One line per note (a dangling link copied, a special file skipped), naming the
    nodes it concerns once, not once per node."""
    nodes_by_note: dict[str, list[str]] = {}
    for name in group.succeeded:
        for note in group.results[name].notes:
            nodes_by_note.setdefault(note, []).append(name)
    if not nodes_by_note:
        return []
    from common.nodeset import fold  # ClusterShell: slow to import, needed only here

    return [f"note ({fold(names)}): {printable(note)}" for note, names in nodes_by_note.items()]


def remove_report(group: GroupResult[list[RemoveOutcome]]) -> Rendered:
    rows = [[name, printable(o.path), "removed"]
            for name in group.succeeded for o in group.results[name] if o.ok]
    errors = [f"{name}: {printable(o.path)}: error: {o.message}"
              for name in group.succeeded for o in group.results[name] if not o.ok]
    failed = [n for n in group.order
              if n in group.errors or not all(o.ok for o in group.results[n])]
    return Rendered(_table(rows, ["node", "path", "result"]) + "\n"
                    + summary_line(len(group.order) - len(failed), len(failed)),
                    errors + failure_lines(group))


def progress_line(progress: Progress) -> str:
    rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
    text = human_bytes(progress.done)
    if progress.total:
        text += f" of {human_bytes(progress.total)}"
    text += f"  {human_bytes(int(rate))}/s"
    if progress.total and rate > 0:
        text += f"  {duration((progress.total - progress.done) / rate)} left"
    if progress.slowest:
        text += f"  (slowest: {printable(progress.slowest)})"
    return text


def summary_line(succeeded: int, failed: int) -> str:
    return f"{succeeded} succeeded, {failed} failed, {succeeded + failed} total"
