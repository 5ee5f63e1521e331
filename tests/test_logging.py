"""Logging: log configs in every process, formats, the access log and one log file."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import httpx
import pytest
from conftest import APPS, START_METHODS, python, wait_until
from http_client import get

from runtime import logs
from runtime.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


def file_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_in_file(path: Path, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    regex = re.compile(pattern)

    def found() -> re.Match[str] | None:
        return next(filter(None, map(regex.search, file_lines(path))), None)

    match = wait_until(found, timeout, 0.05)
    assert match, f"no line matching {pattern!r} in {path}:\n{path.read_text()}"
    return match


def url_in(path: Path) -> str:
    wait_in_file(path, r"Ready: ")
    return wait_in_file(path, r"Listening on (http://[\w.:\[\]]+)").group(1)


def stop(served) -> None:
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.output


@pytest.mark.parametrize("method", START_METHODS)
def test_a_log_config_given_under_the_main_guard_reaches_restarted_workers(
    launch, tmp_path, method
):
    # C19: logging is set up only inside the main guard.
    log_file = tmp_path / "app.log"
    served = launch(
        *python(str(APPS / "logapp.py"), method), env={"LOGAPP_FILE": str(log_file)}
    )
    url = url_in(log_file)
    wait_in_file(log_file, r"^CFG Runtime-Server-0-0 Serving$")
    served.signal(signal.SIGHUP)  # restart every worker
    wait_in_file(log_file, r"^CFG Runtime-Server-0-1 Serving$")
    wait_in_file(log_file, r"^CFG Runtime-Server-1-1 Serving$")
    wait_until(lambda: get(url, "/log?id=after-restart").status_code == 200, 10)
    wait_in_file(log_file, r"^CFG Runtime-Server-\d-1 record after-restart x+ end$")
    stop(served)
    assert "Logging was set up in the main process only" not in served.output


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_logging_set_up_in_the_main_guard_only_is_pointed_out(launch, method):
    served = launch(*python(str(APPS / "logapp.py"), method))
    served.wait_for(r"^USER MainProcess Ready: ")
    warning = served.wait_for(r"^USER MainProcess Logging was set up in the main .*")
    assert "--log-config" in warning.group(0)
    stop(served)
    assert served.count("Logging was set up in the main process only") == 1


def test_forked_workers_inherit_the_main_guard_set_up(launch):
    served = launch(*python(str(APPS / "logapp.py"), "fork"))
    served.wait_for(r"^USER MainProcess Ready: ")
    served.wait_for(r"^USER Runtime-Server-0-0 Serving$")
    stop(served)
    assert "Logging was set up in the main process only" not in served.output


JSON_CONFIG = {
    "version": 1,
    "formatters": {"f": {"format": "FILE %(processName)s %(levelname)s %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "f"}},
    "root": {"handlers": ["out"], "level": "INFO"},
    "loggers": {"runtime": {"level": "WARNING"}},
}

YAML_CONFIG = """\
version: 1
formatters:
  f:
    format: "FILE %(processName)s %(levelname)s %(message)s"
handlers:
  out:
    class: logging.StreamHandler
    formatter: f
root:
  handlers: [out]
  level: INFO
"""

INI_CONFIG = """\
[loggers]
keys = root

[handlers]
keys = out

[formatters]
keys = f

[logger_root]
level = INFO
handlers = out

[handler_out]
class = StreamHandler
formatter = f
args = (sys.stderr,)

