"""Custom managed processes beside the server workers."""

from __future__ import annotations

import re
import signal

import pytest
from conftest import alive, app_script, python, wait_until
from http_client import get

pytestmark = pytest.mark.timeout(90)


def _custom(launch, custom, **env):
    served = launch(*python(app_script("custom.py")), env={"RT_CUSTOM": custom, **env})
    served.ready()
    return served


def _table(served):
    return get(served.url, "/m").json()


def _wait_state(served, name, state, timeout=20):
    def reached():
        entry = _table(served).get(name)
        return entry if entry and entry["state"] == state else None

    entry = wait_until(reached, timeout, interval=0.05)
    assert entry, f"{name} never {state}: {_table(served)}\n{served.output}"
    return entry


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_tracked_untracked_completed_failed(launch, method):
    served = _custom(
        launch,
        "Tick:ticker:workers2,Once:once,Fail:fail,Gone:once:untracked",
        RT_START_METHOD=method,
    )
    for name in ("Runtime-Tick-0", "Runtime-Tick-1"):
        entry = _wait_state(served, name, "STARTED")
        assert entry["server"] is False and entry["starts"] == 1
    once = _wait_state(served, "Runtime-Once-0", "COMPLETED")
    failed = _wait_state(served, "Runtime-Fail-0", "FAILED")
    assert (once["exit_code"], once["exit_signal"]) == (0, None)
    assert (failed["exit_code"], failed["exit_signal"]) == (1, None)
    assert re.search(
        r"ERROR Runtime-Fail-0 \(pid \d+\) died \(exit code 1\)", served.output
    )
    served.wait_for(r"Runtime-Gone-0 \(pid \d+\) completed")
    assert wait_until(lambda: "Runtime-Gone-0" not in _table(served), 10)
    assert wait_until(lambda: get(served.url, "/count").json() > 10, 10)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert served.count("ticker stopped") == 2  # SIGTERM arrived as KeyboardInterrupt


def test_transient_restarts_with_the_workers_durable_does_not(launch):
    served = _custom(launch, "Trans:ticker:transient,Dur:ticker")
    # They start in main_process_ready, so they may not be in the table yet.
    before = {
        name: _wait_state(served, name, "STARTED")
        for name in ("Runtime-Trans-0", "Runtime-Dur-0")
    }
    assert get(served.url, "/m/restart?all=1").status_code == 200
    served.wait_for(r"Restarted Runtime-Trans-0")
    after = _wait_state(served, "Runtime-Trans-0", "STARTED")
    assert after["pid"] != before["Runtime-Trans-0"]["pid"] and after["starts"] == 2
    wait_until(lambda: served.count(r"Restarted Runtime-Server-1-0") == 1, 20)
    assert _table(served)["Runtime-Dur-0"]["pid"] == before["Runtime-Dur-0"]["pid"]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_restart_by_name_running_or_finished_and_refusals(launch):
    served = _custom(
        launch, "Again:once:restartable,Fixed:ticker,Run:ticker:restartable"
    )
    _wait_state(served, "Runtime-Again-0", "COMPLETED")
    assert get(served.url, "/m/restart?names=Runtime-Again-0").status_code == 200
    served.wait_for(r"Restarted Runtime-Again-0")
    wait_until(lambda: _table(served)["Runtime-Again-0"]["starts"] == 2, 10)
    running = _wait_state(served, "Runtime-Run-0", "STARTED")
    assert get(served.url, "/m/restart?names=Runtime-Run-0").status_code == 200
    restarted = _wait_state(served, "Runtime-Run-0", "STARTED")
    wait_until(lambda: _table(served)["Runtime-Run-0"]["pid"] != running["pid"], 10)
    refused = get(served.url, "/m/restart?names=Runtime-Fixed-0")
    assert refused.status_code == 400
    assert "cannot be restarted: manage() it with restartable=True" in refused.text
    assert restarted["server"] is False
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_manage_from_a_handler_learns_the_answer(launch):
    served = _custom(launch, "")
    assert get(served.url, "/manage?name=Fly&kind=once").json() == {"ok": True}
    _wait_state(served, "Runtime-Fly-0", "COMPLETED")
    shared = get(served.url, "/manage?name=Tick&kind=ticker")
    assert shared.status_code == 400 and "cannot travel that way" in shared.text
    duplicate = get(served.url, "/manage?name=Fly&kind=once")
    assert duplicate.status_code == 400 and "exists already" in duplicate.text
    bad = get(served.url, "/manage?name=Bad&kind=once&flags=transient+fixed")
    assert bad.status_code == 400
    assert "transient=True with restartable=False" in bad.text
    reserved = get(served.url, "/manage?name=Server&kind=once")
    assert reserved.status_code == 400 and "'Server' is not valid" in reserved.text
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_an_unpicklable_target_under_spawn_is_named(launch):
    served = launch(*python(app_script("custom.py")), env={"RT_CUSTOM": "Lam:lambda"})
    assert served.wait(30) == 1
    assert (
        "custom process 'Lam': its target (function) cannot be sent to a "
        "'spawn' worker" in served.output
    )
    assert "Started Runtime-Lam" not in served.output


