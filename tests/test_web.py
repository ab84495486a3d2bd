"""The dashboard's server from plain HTTP clients: /healthz and /metrics open, everything
else behind a login with the token, a session cookie and a CSRF token; the live event
stream; the actions. A real master engine with --http and real client processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.procs import RUSAGE_FIELDS, ProcInfo
from common.replies import UsageAnswer
from master.api import MasterAPI
from tests.conftest import TOKEN, engine
from tests.harness import PATIENCE, ROOT, python_env, wait_until
from tests.test_hardening import scripted
from tests.web_client import EventStream, WebClient


@pytest.fixture
def web_master(tmp_path: Path, master_log: Path) -> Iterator[MasterAPI]:
    """The master engine in this process, its dashboard on an ephemeral loopback port."""
    with engine(tmp_path, master_log, http=("127.0.0.1", 0)) as api:
        yield api


def web_address(api: MasterAPI) -> tuple[str, int]:
    assert api.web_url is not None
    match = re.fullmatch(r"http://([\d.]+):(\d+)/", api.web_url)
    assert match, api.web_url
    return match.group(1), int(match.group(2))


@pytest.fixture
def web(web_master: MasterAPI) -> WebClient:
    return WebClient(web_address(web_master))


@pytest.fixture
def logged_in(web: WebClient) -> WebClient:
    assert web.login(TOKEN).status == 200
    return web


# --- open to all: /healthz, /metrics ------------------------------------------------------

def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Metric samples by name, then by their sorted labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_healthz_and_metrics_need_no_login(web_master: MasterAPI, web: WebClient,
                                           spawn_client) -> None:
    health = web.get("/healthz")
    assert health.status == 200 and health.text == "ok\n"
    head = web.request("HEAD", "/healthz")
    assert head.status == 200 and head.body == b""
    wrong = web.post("/healthz", {})
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"
    for name in ("n1", "n2"):
        spawn_client(name, web_master.address)
    assert web_master.wait_ready(2, timeout=PATIENCE).reached
    web_master.exec("n1", ["sh", "-c", "exit 3"])
    wait_until(lambda: samples(web.get("/metrics").text).get(
        "corral_process_exits_total", {}).get((("node", "n1"), ("outcome", "exit_nonzero"))) == 1.0,
        what="the exit counted")
    found = samples(web.get("/metrics").text)
    assert found["corral_nodes"][(("state", "READY"),)] == 2
    assert found["corral_node_state"][(("node", "n1"), ("state", "READY"))] == 1
    assert found["corral_node_state"][(("node", "n1"), ("state", "MISSING"))] == 0
    assert found["corral_request_duration_seconds_count"][(("command", "exec"),)] >= 1
    assert found["corral_transfer_bytes_total"][(("direction", "copied"),)] == 0
    assert found["corral_dashboard_streams"][()] == 0
    assert "corral_requests_timed_out_total" not in found  # none timed out


@pytest.mark.slow
def test_metrics_match_list(spawn_master, spawn_client, tmp_path: Path) -> None:
    """What /metrics says of each node is what `corral list` says, read between two
    heartbeats (a slow interval leaves the figures still for a while)."""
    master = spawn_master(extra=["--no-console", "--http", "0", "--heartbeat", "3"])
    address = dashboard_address(master.banner)
    for name in ("n1", "n2", "n3"):
        spawn_client(name, master.address)
    control = master.base / "master-state" / "control.sock"
    assert cli(control, "list", "--wait", "3", "--timeout", "30").returncode == 0
    web = WebClient(address)

    def agree() -> bool:
        before = json.loads(cli(control, "--json", "list").stdout)["result"]
        scraped = samples(web.get("/metrics").text)
        after = json.loads(cli(control, "--json", "list").stdout)["result"]
        if [figures(n) for n in before] != [figures(n) for n in after]:
            return False  # a heartbeat came in between: look again
        for node in after:
            name = (("node", node["name"]),)
            assert scraped["corral_node_state"][(*name, ("state", node["state"]))] == 1
            assert scraped["corral_node_memory_available_bytes"][name] == node["mem_available"]
            assert scraped["corral_node_memory_total_bytes"][name] == node["mem_total"]
            assert scraped["corral_node_disk_free_bytes"][name] == node["disk_free"]
            assert scraped["corral_node_cpu_percent"][name] == node["cpu_percent"]
            assert scraped["corral_node_processes"][(*name, ("state", "running"))] == \
                node["processes"]
            for minutes, value in zip(("1", "5", "15"), node["load"], strict=True):
                assert scraped["corral_node_load"][(("minutes", minutes), *name)] == value
            assert scraped["corral_node_rtt_seconds"][name] == pytest.approx(
                node["rtt_ms"] / 1000)
            assert 0 <= scraped["corral_node_heartbeat_age_seconds"][name] < 3 * 3
        assert scraped["corral_nodes"][(("state", "READY"),)] == len(after) == 3
        return True

    wait_until(agree, what="a scrape between two heartbeats")


def figures(node: dict[str, Any]) -> list[Any]:
    return [node[k] for k in ("state", "load", "cpu_percent", "mem_available", "disk_free",
                              "processes", "rtt_ms")]


def cli(control: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "master.front.cli", "--control",
                           str(control), *words], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=PATIENCE * 2)


def dashboard_address(banner: str) -> tuple[str, int]:
    match = re.search(r"dashboard on https?://([\d.]+):(\d+)/", banner)
    assert match, banner
    return match.group(1), int(match.group(2))


def test_http_without_a_host_binds_loopback(spawn_master) -> None:
    master = spawn_master(extra=["--no-console", "--http", "0"])
    host, port = dashboard_address(master.banner)
    assert host == "127.0.0.1"
    assert WebClient((host, port)).get("/healthz").status == 200


def test_behind_a_tls_terminating_proxy(spawn_master) -> None:
    """The browser talks https to the proxy, which talks plain http to the dashboard on
    127.0.0.1 with the public Host: named with --web-origin, that origin's pages may act
    and its name is answered to; any other origin or name is still refused."""
    master = spawn_master(extra=["--no-console", "--http", "0", "--web-origin",
                                 "HTTPS://Corral.Example.org:443/"])
    address = dashboard_address(master.banner)
    proxied = WebClient(address, host_header="corral.example.org")
    origin = {"Origin": "https://corral.example.org"}
    assert proxied.post("/login", {"token": TOKEN}, csrf=False, headers=origin).status == 200
    proxied.login(TOKEN)  # keeps the cookie and the CSRF token
    refused = proxied.post("/api/signal", {"refs": ["n1:1"], "signal": "KILL"},
                           headers={"Origin": "https://evil.example"})
    assert (refused.status, refused.json()) == (
        403, {"error": "cross-origin request from 'https://evil.example'"})
    assert proxied.post("/logout", {}, headers=origin).status == 200
    elsewhere = WebClient(address, host_header="evil.example")
    assert elsewhere.get("/").status == 421


def test_without_web_origin_a_proxys_origin_is_refused(web: WebClient) -> None:
    """The default stays strict: the page's own origin only."""
    https_self = {"Origin": f"https://{web.host_header}"}
    refused = web.post("/login", {"token": TOKEN}, csrf=False, headers=https_self)
    assert refused.status == 403
    assert WebClient(web.address, host_header="corral.example.org").get("/").status == 421


