"""The inspector: the HTTP control service of a running group."""

from __future__ import annotations

import signal
import socket
import threading

import httpx
import pytest
from conftest import app_script, python, wait_until

pytestmark = pytest.mark.timeout(90)

KEY = "s3cret-key-for-tests"


def _inspected(launch, **env):
    served = launch(*python(app_script("inspected.py")), env=env)
    served.ready()
    base = served.wait_for(r"Inspector listening on (http://\S+)").group(1)
    return served, base


def _servers(base, headers=None):
    table = httpx.get(base + "/", headers=headers, timeout=10).json()["workers"]
    return {k: v for k, v in table.items() if v["server"]}


def test_status_reload_scale_and_shutdown(launch):
    served, base = _inspected(launch)
    status = httpx.get(base + "/", timeout=10).json()
    assert status["name"] == "inspected" and status["start_method"] == "spawn"
    assert status["pid"] == served.pid and status["uptime"] >= 0
    assert status["workers"]["Runtime-Main"]["start_at"].endswith("+00:00")
    before = {v["pid"] for v in _servers(base).values()}
    reply = httpx.post(base + "/reload", json={"zero_downtime": True}, timeout=10)
    assert reply.json() == {"reloading": True, "zero_downtime": True}
    served.wait_for(r"Restarted Runtime-Server-1-0 .*\(zero-downtime\)")
    assert not before & {v["pid"] for v in _servers(base).values()}
    assert httpx.post(base + "/scale", json={"replicas": 3}, timeout=10).is_success

    def three_acked():
        servers = _servers(base)
        return len(servers) == 3 and all(
            v["state"] == "ACKED" for v in servers.values()
        )

    assert wait_until(three_acked, 30)
    assert httpx.post(base + "/shutdown", timeout=10).json() == {"stopping": True}
    assert served.wait() == 0


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/nope", None, 404),
        ("GET", "/scale", None, 405),
        ("DELETE", "/", None, 405),
        ("POST", "/scale", b"{bad", 400),
        ("POST", "/scale", b"[1]", 400),
        ("POST", "/scale", b'{"replicas": "3"}', 400),
        ("POST", "/scale", b'{"replicas": 0}', 400),
        ("POST", "/scale", b'{"replicas": true}', 400),
        ("POST", "/scale", b"{}", 400),
        ("POST", "/reload", b'{"zero_downtime": "yes"}', 400),
        ("POST", "/reload", b'{"other": 1}', 400),
        ("POST", "/scale", b'{"replicas": 3, "pad": "' + b"x" * 20000 + b'"}', 413),
    ],
)
def test_bad_input_is_a_4xx_and_changes_nothing(launch, method, path, body, status):
    served, base = _inspected(launch, RT_START_METHOD="fork")
    before = _servers(base)
    reply = httpx.request(method, base + path, content=body, timeout=10)
    assert reply.status_code == status
    assert "error" in reply.json()
    assert _servers(base) == before
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert "Restarted" not in served.output and "Scaled" not in served.output


