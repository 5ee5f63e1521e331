"""Deployment: the pid file, and switching to an unprivileged user."""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import (
    START_METHODS,
    app_script,
    free_port,
    python,
    session_members,
    wait_until,
)
from http_client import get

ROOT = os.geteuid() == 0
try:
    NOBODY = pwd.getpwnam("nobody")
except KeyError:
    NOBODY = None


@functools.cache
def _nobody_can_run_python() -> bool:
    """Whether 'nobody' can run this interpreter and import the runtime (not if
    Python is installed somewhere only root can read, such as /root)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sysconfig, runtime; sysconfig.get_paths()"],
            user=NOBODY.pw_uid,
            group=NOBODY.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=60,
        )
    except OSError:  # it cannot even start
        return False
    return done.returncode == 0


@pytest.fixture
def as_nobody():
    """Skip unless this test can run processes as the user 'nobody'."""
    if not ROOT or NOBODY is None:
        pytest.skip("switching to another user needs root and a user 'nobody'")
    if not _nobody_can_run_python():
        pytest.skip(f"the user 'nobody' cannot run {sys.executable}")


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
    port = free_port()
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


def _ids(pid: int) -> tuple[str, str, str]:
    """The Uid, Gid and Groups lines of /proc/<pid>/status, as text."""
    text = Path(f"/proc/{pid}/status").read_text()
    lines = dict(line.split(":", 1) for line in text.splitlines())
    return lines["Uid"].split(), lines["Gid"].split(), lines["Groups"].split()


def _nobody_ids() -> tuple[list[str], list[str], list[str]]:
    uid, gid = str(NOBODY.pw_uid), str(NOBODY.pw_gid)
    groups = sorted(map(str, os.getgrouplist("nobody", NOBODY.pw_gid)), key=int)
    return [uid] * 4, [gid] * 4, groups


def _privileged_ports(count: int) -> list[int]:
    """Free ports below 1024: only root may bind them (by default)."""
    ports = []
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    pytest.skip("no free ports below 1024")


@pytest.fixture
def open_dir():
    """A directory every user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="runtime-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("method", START_METHODS)
def test_every_process_runs_as_the_user_after_binding_as_root(
    launch, tmp_path, open_dir, method, as_nobody
):
    port, inspector, health = map(str, _privileged_ports(3))
    pid_file = tmp_path / "root-only" / "probed.pid"  # nobody cannot remove it
    pid_file.parent.mkdir()
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--workers",
            "2",
            "--start-method",
            method,
            "--inspect",
            "--inspector-host",
            "127.0.0.1",
            "--inspector-port",
            inspector,
            "--health-port",
            health,
            "--pid-file",
            str(pid_file),
            "--user",
            "nobody",
        ),
        env={"RT_CUSTOM": "1"},
        cwd=open_dir,
    )
    url = served.ready()
    assert url == f"http://127.0.0.1:{port}"
    group_name = grp.getgrgid(NOBODY.pw_gid).gr_name
    served.wait_for(
        f"Running as user 'nobody' \\(uid {NOBODY.pw_uid}\\), group "
        f"'{group_name}' \\(gid {NOBODY.pw_gid}\\)"
    )
    side = int(served.wait_for(r"side running (\d+)").group(1))
    assert pid_file.read_text() == f"{served.pid}\n"
    # The manager, its workers, the custom process, the fork server and the
    # resource tracker: every process of the run.
    members = session_members(served.pid)
    assert {served.pid, side, *served.worker_pids()} <= set(members)
    for pid in members:
        assert _ids(pid) == _nobody_ids(), (pid, _ids(pid))
    assert get(url).json()["uid"] == NOBODY.pw_uid
    base = f"http://127.0.0.1:{inspector}"
    assert get(base, "/readyz").status_code == 200
    assert get(f"http://127.0.0.1:{health}", "/readyz").status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    served.wait_for(r"WARNING Could not remove the pid file .*Permission denied")
    assert "Traceback" not in served.output


