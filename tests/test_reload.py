"""The reloader: real files in a temporary project, real workers, real requests."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from conftest import START_METHODS, alive, python, wait_until
from http_client import get
from watchfiles import Change

pytestmark = pytest.mark.timeout(90)

APP = """\
import os
import time

from runtime import Runtime

VERSION = {version!r}

if os.path.exists("slow"):
    time.sleep(3)  # a slow import: restarts take a while


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    changed = ",".join(rt.config.RELOADED_FILES)
    body = f"{{VERSION}} {{os.getpid()}} {{changed}}".encode()
    await send({{"type": "http.response.start", "status": 200}})
    await send({{"type": "http.response.body", "body": body}})


rt = Runtime("project", app=app)
"""

ZERO_DOWNTIME = r"\(zero-downtime\)$"
RELOADING = r"Reloading: (.*) changed$"


def write_app(project: Path, version: str) -> None:
    (project / "app.py").write_text(APP.format(version=version))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    write_app(root, "v1")
    return root


def serve(launch, project: Path, *extra: str):
    return launch(
        *python("-m", "runtime", "run", "app:rt", "--port", "0", "--reload", *extra),
        cwd=project,
    )


def ready(served) -> str:
    """Wait until the group serves and the reloader watches; return the URL."""
    url = served.ready()
    served.wait_for(r"Runtime-Reloader-0\[\d+\] INFO Watching ")
    return url


def answer(url: str) -> tuple[str, int, str]:
    """(version, worker pid, reloaded files) from the app's response."""
    version, pid, changed = get(url).text.split(" ")
    return version, int(pid), changed


def wait_count(served, pattern: str, count: int, timeout: float = 30.0) -> None:
    reached = wait_until(lambda: served.count(pattern) >= count, timeout)
    assert reached, f"fewer than {count} lines match {pattern!r}:\n{served.output}"


def reloads(served) -> list[str]:
    return [m.group(1) for m in map(re.compile(RELOADING).search, served.lines) if m]


def pid_of(served, name: str) -> int:
    return int(served.wait_for(rf"Started {name} \(pid (\d+)\)").group(1))


def stop(served) -> None:
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.output


@pytest.mark.parametrize("method", START_METHODS)
def test_an_edit_is_served_by_every_new_worker(launch, project, method):
    # C14 too: several workers on the one shared socket.
    served = serve(launch, project, "--workers", "2", "--start-method", method)
    url = ready(served)
    reloader = pid_of(served, "Runtime-Reloader-0")
    assert answer(url)[0] == "v1"
    write_app(project, "v2")
    wait_count(served, ZERO_DOWNTIME, 2)
    answers = {answer(url) for _ in range(20)}
    assert {a[0] for a in answers} == {"v2"}
    assert {a[2] for a in answers} == {str(project / "app.py")}
    assert reloads(served) == ["app.py"]
    assert alive(reloader)
    assert "Address already in use" not in served.output
    if method == "fork":
        assert "workers start with spawn while reloading" in served.output
        assert "(start method spawn)" in served.output
    stop(served)
    assert not alive(reloader)


def test_durable_processes_keep_running_and_transient_ones_restart(launch, project):
    (project / "side.py").write_text(
        "import time\n\n\ndef loop():\n    while True:\n        time.sleep(1)\n"
    )
    with (project / "app.py").open("a") as f:
        f.write(
            "\n\n@rt.main_process_ready\n"
            "def side_processes(rt):\n"
            "    import side\n"
            "    rt.manager.manage('Ticker', side.loop, transient=True)\n"
            "    rt.manager.manage('Keeper', side.loop)\n"
        )
    served = serve(launch, project)
    url = ready(served)
    ticker = pid_of(served, "Runtime-Ticker-0")
    keeper = pid_of(served, "Runtime-Keeper-0")
    reloader = pid_of(served, "Runtime-Reloader-0")
    (project / "side.py").write_text((project / "side.py").read_text() + "\n# v2\n")
    served.wait_for(r"Restarted Runtime-Ticker-0")
    wait_count(served, ZERO_DOWNTIME, 1)
    assert not alive(ticker)
    assert alive(keeper) and alive(reloader)
    assert served.count(r"Started Runtime-Keeper-0") == 1
    assert served.count(r"Started Runtime-Reloader-0") == 1
    assert answer(url)[2] == str(project / "side.py")
    stop(served)