def test_a_custom_process_that_ignores_sigterm_is_killed(launch):
    served = _custom(launch, "Stub:stubborn,Par:parent", RT_GRACEFUL="1")
    served.wait_for("stubborn running")
    child = int(served.wait_for(r"parent started child (\d+)").group(1))
    served.signal(signal.SIGTERM)
    served.wait_for("stubborn ignores the stop")
    served.wait_for(r"Runtime-Stub-0 \(pid \d+\) did not stop within 1 s; killing")
    assert served.wait(30) == 0
    # the custom process's own child went with it
    assert wait_until(lambda: not alive(child), 10)


def test_auto_start_false_waits_for_a_restart_by_name(launch):
    served = _custom(launch, "Later:ticker:manual")
    _wait_state(served, "Runtime-Later-0", "NONE")
    assert get(served.url, "/m/restart?names=Runtime-Later-0").status_code == 200
    entry = _wait_state(served, "Runtime-Later-0", "STARTED")
    assert entry["starts"] == 1
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_custom_processes_end_when_the_manager_is_killed(launch, method):
    from conftest import session_members

    served = _custom(launch, "Tick:ticker,Par:parent", RT_START_METHOD=method)
    served.wait_for(r"parent started child (\d+)")
    _wait_state(served, "Runtime-Tick-0", "STARTED")
    served.signal(signal.SIGKILL)
    served.wait()
    assert wait_until(lambda: not session_members(served.pid), 15), (
        f"left: {session_members(served.pid)}"
    )


def test_what_a_custom_process_leaves_behind_is_ended(launch):
    served = _custom(launch, "Aban:abandon,Tick:atick")
    child = int(served.wait_for(r"abandoned child (\d+)").group(1))
    _wait_state(served, "Runtime-Aban-0", "COMPLETED")
    assert wait_until(lambda: not alive(child), 10)
    assert wait_until(lambda: get(served.url, "/count").json() > 5, 10)  # async def
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_failed_start_stops_custom_processes_started_early(launch):
    served = launch(*python(app_script("custom.py")), env={"RT_EARLY": "1"})
    assert served.wait(30) == 1
    assert "start-up fails after a custom process started" in served.output
    assert re.search(r"Runtime-Early-0 \(pid \d+\) stopped", served.output)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_an_orphaned_custom_process_ends_its_whole_group(launch, method):
    from conftest import session_members

    served = _custom(launch, "Hard:hardy", RT_START_METHOD=method, RT_GRACEFUL="1")
    child = int(served.wait_for(r"hardy started child (\d+)").group(1))
    served.signal(signal.SIGKILL)
    served.wait()
    assert wait_until(lambda: not session_members(served.pid), 15), (
        f"left: {session_members(served.pid)}"
    )
    assert not alive(child)


def test_manage_flags_checked_in_the_worker_and_names_freed(launch):
    served = _custom(launch, "U:once:untracked")
    served.wait_for(r"Runtime-U-0 \(pid \d+\) completed")
    assert wait_until(lambda: "Runtime-U-0" not in _table(served), 10)
    again = get(served.url, "/manage?name=U&kind=once&flags=untracked")
    assert again.json() == {"ok": True}  # an ended untracked name is free again
    never = get(served.url, "/manage?name=N&kind=once&flags=manual+fixed")
    assert never.status_code == 400 and "could never run" in never.text
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_stop_while_custom_processes_start_is_quiet(launch):
    served = _custom(launch, "Many:ticker:workers2,More:ticker:workers2")
    served.wait_for("Started Runtime-More-1")
    served.signal_group(signal.SIGINT)
    assert served.wait(30) == 0
    assert "Traceback" not in served.output
