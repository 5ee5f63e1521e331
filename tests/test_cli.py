"""The ``runtime`` command: the demo, targets, and one-line errors for bad input."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
from conftest import python
from http_client import get, workers_seen

pytestmark = pytest.mark.timeout(60)

SCRIPT = str(Path(sys.executable).parent / "runtime")


def test_demo_serves_from_two_workers_and_ctrl_c_exits_0(launch):
    served = launch(SCRIPT, "run", "--port", "0")
    url = served.ready()
    assert served.count("Started Runtime-Server-") == 2
    assert workers_seen(url, expected=2) == {"Runtime-Server-0-0", "Runtime-Server-1-0"}
    response = get(url)
    assert response.headers["x-worker"].startswith("Runtime-Server-")
    served.signal_group(signal.SIGINT)  # what a terminal's Ctrl+C does
    assert served.wait() == 0
    assert "Traceback" not in served.output


def test_python_dash_m_serves_a_bare_asgi_app(launch):
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "basic:app",
            "--port",
            "0",
            "--workers",
            "2",
            "--start-method",
            "forkserver",
        )
    )
    url = served.ready()
    assert len(workers_seen(url, expected=2)) == 2
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_runtime_target_keeps_its_listeners(launch):
    served = launch(*python("-m", "runtime", "run", "basic:rt", "--port", "0"))
    served.wait_for("listener main_process_ready")
    assert get(served.url).json()["listeners"] == [
        "before_server_start",
        "after_server_start",
    ]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_every_log_line_names_process_and_pid(launch):
    served = launch(*python("-m", "runtime", "run", "--port", "0"))
    served.ready()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    for line in served.lines:
        assert " Runtime-Main[" in line or " Runtime-Server-" in line, line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--workers", "0"], ["--workers", "'0'", "1 or more"]),
        (["--workers", "two"], ["--workers", "'two'"]),
        (["--port", "70000"], ["--port", "70000"]),
        (["--graceful-timeout", "-1"], ["--graceful-timeout", "-1"]),
        (["--log-level", "loud"], ["--log-level", "loud"]),
        (["--bogus"], ["--bogus"]),
        (["nosuchmodule:app"], ["'nosuchmodule'", "--app-dir"]),
        (["basic:nothing"], ["'basic'", "'nothing'"]),
        (["basic"], ["MODULE:ATTR", "'basic'"]),
        (["--uds", "/tmp/x.sock", "--fd", "3"], ["uds", "fd"]),
        (["--uds", "/tmp/x.sock", "--port", "9"], ["host/port", "uds"]),
        (["--single-process", "--workers", "3"], ["single_process", "workers=3"]),
        (["--host", "999.1.1.1"], ["'999.1.1.1'"]),
        (["--uds", "/nonexistent/dir/x.sock"], ["/nonexistent/dir", "directory"]),
        (["--fd", "99"], ["fd 99", "not an open socket"]),
        (["--reload-dir", "/nonexistent/src"], ["'/nonexistent/src'", "directory"]),
        (["--reload", "--single-process"], ["auto_reload", "single_process"]),
        (["--hang-timeout", "-1"], ["--hang-timeout", "'-1'", "0 (off)"]),
        (["--max-requests", "many"], ["--max-requests", "'many'"]),
        (["--max-worker-memory", "-5"], ["--max-worker-memory", "'-5'"]),
        (["--hang-timeout", "0.001"], ["--hang-timeout", "at least 1 s"]),
        (["--inspect", "--single-process"], ["inspector", "single_process"]),
        (["--user", "99999999999", "--group", "1"], ["user", "4294967294"]),
        (["--user", "root", "--group", "-3"], ["group", "'-3'"]),
        (
            ["--inspect", "--inspector-tls-cert", "/no/c.pem"]
            + ["--inspector-tls-key", "/no/k.pem"],
            ["'/no/c.pem'", "not a file"],
        ),
        (
            ["--inspect", "--inspector-tls-cert", "/etc/passwd"]
            + ["--inspector-tls-key", "/etc/passwd"],
            ["'/etc/passwd'", "do not load"],
        ),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(launch, args, words):
    served = launch(*python("-m", "runtime", "run", *args))
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word in lines[0]


def test_port_in_use_is_one_line_and_exit_1(launch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        served = launch(*python("-m", "runtime", "run", "--port", str(port)))
        assert served.wait() == 1
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


def test_single_process_from_the_cli(launch):
    served = launch(
        *python("-m", "runtime", "run", "basic:app", "--port", "0", "--single-process")
    )
    served.wait_for(r"\(single process\)")
    assert get(served.url).json()["pid"] == served.pid
    served.signal(signal.SIGINT)
    assert served.wait() == 0


def test_an_unbound_fd_is_refused(launch):
    with socket.socket() as unbound:
        fd = unbound.fileno()
        unbound.set_inheritable(True)
        served = launch(
            *python("-m", "runtime", "run", "--fd", str(fd)), pass_fds=(fd,)
        )
        assert served.wait() == 2
    assert f"fd {fd} is not bound to a port" in served.output


def test_a_regular_file_as_unix_path_is_refused(launch, tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("")
    served = launch(*python("-m", "runtime", "run", "--uds", str(path)))
    assert served.wait() == 2
    assert "exists and is not a socket" in served.output
    assert path.read_text() == ""


def test_a_runtime_without_a_file_is_refused_under_spawn(launch):
    served = launch(
        *python(
            "-c",
            "from runtime import Runtime; from runtime.demo import app; "
            "Runtime('inline', app=app).run(port=0)",
        )
    )
    assert served.wait() == 1
    assert "main module that has no file (python -c" in served.output
    assert "Started Runtime-Server" not in served.output


def test_options_that_do_nothing_are_warned_about(launch):
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "--port",
            "0",
            "--workers",
            "1",
            "--max-requests-jitter",
            "5",
            "--reload-include",
            "*.html",
            "--inspector-api-key",
            "a-key-for-nothing",
            "--reload-dir",
            ".",
            "--no-reload",
        )
    )
    served.ready()
    served.wait_for(r"WARNING max_requests_jitter has no effect without max_requests")
    served.wait_for(r"WARNING inspector_api_key: no effect without the inspector")
    served.wait_for(r"WARNING reload_dirs has no effect with auto_reload turned off")
    served.wait_for(r"WARNING reload_include and reload_exclude have no effect")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def _parsed(monkeypatch, env, *argv):
    from runtime import cli, environment

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = cli.build_parser()
    environment.read(cli.subcommand(parser, "run"))
    return parser.parse_args(["run", *argv])


def test_every_run_flag_reads_its_environment_variable(monkeypatch):
    env = {
        "RUNTIME_WORKERS": "3",
        "RUNTIME_START_METHOD": "forkserver",
        "RUNTIME_ACCESS_LOG": "yes",
        "RUNTIME_SINGLE_PROCESS": "0",
        "RUNTIME_INSPECTOR": "1",
        "RUNTIME_RELOAD_DIR": "a:b",
        "RUNTIME_HANG_TIMEOUT": "0",
    }
    args = _parsed(monkeypatch, env, "--reload-dir", "c")
    assert (args.workers, args.start_method, args.access_log) == (3, "forkserver", True)
    assert (args.single_process, args.inspect, args.hang_timeout) == (False, True, 0)
    assert args.reload_dir == ["a", "b", "c"]
    off = _parsed(monkeypatch, {"RUNTIME_RELOAD": "off", "RUNTIME_INSPECTOR": "0"})
    assert (off.reload, off.inspect, off.health_without_key) == (False, False, None)
    assert _parsed(monkeypatch, {}, "--no-single-process").single_process is False
    assert _parsed(monkeypatch, env, "--workers", "1", "--no-access-log").workers == 1
    assert not _parsed(monkeypatch, env, "--no-access-log").access_log


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("RUNTIME_WORKERS", "many", ["RUNTIME_WORKERS='many'", "not an integer"]),
        ("RUNTIME_START_METHOD", "thread", ["RUNTIME_START_METHOD", "one of"]),
        ("RUNTIME_ACCESS_LOG", "maybe", ["RUNTIME_ACCESS_LOG", "use 1 or 0"]),
    ],
)
def test_a_bad_environment_variable_is_one_line_and_exit_2(launch, name, value, words):
    served = launch(*python("-m", "runtime", "run"), env={name: value})
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word in lines[0]


def test_the_environment_sets_the_workers_of_a_real_group(launch):
    served = launch(SCRIPT, "run", "--port", "0", env={"RUNTIME_WORKERS": "3"})
    url = served.ready()
    assert len(workers_seen(url, expected=3)) == 3
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_recycling_in_single_process_mode_is_warned_about(launch):
    served = launch(
        *(SCRIPT, "run", "--single-process", "--port", "0", "--max-requests", "5"),
        *("--hang-timeout", "5"),
    )
    served.wait_for(r"WARNING max_requests: no effect in single-process mode")
    served.wait_for(r"WARNING hang_timeout: no effect in single-process mode")
    served.wait_for(r"INFO Serving")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_bare_app_that_belongs_to_a_runtime_is_warned_about(launch):
    served = launch(SCRIPT, "run", "basic:app", "--port", "0")
    served.ready()
    served.wait_for(r"WARNING basic:app is the app of the Runtime basic:rt; .* Serve ")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_missing_app_dir_and_the_version(launch, tmp_path):
    missing = launch(SCRIPT, "run", "basic:rt", "--app-dir", str(tmp_path / "gone"))
    assert missing.wait() == 2
    assert [line for line in missing.lines if line.strip()] == [
        f"runtime: error: --app-dir '{tmp_path / 'gone'}' is not a directory; give "
        f"the one that holds the target's module"
    ]
    version = launch(SCRIPT, "--version")
    assert version.wait() == 0 and "runtime 0.1.0" in version.output


def test_a_switch_turned_off_by_the_environment_beats_the_code(launch):
    served = launch(
        *python("-m", "runtime", "run", "inspected:rt", "--port", "0"),
        env={"RUNTIME_INSPECTOR": "0"},
    )
    served.ready()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert "Inspector listening" not in served.output
    on = launch(*python("-m", "runtime", "run", "inspected:rt", "--port", "0"))
    on.wait_for("Inspector listening")  # the code turned it on
    on.signal(signal.SIGTERM)
    assert on.wait() == 0


def test_the_command_line_start_method_beats_the_modules(launch):
    served = launch(
        *python("-m", "runtime", "run", "basic:rt", "--port", "0"),
        *("--start-method", "spawn"),
        env={"RT_START_METHOD": "fork"},  # basic.py sets it when imported
    )
    served.wait_for(r"Ready: 1 worker\(s\) serving \(start method spawn\)")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_target_that_fails_to_import_is_one_line_and_exit_2(launch, tmp_path):
    (tmp_path / "broken.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    served = launch(SCRIPT, "run", "broken:rt", "--app-dir", str(tmp_path))
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    assert f"importing 'broken' failed at {tmp_path / 'broken.py'}:2: " in lines[0]
    assert "RuntimeError: boom" in lines[0]


def test_an_error_names_the_variable_that_gave_the_value(launch, tmp_path):
    missing = str(tmp_path / "no" / "app.pid")
    served = launch(SCRIPT, "run", env={"RUNTIME_PID_FILE": missing})
    assert served.wait() == 2
    assert "(set by RUNTIME_PID_FILE)" in served.output


def test_a_place_on_the_command_line_sets_aside_the_environments(launch, tmp_path):
    served = launch(
        SCRIPT, "run", "--port", "0", env={"RUNTIME_UDS": str(tmp_path / "u.sock")}
    )
    assert served.ready().startswith("http://127.0.0.1:")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_rt_options_are_the_settings_in_effect(launch):
    served = launch(
        *python("-m", "runtime", "run", "effective:rt", "--port", "0"),
        *("--graceful-timeout", "7"),
    )
    served.wait_for("main graceful 7.0 config 9.0")
    served.wait_for("worker graceful 7.0")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_host_and_port_are_one_place_to_listen(monkeypatch):
    from runtime import cli, environment

    monkeypatch.setenv("RUNTIME_PORT", "17019")
    parser = cli.build_parser()
    run = cli.subcommand(parser, "run")
    used = environment.read(run)
    for argv, port in ((["--host", "127.0.0.2"], 17019), (["--uds", "/x.sock"], None)):
        args = parser.parse_args(["run", *argv])
        environment.sources(run, args, used, ["run", *argv])
        assert args.port == port, argv


def test_a_module_level_run_under_runtime_run_is_refused(launch, tmp_path):
    (tmp_path / "noguard.py").write_text(
        "from runtime import Runtime\nfrom runtime.demo import app\n"
        "rt = Runtime('noguard', app=app)\nrt.run(port=0)\n"
    )
    served = launch(SCRIPT, "run", "noguard:rt", "--app-dir", str(tmp_path))
    assert served.wait() == 1
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1 and "Listening" not in served.output, served.output
    assert "run() was called while `runtime run` was importing 'noguard'" in lines[0]


def test_a_skipped_start_method_setup_says_the_flag_is_ignored(launch):
    served = launch(
        *python("-m", "runtime", "run", "basic:rt", "--port", "0"),
        *("--start-method", "spawn"),
        env={"RT_SKIP": "1"},
    )
    served.wait_for(r"WARNING --start-method spawn is ignored: basic called skip_")
    served.ready()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_errors_name_the_variables_of_the_settings_they_name(launch):
    served = launch(
        SCRIPT, "run", env={"RUNTIME_SINGLE_PROCESS": "1", "RUNTIME_WORKERS": "3"}
    )
    assert served.wait() == 2
    assert "RUNTIME_WORKERS" in served.output and "set by" in served.output
