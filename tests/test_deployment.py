"""Deployment: the pid file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import app_script, python, wait_until
from http_client import get

pytestmark = pytest.mark.timeout(60)


def _probed(launch, **env):
    return launch(*python(app_script("probed.py")), env=env)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(done.stdout)


def test_the_pid_file_holds_the_managers_pid_while_it_runs(launch, tmp_path):
    path = tmp_path / "run" / "probed.pid"
    path.parent.mkdir()
    served = _probed(launch, RT_PID_FILE=str(path), RT_START_METHOD="fork")
    served.ready()
    assert path.read_text() == f"{served.pid}\n"
    assert os.listdir(path.parent) == ["probed.pid"]  # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert "pid file" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert not path.exists()


def test_the_pid_file_in_single_process_mode(launch, tmp_path):
    path = tmp_path / "single.pid"
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--single-process",
            "--port",
            "0",
            "--pid-file",
            str(path),
        )
    )
    served.wait_for(r"\(single process\)")
    assert wait_until(path.exists, 10)
    assert path.read_text() == f"{served.pid}\n"
    assert get(served.url).json()["pid"] == served.pid
    served.signal(signal.SIGINT)
    assert served.wait() == 0
    assert not path.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        ("dead", "Replacing the stale pid file {path}: pid {pid} is not running"),
        ("junk", "Replacing the pid file {path}: it holds no pid"),
    ],
)
def test_a_stale_pid_file_is_replaced_with_a_warning(launch, tmp_path, content, words):
    path = tmp_path / "stale.pid"
    pid = _dead_pid()
    path.write_text(f"{pid}\n" if content == "dead" else "not a pid\n")
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--port",
            "0",
            "--start-method",
            "fork",
            "--pid-file",
            str(path),
        )
    )
    served.ready()
    served.wait_for("WARNING " + words.format(path=path, pid=pid))
    assert path.read_text() == f"{served.pid}\n"
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert not path.exists()


def test_a_pid_file_of_a_running_process_refuses_the_start(launch, tmp_path):
    path = tmp_path / "taken.pid"
    path.write_text(f"{os.getpid()}\n")  # this test's own process: alive, not it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--port",
            str(port),
            "--pid-file",
            str(path),
        )
    )
    assert served.wait(30) == 1
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    assert f"pid file '{path}' names pid {os.getpid()}, which is running" in lines[0]
    assert path.read_text() == f"{os.getpid()}\n"  # left alone
    with socket.create_server(("127.0.0.1", port)):
        pass  # nothing was bound


def test_no_pid_file_when_the_port_cannot_be_bound(launch, tmp_path):
    path = tmp_path / "never.pid"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        served = _probed(launch, RT_PID_FILE=str(path), RT_PORT=port)
        assert served.wait(30) == 1
    assert "in use" in served.output
    assert not path.exists()


def test_a_pid_file_taken_over_meanwhile_is_kept_at_exit(launch, tmp_path):
    path = tmp_path / "over.pid"
    served = _probed(launch, RT_PID_FILE=str(path), RT_START_METHOD="fork")
    served.ready()
    path.write_text("12345\n")  # another run (or an operator) took it over
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert path.read_text() == "12345\n"


@pytest.mark.parametrize(
    "where, words",
    [
        ("/nonexistent/dir/x.pid", ["/nonexistent/dir/x.pid", "directory does not"]),
        ("{tmp}", ["{tmp}", "is a directory"]),
    ],
    ids=["no-directory", "a-directory"],
)
def test_bad_pid_file_paths_are_one_line_and_exit_2(launch, tmp_path, where, words):
    served = launch(
        *python("-m", "runtime", "run", "--pid-file", where.format(tmp=tmp_path))
    )
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word.format(tmp=tmp_path) in lines[0]


def test_pid_file_settings_are_validated_in_python(tmp_path):
    from runtime import Config, ProcessGroup, Runtime
    from runtime.config import RunOptions
    from runtime.errors import ConfigError, PidFileError

    with pytest.raises(ConfigError, match="PID_FILE must be a file path, got 5"):
        Config().PID_FILE = 5
    options = RunOptions.build(Config(PID_FILE="x.pid"), ProcessGroup.THRESHOLD)
    assert options.pid_file == os.path.abspath("x.pid")
    other = subprocess.Popen(["sleep", "60"])
    taken = tmp_path / "taken.pid"
    taken.write_text(f"{other.pid}\n")
    rt = Runtime("deploy-pid", app=lambda scope, receive, send: None)
    try:
        with pytest.raises(PidFileError, match="which is running"):
            rt.run(port=0, pid_file=str(taken))
        assert rt._manager is None
    finally:
        Runtime._registry.pop("deploy-pid")
        other.kill()
        other.wait(10)