@pytest.mark.parametrize("bad", ["corral.example.org", "ftp://x.org", "https://x.org/corral",
                                 "https://u@x.org", "https://x.org:99999", "https://"])
def test_bad_web_origin_is_one_clear_line(bad: str, token_file: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "master", "--http", "0", "--web-origin", bad,
                           "--token-file", str(token_file), "--state-dir",
                           str(tmp_path / "state"), "--log-dir", str(tmp_path), "quit"],
                          capture_output=True, text=True, env=python_env(), cwd=ROOT,
                          timeout=PATIENCE)
    assert done.returncode == 2, bad
    assert done.stderr.splitlines()[-1].startswith(
        "corral-master: error: argument --web-origin: "), bad


def test_bad_http_option_is_one_clear_line(token_file: Path, tmp_path: Path) -> None:
    def master(http: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "master", "--port", "0", "--http", http,
                               "--token-file", str(token_file), "--state-dir",
                               str(tmp_path / "state"), "--log-dir", str(tmp_path), "quit"],
                              capture_output=True, text=True, env=python_env(), cwd=ROOT,
                              timeout=PATIENCE)

    done = master("here:port")
    assert done.returncode == 2
    assert "--http: expected [HOST:]PORT, got 'here:port'" in done.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = master(str(port))
    assert done.returncode == 2
    assert done.stderr == (f"corral-master: cannot serve the dashboard on 127.0.0.1:{port}: "
                           "Address already in use\n")
    assert not (tmp_path / "state" / "control.sock").exists()  # nothing left behind


