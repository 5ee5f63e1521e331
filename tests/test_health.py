"""Worker health: hung loops, orphans, recycling, and what a stop leaves behind."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket

import pytest
from conftest import APPS, START_METHODS, alive, python, session_members, wait_until
from http_client import InFlight, Load, get

pytestmark = pytest.mark.timeout(120)


def serve(launch, *flags: str, env=None):
    served = launch(
        *python("-m", "runtime", "run", "healthapp:rt", "--port", "0", *flags),
        env=env,
    )
    served.ready()
    return served


def started(served) -> dict[str, int]:
    """Process name -> pid, for every process the manager started so far."""
    return {
        m.group(1): int(m.group(2))
        for m in map(re.compile(r"Started (\S+) \(pid (\d+)\)").search, served.lines)
        if m
    }


def stop(served) -> None:
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.output


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("method", START_METHODS)
def test_a_blocked_loop_is_replaced_and_the_others_keep_serving(launch, method):
    served = serve(
        launch, "--workers", "2", "--hang-timeout", "2", "--start-method", method
    )
    first = started(served)
    blocked = InFlight(served.url, "/block?seconds=60")
    hung = served.wait_for(
        r"CRITICAL (Runtime-Server-\d-0) \(pid (\d+)\) has not answered for "
        r"([\d.]+) s \(hang timeout 2 s\)"
    )
    name, pid, silent = hung.group(1), int(hung.group(2)), float(hung.group(3))
    assert silent >= 2
    assert first[name] == pid
    # The other worker serves while the hung one is being replaced.
    assert all(get(served.url).json()["pid"] != pid for _ in range(10))
    served.wait_for(rf"{name} \(pid {pid}\) is still hung 3 s later; killing it")
    slot = name.rsplit("-", 1)[0]
    served.wait_for(rf"{slot}-1 \(pid \d+\) acked")
    assert wait_until(lambda: not alive(pid), 5)
    with pytest.raises(Exception):  # noqa: B017 - its connection died with it
        blocked.result()
    served_by = {get(served.url).json()["worker"] for _ in range(20)}
    assert f"{name}" not in served_by
    assert served.count("has not answered") == 1
    stop(served)


def test_repeated_hangs_are_replaced_without_counting_as_a_crash_loop(launch):
    # A crash-loop limit of 2 would stop the group if hangs counted as crashes.
    served = serve(
        launch, "--workers", "1", "--hang-timeout", "1", env={"RT_CRASH_LIMIT": "2"}
    )
    for n in range(1, 4):
        blocked = InFlight(served.url, "/block?seconds=30")
        served.wait_for(rf"Runtime-Server-0-{n - 1} \(pid \d+\) has not answered")
        served.wait_for(rf"Runtime-Server-0-{n} \(pid \d+\) acked")
        with pytest.raises(Exception):  # noqa: B017 - its worker was killed
            blocked.result()
    assert get(served.url).json()["worker"] == "Runtime-Server-0-3"
    assert "kept failing" not in served.output
    assert "Respawning" not in served.output
    stop(served)


def test_a_cpu_bound_request_just_under_the_hang_timeout_is_not_a_hang(launch):
    served = serve(launch, "--workers", "1", "--hang-timeout", "1")
    pid = started(served)["Runtime-Server-0-0"]
    for _ in range(6):
        assert get(served.url, "/cpu?seconds=0.9").json()["pid"] == pid
    stop(served)
    assert "has not answered" not in served.output


def test_a_limit_reached_before_the_ack_still_recycles(launch):
    # The worker serves (and counts) while after_server_start still runs.
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "healthapp:rt",
            "--port",
            "0",
            "--workers",
            "1",
            "--max-requests",
            "5",
        ),
        env={"RT_SLOW_ACK": "6"},
    )
    match = served.wait_for(r"Listening on (http://\S+)")
    url = match.group(1)
    assert wait_until(lambda: _answers(url), 30)
    for _ in range(5):
        assert get(url).json()["worker"] == "Runtime-Server-0-0"
    assert "acked" not in served.output  # all five came before the ack
    served.wait_for(r"Recycling Runtime-Server-0-0 \(pid \d+\): it served 5 requests")
    served.wait_for(r"as Runtime-Server-0-1 \(pid \d+\) \(zero-downtime\)", 60)
    stop(served)


def _answers(url: str) -> bool:
    try:
        get(url)
    except Exception:  # noqa: BLE001 - not listening yet
        return False
    return True


def test_a_memory_limit_below_a_fresh_worker_is_reported_not_looped(launch):
    served = serve(launch, "--workers", "1", "--max-worker-memory", "5")
    served.wait_for(r"more than the max worker memory \(5 MiB\): not recycling")
    for _ in range(5):
        assert get(served.url).json()["worker"] == "Runtime-Server-0-0"
    stop(served)
    assert "Recycling" not in served.output


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_slow_boot_and_a_long_request_are_not_hangs(launch, method):
    # C08: hang detection starts at the ack; booting has the ack deadline only.
    served = serve(
        launch,
        "--workers",
        "1",
        "--hang-timeout",
        "1.5",
        "--start-method",
        method,
        env={"RT_BOOT_CPU": "4"},
    )
    pid = started(served)["Runtime-Server-0-0"]
    assert get(served.url, "/cpu?seconds=0.5").json()["pid"] == pid
    # Sync on the manager having seen beats since: a later request of a beat.
    for _ in range(3):
        assert get(served.url).json()["pid"] == pid
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert "has not answered" not in served.output
    assert served.count("Started Runtime-Server") == 1


def test_hang_detection_can_be_turned_off(launch):
    served = serve(launch, "--workers", "1", "--hang-timeout", "0")
    pid = started(served)["Runtime-Server-0-0"]
    blocked = InFlight(served.url, "/block?seconds=3")
    assert blocked.result(20).json()["pid"] == pid
    assert "has not answered" not in served.output
    stop(served)


@pytest.mark.parametrize("method", START_METHODS)
def test_sigkill_of_the_manager_leaves_nothing(launch, method):
    served = serve(
        launch,
        "--workers",
        "4",
        "--reload",
        "--start-method",
        method,
        env={"RT_CUSTOM": "1"},
    )
    port = int(served.url.rsplit(":", 1)[1])
    # Every process is past its start-up (a booting spawn child has no
    # parent-death signal yet); what is measured is how fast they all end.
    served.wait_for(r"^side running$")
    served.wait_for(r"Runtime-Reloader-0\[\d+\] INFO Watching")
    assert len(started(served)) == 6  # 4 workers, the reloader, the custom one
    served.signal(signal.SIGKILL)
    served.wait()
    assert wait_until(lambda: not session_members(served.pid), 2.0), (
        f"left: {session_members(served.pid)}\n{served.output}"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the port is free again


def test_a_worker_whose_pipe_breaks_finishes_its_request_and_exits(monkeypatch):
    # This test is the manager: it stays alive and only closes its pipe end.
    from runtime.children import start_process
    from runtime.config import RunOptions
    from runtime.messages import Ack
    from runtime.worker import WorkerSpec, worker_main

    monkeypatch.syspath_prepend(str(APPS))
    ctx = multiprocessing.get_context("spawn")
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = RunOptions(port=port, graceful_timeout=10.0)
    spec = WorkerSpec("healthapp", "healthapp", None, options, {})
    process, conn = start_process(ctx, "Runtime-Server-0-0", worker_main, (spec, sock))
    try:
        assert conn.poll(30) and isinstance(conn.recv(), Ack)
        before = _cpu_time(process.pid)
        slow = InFlight(f"http://127.0.0.1:{port}", "/cpu?seconds=1.5")
        assert wait_until(lambda: _cpu_time(process.pid) > before + 0.3, 10)
        conn.close()
        assert slow.result(20).json()["pid"] == process.pid
        process.join(10)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
            process.join(5)
        sock.close()


def _cpu_time(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def recycle_under_load(served, replaced: int) -> None:
    """Load ``served`` until ``replaced`` workers were replaced; none may fail."""
    load = Load(served.url, threads=4)
    try:
        count = lambda: served.count(r"\(zero-downtime\)$")  # noqa: E731
        assert wait_until(lambda: count() >= replaced, 60), served.output
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_max_requests_recycles_without_a_failed_request(launch, method):
    served = serve(
        launch,
        "--workers",
        "2",
        "--max-requests",
        "150",
        "--max-requests-jitter",
        "50",
        "--start-method",
        method,
    )
    recycle_under_load(served, 4)
    limits = [
        int(m.group(1))
        for m in map(re.compile(r"it served (\d+) requests").search, served.lines)
        if m
    ]
    assert len(limits) >= 4 and all(150 <= n <= 200 for n in limits), limits
    assert served.count(r"Recycling Runtime-Server-") >= 4
    stop(served)


def test_max_lifetime_recycles_without_a_failed_request(launch):
    served = serve(
        launch,
        "--workers",
        "2",
        "--max-lifetime",
        "2",
        "--max-lifetime-jitter",
        "1",
    )
    recycle_under_load(served, 4)
    assert served.count(r"it ran for \d+ s \(max lifetime 2 s, plus jitter\)") >= 4
    stop(served)


def test_max_worker_memory_recycles_a_growing_worker(launch):
    served = serve(launch, "--workers", "1", "--max-worker-memory", "200")
    pid = started(served)["Runtime-Server-0-0"]
    assert get(served.url, "/grow?mb=250").json()["pid"] == pid
    served.wait_for(r"Recycling Runtime-Server-0-0 .*: it uses \d+ MiB \(max worker")
    served.wait_for(r"as Runtime-Server-0-1 \(pid \d+\) \(zero-downtime\)")
    assert wait_until(lambda: not alive(pid), 10)
    assert get(served.url).json()["worker"] == "Runtime-Server-0-1"
    stop(served)


def test_a_stop_leaves_no_zombie_leak_warning_or_socket_file(launch, tmp_path):
    # Shared objects (semaphores) and restarts, then a stop.
    path = tmp_path / "run.sock"
    served = launch(
        *python(
            "-m", "runtime", "run", "sharing:rt", "--uds", str(path), "--workers", "2"
        ),
    )
    url = served.ready()
    assert get(url, "/count").text == "1"
    served.signal(signal.SIGHUP)
    assert wait_until(lambda: served.count(r"\(zero-downtime\)$") >= 2, 60)
    assert wait_until(lambda: not zombies_of(served.pid), 5), zombies_of(served.pid)
    assert get(url, "/count").text == "2"
    stop(served)
    assert not path.exists()
    assert "leaked" not in served.output and "resource_tracker" not in served.output


def test_bad_health_settings_are_refused_in_python():
    from runtime import ConfigError, Runtime

    rt = Runtime("health-settings", app=lambda *a: None)
    with pytest.raises(ConfigError, match="HANG_TIMEOUT must be 0 \\(off\\)"):
        rt.config.HANG_TIMEOUT = -1
    with pytest.raises(ConfigError, match="MAX_REQUESTS must be an integer"):
        rt.config.MAX_REQUESTS = 1.5
    with pytest.raises(ConfigError, match="max_lifetime must be 0 \\(off\\)"):
        rt.run(max_lifetime=float("nan"))
    with pytest.raises(ConfigError, match="max_worker_memory must be 0"):
        rt.run(max_worker_memory=-1)
