"""Restarts, scaling, crash respawn, control signals and the multiplexer."""

from __future__ import annotations

import os
import re
import signal

import pytest
from conftest import (
    START_METHODS,
    app_script,
    free_port,
    python,
    session_members,
    wait_until,
)
from http_client import Load, get

pytestmark = pytest.mark.timeout(120)


def _control(launch, **env):
    served = launch(*python(app_script("control.py")), env=env)
    served.ready()
    return served


def _m(served, path="/m", **query):
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return get(served.url, f"{path}?{text}" if text else path)


def worker_processes(served) -> set[int]:
    """Live processes of the run other than the manager and the helpers
    multiprocessing starts from it (resource tracker, fork server)."""
    found = set()
    for pid in session_members(served.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        helper = parent == served.pid and (
            b"resource_tracker" in cmdline or b"forkserver" in cmdline
        )
        if pid != served.pid and not helper:
            found.add(pid)
    return found


def settled(served, size: int) -> dict | None:
    """The state table once exactly ``size`` servers are ACKED and alive."""
    table = _m(served).json()["workers"]
    servers = {k: v for k, v in table.items() if v["server"]}
    pids = {v["pid"] for v in servers.values()}
    if (
        len(servers) == size
        and all(v["state"] == "ACKED" for v in servers.values())
        and worker_processes(served) == pids
    ):
        return servers
    return None


def wait_settled(served, size: int, timeout: float = 30.0) -> dict:
    servers = wait_until(lambda: settled(served, size), timeout, interval=0.05)
    assert servers, f"did not settle at {size}; output:\n{served.output}"
    return servers


def wait_count(served, pattern: str, count: int, timeout: float = 30.0) -> None:
    ok = wait_until(lambda: served.count(pattern) >= count, timeout)
    assert ok, f"fewer than {count} lines match {pattern!r}:\n{served.output}"


@pytest.mark.parametrize("method", START_METHODS)
def test_every_restart_mode_and_target(launch, method):
    served = _control(launch, RT_START_METHOD=method)
    before = wait_settled(served, 2)
    me = _m(served, "/m/restart").json()["worker"]  # this worker, default order
    wait_count(served, rf"Restarted {me} \(pid \d+\) as ", 1)
    after = wait_settled(served, 2)
    assert set(after) != set(before) and len(set(after) & set(before)) == 1

    other = sorted(after)[0]
    _m(served, "/m/restart", names=other, zd=1)  # one named, zero-downtime
    wait_count(served, rf"Restarted {other} .* \(zero-downtime\)", 1)
    after = wait_settled(served, 2)
    assert other not in after

    _m(served, "/m/restart", all=1, zd=1)  # all, zero-downtime
    wait_count(served, r"\(zero-downtime\)", 3)
    _m(served, "/m/restart", all=1)  # all, stop-then-start
    wait_count(served, r"Restarted .* as .*\d\)$", 3)
    final = wait_settled(served, 2)
    for entry in final.values():
        assert entry["starts"] >= 3 and entry["restart_at"] is not None
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert served.count(r" acked$") == served.count(r"INFO Started Runtime-Server")


def test_rolling_restart_keeps_the_old_worker_until_the_new_one_acked(launch):
    served = _control(launch, RT_WORKERS="3", RT_START_METHOD="forkserver")
    wait_settled(served, 3)
    served.signal(signal.SIGHUP)
    wait_count(served, r"\(zero-downtime\)$", 3)
    wait_settled(served, 3)
    lines = served.lines
    events = []  # (line index, +1 serving / -1 not)
    for i, line in enumerate(lines):
        if line.endswith(" acked"):
            events.append((i, 1))
        elif "stopped (exit code 0)" in line:
            events.append((i, -1))
    # after the first three acks, never fewer than three serving
    assert min(_running_counts(events)[2:]) >= 3, served.output
    restarted = [
        re.search(r"Restarted (\S+) \(pid (\d+)\) as (\S+) \(pid (\d+)\)", line)
        for line in lines
        if "(zero-downtime)" in line
    ]
    slots = [m.group(1).rsplit("-", 2)[1] for m in restarted]
    assert slots == ["0", "1", "2"]  # one slot after the other
    for m in restarted:
        new_acked = _index(lines, f"{m.group(3)} (pid {m.group(4)}) acked")
        old_stopped = _index(lines, f"{m.group(1)} (pid {m.group(2)}) stopped")
        assert new_acked < old_stopped
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def _running_counts(events):
    counts, serving = [], 0
    for _, delta in events:
        serving += delta
        counts.append(serving)
    return counts


def _index(lines, text):
    return next(i for i, line in enumerate(lines) if text in line)


def test_a_replacement_that_never_acks_keeps_the_old_worker(launch):
    served = _control(
        launch, RT_START_METHOD="fork", RT_HANG_LATER="1", RT_THRESHOLD="15"
    )
    before = wait_settled(served, 2)
    _m(served, "/m/restart", all=1, zd=1)
    served.wait_for(r"Rolling restart stopped; not restarted: Runtime-Server-1")
    line = served.wait_for(
        r"Zero-downtime restart of (\S+) \(pid (\d+)\) failed: its replacement "
        r"(\S+) \(pid (\d+)\) did not ack within 1.5 s; the old worker keeps serving"
    )
    assert line.group(1) == "Runtime-Server-0-0"
    assert int(line.group(2)) == before["Runtime-Server-0-0"]["pid"]
    after = wait_settled(served, 2)
    assert {v["pid"] for v in after.values()} == {v["pid"] for v in before.values()}
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_scale_up_down_and_bad_values(launch):
    served = _control(launch, RT_START_METHOD="spawn")
    wait_settled(served, 2)
    assert _m(served, "/m/scale", n=3).status_code == 200
    wait_settled(served, 3)
    for bad in ("0", "-2", "x", "3"):
        response = _m(served, "/m/scale", n=bad)
        assert response.status_code == 400, bad
        error = response.json()["error"]
        assert repr(int(bad) if bad != "x" else bad) in error or "already" in error
    assert _m(served, "/m/scale", n=1).status_code == 200
    wait_settled(served, 1)
    served.signal(signal.SIGHUP)  # the scaled size survives a restart
    wait_count(served, r"\(zero-downtime\)$", 1)
    wait_settled(served, 1)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_ttin_and_ttou_scale_by_one(launch):
    served = _control(launch, RT_START_METHOD="fork", RT_WORKERS="1")
    wait_settled(served, 1)
    served.signal(signal.SIGTTIN)
    wait_settled(served, 2)
    served.signal(signal.SIGTTOU)
    wait_settled(served, 1)
    served.signal(signal.SIGTTOU)
    served.wait_for(r"Ignored SIGTTOU: scale\(\) needs 1 to 1024 server workers")
    wait_settled(served, 1)
    served.signal(signal.SIGTTIN)  # slot 1 again: its new worker has a new name
    assert "Runtime-Server-1-1" in wait_settled(served, 2)
    assert served.count(r"Started Runtime-Server-1-0 ") == 1
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


# C09: kill -9 of an acked worker.
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_killed_worker_is_reaped_logged_and_replaced(launch, method):
    served = _control(launch, RT_START_METHOD=method, RT_WORKERS="4")
    before = wait_settled(served, 4)
    victim = before["Runtime-Server-2-0"]["pid"]
    os.kill(victim, signal.SIGKILL)
    served.wait_for(
        rf"ERROR Runtime-Server-2-0 \(pid {victim}\) was killed by SIGKILL; if "
        r"nobody sent it, the system may be out of memory"
    )
    served.wait_for(r"Respawned Runtime-Server-2-1")
    after = wait_settled(served, 4)
    assert victim not in {v["pid"] for v in after.values()}
    assert not os.path.exists(f"/proc/{victim}")  # reaped: no zombie left
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_crash_loop_ends_with_exit_1(launch):
    served = launch(
        *python(app_script("control.py")),
        env={
            "RT_CRASH_AFTER_ACK": "1",
            "RT_WORKERS": "1",
            "RT_CRASH_LIMIT": "3",
            "RT_START_METHOD": "fork",
        },
    )
    assert served.wait(60) == 1
    assert "Respawning Runtime-Server-0 in 0.5 s (1 quick failure(s) in a row)" in (
        served.output
    )
    assert "Respawning Runtime-Server-0 in 1.0 s (2 quick failure(s)" in served.output
    assert re.search(
        r"Runtime-Server-0 kept failing: 3 processes in a row ended or failed "
        r"within 10 s of starting; the last one, Runtime-Server-0-2 \(pid \d+\), "
        r"exit code 3",
        served.output,
    )


# C10: a worker that exits 0 by itself.
def test_a_planned_exit_is_refilled(launch):
    served = _control(launch, RT_START_METHOD="fork")
    before = wait_settled(served, 2)
    leaving = _m(served, "/exit", code=0).json()
    served.wait_for(rf"{leaving['worker']} \(pid {leaving['pid']}\) exited by itself")
    after = wait_settled(served, 2)
    assert leaving["pid"] not in {v["pid"] for v in after.values()}
    assert len(set(after) & set(before)) == 1
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_multiplexer_state_and_errors(launch):
    served = _control(launch, RT_START_METHOD="fork")
    wait_settled(served, 2)
    me = _m(served).json()
    assert me["name"].startswith("Runtime-Server-")
    assert me["state"]["pid"] == me["pid"] and me["state"]["state"] == "ACKED"
    assert me["workers"]["Runtime-Main"]["pid"] == served.pid
    response = _m(served, "/m/set", pid="1")
    assert (
        response.status_code == 400
        and "'pid' is kept by the runtime" in (response.json()["error"])
    )
    setter = _m(served, "/m/set", color="blue").json()["worker"]

    def seen():
        table = _m(served).json()["workers"]
        return table[setter].get("color") == "blue"

    assert wait_until(seen, 10)
    bad = _m(served, "/m/restart", names="Runtime-Server-9-0")
    assert bad.status_code == 400 and "Runtime-Server-9-0" in bad.json()["error"]
    both = _m(served, "/m/restart", names=me["name"], all=1)
    assert both.status_code == 400 and "all_workers" in both.json()["error"]
    assert _m(served, "/m/terminate").status_code == 200
    assert served.wait() == 0
    assert "asked the group to stop" in served.output


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_restart_storm_from_a_thread(launch, method):
    # C11, shortened: a main-process thread restarts all workers every 0.3 s.
    served = _control(launch, RT_START_METHOD=method, RT_STORM="12,0.3")
    failures, done = [], []

    def traffic():
        while not done:
            try:
                if get(served.url).status_code != 200:
                    failures.append("status")
            except Exception as exc:  # noqa: BLE001 - any failure counts
                failures.append(repr(exc))

    import threading

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        served.wait_for("storm done", 90)
        wait_settled(served, 2, timeout=60)
    finally:
        done.append(True)
        thread.join(30)
    assert failures == []
    # Every worker started acked; a restart still queued when the table first
    # looked settled may add one more start, which must ack too.
    assert wait_until(
        lambda: (
            served.count(r" acked$") == served.count(r"INFO Started Runtime-Server")
        ),
        30,
    ), served.output
    wait_settled(served, 2, timeout=60)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_no_failed_request_during_rolling_restarts_under_load(launch, method):
    served = _control(launch, RT_START_METHOD=method)
    wait_settled(served, 2)
    load = Load(served.url)
    try:
        for rolling in range(1, 7):
            served.signal(signal.SIGHUP)
            wait_count(served, r"\(zero-downtime\)$", 2 * rolling, timeout=60)
    finally:
        load.stop()
    assert load.requests > 100
    assert load.failures == [], load.failures[:5]
    wait_settled(served, 2)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_worker_that_will_not_stop_is_killed_on_restart(launch):
    # C17: its stop never ends; the restart kills it after the grace period.
    served = _control(
        launch,
        RT_START_METHOD="fork",
        RT_HANG_STOP="1",
        RT_GRACEFUL="1",
        RT_WORKERS="1",
    )
    before = wait_settled(served, 1)
    pid = before["Runtime-Server-0-0"]["pid"]
    served.signal(signal.SIGHUP)
    served.wait_for(
        rf"Runtime-Server-0-0 \(pid {pid}\) did not stop within 4 s; killing it"
    )
    wait_settled(served, 1)
    served.signal(signal.SIGTERM)
    assert served.wait(30) == 0
    assert served.count("did not stop within 4 s; killing it") == 2


@pytest.mark.parametrize("method", START_METHODS)
def test_restart_serves_new_code_except_under_fork(launch, tmp_path, method):
    # C12: the handler's source changes on disk, then every worker restarts.
    module = tmp_path / "versioned.py"
    source = (
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200})\n"
        "    await send({'type': 'http.response.body', 'body': b'%s'})\n"
    )
    module.write_text(source % "old")
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "versioned:app",
            "--app-dir",
            str(tmp_path),
            "--port",
            "0",
            "--workers",
            "2",
            "--start-method",
            method,
        ),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    url = served.ready()
    assert get(url).text == "old"
    module.write_text(source % "new")
    served.signal(signal.SIGHUP)
    wait_count(served, r"\(zero-downtime\)$", 2)
    bodies = {get(url).text for _ in range(10)}
    if method == "fork":
        assert bodies == {"old"}
        assert "changes on disk are not picked up" in served.output
    else:
        assert bodies == {"new"}
        assert "not picked up" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_multiplexer_refuses_what_could_hurt_the_manager(launch):
    served = _control(launch, RT_START_METHOD="spawn")
    wait_settled(served, 2)
    big = _m(served, "/m/big", size=300_000)
    assert big.status_code == 400 and "state values are for small facts" in big.text
    assert _m(served, "/m/many", n=2000).status_code == 200
    unpicklable = _m(served, "/m/unpicklable")
    assert unpicklable.status_code == 400 and "rt.m.state['fn']" in unpicklable.text
    for query in ({"n": 100000}, {"n": "x"}):
        assert _m(served, "/m/scale", **query).status_code == 400
    for query in ({"names": ","}, {"names": " "}, {"all": "yes"}, {"zd": "no"}):
        response = _m(served, "/m/restart", **query)
        assert response.status_code == 400, query
    manager = _m(served, "/m/manager")
    assert manager.status_code == 400
    assert "rt.manager exists only in the main process" in manager.text

    def last_i():
        table = _m(served).json()["workers"]
        return any(v.get("i") == 1999 for v in table.values())

    assert wait_until(last_i, 10)  # every update arrived, in order
    served.signal(signal.SIGHUP)  # the manager still answers
    wait_count(served, r"\(zero-downtime\)$", 2)
    assert "The manager process is gone" not in served.output
    assert "Dropped a message" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_scale_up_that_cannot_start_keeps_the_group(launch, tmp_path, method):
    flag = tmp_path / "broken"
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "flaky:rt",
            "--port",
            "0",
            "--workers",
            "2",
            "--start-method",
            method,
        ),
        env={"RT_FAIL_FILE": str(flag)},
    )
    served.ready()
    flag.write_text("")
    served.signal(signal.SIGTTIN)
    served.wait_for(
        r"Runtime-Server-2-0 \(pid \d+\) failed before its ack .*; not "
        r"scaling up with it"
    )
    served.wait_for(r"Scaled to 2 server worker\(s\)")
    assert "Respawning" not in served.output and served.proc.poll() is None
    assert get(served.url).status_code == 200
    flag.unlink()
    served.signal(signal.SIGTTIN)  # with the cause gone, the scale-up works
    served.wait_for(r"Scaled to 3 server worker\(s\)")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_failed_stop_then_start_restart_spares_the_other_slots(launch, tmp_path):
    flag, inspector = tmp_path / "broken", str(free_port())
    served = launch(
        *python("-m", "runtime", "run", "flaky:rt", "--port", "0", "--workers", "2"),
        *("--inspect", "--inspector-port", inspector),
        env={"RT_FAIL_FILE": str(flag)},
    )
    url = served.ready()
    flag.write_text("")  # from now on a new worker fails before its ack
    asked = launch(*python("-m", "runtime", "inspect", "reload", "--port", inspector))
    assert asked.wait() == 0, asked.output
    served.wait_for(r"Rolling restart stopped; not restarted: Runtime-Server-1")
    assert get(url).status_code == 200  # slot 1 kept its worker
    assert "Runtime-Server-1-0" in served.output
    assert not re.search(r"Runtime-Server-1-0\[\d+\] INFO Stopped", served.output)
    flag.unlink()  # the cause gone, slot 0's respawn succeeds
    served.wait_for(r"Respawned Runtime-Server-0-\d")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
