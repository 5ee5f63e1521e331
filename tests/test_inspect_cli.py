"""`runtime inspect` against a running group, and the run command's flags."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python, wait_until

pytestmark = pytest.mark.timeout(90)

KEY = "s3cret-key-for-tests"
SCRIPT = str(Path(sys.executable).parent / "runtime")


def inspect(*args: str, env: dict[str, str] | None = None):
    import os

    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [SCRIPT, "inspect", *args], capture_output=True, text=True, timeout=30, env=full
    )


def _serve(launch, *flags: str, target: str = "inspected:rt"):
    served = launch(
        *python(
            "-m",
            "runtime",
            "run",
            target,
            "--port",
            "0",
            "--workers",
            "2",
            "--inspect",
            "--inspector-port",
            "0",
            *flags,
        )
    )
    served.ready()
    address = served.wait_for(r"Inspector listening on (https?://\S+)").group(1)
    return served, address.rsplit(":", 1)[1]


def test_status_reload_scale_custom_and_shutdown_from_the_cli(launch):
    served, port = _serve(launch, "--start-method", "fork")
    status = inspect("--port", port)
    assert status.returncode == 0, status.stderr
    assert "inspected (runtime 0.1.0, start method fork" in status.stdout
    assert "Runtime-Server-0-0" in status.stdout and "ACKED" in status.stdout
    raw = json.loads(inspect("--port", port, "--json").stdout)
    assert raw["workers"]["Runtime-Main"]["pid"] == served.pid
    assert inspect("reload", "--zero-downtime", "--port", port).returncode == 0
    served.wait_for(r"Restarted Runtime-Server-1-0 .*\(zero-downtime\)")
    assert inspect("scale", "3", "--port", port).returncode == 0
    served.wait_for(r"Scaled to 3 server worker\(s\)")
    echo = inspect("echo", "--text=hi", "--times=2", "--port", port)
    assert json.loads(echo.stdout) == {"result": "hihi"}
    positional = inspect("echo", "ab", "3", "--port", port)
    assert json.loads(positional.stdout) == {"result": "ababab"}
    clash = inspect("echo", "--port", port, "--", "--text=--port=1")
    assert json.loads(clash.stdout) == {"result": "--port=1"}
    assert (
        inspect("reload", "--name", "Runtime-Server-2-0", "--port", port).returncode
        == 0
    )
    served.wait_for(r"Restarted Runtime-Server-2-0 \(pid \d+\) as ")
    assert inspect("shutdown", "--port", port).returncode == 0
    assert served.wait() == 0


def test_unreachable_and_refused_are_one_line_and_exit_1(launch):
    served, port = _serve(launch, "--inspector-api-key", KEY)
    refused = inspect("--port", port)
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0
    assert f"the inspector at http://localhost:{port} needs an API key" in (
        refused.stderr
    )
    wrong = inspect("--port", port, "--api-key", "not-the-key")
    assert wrong.returncode == 1
    assert "refused the API key" in wrong.stderr
    ok = inspect("--port", port, env={"RUNTIME_INSPECTOR_API_KEY": KEY})
    assert ok.returncode == 0 and "Runtime-Server-1-0" in ok.stdout
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    gone = inspect("--port", port)
    assert gone.returncode == 1 and gone.stderr.strip().count("\n") == 0
    assert f"cannot reach the inspector at http://localhost:{port}" in gone.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["scale", "x"],
        ["scale"],
        ["reload", "now"],
        ["echo", "--text"],
        ["echo", "-x"],
        ["--api-key", "ключключключ"],
        ["--api-key", "has spaces in it"],
        ["echo", "--name=bob"],  # reload's --name, not echo's: after -- then
        ["echo", "--zero-downtime"],
    ],
)
def test_bad_inspect_arguments_exit_2(args):
    result = inspect(*args, "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr


def test_bad_environment_and_cafile_are_one_line():
    port = inspect(env={"RUNTIME_INSPECTOR_PORT": "abc"})
    assert port.returncode == 2 and "'abc' is not a port number" in port.stderr
    assert "RUNTIME_INSPECTOR_PORT='abc'" in port.stderr
    cafile = inspect("--secure", "--cafile", "/nonexistent/ca.pem", "--port", "1")
    assert cafile.returncode == 1
    assert "cannot load --cafile '/nonexistent/ca.pem'" in cafile.stderr
    for result in (port, cafile):
        assert result.stderr.strip().count("\n") == 0, result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_the_inspector_over_tls(launch, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    served, port = _serve(
        launch,
        "--inspector-tls-cert",
        str(cert),
        "--inspector-tls-key",
        str(key),
        "--inspector-host",
        "localhost",
    )
    secure = inspect("--secure", "--cafile", str(cert), "--port", port)
    assert secure.returncode == 0, secure.stderr
    assert "Runtime-Server-0-0" in secure.stdout
    plain = inspect("--port", port)
    assert plain.returncode == 1
    assert "pass --secure" in plain.stderr, plain.stderr
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert wait_until(lambda: served.proc.poll() is not None, 5)


def test_inspector_port_in_use_fails_start_up_cleanly(launch):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        served = launch(
            *python(
                "-m",
                "runtime",
                "run",
                "--port",
                "0",
                "--inspect",
                "--inspector-host",
                "127.0.0.1",
                "--inspector-port",
                port,
            )
        )
        assert served.wait(30) == 1
    assert f"Inspector: cannot listen on 127.0.0.1:{port}" in served.output
    assert "Started Runtime-Server" not in served.output
    assert "Traceback" not in served.output
