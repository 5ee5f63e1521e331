"""This runtime side by side with the servers users would pick instead.

Every server serves the same small ASGI app (``peer_app.py``; Sanic serves the
same thing written as a Sanic app, ``peer_sanic.py``) with N workers (2) on
127.0.0.1, started as its own users start it, each in a session of its own:

=================  ==========================================================
runtime-METHOD     ``python -m runtime run`` with ``--start-method METHOD``
uvicorn            ``python -m uvicorn --workers N`` (uvloop, httptools)
gunicorn           ``python -m gunicorn -k uvicorn.workers.UvicornWorker``
granian            ``python -m granian --interface asgi --loop uvloop``
hypercorn          ``python -m hypercorn --worker-class uvloop``
sanic              ``python -m sanic`` (its own app), inspector on
=================  ==========================================================

A server whose package is not installed is skipped (``pip install '.[bench]'``
installs them all). Access logs are off everywhere. For each server, each run
launches it twice. The first launch measures:

start
    from just before launching the command until every one of the N workers
    has answered ``GET /`` (new connections, until N distinct pids answered);
memory
    then, idle: the PSS of the manager (the launched process), the mean PSS of
    the workers that answered, and the PSS of every process in its session;
stop, idle
    then SIGINT to the manager: the time until it exited.

The second launch, once every worker answered, measures:

req/s, p99
    C keep-alive connections (32) of ``GET /`` for D seconds (10): ``wrk`` if
    it is on the PATH, else the bundled asyncio client of
    ``restart_under_load.py``;
restarts
    the same client under load while the server's own restart trigger is
    pulled R times (5): SIGHUP to the manager for all but Sanic, whose
    trigger is ``sanic inspect reload --zero-downtime``. A restart is done
    when every old worker pid has exited and N new pids have answered; then
    the next. Failed requests (connect, read, write, timeout, non-2xx) are
    counted over the whole phase;
stop, in flight
    then ``GET /sleep`` (headers and a first line at once, the rest a second
    later) and, once its first line arrived, SIGINT: the time until the
    manager exited, and whether the request was answered in full.

After each launch the driver waits for the session to empty and kills (by pid)
whatever is left, reporting it. Every wait has a deadline.

Each cell is the median over the runs (3) with the spread (min-max). A second
table divides each server's numbers by the reference row's (``--reference``,
``runtime-spawn`` by default). Last, the targets this runtime is built to
meet are checked against the numbers: zero failed requests during restarts;
start with fork or forkserver at most 0.8 of the fastest peer's; req/s at least
uvicorn's; an idle stop under one second.

Run it with the project's interpreter::

    python benchmarks/peers.py [--runs 3] [--duration 10] [--workers 2]
        [--connections 32] [--restarts 5] [--servers runtime-fork,uvicorn,...]
        [--reference runtime-spawn] [--load-tool auto|wrk|bundled] [--json]
        [--plot FILE.png] [--quick] [--logs DIR]

``--quick`` is one run with two seconds of load (CI runs it). Progress goes to
stderr; the table (or JSON) to stdout. The exit status is 1 if a run could not
be measured, or if this runtime did not stop in time or left processes behind;
a peer that does so is a finding, printed as a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restart_under_load import Client, add_load_tool, run_wrk, use_wrk
from start_methods import (
    BenchError,
    alive,
    format_row,
    memory_kb,
    positive,
    session_members,
    settle_session,
    spread,
)

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ANSWER_TIMEOUT = 60.0  # seconds for every worker to answer after a launch
RESTART_TIMEOUT = 60.0  # seconds for one restart of all workers
STOP_TIMEOUT = 20.0  # seconds for the manager to exit after SIGINT
PROBE_TIMEOUT = 2.0  # seconds for one probe request
PROBE_PAUSE = 0.005  # seconds between probes that were refused
TRIGGER_TIMEOUT = 15.0  # seconds for a restart command (sanic inspect) to return


# --- the servers ------------------------------------------------------------


@dataclass
class Server:
    name: str
    module: str  # the package that must be installed
    argv: Callable[[int, int, int], list[str]]  # (port, workers, spare port)
    trigger: str = "SIGHUP"  # or "sanic"


def runtime(method: str) -> Server:
    def argv(port: int, workers: int, spare: int) -> list[str]:
        return [
            *("-m", "runtime", "run", "peer_app:app", "--host", HOST),
            *("--port", str(port), "--workers", str(workers)),
            *("--start-method", method),
        ]

    return Server(f"runtime-{method}", "runtime", argv)


def uvicorn(port: int, workers: int, spare: int) -> list[str]:
    return [
        *("-m", "uvicorn", "peer_app:app", "--host", HOST, "--port", str(port)),
        *("--workers", str(workers), "--loop", "uvloop", "--http", "httptools"),
        "--no-access-log",
    ]


def gunicorn(port: int, workers: int, spare: int) -> list[str]:
    return [
        *("-m", "gunicorn", "peer_app:app", "-k", "uvicorn.workers.UvicornWorker"),
        *("-w", str(workers), "-b", f"{HOST}:{port}"),
    ]


def granian(port: int, workers: int, spare: int) -> list[str]:
    return [
        *("-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--host", HOST, "--port", str(port), "--workers", str(workers)),
        "peer_app:app",
    ]


def hypercorn(port: int, workers: int, spare: int) -> list[str]:
    return [
        *("-m", "hypercorn", "peer_app:app", "--worker-class", "uvloop"),
        *("--workers", str(workers), "--bind", f"{HOST}:{port}"),
    ]


def sanic(port: int, workers: int, spare: int) -> list[str]:
    return [
        *("-m", "sanic", "peer_sanic:app", "--host", HOST, "--port", str(port)),
        *("--workers", str(workers), "--no-access-logs", "--no-motd"),
    ]


SERVERS = [
    *(runtime(m) for m in ("fork", "spawn", "forkserver")),
    Server("uvicorn", "uvicorn", uvicorn),
    Server("gunicorn", "gunicorn", gunicorn),
    Server("granian", "granian", granian),
    Server("hypercorn", "hypercorn", hypercorn),
    Server("sanic", "sanic", sanic, trigger="sanic"),
]


def installed(server: Server) -> bool:
    return importlib.util.find_spec(server.module) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Launched:
    """One server process in a session of its own, its output in a log file."""

    def __init__(self, server: Server, workers: int, log: Path) -> None:
        self.server, self.workers, self.log = server, workers, log
        self.port, self.spare = free_port(), free_port()
        env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
        if server.trigger == "sanic":
            env |= {"SANIC_INSPECTOR": "true", "SANIC_INSPECTOR_PORT": str(self.spare)}
        argv = [sys.executable, *server.argv(self.port, workers, self.spare)]
        self.started = time.monotonic()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids: set[int] = set()

    def answering(self, exclude: set[int], deadline: float) -> set[int]:
        """Probe until N distinct worker pids not in ``exclude`` answered."""
        seen: set[int] = set()
        while len(seen) < self.workers:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"exited with code {self.proc.returncode}{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(seen)} of {self.workers} new workers answered in time"
                    f"{self.tail()}"
                )
            pid = probe(self.port)
            if pid is None:
                time.sleep(PROBE_PAUSE)
            elif pid not in exclude:
                seen.add(pid)
        return seen

    def wait_serving(self) -> float:
        """Seconds from the launch until every worker answered."""
        self.pids = self.answering(set(), self.started + ANSWER_TIMEOUT)
        return time.monotonic() - self.started

    def restart(self) -> None:
        """Pull the server's own restart trigger once; wait for the new workers."""
        old = self.pids
        if self.server.trigger == "sanic":
            command = [sys.executable, "-m", "sanic", "inspect", "reload"]
            command += ["--zero-downtime", "--port", str(self.spare)]
            done = subprocess.run(
                command, cwd=HERE, capture_output=True, timeout=TRIGGER_TIMEOUT
            )
            if done.returncode != 0:
                raise BenchError(f"sanic inspect reload failed: {done.stdout!r}")
        else:
            os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + RESTART_TIMEOUT
        self.pids = self.answering(old, deadline)
        while any(alive(pid) for pid in old):
            if time.monotonic() > deadline:
                raise BenchError(f"old workers {sorted(old)} still alive{self.tail()}")
            time.sleep(PROBE_PAUSE)

    def interrupt(self, result: Run, when: str) -> float:
        """SIGINT to the manager; milliseconds until it exited.

        A manager that does not exit within STOP_TIMEOUT is a result, not an
        error: it counts as STOP_TIMEOUT, with a note, and is killed later.
        """
        began = time.monotonic()
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            result.notes.append(f"no exit within {STOP_TIMEOUT:.0f} s of SIGINT {when}")
        return (time.monotonic() - began) * 1000

    def finish(self) -> list[int]:
        """Kill the manager if it still runs; kill and return what is left."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return settle_session(self.proc.pid)

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "".join(f"\n    | {line}" for line in text)


def probe(port: int, path: str = "/") -> int | None:
    """The pid that answered ``GET path`` on a new connection, or None."""
    try:
        with socket.create_connection((HOST, port), PROBE_TIMEOUT) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            head = read_head(sock)
    except OSError:
        return None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-pid":
            return int(value)
    return None


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the headers")
        data += chunk
    return data


# --- measurements -----------------------------------------------------------


@dataclass
class Run:
    server: str
    run: int
    start_ms: float | None = None
    manager_mb: float | None = None
    worker_mb: float | None = None
    session_mb: float | None = None
    stop_idle_ms: float | None = None
    requests_per_s: float | None = None
    p99_ms: float | None = None
    load_tool: str | None = None
    restarts: int = 0
    restart_requests: int = 0
    failed: int | None = None
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    stop_in_flight_ms: float | None = None
    in_flight_ok: bool | None = None
    leftovers: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def mb(pid: int) -> float:
    return memory_kb(pid)[0] / 1024


def first_launch(launched: Launched, result: Run) -> None:
    result.start_ms = launched.wait_serving() * 1000
    result.manager_mb = mb(launched.proc.pid)
    workers = [mb(pid) for pid in launched.pids]
    result.worker_mb = sum(workers) / len(workers)
    session = session_members(launched.proc.pid)
    result.session_mb = sum(mb(pid) for pid in session if alive(pid))
    result.stop_idle_ms = launched.interrupt(result, "(idle)")


class Background:
    """The bundled client in a thread of its own, until told to stop."""

    def __init__(self, port: int, connections: int) -> None:
        start = time.monotonic()
        self.client = Client(HOST, port, start, start + 3600)
        self.connections = connections
        self.load: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.load = asyncio.run(self.client.run(self.connections))

    def stop(self) -> Any:
        self.client.until = time.monotonic()
        self.thread.join(STOP_TIMEOUT)
        if self.load is None:
            raise BenchError("the load generator did not stop")
        return self.load


def throughput(launched: Launched, args: argparse.Namespace, result: Run) -> None:
    if use_wrk(args.load_tool):
        load = asyncio.run(
            run_wrk(HOST, launched.port, args.connections, args.duration)
        )
    else:
        start = time.monotonic()
        client = Client(HOST, launched.port, start, start + args.duration)
        load = asyncio.run(client.run(args.connections))
    result.load_tool = load.tool
    result.requests_per_s = load.requests / load.duration
    result.p99_ms = load.p99_ms


def restarts(launched: Launched, args: argparse.Namespace, result: Run) -> None:
    background = Background(launched.port, args.connections)
    try:
        for _ in range(args.restarts):
            launched.restart()
            result.restarts += 1
    finally:
        load = background.stop()
    result.restart_requests = load.requests
    result.failed_by_kind = {k: n for k, n in load.failed.items() if n}
    result.failed = sum(load.failed.values())


def in_flight_stop(launched: Launched, result: Run) -> None:
    with socket.create_connection((HOST, launched.port), PROBE_TIMEOUT) as sock:
        sock.sendall(f"GET /sleep HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        sock.settimeout(STOP_TIMEOUT)
        data = read_head(sock)
        while b"waiting" not in data:
            data += sock.recv(4096) or b"waiting"  # EOF ends the wait too
        result.stop_in_flight_ms = launched.interrupt(result, "(in flight)")
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                data += chunk
    result.in_flight_ok = data.startswith(b"HTTP/1.1 200") and b"slept" in data


def second_launch(launched: Launched, args: argparse.Namespace, result: Run) -> None:
    launched.wait_serving()
    throughput(launched, args, result)
    restarts(launched, args, result)
    in_flight_stop(launched, result)


def run_once(server: Server, args: argparse.Namespace, run: int, logs: Path) -> Run:
    result = Run(server.name, run)
    log = logs / f"{server.name}-{run}.log"
    for step in (first_launch, second_launch):
        launched = Launched(server, args.workers, log)
        try:
            if step is first_launch:
                first_launch(launched, result)
            else:
                second_launch(launched, args, result)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.leftovers += launched.finish()
        if result.error:
            break
    return result


def progress(result: Run) -> None:
    if result.error:
        text = f"FAILED: {result.error}"
    else:
        text = (
            f"start {result.start_ms:.0f} ms, {result.requests_per_s:.0f} req/s, "
            f"{result.failed} failed in {result.restarts} restarts, stop "
            f"{result.stop_idle_ms:.0f}/{result.stop_in_flight_ms:.0f} ms"
        )
    print(f"{result.server} run {result.run + 1}: {text}", file=sys.stderr, flush=True)


def run_all(servers: list[Server], args: argparse.Namespace) -> list[Run]:
    results = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for run in range(args.runs):
            for server in servers:  # interleaved, so drift hits all alike
                results.append(run_once(server, args, run, logs))
                progress(results[-1])
    return results


# --- summary ----------------------------------------------------------------

METRICS = [  # (key, column, format, better)
    ("start_ms", "start ms", ".0f", "low"),
    ("requests_per_s", "req/s", ".0f", "high"),
    ("p99_ms", "p99 ms", ".1f", "low"),
    ("failed", "failed in restarts", ".0f", "low"),
    ("stop_idle_ms", "stop idle ms", ".0f", "low"),
    ("stop_in_flight_ms", "stop in flight ms", ".0f", "low"),
    ("manager_mb", "manager MB", ".1f", "low"),
    ("worker_mb", "worker MB", ".1f", "low"),
    ("session_mb", "all MB", ".1f", "low"),
]
RATIOS = ["start_ms", "requests_per_s", "stop_idle_ms", "worker_mb", "session_mb"]


def summarize(name: str, runs: list[Run]) -> dict[str, Any]:
    ok = [r for r in runs if r.error is None]
    out: dict[str, Any] = {"server": name, "runs": len(runs), "failed_runs": 0}
    out["failed_runs"] = len(runs) - len(ok)
    for key, *_ in METRICS:
        out[key] = spread([getattr(r, key) for r in ok if getattr(r, key) is not None])
    out["restarts"] = sum(r.restarts for r in ok)
    out["in_flight_ok"] = f"{sum(1 for r in ok if r.in_flight_ok)}/{len(ok)}"
    out["leftover_runs"] = sum(1 for r in runs if r.leftovers)
    return out


def ratios(summary: list[dict[str, Any]], reference: str) -> dict[str, dict]:
    base = next((s for s in summary if s["server"] == reference), None)
    out: dict[str, dict] = {}
    for s in summary:
        out[s["server"]] = {}
        for key in RATIOS:
            mine = s[key] and s[key]["median"]
            theirs = base and base[key] and base[key]["median"]
            out[s["server"]][key] = mine / theirs if mine and theirs else None
    return out


def median(summary: list[dict[str, Any]], server: str, key: str) -> float | None:
    for s in summary:
        if s["server"] == server and s[key]:
            return s[key]["median"]
    return None


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target the runtime is built to meet, checked against the medians."""
    mine = [s for s in summary if s["server"].startswith("runtime-")]
    peers = [s for s in summary if not s["server"].startswith("runtime-")]
    found = []
    for s in mine:
        failed = s["failed"] and s["failed"]["max"]
        found.append(
            {
                "target": f"{s['server']}: 0 failed requests in restarts",
                "value": failed,
                "met": failed == 0 and s["restarts"] > 0,
            }
        )
    fastest = min((p["start_ms"]["median"] for p in peers if p["start_ms"]), default=0)
    for name in ("runtime-fork", "runtime-forkserver"):
        start = median(summary, name, "start_ms")
        if start is not None and fastest:
            found.append(
                {
                    "target": f"{name}: start <= 0.8 x fastest peer",
                    "value": round(start / fastest, 2),
                    "met": start <= 0.8 * fastest,
                }
            )
    uvicorn_rate = median(summary, "uvicorn", "requests_per_s")
    for s in mine:
        rate = s["requests_per_s"] and s["requests_per_s"]["median"]
        if rate and uvicorn_rate:
            found.append(
                {
                    "target": f"{s['server']}: req/s >= uvicorn's",
                    "value": round(rate / uvicorn_rate, 2),
                    "met": rate >= uvicorn_rate,
                }
            )
        stop = s["stop_idle_ms"] and s["stop_idle_ms"]["median"]
        if stop:
            found.append(
                {
                    "target": f"{s['server']}: idle stop < 1 s",
                    "value": round(stop),
                    "met": stop < 1000,
                }
            )
    return found