[formatter_f]
format = FILE %(processName)s %(levelname)s %(message)s
"""


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_a_log_config_file_is_applied_in_every_process(launch, tmp_path, kind):
    text = {"json": json.dumps(JSON_CONFIG), "yaml": YAML_CONFIG, "ini": INI_CONFIG}
    config = tmp_path / f"logging.{kind}"
    config.write_text(text[kind])
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0", "--workers", "2")
        + ["--start-method", "spawn", "--log-config", str(config), "--access-log"]
    )
    if kind == "json":  # its "runtime" logger shows warnings only
        port = _listening_port(served)
    else:
        served.wait_for(r"^FILE MainProcess INFO Ready: ")
        served.wait_for(r"^FILE Runtime-Server-1-0 INFO Serving$")
        port = int(served.wait_for(r"Listening on http://[\d.]+:(\d+)").group(1))
    assert get(f"http://127.0.0.1:{port}", "/log?id=r1").status_code == 200
    served.wait_for(r"^FILE Runtime-Server-\d-0 WARNING record r1 x+ end$")
    served.wait_for(r'^FILE Runtime-Server-\d-0 INFO .*"GET /log\?id=r1 HTTP/1.1" 200')
    stop(served)
    assert "Logging was set up in the main process only" not in served.output
    if kind == "json":
        assert " INFO Started " not in served.output  # the config's level won


def _listening_port(served) -> int:
    """The port of a group whose config hides the runtime's INFO lines."""
    pid = served.pid
    found = wait_until(lambda: _tcp_ports_of(pid), 20, 0.1)
    assert found, served.output
    return found[0]


def _tcp_ports_of(pid: int) -> list[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize(
    ("content", "name", "words"),
    [
        (None, "missing.json", ["'", "missing.json", "cannot be read"]),
        ("{nope", "bad.json", ["bad.json", "not valid JSON"]),
        ('{"handlers": {}}', "noversion.json", ["noversion.json", '"version": 1']),
        ("a: [", "bad.yaml", ["bad.yaml", "not valid YAML"]),
        ("[x]\ny = 1\n", "bad.ini", ["bad.ini", "[loggers]"]),
        ("no section", "worse.conf", ["worse.conf", "not a valid INI"]),
        (
            json.dumps({"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}),
            "unknown.json",
            ["unknown.json", "cannot be applied"],
        ),
    ],
)
def test_a_bad_log_config_is_one_line_and_starts_nothing(
    launch, tmp_path, content, name, words
):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0")
        + ["--log-config", str(path)]
    )
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1, served.output
    for word in words:
        assert word in lines[0]
    assert "Started" not in served.output


def test_log_config_beside_a_log_file_is_refused(launch, tmp_path):
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(JSON_CONFIG))
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0")
        + ["--log-config", str(config), "--log-file", str(tmp_path / "x.log")]
    )
    assert served.wait() == 2
    assert "log_config" in served.output and "log_file" in served.output
    assert not (tmp_path / "x.log").exists()


def test_an_unwritable_log_file_is_one_line(launch, tmp_path):
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0")
        + ["--log-file", str(tmp_path / "no" / "such" / "dir.log")]
    )
    assert served.wait() == 2
    lines = [line for line in served.lines if line.strip()]
    assert len(lines) == 1 and "dir.log" in lines[0] and "cannot be opened" in lines[0]


def test_the_access_log_is_off_unless_asked_for(launch):
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0", "--no-access-log")
    )
    url = served.ready()
    assert get(url, "/log?id=quiet").status_code == 200
    served.wait_for(r"record quiet")
    stop(served)
    assert "GET /log" not in served.output


@pytest.mark.parametrize("method", START_METHODS)
def test_one_log_file_gets_every_record_once_and_whole(launch, tmp_path, method):
    # C20: 3 workers, one file, 10k requests, plus records longer than a pipe's
    # atomic write; every line must be one whole JSON record, none lost.
    log_file = tmp_path / "all.log"
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0", "--workers", "3")
        + ["--start-method", method, "--log-file", str(log_file)]
        + ["--log-format", "json", "--access-log"]
    )
    url = url_in(log_file)
    paths = [f"/log?id={i}&size={20000 if i % 500 == 0 else 10}" for i in range(10000)]
    failures = _send_all(url, paths, threads=4)
    assert failures == 0
    stop(served)
    assert served.output.strip() == ""  # everything went into the file
    records = [json.loads(line) for line in file_lines(log_file)]  # whole lines
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert sorted(r["path"] for r in access) == sorted(paths)
    ids = [r["message"].split()[1] for r in records if r["logger"] == "logapp"]
    assert sorted(ids, key=int) == [str(i) for i in range(10000)]
    big = [r for r in records if r["logger"] == "logapp" and len(r["message"]) > 20000]
    assert len(big) == 20 and all(r["message"].endswith(" end") for r in big)
    workers = {r["process"] for r in access}
    assert len(workers) >= 2  # 100 connections: several writers at once
    assert workers <= {f"Runtime-Server-{i}-0" for i in range(3)}
    assert records[-1]["process"] == "Runtime-Main"


