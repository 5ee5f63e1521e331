"""Serving real HTTP from real worker processes, on every start method."""

from __future__ import annotations

import re
import signal
import socket

import pytest
from conftest import START_METHODS, app_script, python
from http_client import InFlight, get, workers_seen

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("method", START_METHODS)
def test_each_start_method_serves_from_every_worker(launch, method):
    served = launch(*python(app_script("basic.py")), env={"RT_START_METHOD": method})
    url = served.ready()
    seen = workers_seen(url, expected=2)
    assert seen == {"Runtime-Server-0-0", "Runtime-Server-1-0"}
    listeners = get(url).json()["listeners"]
    if method == "fork":  # the worker is a copy of the manager
        assert listeners[0] == "main_process_start"
        listeners = listeners[1:]
    assert listeners == ["before_server_start", "after_server_start"]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert f"(start method {method})" in served.output


def test_every_ack_comes_before_ready(launch):
    served = launch(*python(app_script("basic.py")), env={"RT_WORKERS": "3"})
    served.wait_for("listener main_process_ready")
    lines = list(served.lines)
    ready_at = next(i for i, line in enumerate(lines) if "Ready: " in line)
    acks = [
        i for i, line in enumerate(lines) if re.search(r"Server-\d-0 .* acked", line)
    ]
    assert len(acks) == 3
    assert max(acks) < ready_at
    ready_listener = lines.index("listener main_process_ready")
    assert ready_listener > max(acks)
    served.signal(signal.SIGINT)
    assert served.wait() == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_sigterm_lets_a_slow_request_finish(launch, method):
    served = launch(*python(app_script("basic.py")), env={"RT_START_METHOD": method})
    url = served.ready()
    slow = InFlight(url, "/?sleep=2")
    served.wait_for("request sleeping")
    served.signal(signal.SIGTERM)
    response = slow.result()
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    assert served.wait() == 0
    assert served.count("Stopping on SIGTERM") == 1
    assert "listener main_process_stop" in served.lines


def test_single_process_mode_serves_and_stops(launch):
    served = launch(
        *python(app_script("basic.py")), env={"RT_SINGLE": "1", "RT_WORKERS": "1"}
    )
    served.wait_for(r"Listening on .* \(single process\)")
    served.wait_for("listener main_process_ready")
    url = served.url
    body = get(url).json()
    assert body["pid"] == served.pid
    assert body["listeners"] == [
        "main_process_start",
        "before_server_start",
        "after_server_start",
        "main_process_ready",
    ]
    slow = InFlight(url, "/?sleep=1")
    served.wait_for("request sleeping")
    served.signal(signal.SIGTERM)
    assert slow.result().status_code == 200
    assert served.wait() == 0
    assert "Started Runtime-Server" not in served.output
    assert "listener main_process_stop" in served.lines


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# C15: other families (IPv6).
@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_ipv6_socket_is_shared_by_workers(launch, method):
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_HOST": "::1", "RT_START_METHOD": method},
    )
    url = served.ready()
    assert url.startswith("http://[::1]:")
    assert len(workers_seen(url, expected=2)) == 2
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


# C15: other families (a unix socket path).
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_unix_socket_exists_until_exit_and_is_removed(launch, tmp_path, method):
    path = tmp_path / "app.sock"
    served = launch(
        *python(app_script("basic.py")),
        env={"RT_UDS": str(path), "RT_START_METHOD": method},
    )
    url = served.ready()
    assert url == f"unix:{path}"
    assert len(workers_seen(url, expected=2)) == 2
    assert path.exists()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert not path.exists()


def test_serves_on_an_inherited_fd(launch):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        fd = listener.fileno()
        served = launch(
            *python(
                "-m", "runtime", "run", "basic:app", "--fd", str(fd), "--workers", "2"
            ),
            pass_fds=(fd,),
        )
    url = served.ready()
    assert url == f"http://127.0.0.1:{port}"
    assert len(workers_seen(url, expected=2)) == 2
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_raw_protocol_and_serve_callable(launch):
    for kind in ("protocol", "serve"):
        served = launch(*python(app_script("raw.py")), env={"RT_KIND": kind})
        url = served.ready()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        replies = set()
        for _ in range(50):
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(b"ping\n")
                replies.add(conn.makefile().readline().strip())
            if len(replies) == 2:
                break
        assert replies == {"pong Runtime-Server-0-0", "pong Runtime-Server-1-0"}
        served.signal(signal.SIGTERM)
        assert served.wait() == 0, served.output


def test_asgi_lifespan_websocket_and_headers(launch):
    from websockets.sync.client import connect

    served = launch(*python(app_script("asgi_full.py")))
    url = served.ready()
    response = get(url)
    assert response.text.startswith("Runtime-Server-")  # set by lifespan startup
    assert response.headers["server"] == "runtime"
    assert "date" in response.headers
    with connect(url.replace("http://", "ws://") + "/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo hi"
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert served.count("lifespan shutdown") == 2, served.output


def _dual_stack() -> bool:
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip() == "0" and _ipv6_available()
    except OSError:
        return False


@pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 here")
def test_any_ipv6_address_also_serves_ipv4(launch):
    served = launch(*python(app_script("basic.py")), env={"RT_HOST": "::"})
    url = served.ready()
    port = url.rsplit(":", 1)[1]
    assert get(f"http://127.0.0.1:{port}").status_code == 200
    assert get(f"http://[::1]:{port}").status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
