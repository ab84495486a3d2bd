"""The dashboard in a real browser: Debian's Chromium driven by playwright, against a real
headless master (--http) and real clients. Without a browser the whole module is skipped
with one reason (install it: apt-get install chromium; CI does)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN
from tests.harness import PATIENCE, ROOT, MasterProcess, python_env, wait_until
from tests.test_web import dashboard_address
from tests.web_client import ByteRelay

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[dev]')")

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "logs"
WAIT_MS = PATIENCE * 1000


def chromium_path() -> str | None:
    """CORRAL_CHROMIUM, else Debian's chromium on the PATH."""
    given = os.environ.get("CORRAL_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser"):
        if (found := shutil.which(name)) is not None:
            return found
    return None


CHROMIUM = chromium_path()
if CHROMIUM is None and os.environ.get("CORRAL_REQUIRE_BROWSER"):
    raise RuntimeError("CORRAL_REQUIRE_BROWSER is set (as .ci/run does) and no Chromium is "
                       "installed: apt-get install chromium")
if CHROMIUM is None:
    pytest.skip("no Chromium to drive: apt-get install chromium (or set CORRAL_CHROMIUM to a "
                "Chromium binary) to run the browser tests", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Cluster:
    def __init__(self, master: MasterProcess, clients: dict[str, Any], spawn_client: Any
                 ) -> None:
        self.master = master
        self.clients = clients
        self.spawn_client = spawn_client
        host, port = dashboard_address(master.banner)
        self.url = f"http://{host}:{port}/"

    def corral(self, *words: str) -> subprocess.CompletedProcess[str]:
        control = self.master.base / "master-state" / "control.sock"
        return subprocess.run([sys.executable, "-m", "master.front.cli", "--control",
                               str(control), *words], capture_output=True, text=True,
                              env=python_env(), cwd=ROOT, timeout=PATIENCE * 2)

    def add(self, name: str) -> Any:
        self.clients[name] = self.spawn_client(name, self.master.address)
        return self.clients[name]


@pytest.fixture
def cluster(spawn_master, spawn_client) -> Cluster:  # type: ignore[no-untyped-def]
    """A headless master with its dashboard and three READY clients, n1 n2 n3."""
    master = spawn_master(extra=["--no-console", "--http", "0", "--heartbeat", "0.5"])
    clients = {name: spawn_client(name, master.address) for name in ("n1", "n2", "n3")}
    made = Cluster(master, clients, spawn_client)
    assert made.corral("list", "--wait", "3", "--timeout", "30").returncode == 0
    return made


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    try:
        yield opened
    finally:
        context.close()


def log_in(page: Any, url: str, token: str = TOKEN) -> None:
    page.goto(url)
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def node_state(page: Any, name: str) -> Any:
    return page.locator(f"#nodes tr[data-node='{name}'] .state")


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


def test_wrong_token_is_refused_and_the_right_one_shows_three_nodes(cluster: Cluster,
                                                                     page: Any) -> None:
    log_in(page, cluster.url, "not-the-token")
    expect(page.locator("#login-error")).to_have_text("wrong token")
    expect(page.locator("#dash")).to_be_hidden()
    expect(page.locator("#nodes tbody tr")).to_have_count(0)
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    for name in ("n1", "n2", "n3"):
        expect(node_state(page, name)).to_have_text("READY")
    expect(page.locator("#link")).to_have_text("live")
    expect(page.locator("#summary .state[data-state='READY']")).to_have_text("3 READY")
    page.click("#nodes tr[data-node='n2']")
    expect(page.locator("#detail-title")).to_have_text("Processes on n2")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_a_fourth_client_appears_without_reload(cluster: Cluster, page: Any) -> None:
    log_in(page, cluster.url)
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    page.evaluate("window.sameDocument = true")
    cluster.add("n4")
    expect(node_state(page, "n4")).to_have_text("READY")
    rows = page.locator("#nodes tbody tr")
    assert [rows.nth(i).get_attribute("data-node") for i in range(4)] == ["n1", "n2", "n3",
                                                                          "n4"]
    assert page.evaluate("window.sameDocument") is True  # never reloaded


def test_a_process_started_from_the_cli_is_killed_from_the_page(cluster: Cluster,
                                                                 page: Any) -> None:
    log_in(page, cluster.url)
    page.click("#nodes tr[data-node='n1']")
    expect(page.locator("#detail-note")).to_have_text("0 processes")
    started = cluster.corral("--json", "exec", "-w", "n1", "--", "sleep", "300")
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["result"]["results"]["n1"][0]["pid"]
    row = page.locator(f"#procs tr[data-ref='n1:{pid}']")
    expect(row.locator(".pstate")).to_have_text("running")
    expect(row.locator("td.command")).to_have_text("sleep 300")
    row.locator("button[data-action='kill']").click()
    expect(row.locator(".pstate")).to_have_text("killed SIGINT")
    expect(row.locator("button[data-action='kill']")).to_have_count(0)
    printed = cluster.corral("--json", "exec", "-w", "n1", "--", "sh", "-c",
                             "echo one; echo two; echo three")
    printed_pid = json.loads(printed.stdout)["result"]["results"]["n1"][0]["pid"]
    printed_row = page.locator(f"#procs tr[data-ref='n1:{printed_pid}']")
    expect(printed_row.locator(".pstate")).to_have_text("exited 0")
    printed_row.locator("button", has_text="log").click()
    expect(page.locator("#log-text")).to_have_text("one\ntwo\nthree\n")
    page.screenshot(path=str(ARTIFACTS / "dashboard-processes.png"), full_page=True)
    listed = json.loads(cluster.corral("--json", "pid", "-w", "n1").stdout)["result"]
    assert listed["results"]["n1"][0]["state"] == "killed"


def test_a_stopped_node_turns_missing_on_the_page(cluster: Cluster, page: Any) -> None:
    log_in(page, cluster.url)
    expect(node_state(page, "n3")).to_have_text("READY")
    client = cluster.clients["n3"]
    client.signal(signal.SIGSTOP)
    try:
        expect(node_state(page, "n3")).to_have_text("MISSING")
        expect(node_state(page, "n3")).to_have_attribute("data-state", "MISSING")
        expect(node_state(page, "n1")).to_have_text("READY")
        expect(page.locator("#summary .state[data-state='MISSING']")).to_have_text(
            "1 MISSING")
        page.screenshot(path=str(ARTIFACTS / "dashboard-missing.png"), full_page=True)
    finally:
        client.signal(signal.SIGCONT)
    expect(node_state(page, "n3")).to_have_text("READY")


def test_a_post_without_the_csrf_token_is_refused(cluster: Cluster, page: Any) -> None:
    log_in(page, cluster.url)
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    started = cluster.corral("--json", "exec", "-w", "n2", "--", "sleep", "300")
    pid = json.loads(started.stdout)["result"]["results"]["n2"][0]["pid"]
    # The page's own cookie goes with it (same origin), but no CSRF header.
    status = page.evaluate("""async (ref) => (await fetch('/api/signal', {
        method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({refs: [ref], signal: 'KILL'})})).status""", f"n2:{pid}")
    assert status == 403
    listed = json.loads(cluster.corral("--json", "pid", "-w", "n2").stdout)["result"]
    assert listed["results"]["n2"][0]["state"] == "running"  # nothing was done
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it


def test_actions_on_chosen_nodes_and_a_phone_sized_screen(cluster: Cluster,
                                                          browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        log_in(page, cluster.url)
        expect(page.locator("#nodes tbody tr")).to_have_count(3)
        # Nothing wider than the screen but the tables' own scrolling boxes.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for name in ("n1", "n3"):
            page.check(f"#nodes tr[data-node='{name}'] input[type=checkbox]")
        expect(page.locator("#chosen-count")).to_have_text("2 chosen")
        page.fill("#run-command", "echo hello from $(hostname) && exit 0")
        page.click("#run-button")
        expect(page.locator("#output-text")).to_contain_text("2 succeeded, 0 failed")
        expect(page.locator("#output-text")).to_contain_text("[n1] exit 0")
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_page_logs_out(cluster: Cluster, page: Any, tmp_path: Path) -> None:
    log_in(page, cluster.url)
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#dash")).to_be_hidden()


def test_a_lost_stream_reconnects_and_catches_up(cluster: Cluster, page: Any) -> None:
    relay = ByteRelay(dashboard_address(cluster.master.banner))
    try:
        log_in(page, f"http://127.0.0.1:{relay.port}/")
        expect(page.locator("#nodes tbody tr")).to_have_count(3)
        expect(page.locator("#link")).to_have_text("live")
        page.evaluate("window.sameDocument = true")
        relay.cut()  # the network between the page and the master goes down
        expect(page.locator("#link")).to_have_text("reconnecting…")
        cluster.clients["n2"].stop()  # meanwhile n2 leaves and n4 joins: the page hears
        cluster.add("n4")  # neither while the link is down
        assert cluster.corral("list", "--wait", "3", "--timeout", "30").returncode == 0
        wait_until(lambda: re.search(r"n2 .* GONE", cluster.corral("list").stdout),
                   what="the master to see n2 gone")
        expect(node_state(page, "n2")).to_have_text("READY")  # still the old view
        relay.resume()
        expect(page.locator("#link")).to_have_text("live")
        expect(node_state(page, "n2")).to_have_text("GONE")  # from the fresh snapshot
        expect(node_state(page, "n4")).to_have_text("READY")
        expect(page.locator("#nodes tbody tr")).to_have_count(4)
        assert page.evaluate("window.sameDocument") is True
    finally:
        relay.close()


def test_a_job_is_shown_and_killed_whole(cluster: Cluster, page: Any) -> None:
    log_in(page, cluster.url)
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    started = cluster.corral("--json", "exec", "-w", "n[1-2]", "-n", "2", "--", "sleep", "300")
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)["result"]["results"]["n1"][0]["job"]
    page.click("#jobs-panel summary")
    row = page.locator(f"#jobs tr[data-job='{job}']")
    expect(row.locator("td.command")).to_have_text("sleep 300")
    expect(row.locator("td").nth(4)).to_have_text("4")  # running
    row.click()
    expect(page.locator("#detail-title")).to_have_text(f"Processes of job {job}")
    members = page.locator("#procs tbody tr")
    expect(members).to_have_count(4)
    expect(page.locator("#procs .pstate", has_text="running")).to_have_count(4)
    page.click("#kill-job")
    expect(page.locator("#procs .pstate", has_text="killed SIGINT")).to_have_count(4)
    expect(row.locator("td").nth(5)).to_have_text("4")  # ended
    expect(row.locator("td").nth(7)).to_have_text("130")  # the worst status: SIGINT's
    page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"), full_page=True)