def test_a_burst_of_changes_is_one_reload(launch, project):
    served = serve(launch, project, "--workers", "2")
    url = ready(served)
    for name in "abcde":
        (project / f"{name}.py").write_text(f"NAME = {name!r}\n")
    wait_count(served, ZERO_DOWNTIME, 2)
    assert reloads(served) == ["a.py, b.py, c.py, d.py, e.py"]
    # Anything the burst left behind would reload before this later change does.
    write_app(project, "v2")
    wait_count(served, ZERO_DOWNTIME, 4)
    assert reloads(served) == ["a.py, b.py, c.py, d.py, e.py", "app.py"]
    assert answer(url)[0] == "v2"
    stop(served)


def test_changes_during_a_restart_lead_to_exactly_one_more(launch, project):
    served = serve(launch, project)
    url = ready(served)
    (project / "slow").touch()  # from now on, a worker takes 3 s to import
    write_app(project, "v2")
    served.wait_for(r"Started Runtime-Server-0-1 ")
    write_app(project, "v3")
    wait_count(served, RELOADING, 2)
    (project / "other.py").write_text("X = 1\n")
    wait_count(served, RELOADING, 3)
    assert served.count(r"Runtime-Server-0-1 \(pid \d+\) acked") == 0, "too late"
    served.wait_for(r"as Runtime-Server-0-2 \(pid \d+\) \(zero-downtime\)", 30)
    assert answer(url)[0] == "v3"
    # A later change starts Runtime-Server-0-3: nothing ran in between.
    (project / "slow").unlink()
    write_app(project, "v4")
    served.wait_for(r"as Runtime-Server-0-3 \(pid \d+\) \(zero-downtime\)", 30)
    assert served.count(r"Started Runtime-Server-0-") == 4
    assert answer(url)[0] == "v4"
    stop(served)


