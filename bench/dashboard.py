"""Master CPU with the web dashboard open on a fleet of simulated nodes heartbeating at
1 Hz, beside the same master with no page open, measured in alternating windows of the
same run (the baseline).

The nodes are bench/heartbeat_scale.py's simulated clients (the client's own handshake
code, real heartbeat frames). Every one of them heartbeats every second, so the page's
feed has each node's figures to send every second: the worst case for the dashboard. The
page is a real headless Chromium (Debian's ``chromium``, driven by playwright) logged in
and showing every node; without a browser, a plain reader of the event stream stands in
(the master's work is the same: the browser's rendering costs the browser).

    .venv/bin/python bench/dashboard.py [--nodes 1000] [--window 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.heartbeat_scale import TOKEN, measure, start_sims, stop  # noqa: E402
from bench.rig import record  # noqa: E402

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
GOAL = 10.0  # percent of one core the open page may add


def start_master(tmp: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    token = tmp / "token"
    token.write_text(TOKEN)
    master = subprocess.Popen(
        [sys.executable, "-m", "master", "--no-console", "--port", "0", "--http", "0",
         "--token-file", str(token), "--log-dir", str(tmp), "--state-dir",
         str(tmp / "state")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    assert master.stderr is not None
    web = port = None
    while port is None and (line := master.stderr.readline()):
        if match := re.search(r"dashboard on http://([\d.]+):(\d+)/", line):
            web = (match.group(1), int(match.group(2)))
        if match := re.search(r"listening on [\d.]+:(\d+)", line):
            port = int(match.group(1))
    assert web is not None and port is not None, "the master did not start"
    master.port = port  # type: ignore[attr-defined]
    return master, web


def ready_nodes(web: tuple[str, int]) -> int:
    connection = http.client.HTTPConnection(*web, timeout=30)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    match = re.search(r'^corral_nodes\{state="READY"\} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


class BrowserPage:
    """The dashboard in headless Chromium, logged in, every node shown."""

    def __init__(self, chromium: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium,
                                                         args=BROWSER_ARGS)
        self._page: Any = None
        self.received = 0  # not counted: the browser reads the stream

    def open(self, web: tuple[str, int], nodes: int) -> float:
        """Seconds from submitting the token to every node's row on the page."""
        self._page = self._browser.new_page(viewport={"width": 1280, "height": 800})
        self._page.set_default_timeout(120_000)
        self._page.goto(f"http://{web[0]}:{web[1]}/")
        self._page.fill("#token", TOKEN)
        started = time.monotonic()
        self._page.click("#login-form button[type=submit]")
        self._page.locator("#nodes tbody tr").nth(nodes - 1).wait_for(state="attached")
        return time.monotonic() - started

    def cpu_seconds(self) -> float:
        """CPU time of the browser's processes so far (what rendering the page costs)."""
        total = 0.0
        for process in psutil.Process().children(recursive=True):
            try:
                if "chrom" in process.name():
                    times = process.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def close(self) -> None:
        self._page.close()

    def shut(self) -> None:
        self._browser.close()
        self._playwright.stop()


class StreamReader:
    """A plain reader of the event stream, for a machine without a browser."""

    def __init__(self) -> None:
        self._connection: http.client.HTTPConnection | None = None
        self.received = 0

    def open(self, web: tuple[str, int], nodes: int) -> float:
        started = time.monotonic()
        login = http.client.HTTPConnection(*web, timeout=30)
        login.request("POST", "/login", body=json.dumps({"token": TOKEN}),
                      headers={"Content-Type": "application/json"})
        reply = login.getresponse()
        reply.read()
        cookie = (reply.getheader("Set-Cookie") or "").split(";")[0]
        login.close()
        self._connection = http.client.HTTPConnection(*web, timeout=30)
        self._connection.request("GET", "/events", headers={"Cookie": cookie})
        stream = self._connection.getresponse()
        while b"event: snapshot" not in stream.readline():
            pass
        threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        return time.monotonic() - started

    def _drain(self, stream: Any) -> None:
        try:
            while chunk := stream.read1(65536):
                self.received += len(chunk)
        except (OSError, ValueError, AttributeError):  # closed under it
            return

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def cpu_seconds(self) -> float:
        return 0.0

    def shut(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-browser", action="store_true",
                        help="read the event stream plainly even where Chromium is installed")
    args = parser.parse_args()
    chromium = None if args.no_browser else (os.environ.get("CORRAL_CHROMIUM")
                                             or shutil.which("chromium"))
    viewer: BrowserPage | StreamReader = (BrowserPage(chromium) if chromium
                                          else StreamReader())
    kind = "headless Chromium" if chromium else "a plain event-stream reader"
    print(f"dashboard: {args.nodes} simulated nodes heartbeating at 1 Hz; master CPU % of "
          f"one core over {args.window:g} s windows, the page ({kind}) closed and open in "
          f"turn, {args.rounds} rounds ({os.cpu_count()} cores)")
    closed: list[float] = []
    opened: list[float] = []
    shown: list[float] = []
    flow: list[float] = []  # KiB/s of the event stream (the plain reader counts them)
    browser: list[float] = []  # CPU % of the browser's processes showing the page
    with tempfile.TemporaryDirectory() as tmp:
        master, web = start_master(Path(tmp))
        sims = start_sims(master.port, args.nodes, raw=False)  # type: ignore[attr-defined]
        try:
            deadline = time.monotonic() + 120
            while ready_nodes(web) < args.nodes:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {ready_nodes(web)} of {args.nodes} nodes READY")
                time.sleep(0.5)
            time.sleep(2)  # let the connection storm settle
            for _round in range(args.rounds):
                closed.append(measure(master.pid, args.window)[0])
                shown.append(viewer.open(web, args.nodes))
                time.sleep(2)  # the first snapshot is not the steady state
                before, browser_before = viewer.received, viewer.cpu_seconds()
                opened.append(measure(master.pid, args.window)[0])
                flow.append((viewer.received - before) / args.window / 1024)
                browser.append(100 * (viewer.cpu_seconds() - browser_before) / args.window)
                viewer.close()
                time.sleep(1)
                stream = (f", stream {flow[-1]:.0f} KiB/s" if flow[-1] else
                          f", the browser used {browser[-1]:.0f} % of a core")
                print(f"  page closed {closed[-1]:5.1f} %   open {opened[-1]:5.1f} %   "
                      f"(all {args.nodes} rows shown {shown[-1]:.2f} s after login{stream})",
                      flush=True)
        finally:
            viewer.shut()
            stop(sims)
            master.kill()
            master.wait()
    base, page = sum(closed) / len(closed), sum(opened) / len(opened)
    print(f"{args.nodes} nodes: master CPU {base:.1f} % with no page, {page:.1f} % with the "
          f"dashboard open: +{page - base:.1f} % of one core (goal: under +{GOAL:g} %)")
    record("dashboard", {"nodes": args.nodes, "viewer": kind, "window_s": args.window,
                         "closed_cpu_percent": closed, "open_cpu_percent": opened,
                         "rows_shown_s": shown, "stream_kib_s": flow,
                         "browser_cpu_percent": browser,
                         "added_percent": page - base})


if __name__ == "__main__":
    main()
