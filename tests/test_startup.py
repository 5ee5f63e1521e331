"""Start-up: acks, deadlines, failures and the start-method field cases."""

from __future__ import annotations

import signal

import pytest
from conftest import START_METHODS, app_script, python
from http_client import get, workers_seen

pytestmark = pytest.mark.timeout(90)


def _run(launch, script, **env):
    return launch(*python(app_script(script)), env=env)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_missing_ack_stops_everything_with_exit_1(launch, method):
    # C07 with a short deadline: start-up takes 40 s, the deadline is 1.5 s.
    served = _run(
        launch,
        "basic.py",
        RT_START_METHOD=method,
        RT_SLOW_START="40",
        RT_THRESHOLD="15",
    )
    assert served.wait(30) == 1
    pids = served.worker_pids()
    assert len(pids) == 2
    for i, pid in enumerate(pids):
        assert (
            f"Runtime-Server-{i}-0 (pid {pid}) did not ack within 1.5 s"
            in served.output
        )
    assert "Ready:" not in served.output


@pytest.mark.parametrize(
    "threshold, code", [("10", 1), ("600", 0)], ids=["short", "raised"]
)
def test_threshold_governs_slow_start(launch, threshold, code):
    served = _run(launch, "basic.py", RT_SLOW_START="2", RT_THRESHOLD=threshold)
    if code == 0:
        url = served.ready()
        assert len(workers_seen(url, expected=2)) == 2
        served.signal(signal.SIGTERM)
    assert served.wait(30) == code


def test_ack_timeout_option_of_the_cli(launch):
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "basic:rt",
            "--port",
            "0",
            "--workers",
            "1",
            "--ack-timeout",
            "0.5",
        ),
        env={"RT_SLOW_START": "40"},
    )
    assert served.wait(30) == 1
    assert "did not ack within 0.5 s" in served.output


@pytest.mark.parametrize(
    "event", ["before_server_start", "after_server_start", "main_process_start"]
)
def test_a_listener_that_raises_fails_start_up(launch, event):
    served = _run(launch, "basic.py", RT_RAISE_IN=event)
    assert served.wait(30) == 1
    assert "Ready:" not in served.output
    if event == "main_process_start":
        assert "Started Runtime-Server" not in served.output
        assert "A main_process_start listener failed" in served.output
    else:
        assert "failed to start: RuntimeError: boom in " + event in served.output
        # the traceback is shown once per failed worker, by the manager only
        assert served.count(r"raise RuntimeError") <= 2


def test_main_process_ready_failure_stops_with_exit_1(launch):
    served = _run(launch, "basic.py", RT_RAISE_IN="main_process_ready")
    assert served.wait(30) == 1
    assert "A main_process_ready listener failed; stopping" in served.output


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_runtime_only_under_main_guard_is_reported(launch, method):
    # C05: workers re-import the script and cannot find the runtime.
    served = _run(launch, "guarded.py", RT_START_METHOD=method)
    assert served.wait(30) == 1
    assert "Runtime 'guarded' was not found after importing" in served.output
    assert "create the Runtime at module level" in served.output
    assert "KeyError" not in served.output


def test_runtime_only_under_main_guard_works_with_fork(launch):
    served = _run(launch, "guarded.py", RT_START_METHOD="fork")
    url = served.ready()
    assert get(url).status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unguarded_run_is_explained(launch, method):
    served = _run(launch, "unguarded.py", RT_START_METHOD=method)
    assert served.wait(30) == 1
    assert "call run() only under `if __name__ == '__main__':`" in served.output or (
        "move it under `if __name__ == '__main__':`" in served.output
    )
    assert "Address already in use" not in served.output


def test_unguarded_run_is_one_log_line_per_worker_not_a_traceback(launch):
    served = _run(launch, "unguarded.py", RT_START_METHOD="spawn")
    assert served.wait(30) == 1
    assert "Traceback" not in served.output, served.output
    assert served.count(r"ERROR run\(\) was called while a worker process") >= 1


def test_unpicklable_shared_object_fails_before_any_worker(launch):
    # C04: a lambda cannot reach a spawn worker; say which object and why.
    served = _run(launch, "shared.py", RT_SHARED="lambda")
    assert served.wait(30) == 1
    assert (
        "shared_ctx.fn (function) cannot be sent to a 'spawn' worker" in served.output
    )
    assert "finds functions by importing them by name" in served.output
    assert "Started Runtime-Server" not in served.output


def test_fork_context_queue_fails_before_any_worker(launch):
    # C03: the global method is fork, workers spawn, the queue is the global kind.
    served = _run(launch, "shared.py", RT_SHARED="fork_queue")
    assert served.wait(30) == 1
    assert "shared_ctx.queue was built in a 'fork' context" in served.output
    assert "rt.context.Queue()" in served.output
    assert "Started Runtime-Server" not in served.output


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_from_rt_context_reaches_every_worker(launch, method):
    served = _run(launch, "shared.py", RT_SHARED="ctx_queue", RT_START_METHOD=method)
    served.wait_for("queue got Runtime-Server-0-0 Runtime-Server-1-0")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_global_method_already_fixed_is_recovered(launch):
    # C01: the program fixed fork globally; the runtime asks for spawn.
    served = _run(launch, "basic.py", RT_GLOBAL_METHOD="fork")
    url = served.ready()
    assert len(workers_seen(url, expected=2)) == 2
    assert served.count("WARNING Start method 'spawn' was requested") == 1
    assert "already 'fork'" in served.output and "rt.context" in served.output
    assert "(start method spawn)" in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_skip_start_method_setup_uses_the_global_method_silently(launch):
    served = _run(launch, "basic.py", RT_GLOBAL_METHOD="forkserver", RT_SKIP="1")
    url = served.ready()
    assert len(workers_seen(url, expected=2)) == 2
    assert "(start method forkserver)" in served.output
    assert "WARNING" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_unknown_start_method_fails_before_any_process(launch):
    # C02: a misspelt method, set in the program.
    served = launch(
        *python("-c", "from runtime import Runtime; Runtime.start_method = 'forkserve'")
    )
    assert served.wait(30) == 1
    assert "start method 'forkserve' is unknown; choose one of: " in served.output


def test_unknown_start_method_on_the_cli_exits_2(launch):
    served = launch(*python("-m", "runtime", "run", "--start-method", "forkserve"))
    assert served.wait(30) == 2
    lines = [line for line in served.lines if line]
    assert len(lines) == 1
    assert "forkserve" in lines[0] and "spawn" in lines[0]


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_bind_by_host_name_under_a_running_loop(launch, method):
    # C06: the manager's loop is running while workers start; host is a name.
    served = _run(launch, "basic.py", RT_HOST="localhost", RT_START_METHOD=method)
    url = served.ready()
    assert len(workers_seen(url, expected=2)) == 2
    assert "EBADF" not in served.output and "Bad file descriptor" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_state_table_after_start(launch):
    import json

    served = _run(launch, "basic.py", RT_START_METHOD="forkserver")
    table = json.loads(served.wait_for(r"^workers (.*)").group(1))
    assert table["Runtime-Main"]["pid"] == served.pid
    pids = served.worker_pids()
    for i in range(2):
        entry = table[f"Runtime-Server-{i}-0"]
        assert entry["server"] is True
        assert entry["state"] == "ACKED"
        assert entry["pid"] == pids[i]
        assert entry["starts"] == 1
        assert entry["start_at"] and entry["restart_at"] is None
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