def test_single_process_switches_too_and_hands_over_its_unix_socket(
    launch, open_dir, as_nobody
):
    path = open_dir / "probed.sock"
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--single-process",
            "--uds",
            str(path),
            "--user",
            str(NOBODY.pw_uid),
            "--group",
            str(NOBODY.pw_gid),
        ),
        cwd=open_dir,
    )
    served.wait_for(r"\(single process\)")
    served.wait_for(r"Running as ")
    assert wait_until(lambda: get(f"unix:{path}").status_code == 200, 10)
    assert get(f"unix:{path}").json()["uid"] == NOBODY.pw_uid
    assert _ids(served.pid) == _nobody_ids()
    assert (path.stat().st_uid, path.stat().st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    served.signal(signal.SIGINT)
    assert served.wait() == 0
    # open_dir is root's: the user it switched to cannot remove the path there.
    served.wait_for(rf"WARNING Could not remove {path} \(Permission denied\)")


def test_a_working_directory_the_user_cannot_enter_is_one_line(
    launch, tmp_path, as_nobody
):
    # pytest's tmp_path is root's alone; spawn workers would start in it.
    served = launch(
        *python("-m", "runtime", "run", "probed:rt", "--port", "0", "--user", "nobody")
    )
    assert served.wait(30) == 1
    errors = [line for line in served.lines if "error" in line.lower()]
    assert len(errors) == 1, served.output
    assert f"cannot enter the working directory '{tmp_path}'" in errors[0]
    assert "Started Runtime-Server" not in served.output


# Runs the rest of its arguments with Python, as root but without the
# capabilities to change user and group (dropped from the bounding set).
WITHOUT_SETUID = """\
import ctypes, os, sys
for cap in (6, 7):  # CAP_SETGID, CAP_SETUID
    if ctypes.CDLL(None).prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit("cannot drop the capability")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@pytest.mark.parametrize("how", ["without-capabilities", "as-another-user"])
def test_not_being_allowed_to_switch_loses_nothing(launch, open_dir, request, how):
    prefix, user = [], None
    if how == "without-capabilities":
        if not ROOT or sys.platform != "linux":
            pytest.skip("drops capabilities that only root has, on Linux")
        prefix = ["-c", WITHOUT_SETUID]
    elif ROOT:  # not root, it may not become root; as root, start as nobody
        request.getfixturevalue("as_nobody")
        user = "nobody"
    open_dir.chmod(0o777)
    pid_file = open_dir / "refused.pid"
    port = free_port()
    served = launch(
        *python(
            *prefix,
            "-m",
            "runtime",
            "run",
            "probed:rt",
            "--port",
            str(port),
            "--workers",
            "2",
            "--pid-file",
            str(pid_file),
            "--user",
            "root",
            "--group",
            "0",
        ),
        cwd=open_dir,
        user=user,
    )
    assert served.wait(30) == 1
    errors = [line for line in served.lines if "error" in line.lower()]
    assert len(errors) == 1, served.output
    assert "cannot switch to user 'root' (uid 0), group 'root' (gid 0): " in errors[0]
    assert "start it as root (with CAP_SETUID and CAP_SETGID)" in errors[0]
    assert "or drop --user and --group" in errors[0]
    assert "Started Runtime-Server" not in served.output
    assert "Traceback" not in served.output
    assert not pid_file.exists()
    with socket.create_server(("127.0.0.1", port)):
        pass  # the socket was closed


@pytest.mark.parametrize(
    "args, words",
    [
        (["--user", "no-such-user-here"], ["user 'no-such-user-here' is unknown"]),
        (["--group", "no-such-group-here"], ["group 'no-such-group-here' is unknown"]),
        (["--user", "4000000"], ["uid 4000000 is not in the user database", "--group"]),
    ],
)
def test_unknown_users_and_groups_are_one_line_and_exit_2(launch, args, words):
    served = launch(*python("-m", "runtime", "run", *args))
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word in lines[0]


def test_user_and_group_settings_are_validated_in_python():
    from runtime import Config, ProcessGroup
    from runtime.config import RunOptions
    from runtime.errors import ConfigError
    from runtime.privileges import resolve

    for key, value in (("USER", -1), ("USER", True), ("GROUP", ""), ("GROUP", 1.5)):
        with pytest.raises(ConfigError) as info:
            setattr(Config(), key, value)
        assert key in str(info.value) and repr(value) in str(info.value)
    with pytest.raises(ConfigError, match="user 'no-such-user-here' is unknown"):
        RunOptions.build(Config(), ProcessGroup.THRESHOLD, user="no-such-user-here")
    me = pwd.getpwuid(os.getuid())
    options = RunOptions.build(Config(USER=me.pw_name), ProcessGroup.THRESHOLD)
    assert (options.user, options.group) == (me.pw_name, None)
    identity = resolve(str(me.pw_uid), None)
    assert (identity.uid, identity.gid, identity.user) == (
        me.pw_uid,
        me.pw_gid,
        me.pw_name,
    )
    assert resolve(None, None) is None
    assert resolve(None, 12345).uid is None


@pytest.mark.skipif(not ROOT or NOBODY is None, reason="needs root and 'nobody'")
def test_a_user_who_cannot_run_the_interpreter_is_one_line(launch, open_dir):
    if _nobody_can_run_python():
        pytest.skip("'nobody' can run this interpreter here")
    served = launch(
        *python("-m", "runtime", "run", "probed:rt", "--port", "0", "--user", "nobody"),
        cwd=open_dir,
    )
    assert served.wait() == 1, served.output
    errors = [line for line in served.lines if "error" in line.lower()]
    assert len(errors) == 1, served.output
    assert "'nobody'" in errors[0] and "cannot run" in errors[0]
    assert "Started Runtime-Server" not in served.output