# --- output -----------------------------------------------------------------


def cell(stats: dict[str, float] | None, fmt: str, runs: int) -> str:
    if stats is None:
        return "-"
    text = format(stats["median"], fmt)
    if runs > 1:
        text += f" ({stats['min']:{fmt}}–{stats['max']:{fmt}})"
    return text


def print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(format_row(rows[0], widths))
    print("  ".join("-" * w for w in widths))
    for row in rows[1:]:
        print(format_row(row, widths))


def print_tables(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(report["environment"])
    rows = [["server"] + [m[1] for m in METRICS] + ["in flight ok"]]
    for s in summary:
        cells = [cell(s[key], fmt, s["runs"]) for key, _, fmt, _ in METRICS]
        rows.append([s["server"], *cells, s["in_flight_ok"]])
    print_rows(rows)
    print()
    print(f"ratio to {report['reference']} (medians)")
    columns = {m[0]: m[1] for m in METRICS}
    rows = [["server"] + [columns[key] for key in RATIOS]]
    for name, values in report["ratios"].items():
        rows.append([name] + [f"{v:.2f}" if v else "-" for v in values.values()])
    print_rows(rows)
    print()
    for target in report["targets"]:
        verdict = "met" if target["met"] else "NOT met"
        print(f"{verdict:>7}  {target['target']} ({target['value']})")
    for note in report["skipped"]:
        print(f"skipped: {note}")
    for note in report["notes"]:
        print(f"note: {note}")
    for r in report["problems"]:
        print(f"PROBLEM: {r}")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    shown = [m for m in METRICS if m[0] != "p99_ms"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    names = [s["server"] for s in summary]
    for ax, (key, column, _, better) in zip(axes.flat, shown, strict=False):
        values = [s[key]["median"] if s[key] else 0 for s in summary]
        colours = [
            "tab:blue" if n.startswith("runtime-") else "tab:grey" for n in names
        ]
        ax.bar(names, values, color=colours)
        ax.set_title(f"{column} ({better}er is better)")
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.suptitle(report["environment"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def environment() -> str:
    return (
        f"Python {platform.python_version()} on {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs"
    )


def build_report(
    results: list[Run], args: argparse.Namespace, skipped: list[str]
) -> dict[str, Any]:
    names = list(dict.fromkeys(r.server for r in results))
    summary = [summarize(n, [r for r in results if r.server == n]) for n in names]
    if args.reference not in names and names:
        ours = [n for n in names if n.startswith("runtime-")]
        fallback = (ours or names)[0]
        skipped.append(f"reference {args.reference} was not run; ratios to {fallback}")
        args.reference = fallback
    problems, notes = [], []
    for r in results:
        where = f"{r.server} run {r.run + 1}"
        ours = r.server.startswith("runtime-")  # a peer's trouble is a finding
        if r.error:
            problems.append(f"{where}: {r.error}")
        for note in r.notes:
            (problems if ours else notes).append(f"{where}: {note}")
        if r.leftovers:
            text = f"{where}: killed leftover pids {r.leftovers}"
            (problems if ours else notes).append(text)
    tool = next((r.load_tool for r in results if r.load_tool), "none")
    env = (
        f"{environment()}; {args.workers} workers, {args.runs} run(s), "
        f"{args.connections} connections for {args.duration:g} s ({tool}), "
        f"{args.restarts} restarts; median (min–max)"
    )
    return {
        "environment": env,
        "reference": args.reference,
        "summary": summary,
        "ratios": ratios(summary, args.reference),
        "targets": targets(summary),
        "skipped": skipped,
        "notes": notes,
        "problems": problems,
        "runs": [asdict(r) for r in results],
    }


# --- command line -----------------------------------------------------------


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in SERVERS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--runs", type=positive, default=3, help="runs per server (3)")
    add("--duration", type=seconds, default=10.0, help="seconds of load (10)")
    add("--workers", type=positive, default=2, help="workers per server (2)")
    add("--connections", type=positive, default=32, help="connections (32)")
    add("--restarts", type=positive, default=5, help="restarts under load (5)")
    add(
        "--servers",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        default=names,
        help=f"comma-separated, from {','.join(names)} (default: all installed)",
    )
    add("--reference", default="runtime-spawn", help="row the ratios divide by")
    add_load_tool(parser, "for req/s: ")
    add("--json", action="store_true", help="print JSON instead of tables")
    add("--plot", metavar="FILE.png", help="also draw a chart (needs matplotlib)")
    add("--quick", action="store_true", help="one run, two seconds of load")
    add("--logs", metavar="DIR", help="keep each server's output in DIR")
    args = parser.parse_args(argv)
    unknown = [n for n in args.servers if n not in names]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {names}")
    if args.quick:
        args.runs, args.duration = 1, 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    if not Path("/proc/self/stat").exists():
        sys.exit("this benchmark reads /proc; it runs on Linux only")
    args = parse_args(argv)
    chosen = [s for s in SERVERS if s.name in args.servers]
    servers = [s for s in chosen if installed(s)]
    skipped = [
        f"{s.name} ({s.module} is not installed)" for s in chosen if s not in servers
    ]
    report = build_report(run_all(servers, args), args, skipped)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)
    if args.plot:
        plot(report, args.plot)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
