"""Signals and shutdown (C16): every path drains in-flight requests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket

import httpx
import pytest
from conftest import app_script, python, wait_until
from http_client import InFlight

pytestmark = pytest.mark.timeout(90)

PATHS = {
    "sigterm-manager": (signal.SIGTERM, False),
    "sigint-group": (signal.SIGINT, True),
    "sigint-manager": (signal.SIGINT, False),
}


def _send(served, path: str) -> None:
    sig, group = PATHS[path]
    if group:
        served.signal_group(sig)
    else:
        served.signal(sig)


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.parametrize("path", list(PATHS))
def test_in_flight_request_completes_on_every_signal_path(launch, path, method):
    served = launch(*python(app_script("basic.py")), env={"RT_START_METHOD": method})
    url = served.ready()
    slow = InFlight(url, "/?sleep=2")
    served.wait_for("request sleeping")
    _send(served, path)
    response = slow.result()
    assert response.status_code == 200
    assert served.wait(30) == 0
    sig = PATHS[path][0]
    assert served.count(rf"Runtime-Main\[\d+\] INFO Stopping on {sig.name}") == 1
    assert served.count(r"stopped \(exit code 0\)") == 2
    assert "KeyboardInterrupt" not in served.output
    assert "Traceback" not in served.output


@pytest.mark.parametrize("path", list(PATHS))
def test_second_signal_stops_at_once(launch, path):
    served = launch(*python(app_script("basic.py")), env={"RT_GRACEFUL": "60"})
    url = served.ready()
    slow = InFlight(url, "/?sleep=60")
    served.wait_for("request sleeping")
    _send(served, path)
    served.wait_for(r"Runtime-Main\[\d+\] INFO Stopping on")

    def second_signal_seen():
        # A repeat within a moment counts as the same signal; send until one
        # counts as a second.
        if served.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                _send(served, path)
        return "Second stop signal" in served.output

    assert wait_until(second_signal_seen, 10, interval=0.2)
    assert served.wait(20) == 1
    with pytest.raises(httpx.HTTPError):
        slow.result()
    assert "Second stop signal" in served.output


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_signal_while_workers_start_is_honoured(launch, method):
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_SLOW_START": "40", "RT_START_METHOD": method},
    )
    served.wait_for("Started Runtime-Server-1-0")
    served.signal(signal.SIGTERM)
    assert served.wait(20) == 0
    assert "Ready:" not in served.output
    assert "Stopping on SIGTERM" in served.output


def test_ctrl_c_during_interpreter_start_leaves_no_traceback(launch):
    served = launch(*python(app_script("basic.py")), env={"RT_WORKERS": "2"})
    served.wait_for("Started Runtime-Server-1-0")
    served.signal_group(signal.SIGINT)
    assert served.wait(20) == 0
    assert "KeyboardInterrupt" not in served.output


def test_signal_during_a_slow_main_process_start_is_honoured(launch):
    served = launch(*python(app_script("basic.py")), env={"RT_SLOW_MAIN": "40"})
    served.wait_for("main start sleeping")
    served.signal(signal.SIGTERM)
    assert served.wait(20) == 0
    assert "Started Runtime-Server" not in served.output
    assert "listener main_process_stop" in served.lines


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_workers_exit_when_the_manager_is_killed(launch, method):
    from conftest import session_members, wait_until

    served = launch(
        *python(app_script("basic.py")),
        env={"RT_START_METHOD": method, "RT_WORKERS": "3"},
    )
    served.ready()
    served.signal(signal.SIGKILL)
    served.wait()
    assert wait_until(lambda: not session_members(served.pid), 15), (
        f"left: {session_members(served.pid)}\n{served.output}"
    )
    # Each worker notices by its pipe closing or by its parent-death signal.
    pattern = (
        r"(Runtime-Server-\d-0)\[\d+\] \S+ "
        r"(The manager process is gone|Stopping on SIGTERM)"
    )
    noticed = {m.group(1) for m in map(re.compile(pattern).search, served.lines) if m}
    assert len(noticed) == 3, served.output


def test_a_worker_that_will_not_stop_is_killed_with_a_warning(launch):
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_HANG_STOP": "1", "RT_GRACEFUL": "1", "RT_WORKERS": "1"},
    )
    served.ready()
    pid = served.worker_pids()[0]
    served.signal(signal.SIGTERM)
    assert served.wait(30) == 0
    assert (
        f"Runtime-Server-0-0 (pid {pid}) did not stop within 4 s; killing it"
        in served.output
    )
    assert "stopped (killed by SIGKILL)" in served.output


@pytest.mark.parametrize("method", ["fork", "forkserver"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_group_signal_to_idle_workers_is_a_clean_stop(launch, method, sig):
    # Workers that get the signal too may exit before the manager handles its
    # own copy; that is still a clean stop, never a "died" error or exit 1.
    for _ in range(4):
        served = launch(
            *python(app_script("basic.py")), env={"RT_START_METHOD": method}
        )
        served.ready()
        served.signal_group(sig)
        assert served.wait(30) == 0, served.output
        assert "ERROR" not in served.output
        assert "Started Runtime-Server-0-1" not in served.output


def test_one_signal_delivered_twice_is_one_stop(launch):
    # `timeout` sends its signal to the child, then to the whole group.
    served = launch(*python(app_script("basic.py")))
    served.ready()
    served.signal(signal.SIGTERM)
    served.signal_group(signal.SIGTERM)
    assert served.wait(30) == 0, served.output
    assert "Second stop signal" not in served.output


def test_control_signals_do_nothing_in_single_process_mode(launch):
    served = launch(
        *python(app_script("basic.py")), env={"RT_SINGLE": "1", "RT_WORKERS": "1"}
    )
    served.wait_for(r"INFO Serving")
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        served.signal(sig)
        served.wait_for(rf"WARNING {sig.name} does nothing in single-process mode")
        assert httpx.get(served.url, timeout=5).status_code == 200  # not stopped
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_forced_stop_in_single_process_mode_does_not_blame_the_timeout(launch):
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_SINGLE": "1", "RT_WORKERS": "1", "RT_GRACEFUL": "60"},
    )
    served.wait_for(r"INFO Serving")
    slow = InFlight(served.url, "/?sleep=60")
    served.wait_for("request sleeping")
    served.signal(signal.SIGINT)
    served.wait_for(r"INFO Stopping on SIGINT")

    def second_signal_seen():
        if served.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                served.signal(signal.SIGINT)
        return "Second stop signal" in served.output

    assert wait_until(second_signal_seen, 10, interval=0.2)
    assert served.wait(20) == 1
    with pytest.raises(httpx.HTTPError):
        slow.result()
    assert "Graceful timeout reached" not in served.output


def test_a_worker_stopped_by_its_own_signal_is_replaced(launch):
    served = launch(*python(app_script("basic.py")), env={"RT_START_METHOD": "fork"})
    served.ready()
    victim = served.worker_pids()[0]
    os.kill(victim, signal.SIGTERM)
    served.wait_for(rf"\(pid {victim}\) stopped on its own SIGTERM; starting a new one")
    served.wait_for(r"Respawned Runtime-Server-0-1")
    served.signal(signal.SIGTERM)
    assert served.wait(30) == 0


def test_a_blocked_starting_worker_is_killed_without_the_graceful_wait(launch):
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_BLOCK_START": "40", "RT_GRACEFUL": "30", "RT_WORKERS": "1"},
    )
    served.wait_for("Started Runtime-Server-0-0")
    served.signal(signal.SIGTERM)
    served.wait_for(r"Runtime-Server-0-0 \(pid \d+\) did not stop within 3 s")
    assert served.wait(30) == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_new_connections_are_refused_while_draining(launch, method):
    served = launch(*python(app_script("basic.py")), env={"RT_START_METHOD": method})
    url = served.ready()
    slow = [InFlight(url, "/?sleep=3") for _ in range(2)]
    wait_until(lambda: served.count("request sleeping") == 2, 10)
    served.signal(signal.SIGTERM)
    served.wait_for(r"Runtime-Main\[\d+\] INFO Stopping on SIGTERM")
    host, port = url.removeprefix("http://").rsplit(":", 1)

    def refused():
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    assert wait_until(refused, 2.5, interval=0.05)
    assert all(request.result().status_code == 200 for request in slow)
    assert served.wait() == 0
