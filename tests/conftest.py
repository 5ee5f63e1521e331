"""Test harness: runs the runtime in real subprocesses and checks nothing is left.

Each launched command gets a session of its own, so every process it creates,
including ones re-parented after their parent died, can be found by session id.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
APPS = HERE / "apps"
START_METHODS = ["fork", "spawn", "forkserver"]


def session_members(sid: int) -> list[int]:
    """Pids of live (non-zombie) processes in session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# Runs the command in place of itself once the kernel has been asked to send it
# SIGTERM when pytest dies, so a killed test run leaves no server behind.
TIED_TO_PYTEST = """\
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # pytest is gone already
os.execvp(sys.argv[2], sys.argv[2:])
"""


class Launched:
    """One command running in its own session, with its output collected."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, pass_fds=(), user=None
    ) -> None:
        self.args = args
        tied = [sys.executable, "-c", TIED_TO_PYTEST, str(os.getpid()), *args]
        as_user = {}
        if user is not None:  # root only: start the command as that user
            entry = pwd.getpwnam(user)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.proc = subprocess.Popen(
            tied if sys.platform == "linux" else args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            start_new_session=True,
            pass_fds=pass_fds,
            **as_user,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching ``pattern``; fail after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.proc.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"no line matching {pattern!r}; output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(left, 0.2))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._changed:
            return sum(1 for line in self.lines if regex.search(line))

    def ready(self, timeout: float = 30.0) -> str:
        """Wait for the ready line; return the URL the runtime listens on."""
        self.wait_for(r"Ready: ", timeout)
        return self.url

    @property
    def url(self) -> str:
        return self.wait_for(r"Listening on (http://\S+|unix:\S+)").group(1)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> None:
        os.killpg(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def worker_pids(self) -> list[int]:
        with self._changed:
            text = "\n".join(self.lines)
        return [
            int(p)
            for p in re.findall(r"Started Runtime-Server-\S+ \(pid (\d+)\)", text)
        ]

    def cleanup(self) -> list[int]:
        """Kill whatever is left; return the pids that were still alive."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        wait_until(lambda: not session_members(self.pid), 5.0)
        left = session_members(self.pid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reader.join(5)
        return left


@pytest.fixture
def launch(tmp_path):
    """Start commands in their own sessions; fail the test if any process is left."""
    started: list[Launched] = []

    def start(*args: str, env=None, cwd: Path | None = None, pass_fds=(), user=None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(APPS), full_env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        launched = Launched(list(args), full_env, cwd or tmp_path, pass_fds, user)
        started.append(launched)
        return launched

    yield start
    leftovers = {}
    for launched in started:
        left = launched.cleanup()
        if left:
            leftovers[launched.pid] = left
    assert not leftovers, f"processes left behind (session: pids): {leftovers}"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def app_script(name: str) -> str:
    return str(APPS / name)