BROKEN = {
    "syntax": ("oops(\n", r"^SyntaxError: "),
    "import": ("import no_such_module_here\n", r"^ModuleNotFoundError: "),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_code_keeps_the_group_up_until_a_fix(launch, project, kind):
    code, error = BROKEN[kind]
    served = serve(launch, project, "--workers", "2")
    url = ready(served)
    reloader = pid_of(served, "Runtime-Reloader-0")
    (project / "app.py").write_text(APP.format(version="v2") + code)
    served.wait_for(r"the old worker keeps serving")
    served.wait_for(r"not restarted: Runtime-Server-1; the next code change tries")
    assert served.count(error) == 1  # the traceback, once
    assert {answer(url)[0] for _ in range(10)} == {"v1"}
    write_app(project, "v3")
    wait_count(served, ZERO_DOWNTIME, 2)
    assert {answer(url)[0] for _ in range(10)} == {"v3"}
    assert alive(reloader) and served.proc.poll() is None
    stop(served)


def test_a_crash_on_broken_code_waits_for_the_fix(launch, project):
    # A worker that dies while the code is broken cannot come back until a fix;
    # the group keeps serving with the other one instead of exiting.
    served = serve(launch, project, "--workers", "2")
    url = ready(served)
    (project / "app.py").write_text(APP.format(version="v2") + "oops(\n")
    served.wait_for(r"not restarted: Runtime-Server-1; the next code change tries")
    victim = pid_of(served, "Runtime-Server-0-0")
    import os

    os.kill(victim, signal.SIGKILL)
    served.wait_for(r"Runtime-Server-0 kept failing: .* Waiting for a code change", 60)
    assert served.proc.poll() is None
    assert {answer(url)[0] for _ in range(5)} == {"v1"}  # the other worker
    write_app(project, "v3")
    assert wait_until(lambda: {answer(url)[0] for _ in range(6)} == {"v3"}, 60)
    assert "Stopping the group" not in served.output
    stop(served)


def test_reloaded_files_are_only_seen_by_that_reload(launch, project):
    served = serve(launch, project, "--workers", "1")
    url = ready(served)
    write_app(project, "v2")
    wait_count(served, ZERO_DOWNTIME, 1)
    assert answer(url)[2].endswith("app.py")
    served.signal(signal.SIGHUP)
    wait_count(served, ZERO_DOWNTIME, 2)
    assert answer(url)[2] == ""
    stop(served)


def test_ignored_paths_do_not_reload(launch, project):
    sock = project / "server.sock"
    served = launch(
        *python("-m", "runtime", "run", "app:rt", "--uds", str(sock), "--reload"),
        cwd=project,
    )
    url = ready(served)
    assert url == f"unix:{sock}"
    answer(url)  # the worker imported app.py and wrote __pycache__ meanwhile
    venv = project / "env2"
    for folder in (".hidden", "__pycache__", "node_modules", "env2/lib", "build"):
        (project / folder).mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr\n")
    for path in (
        ".hidden/mod.py",
        "__pycache__/mod.py",
        "node_modules/mod.py",
        "env2/lib/mod.py",
        ".dotted.py",
        "notes.txt",
        "data.json",
        "build/page.html",
    ):
        (project / path).write_text("X = 1\n")
    write_app(project, "v2")  # the one change that counts, written last
    wait_count(served, ZERO_DOWNTIME, 1)
    assert reloads(served) == ["app.py"]
    assert answer(url)[0] == "v2"
    stop(served)
    assert not sock.exists()


def test_include_and_exclude_patterns(launch, project):
    (project / "templates").mkdir()
    (project / "tests").mkdir()
    served = serve(
        launch,
        project,
        "--reload-include",
        "*.html",
        "--reload-exclude",
        "tests/*",
    )
    ready(served)
    (project / "tests" / "test_app.py").write_text("X = 1\n")
    (project / "templates" / "index.html").write_text("<p>hi</p>\n")
    wait_count(served, ZERO_DOWNTIME, 1)
    assert reloads(served) == [str(Path("templates") / "index.html")]
    stop(served)


def test_reload_dirs_are_watched_too(launch, project, tmp_path):
    shared = tmp_path / "shared-lib"
    shared.mkdir()
    served = serve(launch, project, "--reload-dir", str(shared))
    ready(served)
    served.wait_for(rf"Watching {re.escape(str(project))}, {re.escape(str(shared))} ")
    (shared / "helpers.py").write_text("X = 1\n")
    wait_count(served, ZERO_DOWNTIME, 1)
    assert reloads(served) == [str(shared / "helpers.py")]
    stop(served)


def test_python_dash_m_entry_point(launch, tmp_path):
    # C13: the reloaded workers import the package the way it was started.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text("BODY = b'v1'\n")
    (package / "server.py").write_text(
        "from runtime import Runtime\n"
        "from pkg import handlers\n\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200})\n"
        "    await send({'type': 'http.response.body', 'body': handlers.BODY})\n\n\n"
        "rt = Runtime('dash-m', app=app)\n\n"
        "if __name__ == '__main__':\n"
        "    rt.run(port=0, workers=2, auto_reload=True)\n"
    )
    served = launch(sys.executable, "-m", "pkg.server", cwd=tmp_path)
    url = ready(served)
    served.wait_for(rf"Watching {re.escape(str(package))} ")
    assert get(url).text == "v1"
    (package / "handlers.py").write_text("BODY = b'v2'\n")
    wait_count(served, ZERO_DOWNTIME, 2)
    assert {get(url).text for _ in range(10)} == {"v2"}
    assert "Error" not in served.output
    stop(served)


@pytest.mark.parametrize(
    "path, counts",
    [
        ("app.py", True),
        ("pkg/mod.py", True),
        ("pkg/page.html", False),
        ("templates/page.html", True),
        ("tests/test_x.py", False),
        (".git/hooks/x.py", False),
        ("pkg/.cache/x.py", False),
        (".x.py", False),
        ("__pycache__/app.py", False),
        ("pkg/__pycache__/app.cpython-311.pyc", False),
        ("node_modules/x.py", False),
        ("lib/site-packages/x.py", False),
        ("myenv/lib/x.py", False),
        ("server.sock", False),
        ("app.pyc", False),
    ],
)
def test_source_filter(tmp_path, path, counts):
    from runtime.reloader import ReloadSpec, SourceFilter

    (tmp_path / "myenv").mkdir()
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("")
    spec = ReloadSpec(
        roots=(str(tmp_path),),
        include=("*.py", "templates/*.html"),
        exclude=("tests/*",),
        ignore_paths=(str(tmp_path / "server.sock"),),
    )
    check = SourceFilter(spec)
    assert check(Change.modified, str(tmp_path / path)) is counts
    assert check(Change.modified, "/elsewhere/app.py") is False


def test_bad_reload_settings_are_refused_in_python(tmp_path):
    from runtime import ConfigError, Runtime

    rt = Runtime("reload-settings", app=lambda *a: None)
    with pytest.raises(ConfigError, match="'/no/such/dir'"):
        rt.config.RELOAD_DIRS = ["/no/such/dir"]
    with pytest.raises(ConfigError, match="reload_include must be a list"):
        rt.run(auto_reload=True, reload_include="*.html")
    with pytest.raises(ConfigError, match="auto_reload must be True or False"):
        rt.run(auto_reload="yes")
    with pytest.raises(ConfigError, match="drop one of them"):
        rt.run(auto_reload=True, single_process=True)
