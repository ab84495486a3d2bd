"""`make bench`'s report: the machine, every benchmark's figures, and the charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_report_from_results(tmp_path: Path) -> None:
    (tmp_path / "fanout.json").write_text(json.dumps({
        "nodes": [1, 10, 100], "median_ms": [1.4, 6.8, 76], "p90_ms": [2, 8, 90],
        "local_floor_ms": [0.9, 5, 50]}))
    (tmp_path / "heartbeat_scale.json").write_text(json.dumps({
        "clients": [1000, 5000], "master_cpu_percent": [7.6, 27], "master_rss_mib": [73, 182],
        "bare_cpu_percent": [3.7, 12.2], "bare_rss_mib": [20, 40],
        "goals": [{"what": "10,000 clients: master RSS", "value": 315.2, "goal": 250,
                   "unit": " MiB", "higher_is_better": False, "met": False}]}))
    (tmp_path / "log_follow.json").write_text(json.dumps({"goals": [
        {"what": "log -f / cat", "value": 52.0, "goal": 50, "unit": " %",
         "higher_is_better": True, "met": True}]}))
    (tmp_path / "copy_throughput.json").write_text(json.dumps({
        "size_mib": 1024, "raw_socket_s": 2.46, "one_node_s": 2.3, "nodes": 5,
        "all_nodes_s": 10.5, "master_cpu_s": 3.1, "master_peak_mib": 34,
        "client_peak_mib": 31}))
    (tmp_path / "spawn_rate.txt").write_text("spawn rate of /bin/true\n  corral 1300 /s\n")
    assert report.main(["--report-only", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Machine" in text and " cores" in text and "Python 3." in text
    assert "### bench/spawn_rate.py\n\n```\nspawn rate of /bin/true\n  corral 1300 /s\n```" in text
    assert "### bench/log_follow.py\n\n(not run)" in text
    assert ("| 10,000 clients: master RSS | 315.20 MiB | <= 250 MiB | **not met** | "
            "`heartbeat_scale` |") in text
    assert "| log -f / cat | 52.00 % | >= 50 % | met | `log_follow` |" in text
    assert "ssh fan-out" in text
    if not has_matplotlib():
        assert "Charts need matplotlib" in text
        return
    for image in ("fanout.png", "heartbeat.png", "copy.png"):
        assert f"]({image})" in text
        assert (tmp_path / image).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_a_benchmark_run_feeds_the_report(tmp_path: Path) -> None:
    """The figures a real benchmark records are the ones the report draws."""
    assert report.main(["--quick", "--only", "fanout", "--results", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "fanout.json").read_text())
    assert figures["nodes"] == [1, 5, 20]
    assert all(ms > 0 for ms in figures["median_ms"] + figures["local_floor_ms"])
    text = (tmp_path / "REPORT.md").read_text()
    assert "fan-out of `run true`" in text
    if not has_matplotlib():  # `make test` does not install the bench extra
        assert "Charts need matplotlib" in text
        return
    assert (tmp_path / "fanout.png").read_bytes().startswith(PNG_MAGIC)
    assert "Heartbeat CPU against node count: no figures" in text
