"""/healthz and /readyz: on the inspector, and on a health port of their own."""

from __future__ import annotations

import signal
import socket
import threading

import httpx
import pytest
from conftest import app_script, free_port, python, wait_until
from http_client import InFlight

pytestmark = pytest.mark.timeout(90)

KEY = "s3cret-key-for-tests"
GOOD = {"Authorization": f"Bearer {KEY}"}


def _probe(url: str, headers=None) -> tuple[int | None, dict | None]:
    """Status and JSON body, or (None, None) if nothing answers there."""
    try:
        reply = httpx.get(url, headers=headers, timeout=5)
    except httpx.TransportError:
        return None, None
    return reply.status_code, reply.json()


def _address(served, what: str) -> str:
    return served.wait_for(rf"{what} listening on (http://\S+)").group(1)


def test_readyz_through_start_restarts_and_stop(launch):
    served = launch(
        *python(app_script("probed.py")),
        env={
            "RT_INSPECT": "1",
            "RT_KEY": KEY,
            "RT_HEALTH_PORT": "0",
            "RT_SLOW_MAIN": "2",
            "RT_SLOW_START": "1",
        },
    )
    health = _address(served, "Health checks")
    inspector = _address(served, "Inspector")
    served.wait_for("main start sleeping")
    # Starting: main_process_start still runs, no worker serves yet.
    status, body = _probe(health + "/readyz")
    assert status == 503 and body["ready"] is False, body
    assert body["reason"] == "starting; 0/1 server worker(s) ready"
    assert _probe(health + "/healthz") == (200, {"alive": True})
    url = served.ready()
    ready = (200, {"ready": True, "reason": "1/1 server worker(s) ready"})
    assert _probe(health + "/readyz") == ready
    assert _probe(inspector + "/readyz", GOOD) == ready

    # Stop-then-start of the only worker: 503 while its slot is empty.
    reply = httpx.post(inspector + "/reload", json={}, headers=GOOD, timeout=10)
    assert reply.status_code == 200
    empty = (503, {"ready": False, "reason": "0/1 server worker(s) ready"})
    assert wait_until(lambda: _probe(health + "/readyz") == empty, 20)
    assert wait_until(lambda: _probe(health + "/readyz") == ready, 20)
    served.wait_for(r"Restarted Runtime-Server-0-0 \(pid \d+\) as ")

    # Zero-downtime: ready all along.
    seen: list[tuple] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append(_probe(health + "/readyz"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        served.signal(signal.SIGHUP)
        served.wait_for(r"Restarted Runtime-Server-0-1 .*\(zero-downtime\)")
    finally:
        done.set()
        watcher.join(10)
    assert len(seen) > 5 and all(s == ready for s in seen), set(map(str, seen))

    # Stopping: a request in flight holds the drain; readiness says stopping.
    request = InFlight(url, "/?sleep=3")
    served.wait_for("request sleeping")
    served.signal(signal.SIGTERM)

    def stopping():
        status, body = _probe(health + "/readyz")
        return status is None or (status == 503 and body["reason"].startswith("stop"))

    assert wait_until(stopping, 20)
    assert _probe(health + "/readyz")[0] in (None, 503)
    assert request.result().status_code == 200
    assert served.wait() == 0
    assert _probe(health + "/healthz") == (None, None)  # closed with the manager


def test_the_key_and_health_without_key(launch):
    served = launch(
        *python(app_script("probed.py")),
        env={"RT_INSPECT": "1", "RT_KEY": KEY, "RT_START_METHOD": "fork"},
    )
    served.ready()
    inspector = _address(served, "Inspector")
    for path in ("/healthz", "/readyz"):
        assert _probe(inspector + path)[0] == 401
        assert _probe(inspector + path, GOOD)[0] == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0

    served = launch(
        *python(app_script("probed.py")),
        env={
            "RT_INSPECT": "1",
            "RT_KEY": KEY,
            "RT_WITHOUT_KEY": "1",
            "RT_START_METHOD": "fork",
        },
    )
    served.ready()
    inspector = _address(served, "Inspector")
    assert _probe(inspector + "/healthz") == (200, {"alive": True})
    assert _probe(inspector + "/readyz")[0] == 200
    assert _probe(inspector + "/")[0] == 401  # everything else still needs it
    # Only GET is let through: any other method still needs the key.
    assert httpx.post(inspector + "/healthz", timeout=10).status_code == 401
    assert httpx.post(inspector + "/readyz", headers=GOOD).status_code == 405
    assert "has no effect" not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_health_port_without_the_inspector_beyond_loopback(launch):
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
            "--health-port",
            "0",
            "--health-host",
            "0.0.0.0",
        )
    )
    served.ready()
    address = _address(served, "Health checks")
    assert address.startswith("http://0.0.0.0:")
    health = "http://127.0.0.1:" + address.rsplit(":", 1)[1]
    assert "Inspector listening" not in served.output
    assert _probe(health + "/healthz") == (200, {"alive": True})
    assert _probe(health + "/readyz")[0] == 200
    # Nothing else is there, and it never asks for a key.
    assert _probe(health + "/")[0] == 404
    assert _probe(health + "/reload")[0] == 404
    assert httpx.post(health + "/readyz", timeout=10).status_code == 405
    shutdown = httpx.post(health + "/shutdown", timeout=10)
    assert shutdown.status_code == 404 and "error" in shutdown.json()
    assert _probe(health + "/readyz")[0] == 200  # nothing changed
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_health_port_from_the_environment_on_the_inspector_host(launch):
    port = free_port()
    served = launch(
        *python("-m", "runtime", "run", "basic:rt", "--port", "0"),
        env={
            "RUNTIME_HEALTH_PORT": str(port),
            "RUNTIME_INSPECTOR_HOST": "127.0.0.1",
        },
    )
    served.ready()
    assert _address(served, "Health checks") == f"http://127.0.0.1:{port}"
    assert _probe(f"http://127.0.0.1:{port}/readyz")[0] == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_health_port_in_use_fails_start_up_cleanly(launch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        served = launch(
            *python(app_script("probed.py")),
            env={"RT_HEALTH_PORT": port, "RT_INSPECT": "1"},
        )
        assert served.wait(30) == 1
    errors = [line for line in served.lines if " ERROR " in line]
    assert len(errors) == 1, served.output
    assert f"Health checks: cannot listen on 127.0.0.1:{port}" in errors[0]
    assert "Started Runtime-Server" not in served.output
    assert "Traceback" not in served.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--health-port", "70000"], ["--health-port", "70000"]),
        (["--health-port", "x"], ["--health-port", "'x'"]),
        (["--health-port", "0", "--single-process"], ["health port", "single"]),
        (
            ["--health-port", "0", "--health-host", "no.such.host.invalid"],
            ["cannot resolve the health host 'no.such.host.invalid'"],
        ),
        (
            ["--inspect", "--inspector-host", "no.such.host.invalid"],
            ["cannot resolve the inspector host 'no.such.host.invalid'"],
        ),
    ],
)
def test_bad_health_options_are_one_line_and_exit_2(launch, args, words):
    served = launch(*python("-m", "runtime", "run", *args))
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word in lines[0]