def _send_all(url: str, paths: list[str], threads: int) -> int:
    failures = []

    def run(part: list[str]) -> None:
        for start in range(0, len(part), 100):  # a new connection every 100
            with httpx.Client(timeout=20) as client:
                for path in part[start : start + 100]:
                    try:
                        if client.get(url + path).status_code != 200:
                            failures.append(path)
                    except httpx.HTTPError:
                        failures.append(path)

    workers = [
        threading.Thread(target=run, args=(paths[i::threads],)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(100)
    return len(failures)


def test_the_log_file_is_reopened_after_it_is_moved_away(launch, tmp_path):
    log_file = tmp_path / "app.log"
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0")
        + ["--log-file", str(log_file), "--workers", "2"]
    )
    url = url_in(log_file)
    log_file.rename(tmp_path / "app.log.1")  # as logrotate does
    for i in range(20):  # both workers, and the manager, write again
        assert get(url, f"/log?id=moved{i}").status_code == 200
    wait_in_file(log_file, r"Runtime-Server-\d-0\[\d+\] WARNING record moved19 x+ end")
    stop(served)
    assert "Runtime-Main" in log_file.read_text()
    assert "moved" not in (tmp_path / "app.log.1").read_text()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_custom_processes_log_into_the_one_file(launch, tmp_path, method):
    log_file = tmp_path / "all.log"
    served = launch(
        *python("-m", "runtime", "run", "custom:rt", "--port", "0")
        + ["--log-file", str(log_file), "--start-method", method],
        env={"RT_CUSTOM": "writer:logs"},
    )
    url_in(log_file)
    wait_in_file(log_file, r"Runtime-writer-0\[\d+\] WARNING a custom process logs$")
    stop(served)


def test_a_cut_json_record_is_still_json(launch, tmp_path):
    log_file = tmp_path / "all.log"
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0")
        + ["--log-file", str(log_file), "--log-format", "json"]
    )
    url = url_in(log_file)
    assert get(url, "/log?id=huge&size=100000").status_code == 200
    line = wait_in_file(log_file, r'"message": "record huge x+ \[cut: ').string
    record = json.loads(line)
    assert len(line.encode()) <= logs.MAX_RECORD
    assert record["process"].startswith("Runtime-Server-")
    stop(served)


def test_a_log_file_that_cannot_be_written_does_not_stop_the_group(launch, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log_file = folder / "app.log"
    served = launch(
        *python("-m", "runtime", "run", "logapp:rt", "--port", "0", "--workers", "2")
        + ["--log-file", str(log_file)]
    )
    url = url_in(log_file)
    shutil.rmtree(folder)  # the next record cannot be written there
    assert get(url, "/log?id=lost-dir").status_code == 200
    served.wait_for(rf"runtime: cannot write the log file {log_file} \(")
    served.wait_for(r"WARNING record lost-dir x+ end")  # on stderr instead
    folder.mkdir()
    assert get(url, "/log?id=back").status_code == 200
    wait_in_file(log_file, r"WARNING record back x+ end")
    stop(served)
    assert served.count("cannot write the log file") == 1


def test_json_records_carry_fields_and_tracebacks():
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "shop", logging.ERROR, __file__, 1, "failed %s", ("now",), sys.exc_info()
        )
    out = json.loads(formatter.format(record))
    assert out["level"] == "ERROR" and out["logger"] == "shop"
    assert out["message"] == "failed now" and out["pid"] == os.getpid()
    assert "ValueError: boom" in out["exc_info"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", out["time"])


def test_a_log_config_dict_without_a_version_is_refused():
    with pytest.raises(ConfigError, match='"version": 1'):
        logs.load_config({"handlers": {}})
    with pytest.raises(ConfigError, match="file path or a dictConfig dict"):
        logs.load_config(42)