# --- login, session, CSRF -----------------------------------------------------------------

def test_nothing_without_a_session(web: WebClient) -> None:
    page = web.get("/")
    assert page.status == 200 and b"<table id=\"nodes\">" in page.body  # the shell only
    for path in ("/events", "/api/session", "/api/processes?node=n1",
                 "/api/log?ref=n1:1"):
        assert web.get(path).status == 401, path
    for path, body in (("/api/signal", {"refs": ["n1:1"], "signal": "KILL"}),
                       ("/api/signal-all", {"nodes": ["n1"], "signal": "INT"}),
                       ("/api/run", {"nodes": ["n1"], "command": "true"}),
                       ("/logout", {})):
        assert web.post(path, body).status == 401, path


def test_login_with_the_token(web_master: MasterAPI, web: WebClient,
                              master_log: Path) -> None:
    wrong = web.login("not-the-token")
    assert wrong.status == 401 and wrong.json() == {"error": "wrong token"}
    assert web.cookie is None
    right = web.login(TOKEN)
    assert right.status == 200
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and TOKEN not in right.text
    assert web.get("/api/session").json()["csrf"] == web.csrf
    assert TOKEN not in master_log.read_text()
    assert web.post("/logout", {}).status == 200
    assert web.get("/api/session").status == 401  # the old cookie is dead


def test_every_post_needs_its_csrf_token(logged_in: WebClient) -> None:
    body = {"refs": ["n1:1"], "signal": "KILL"}
    assert logged_in.post("/api/signal", body, csrf=False).status == 403
    assert logged_in.post("/api/signal", body, headers={"X-CSRF-Token": "guess"}).status == 403
    other = WebClient(logged_in.address)
    other.login(TOKEN)
    # Another session's CSRF token is no good either.
    assert logged_in.post("/api/signal", body,
                          headers={"X-CSRF-Token": other.csrf or ""}).status == 403


def test_cross_site_requests_are_refused(logged_in: WebClient) -> None:
    body = {"refs": ["n1:1"], "signal": "KILL"}
    assert logged_in.post("/api/signal", body,
                          headers={"Origin": "http://evil.example"}).status == 403
    assert logged_in.post("/api/signal", body,
                          headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    form = logged_in.request("POST", "/api/signal", raw=b"refs=n1:1&signal=KILL",
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      "X-CSRF-Token": logged_in.csrf or ""})
    assert form.status == 415
    rebound = WebClient(logged_in.address, host_header=f"evil.example:{logged_in.address[1]}")
    rebound.cookie = logged_in.cookie
    assert rebound.get("/api/session").status == 421  # DNS rebinding onto 127.0.0.1
    assert rebound.get("/metrics").status == 200  # open to all anyway


