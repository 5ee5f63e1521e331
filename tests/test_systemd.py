"""systemd: the notify protocol against a fake NOTIFY_SOCKET, and socket activation."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import APPS, START_METHODS, python, wait_until
from http_client import get

from runtime import cli, systemd
from runtime.group import STOP_MARGIN

pytestmark = pytest.mark.timeout(120)


class FakeSystemd:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def wait_for(self, key: str, value: str | None = None, after: int = 0) -> int:
        """Index of the first message from ``after`` on that has ``key``."""

        def found() -> int | None:
            for i, message in enumerate(self.messages[after:], after):
                if key in message and (value is None or message[key] == value):
                    return i
            return None

        index = wait_until(lambda: found() is not None, 30)
        assert index, f"no {key}={value} message; got {self.messages}"
        return found()  # type: ignore[return-value]

    def close(self) -> None:
        self._done.set()
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path):
    fake = FakeSystemd(str(tmp_path / "notify"))
    yield fake
    fake.close()


def run_envapp(launch, fake, *flags, env=None):
    return launch(
        *python("-m", "runtime", "run", "envapp:rt", "--port", "0", *flags),
        env={"NOTIFY_SOCKET": fake.path, **(env or {})},
    )


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ready_after_every_ack_reloading_around_a_restart_stopping_at_the_end(
    launch, fake_systemd, method
):
    served = run_envapp(
        launch, fake_systemd, "--workers", "2", "--start-method", method
    )
    ready = fake_systemd.wait_for("READY", "1")
    # The first READY carries the count it was sent with: both workers had acked.
    assert fake_systemd.messages[ready]["STATUS"] == "2/2 server worker(s) ready"
    assert not any("READY" in m for m in fake_systemd.messages[:ready])
    assert served.count(r"Runtime-Server-\d-0 \(pid \d+\) acked") == 2
    url = served.ready()
    assert get(url).json()["env"]["NOTIFY_SOCKET"] is None  # the manager's only

    served.signal(signal.SIGHUP)  # a zero-downtime restart of every worker
    reloading = fake_systemd.wait_for("RELOADING", "1", after=ready + 1)
    usec = int(fake_systemd.messages[reloading]["MONOTONIC_USEC"])
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 <= now - usec < 30_000_000
    again = fake_systemd.wait_for("READY", "1", after=reloading + 1)
    for name in ("Runtime-Server-0-1", "Runtime-Server-1-1"):
        served.wait_for(rf"{name} \(pid \d+\) acked", timeout=1)
    assert fake_systemd.messages[again]["STATUS"] == "2/2 server worker(s) ready"

    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.output
    fake_systemd.wait_for("STOPPING", "1", after=again + 1)


def test_status_follows_a_crash_and_its_respawn(launch, fake_systemd):
    served = run_envapp(launch, fake_systemd, "--workers", "2")
    ready = fake_systemd.wait_for("READY", "1")
    victim = served.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    down = fake_systemd.wait_for("STATUS", "1/2 server worker(s) ready", ready + 1)
    fake_systemd.wait_for("STATUS", "2/2 server worker(s) ready", down + 1)
    assert not any("RELOADING" in m for m in fake_systemd.messages)  # no reload
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_group_that_fails_to_start_is_never_ready(launch, fake_systemd):
    served = run_envapp(launch, fake_systemd, env={"ENVAPP_FAIL": "1"})
    assert served.wait() == 1
    fake_systemd.wait_for("STOPPING", "1")
    assert not any("READY" in m for m in fake_systemd.messages)


def test_the_watchdog_is_fed_while_the_manager_runs(launch, fake_systemd):
    served = run_envapp(launch, fake_systemd, env={"WATCHDOG_USEC": "200000"})
    first = fake_systemd.wait_for("WATCHDOG", "1")
    later = fake_systemd.wait_for("WATCHDOG", "1", after=first + 1)
    fake_systemd.wait_for("WATCHDOG", "1", after=later + 1)
    url = served.ready()
    assert get(url).json()["env"]["WATCHDOG_USEC"] is None
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_single_process_mode_tells_systemd_too(launch, fake_systemd):
    served = run_envapp(launch, fake_systemd, "--single-process")
    fake_systemd.wait_for("READY", "1")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    fake_systemd.wait_for("STOPPING", "1")


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = systemd.Notifier.from_environment()
    assert not notifier.active
    notifier.ready("x")  # does nothing, raises nothing
    notifier.stopping()


def test_a_tiny_watchdog_period_is_not_a_busy_loop():
    notifier = systemd.Notifier("\0runtime-test-unused", watchdog_usec=1)
    assert notifier.watchdog_interval == systemd.MIN_PING
    assert systemd.Notifier(None, watchdog_usec=0).watchdog_interval == 0
    notifier.close()


def test_the_watchdog_of_another_process_is_not_ours(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", "@runtime-test-abstract")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = systemd.Notifier.from_environment()
    assert notifier.address == "\0runtime-test-abstract"
    assert notifier.watchdog_interval == 0
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    notifier.close()


# -- socket activation --


# Puts the socket at fd 3 and sets LISTEN_* for the process it becomes, as
# systemd does before it starts a socket-activated service.
AS_SYSTEMD = """\
import os, sys
fd, count, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS=count, LISTEN_PID=pid or str(os.getpid()))
os.execvp(sys.argv[4], sys.argv[4:])
"""


def activated(launch, sock: socket.socket, *flags: str, count: str = "1", pid=""):
    """Run the runtime as systemd would: the socket as fd 3, LISTEN_* set."""
    fd = sock.fileno()
    return launch(
        *python("-c", AS_SYSTEMD, str(fd), count, str(pid)),
        *python("-m", "runtime", "run", "envapp:rt", *flags),
        pass_fds=(fd,),
    )


@pytest.mark.parametrize("method", START_METHODS)
def test_a_socket_passed_by_systemd_is_served(launch, method):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        served = activated(launch, sock, "--workers", "2", "--start-method", method)
        url = served.ready()
    assert url == f"http://127.0.0.1:{port}"
    answer = get(url).json()
    assert answer["env"]["LISTEN_FDS"] is None and answer["env"]["LISTEN_PID"] is None
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize(
    ("flags", "count", "words"),
    [
        (["--port", "8123"], "1", ["LISTEN_FDS", "port", "drop"]),
        ([], "2", ["2 listening sockets", "ListenStream="]),
    ],
)
def test_socket_activation_conflicts_are_one_line(launch, flags, count, words):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        served = activated(launch, sock, *flags, count=count)
        assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    assert all(word in lines[0] for word in words), lines[0]


def test_sockets_passed_to_another_process_are_left_alone(launch):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        served = activated(launch, sock, "--port", "0", pid=1)
        url = served.ready()
    assert not url.endswith(f":{port}")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_the_example_units_match_the_runtime():
    units = APPS.parent.parent / "examples" / "systemd"
    service = _unit(units / "shop.service")
    assert service["Type"] == "notify" and service["KillMode"] == "mixed"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/runtime")
    args = cli.build_parser().parse_args(command[1:])  # exits on a bad flag
    stop_time = float(service["TimeoutStopSec"])
    assert stop_time > args.graceful_timeout + STOP_MARGIN
    assert args.port is None and args.host is None  # the socket unit's
    socket_unit = _unit(units / "shop.socket")
    assert socket_unit["ListenStream"]


def _unit(path) -> dict[str, str]:
    keys = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


def test_the_example_kubernetes_deployment_matches_the_runtime():
    yaml = pytest.importorskip("yaml")
    path = APPS.parent.parent / "examples" / "kubernetes" / "shop.yaml"
    pod = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["runtime", "run"]
    args = cli.build_parser().parse_args(container["command"][1:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.port, "health": args.health_port}
    assert args.host == "0.0.0.0" and args.health_host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pause + args.graceful_timeout + STOP_MARGIN


def _pid_namespaces() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "-fp", "--mount-proc", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _pid_namespaces(), reason="cannot make a pid namespace here")
@pytest.mark.parametrize("method", START_METHODS)
def test_the_manager_serves_as_pid_1(launch, method):
    # A container without an init: the manager is PID 1, its workers' parent.
    served = launch(
        "unshare",
        "-fp",
        "--mount-proc",
        *python("-m", "runtime", "run", "envapp:rt", "--port", "0", "--workers", "2"),
        "--start-method",
        method,
    )
    url = served.ready()
    assert served.wait_for(r"Runtime-Main\[(\d+)\] INFO Ready").group(1) == "1"
    assert get(url).status_code == 200
    with open(f"/proc/{served.pid}/task/{served.pid}/children") as f:
        (manager,) = map(int, f.read().split())  # its pid out here
    os.kill(manager, signal.SIGTERM)
    assert served.wait() == 0, served.output
    served.wait_for(r"Runtime-Server-1-0 \(pid \d+\) stopped \(exit code 0\)")
