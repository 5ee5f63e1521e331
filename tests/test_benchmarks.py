"""The benchmark scripts' quick modes, so that none of them rots.

These check that each script runs to the end and reports every column; the
numbers themselves are measured by hand and recorded in the README, never
asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_start_methods_quick():
    report = run("start_methods.py", "--quick", "--json")
    rows = report["summary"]
    assert {r["method"] for r in rows} == {"fork", "spawn", "forkserver"}
    for row in rows:
        assert row["workers"] == 2 and row["failed"] == 0, row
        for key in ("start_ms", "restart_ms", "worker_mb", "manager_mb"):
            assert row[key]["median"] > 0, (key, row)
        assert row["idle_cpu_ms"]["median"] >= 0 and row["idle_s"] == 2.0
        assert row["idle_wakeups"]["median"] >= 0


def test_peers_quick():
    report = run(
        "peers.py",
        "--quick",
        "--servers",
        "runtime-fork,runtime-spawn,uvicorn",
        "--load-tool",
        "bundled",
        "--json",
    )
    names = [s["server"] for s in report["summary"]]
    assert names == ["runtime-fork", "runtime-spawn", "uvicorn"]
    for row in report["summary"]:
        assert row["failed_runs"] == 0, report["problems"]
        for key in ("start_ms", "requests_per_s", "stop_idle_ms", "worker_mb"):
            assert row[key]["median"] > 0, (key, row)
        for key in ("failed", "stop_in_flight_ms", "manager_mb", "session_mb"):
            assert row[key] is not None, (key, row)
        assert row["restarts"] == 5
    assert report["ratios"]["runtime-spawn"]["start_ms"] == 1.0
    targets = {t["target"] for t in report["targets"]}
    assert "runtime-fork: 0 failed requests in restarts" in targets
    assert "runtime-spawn: req/s >= uvicorn's" in targets
    assert report["problems"] == []


def test_restart_under_load_quick():
    report = run(
        "restart_under_load.py",
        "--quick",
        "--start-method",
        "fork",
        "--load-tool",
        "bundled",
        "--json",
    )
    assert report["problems"] == [], report["problems"]
    load = report["load"]
    assert load["requests"] > 0 and sum(load["failed"].values()) == 0


def test_plots_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "start.png"
    run(
        "start_methods.py",
        "--quick",
        "--methods",
        "fork",
        "--idle",
        "0",
        "--json",
        "--plot",
        str(chart),
    )
    assert chart.read_bytes()[:4] == b"\x89PNG"