def test_a_bad_health_port_in_the_environment_is_one_line(launch):
    served = launch(*python("-m", "runtime", "run"), env={"RUNTIME_HEALTH_PORT": "abc"})
    assert served.wait() == 2
    assert "RUNTIME_HEALTH_PORT='abc': 'abc' is not a port number" in served.output
    assert len([line for line in served.lines if line.strip()]) == 1


@pytest.mark.parametrize(
    "flags, why",
    [
        ([], "without the inspector"),
        (["--inspect", "--inspector-port", "0"], "without an inspector API key"),
    ],
    ids=["no-inspector", "no-key"],
)
def test_health_without_key_that_does_nothing_is_warned_about(launch, flags, why):
    served = launch(
        *python(
            "-m", "runtime", "run", "probed:rt", "--port", "0", "--health-without-key"
        )
        + flags
    )
    served.ready()
    served.wait_for(rf"WARNING health_without_key has no effect {why}")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_health_settings_are_validated_in_python():
    from runtime import Config, ProcessGroup
    from runtime.config import RunOptions
    from runtime.errors import ConfigError

    config = Config()
    for key, value in (
        ("HEALTH_PORT", -1),
        ("HEALTH_PORT", "6458"),
        ("HEALTH_WITHOUT_KEY", "yes"),
        ("HEALTH_HOST", ""),
    ):
        with pytest.raises(ConfigError) as info:
            setattr(config, key, value)
        assert repr(value) in str(info.value) and key in str(info.value)
    build = RunOptions.build
    with pytest.raises(ConfigError, match="health_port must be 0..65535, got 70000"):
        build(Config(), ProcessGroup.THRESHOLD, health_port=70000)
    with pytest.raises(ConfigError, match="health_without_key must be True or"):
        build(Config(), ProcessGroup.THRESHOLD, health_without_key=1)
    options = build(Config(INSPECTOR_HOST="127.0.0.1"), 300, health_port=0)
    assert (options.health_host, options.health_port) == ("127.0.0.1", 0)
    options = build(Config(HEALTH_PORT=9, HEALTH_HOST="::1"), 300)
    assert (options.health_host, options.health_port) == ("::1", 9)
    assert build(Config(), 300).health_port is None


def test_healthz_and_readyz_are_not_custom_command_names():
    from runtime import Runtime
    from runtime.errors import ConfigError

    def healthz():
        return "mine"

    def readyz():
        return "mine"

    rt = Runtime("probes-names", app=lambda scope, receive, send: None)
    try:
        for fn in (healthz, readyz):
            with pytest.raises(ConfigError, match="built in"):
                rt.inspector_command(fn)
    finally:
        Runtime._registry.pop("probes-names")