def test_guessing_the_token_is_slowed_down(web: WebClient) -> None:
    statuses = [web.login(f"guess-{n}").status for n in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    assert web.login(TOKEN).status == 429  # even the right one, for a while


# --- the live stream and the actions ------------------------------------------------------

def next_of(stream: EventStream, kind: str, match: Any = lambda data: True) -> Any:
    while True:
        got, data = stream.next()
        if got == kind and match(data):
            return data


@pytest.mark.slow
def test_stream_shows_joins_processes_and_their_ends(web_master: MasterAPI,
                                                     logged_in: WebClient,
                                                     spawn_client) -> None:
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    stream = EventStream(logged_in)
    try:
        assert stream.status == 200
        snapshot = next_of(stream, "snapshot")
        assert samples(logged_in.get("/metrics").text)["corral_dashboard_streams"][()] == 1
        assert [n["name"] for n in snapshot["nodes"]] == ["n1"]
        assert snapshot["nodes"][0]["state"] == "READY"
        spawn_client("n2", web_master.address)
        joined = next_of(stream, "nodes", lambda d: any(r["name"] == "n2" for r in d["rows"]))
        assert joined["rows"][0]["state"] in ("CONNECTING", "READY")
        started = web_master.exec("n1", ["sleep", "60"])
        ref = f"n1:{started.results['n1'][0].pid}"
        began = next_of(stream, "procs", lambda d: any(r["ref"] == ref for r in d["rows"]))
        assert began["rows"][0]["live"] is True
        listed = logged_in.get("/api/processes?node=n1").json()
        assert [r["ref"] for r in listed["rows"]] == [ref]
        assert listed["rows"][0]["command"] == "sleep 60"
        killed = logged_in.post("/api/signal", {"refs": [ref], "signal": "KILL"})
        assert killed.status == 200 and killed.json()["ok"] is True
        ended = next_of(stream, "procs", lambda d: any(r["ref"] == ref and not r["live"]
                                                       for r in d["rows"]))
        assert ended["rows"][0]["status"] == "killed SIGKILL"
    finally:
        stream.close()


def test_run_and_log_from_the_page(web_master: MasterAPI, logged_in: WebClient,
                                   spawn_client) -> None:
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    ran = logged_in.post("/api/run", {"nodes": ["n1"], "command": "echo hello; exit 4"})
    assert ran.status == 200
    assert ran.json()["ok"] is False and "[n1] exit 4\nhello" in ran.json()["text"]
    started = web_master.exec("n1", ["sh", "-c", "echo first; echo second"])
    assert not started.errors, started.errors
    ref = f"n1:{started.results['n1'][0].pid}"
    web_master.wait([ref], timeout=PATIENCE)
    log = logged_in.get(f"/api/log?ref={ref}&lines=1").json()
    assert log["text"] == "second\n" and log["ended"] is True
    unknown = logged_in.post("/api/run", {"nodes": ["n9"], "command": "true"})
    assert unknown.status == 404 and unknown.json() == {"error": "unknown node: n9"}
    bad = logged_in.post("/api/signal", {"refs": ["n1"], "signal": "KILL"})
    assert bad.status == 400 and "NODE:PID" in bad.json()["error"]
    assert logged_in.post("/api/signal", {"refs": [ref], "signal": "HUP"}).status == 400


def test_jobs_from_the_page(web_master: MasterAPI, logged_in: WebClient,
                            spawn_client) -> None:
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    started = web_master.exec("n1", ["sleep", "60"], count=2)
    job = started.results["n1"][0].job
    (listed,) = logged_in.get("/api/jobs").json()["rows"]
    assert (listed["job"], listed["command"], listed["nodes"], listed["running"]) == (
        job, "sleep 60", "n1", 2)
    members = logged_in.get(f"/api/job?job={job}").json()["rows"]
    assert [m["job"] for m in members] == [f"{job}.0", f"{job}.1"]
    assert all(m["status"] == "running" for m in members)
    assert logged_in.get("/api/job?job=n1:1").status == 400
    missing = logged_in.get("/api/job?job=J999")
    assert missing.status in (400, 404) and "J999" in missing.json()["error"]
    killed = logged_in.post("/api/signal", {"refs": [job], "signal": "KILL"})
    assert killed.status == 200 and killed.json()["ok"] is True
    wait_until(lambda: logged_in.get("/api/jobs").json()["rows"][0]["ended"] == 2,
               what="both members ended")


@pytest.mark.slow
def test_metrics_count_timeouts_and_bytes_moved(tmp_path: Path, master_log: Path,
                                                spawn_client) -> None:
    with engine(tmp_path, master_log, http=("127.0.0.1", 0), request_timeout=1.0) as api:
        web = WebClient(web_address(api))
        client = spawn_client("n1", api.address)
        assert api.wait_ready(1, timeout=PATIENCE).reached
        (tmp_path / "payload").write_bytes(b"x" * 1000)
        assert api.copy("n1", [str(tmp_path / "payload")], "payload").ok
        assert api.pull("n1", ["payload"], str(tmp_path / "back")).ok
        client.signal(signal.SIGSTOP)
        try:
            assert api.processes("n1").failed == ["n1"]  # no reply within 1 s
        finally:
            client.signal(signal.SIGCONT)
        found = samples(web.get("/metrics").text)
        assert found["corral_transfer_bytes_total"][(("direction", "copied"),)] == 1000
        assert found["corral_transfer_bytes_total"][(("direction", "pulled"),)] == 1000
        assert found["corral_requests_timed_out_total"][(("command", "ps"),)] == 1  # pid's request


def test_guesses_sent_at_once_are_slowed_down_too(web: WebClient) -> None:
    """Forty connections each send a login's headers, wait until the server asks for the
    body (100 Continue), then send a wrong token: only ten are tried."""
    body = json.dumps({"token": "guess"}).encode()
    head = (f"POST /login HTTP/1.1\r\nHost: {web.host_header}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    guesses = [socket.create_connection(web.address, timeout=30) for _ in range(40)]
    try:
        for guess in guesses:
            guess.sendall(head)
        for guess in guesses:
            assert guess.recv(100).startswith(b"HTTP/1.1 100 Continue")
        for guess in guesses:
            guess.sendall(body)
        statuses = [guess.makefile("rb").readline().split()[1] for guess in guesses]
    finally:
        for guess in guesses:
            guess.close()
    assert statuses.count(b"401") == 10 and statuses.count(b"429") == 30


@pytest.mark.parametrize("query", ["offset=%C2%B2", "lines=%C2%B2"])
def test_a_log_position_in_other_digits_is_a_clear_error(logged_in: WebClient,
                                                         query: str) -> None:
    """A superscript '²' passes str.isdigit but int() refuses it: 400, not 500."""
    reply = logged_in.get(f"/api/log?ref=n1:1&{query}")
    assert reply.status == 400
    assert reply.json()["error"] in ("offset must be a whole number",
                                     "lines must be a whole number")


def test_a_bad_node_name_is_said_once(logged_in: WebClient) -> None:
    reply = logged_in.post("/api/run", {"nodes": ["n[1-2]"], "command": "true"})
    assert reply.status == 400
    assert reply.json()["error"].startswith("bad node name 'n[1-2]': a node name is 1 to")
    missing = logged_in.get("/api/processes")
    assert missing.status == 400 and missing.json()["error"].startswith("empty node name")


def test_a_lone_surrogate_in_a_command_is_a_clear_error(web_master: MasterAPI,
                                                        logged_in: WebClient,
                                                        spawn_client) -> None:
    """JSON may spell '\\ud800', which no UTF-8 can carry to a node: 400, not 500."""
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    bad = logged_in.request("POST", "/api/run",
                            raw=b'{"nodes": ["n1"], "command": "echo \\ud800"}',
                            headers={"Content-Type": "application/json",
                                     "X-CSRF-Token": logged_in.csrf or ""})
    assert bad.status == 400
    assert bad.json() == {"error": "body holds a lone surrogate (\\ud800 to \\udfff), "
                                   "which is not text"}
    ran = logged_in.post("/api/run", {"nodes": ["n1"], "command": "echo still here"})
    assert ran.status == 200 and "still here" in ran.json()["text"]


def test_numbers_in_a_body_are_numbers(web_master: MasterAPI, logged_in: WebClient,
                                      spawn_client) -> None:
    """JSON's true is Python's 1, and Python's JSON reader takes NaN and Infinity: a
    timeout of true was a 1 s run. Each is a 400 that says why; nothing runs."""
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    as_bool = logged_in.post("/api/run", {"nodes": ["n1"], "command": "sleep 2",
                                          "timeout": True})
    assert as_bool.status == 400
    assert as_bool.json() == {"error": "timeout must be a number of seconds up to 600"}
    for word in ("NaN", "Infinity", "-Infinity"):
        bad = logged_in.request("POST", "/api/run", raw=(
            b'{"nodes": ["n1"], "command": "true", "timeout": %s}' % word.encode()),
            headers={"Content-Type": "application/json",
                     "X-CSRF-Token": logged_in.csrf or ""})
        assert bad.status == 400, word
        assert bad.json() == {"error": f"body is not JSON: {word} is not a number JSON "
                                       "allows"}, word
    deep = logged_in.request("POST", "/api/run", raw=b"[" * 60_000, headers={
        "Content-Type": "application/json", "X-CSRF-Token": logged_in.csrf or ""})
    assert deep.status == 400
    assert web_master.processes("n1").results["n1"] == []


def test_a_hostile_peer_prints_nothing_on_the_masters_terminal(spawn_master) -> None:
    """More than 100 headers, or a login that hangs up half-way through its body: each is
    the peer's problem (400), never a traceback over the operator's console."""
    master = spawn_master(extra=["--no-console", "--http", "0"])
    address = dashboard_address(master.banner)
    many = "".join(f"X-{n}: a\r\n" for n in range(200))
    with socket.create_connection(address, timeout=PATIENCE) as peer:
        peer.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n".encode())
        assert peer.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(address, timeout=PATIENCE) as peer:
        peer.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100\r\n\r\n{\"tok")
        peer.shutdown(socket.SHUT_WR)
        reply = peer.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 400") and reply.endswith(b'"the body ended early"}')
    assert "got more than 100 headers" in master.log_text()
    assert WebClient(address).get("/healthz").status == 200
    master.stop()
    assert "Traceback" not in master.proc.stderr.read()


def test_huge_rusage_figures_of_a_hostile_node_still_make_json(web_master: MasterAPI,
                                                               logged_in: WebClient) -> None:
    """Two finite CPU times whose sum overflows to infinity: Python's json would write
    'Infinity', which no browser parses, and the node's process table would stay blank."""
    usage = dict.fromkeys(RUSAGE_FIELDS, 0.0) | {"ru_utime": 1e308, "ru_stime": 1e308}
    info = ProcInfo(seq=1, pid=7, argv=["x"], cwd="/", log="/l", state="exited",
                    started=1.0, ended=2.0, exit_code=0, rusage=usage)
    answer = UsageAnswer(children=dict.fromkeys(RUSAGE_FIELDS, 0.0), processes=[info])
    evil = scripted(web_master, "evil", lambda request: answer.to_wire())
    try:
        reply = logged_in.get("/api/processes?node=evil")
        assert reply.status == 200
        row = json.loads(reply.body, parse_constant=lambda name: pytest.fail(name))["rows"][0]
        assert row["ref"] == "evil:7" and row["cpu"] is None
    finally:
        evil.stop()


def test_a_request_head_that_drips_is_cut_off(web_master: MasterAPI, monkeypatch) -> None:
    """A peer that sends its headers a byte at a time (each read well within the socket
    timeout) is closed at the head's deadline instead of holding its place for ever."""
    from master.web import server
    monkeypatch.setattr(server, "HEAD_DEADLINE", 1.0)
    with socket.create_connection(web_address(web_master), timeout=PATIENCE) as peer:
        peer.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < PATIENCE and not closed:
            try:
                peer.sendall(b"X")
                peer.settimeout(0.2)
                closed = peer.recv(100) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
    healthy = WebClient(web_address(web_master)).get("/healthz")
    assert healthy.status == 200


def test_metrics_count_stopped_processes_per_node(web_master: MasterAPI, web: WebClient,
                                                   spawn_client) -> None:
    spawn_client("n1", web_master.address)
    assert web_master.wait_ready(1, timeout=PATIENCE).reached
    started = web_master.exec("n1", ["sleep", "60"])
    assert not started.errors, started.errors
    pid = started.results["n1"][0].pid

    def stopped() -> float | None:
        return samples(web.get("/metrics").text)["corral_node_processes"].get(
            (("node", "n1"), ("state", "stopped")))

    try:
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: stopped() == 1, what="the stopped process counted")
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: stopped() == 0, what="the continued process no longer counted")
    finally:
        os.kill(pid, signal.SIGKILL)
