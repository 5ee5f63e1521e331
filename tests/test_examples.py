"""Every program in examples/ starts, does what its docstring says, and stops."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from conftest import free_port, python

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).parent.parent / "examples"


def start(launch, name: str, **env: str):
    port = free_port()
    served = launch(*python(str(EXAMPLES / name)), env={"PORT": str(port), **env})
    served.ready()
    return served, f"http://127.0.0.1:{port}"


def stop(served) -> None:
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.output


def test_hello(launch):
    served, url = start(launch, "hello.py")
    assert httpx.get(url).text.startswith("hello from Runtime-Server-")
    stop(served)


def test_echo_protocol(launch):
    served, url = start(launch, "echo_protocol.py")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"hi\n")
        assert conn.recv(16) == b"hi\n"
    stop(served)


def test_shared_counter(launch):
    served, url = start(launch, "shared_counter.py")
    counts = [int(httpx.get(url).text.split()[0]) for _ in range(6)]
    assert counts == [1, 2, 3, 4, 5, 6]  # one counter, whichever worker answers
    stop(served)


def test_mailer(launch):
    served, url = start(launch, "mailer.py")
    assert httpx.post(url).status_code == 202
    served.wait_for(r"Runtime-Mailer-0\[\d+\] WARNING mailer sent mail queued by ")
    stop(served)


def test_control(launch):
    inspector = free_port()
    served, url = start(launch, "control.py", RUNTIME_INSPECTOR_PORT=str(inspector))
    assert httpx.get(url).status_code == 200
    asked = launch(
        sys.executable,
        "-m",
        "runtime",
        "inspect",
        "greet",
        "--who=ops",
        "--port",
        str(inspector),
    )
    assert asked.wait() == 0, asked.output
    assert "hello ops, 2 server worker(s) here" in asked.output
    stop(served)


def test_slow_start(launch):
    served, url = start(launch, "slow_start.py")
    served.wait_for(r"Runtime-Server-1-0\[\d+\] INFO Serving")  # after the warm-up
    assert httpx.get(url).status_code == 200
    stop(served)


def test_start_method(launch):
    served, url = start(launch, "start_method.py")
    served.wait_for(r"Ready: 2 worker\(s\) serving \(start method fork\)")
    assert httpx.get(url).status_code == 200
    stop(served)


def test_restart_and_scale(launch):
    served, url = start(launch, "restart_and_scale.py")
    assert httpx.post(f"{url}/scale?n=0").status_code == 400
    assert httpx.post(f"{url}/scale?n=3").text == "scaling\n"
    served.wait_for(r"Runtime-Server-2-0\[\d+\] INFO Serving")
    assert httpx.post(f"{url}/restart").text == "restarting\n"
    for slot in range(3):
        served.wait_for(rf"Runtime-Server-{slot}-1\[\d+\] INFO Serving")
    assert httpx.get(url).text.startswith("Runtime-Server-")
    stop(served)


def test_log_config(launch):
    served, url = start(launch, "log_config.py")
    assert httpx.get(f"{url}/shop").text == "logged\n"
    served.wait_for(r"^Runtime-Server-\d-0 INFO served /shop$")
    stop(served)