def test_api_key_is_required_and_checked(launch):
    served, base = _inspected(launch, RT_KEY=KEY, RT_START_METHOD="fork")
    good = {"Authorization": f"Bearer {KEY}"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        reply = httpx.post(base + "/scale", json={"replicas": 3}, headers=headers)
        assert reply.status_code == 401
    assert httpx.get(base + "/", timeout=10).status_code == 401
    assert len(_servers(base, good)) == 2
    lower = {"Authorization": f"bearer {KEY}"}  # the scheme is case-insensitive
    assert httpx.get(base + "/", headers=lower, timeout=10).status_code == 200
    assert "Scaled" not in served.output
    assert httpx.post(base + "/shutdown", headers=good, timeout=10).is_success
    assert served.wait() == 0


def test_exposed_without_a_key_is_refused(launch):
    # C22
    served = launch(
        *python(app_script("inspected.py")), env={"RT_INSPECTOR_HOST": "0.0.0.0"}
    )
    assert served.wait(30) == 1
    assert "without an API key; set INSPECTOR_API_KEY" in served.output
    assert "Started Runtime-Server" not in served.output


def test_restarts_under_inspector_load_with_fork(launch):
    # C21: the service keeps answering while workers are forked and restarted.
    served, base = _inspected(launch, RT_START_METHOD="fork")
    done, failures, answered = threading.Event(), [], []

    def hammer():
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                try:
                    client.get(base + "/").raise_for_status()
                    answered.append(1)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for rolling in range(1, 6):
            served.signal(signal.SIGHUP)
            assert wait_until(
                lambda r=rolling: served.count(r"\(zero-downtime\)$") >= 2 * r, 30
            )
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert failures == [] and len(answered) > 50
    assert served.count(r" acked$") == served.count(r"INFO Started Runtime-Server")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_custom_commands_and_nothing_else(launch):
    served, base = _inspected(launch, RT_START_METHOD="fork")

    def post(path, body=None):
        return httpx.post(base + path, json=body, timeout=10)

    assert post("/echo", {"text": "ab", "times": 2}).json() == {"result": "abab"}
    assert post("/hello", {"who": "ops"}).json() == {
        "result": "hello ops from inspected"
    }
    bad = post("/echo", {"txt": "a"})
    assert bad.status_code == 400 and "bad arguments" in bad.json()["error"]
    failed = post("/boom")
    assert failed.status_code == 500
    assert "the command failed on purpose" in failed.json()["error"]
    for path in ("/status", "/_authorized", "/group", "/app", "/__init__", "/routes"):
        assert post(path).status_code == 404, path
    assert httpx.get(base + "/", timeout=10).status_code == 200  # still serving
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


@pytest.mark.parametrize("keyed", [True, False], ids=["with-key", "without-key"])
def test_fuzzed_requests_get_a_4xx_and_change_nothing(launch, keyed):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    served, base = _inspected(
        launch, RT_KEY=KEY if keyed else "", RT_START_METHOD="fork"
    )
    good = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    before = _servers(base, good)
    commands = {"/", "/reload", "/shutdown", "/scale", "/echo", "/boom", "/hello"}
    commands.update({"/refuse", "/interrupt"})
    paths = st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz_/.%-", min_size=1, max_size=20
    ).map(lambda p: "/" + p.lstrip("/"))
    header_values = (
        st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40
        )
        .map(str.strip)
        .filter(bool)
    )

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        path=paths,
        authorization=st.one_of(st.none(), header_values),
        body=st.binary(max_size=300),
    )
    def check(method, path, authorization, body):
        headers = {} if authorization is None else {"Authorization": authorization}
        if keyed and authorization and authorization.endswith(KEY):
            headers = {}  # a right key would make some of these valid requests
        # The client normalises dot segments ("/." is "/"): judge what it sends.
        if not keyed and httpx.URL(base + path).path in commands:
            body = b"\x00" + body  # never JSON, so never a valid command
            method = "POST"
        reply = httpx.request(method, base + path, headers=headers, content=body)
        assert 400 <= reply.status_code < 500, (method, path, reply.status_code)
        if keyed:
            assert reply.status_code == 401

    check()
    assert _servers(base, good) == before
    for word in ("Restarted", "Scaled", "Stopping", "Traceback"):
        assert word not in served.output
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_command_errors_types_and_hostile_bodies(launch):
    served, base = _inspected(launch, RT_START_METHOD="fork")

    def post(path, content):
        return httpx.post(base + path, content=content, timeout=10)

    cases = [
        ("/echo", b'{"text": 5}', 400, "text must be str"),
        ("/echo", b'{"text": "a", "times": "2"}', 400, "times must be int"),
        ("/echo", b'{"text": "a", "times": true}', 400, "times must be int"),
        ("/refuse", b"", 500, "ValueError: a ValueError from inside"),
        ("/echo", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "not JSON"),
        ("/echo", b'{"text": NaN}', 400, "not JSON"),
        ("/echo", b'{"text": "a", "times": 1e400}', 400, "too large"),
    ]
    for path, content, status, words in cases:
        reply = post(path, content)
        assert (reply.status_code, words in reply.json()["error"]) == (status, True)
    # A declared body over the limit is refused before it is read.
    with socket.create_connection(_address(base), 10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n{}"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 413")
    # A request that never arrives whole does not keep its connection.
    with socket.create_connection(_address(base), 10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(20)
        assert sock.recv(100) == b""
    assert httpx.get(base + "/", timeout=10).status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_reload_one_process_by_name(launch):
    served, base = _inspected(launch, RT_START_METHOD="fork")
    body = {"name": "Runtime-Server-0-0", "zero_downtime": True}
    reply = httpx.post(base + "/reload", json=body, timeout=10)
    assert reply.json() == {"reloading": "Runtime-Server-0-0", "zero_downtime": True}
    served.wait_for(r"Restarted Runtime-Server-0-0 .*\(zero-downtime\)")
    assert "Runtime-Server-1-0" in _servers(base)
    unknown = httpx.post(base + "/reload", json={"name": "Runtime-Nope-0"})
    assert unknown.status_code == 400 and "Runtime-Nope-0" in unknown.json()["error"]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def _address(base: str) -> tuple[str, int]:
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def test_a_command_that_interrupts_is_a_json_500_and_the_manager_carries_on(launch):
    served, base = _inspected(launch, RT_START_METHOD="fork")
    reply = httpx.post(base + "/interrupt", timeout=10)
    assert reply.status_code == 500
    assert reply.json() == {"error": "KeyboardInterrupt: "}
    assert httpx.get(base + "/", timeout=10).status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_a_subclass_that_replaces_a_built_in_route_is_refused(launch):
    served = launch(*python(app_script("inspected.py")), env={"RT_TAKEOVER": "1"})
    assert served.wait() == 1
    assert "Started Runtime-Server" not in served.output
    assert (
        "ConfigError: Takeover replaces the built-in inspector route(s) healthz"
        in served.output
    )
