"""Zero-downtime restarts under load: does any request fail while workers change?

The driver starts ``runtime run`` (the built-in demo app, ``runtime.demo:app``)
with N workers and one start method on 127.0.0.1, port 0, in a session of its
own, and waits for its ``Ready:`` log line. Then, for a fixed time, it

* keeps C keep-alive connections busy with ``GET /``: ``wrk --latency`` if it is
  on the PATH, else a bundled asyncio client built on ``h11``, which opens a new
  connection when a response says ``Connection: close`` (as draining workers
  answer), and
* sends the manager SIGHUP every few seconds: a zero-downtime restart of every
  worker, one slot at a time, each replacement acking before its predecessor
  drains.

Measured:

requests, req/s, p50 and p99
    complete responses (any status) and their latency, from sending the
    request to the end of the response, over the whole run.
failed
    connect errors; read errors, write errors, timeouts (10 s) and connections
    closed before the response was complete (together "read"); and non-2xx
    statuses. The goal is zero. With the bundled client every failure is listed
    with its time, its error, the worker that last answered on its connection
    and the manager's log lines around it.
worker restarts, rolling restarts
    the log lines ending in ``(zero-downtime)`` (one per worker replaced) that
    the manager wrote while the load ran, and those divided by N. A SIGHUP that
    arrives while a rolling restart runs is merged into one next rolling
    restart, so slow restarts mean fewer rolling restarts than SIGHUPs.

At the end the driver sends SIGTERM, which must stop the manager with exit code
0, then waits for the manager's session to empty and kills (by pid) whatever is
left, reporting it.

Run it with the project's interpreter::

    python benchmarks/restart_under_load.py [--workers 2] [--start-method spawn]
        [--duration 40] [--every 1.5] [--connections 32] [--min-restarts 20]
        [--runtime-arg=--hang-timeout=0 ...] [--load-tool auto|wrk|bundled]
        [--json] [--quick]

``--every 0 --min-restarts 0`` makes it a plain throughput run (used to compare
the runtime with hang detection on and off).

Progress goes to stderr; the table (or, with ``--json``, the raw results) goes to
stdout. The exit status is 1 if any request failed, fewer than
``--min-restarts`` rolling restarts happened, or the manager did not start, did
not stop with exit code 0 or left processes behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import h11
from start_methods import BenchError, positive, settle_session

READY_TIMEOUT = 60.0  # seconds for the "Ready:" line (the ack deadline is 30 s)
STOP_TIMEOUT = 30.0  # seconds for the manager to exit after SIGTERM
READER_TIMEOUT = 5.0  # seconds for its log to reach EOF once its session is empty
REQUEST_TIMEOUT = 10.0  # seconds for one response
CONNECT_BACKOFF = 0.01  # seconds before connecting again after a failed connect
READ_SIZE = 65536
LOG_LIMIT = 1 << 20  # longest log line read
RESTARTED = "(zero-downtime)"
LISTENING = re.compile(r"Listening on http://([\d.]+):(\d+)")
KINDS = ("connect", "read", "write", "timeout", "status")
WINDOW = (1.5, 0.5)  # log lines shown from this long before a failure to after
SHOWN = 20  # failures printed in full; --json has all of them


class RequestFailed(Exception):
    def __init__(self, kind: str, error: object) -> None:
        super().__init__(f"{kind}: {error!r}")
        self.kind = kind
        self.error = error


# --- the manager ------------------------------------------------------------


@dataclass
class LogLine:
    at: float  # time.monotonic() when the driver read it
    text: str


class Manager:
    """``runtime run`` in a session of its own, and its log as it arrives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[LogLine] = []
        self.hups: list[float] = []
        self.address: tuple[str, int] | None = None
        self.ready = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, workers: int, method: str, extra: list[str]) -> Manager:
        args = ["--port", "0", "--workers", str(workers), "--start-method", method]
        args += extra
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "runtime", "run", *args],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=LOG_LIMIT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            self.lines.append(LogLine(time.monotonic(), text))
            if match := LISTENING.search(text):
                self.address = (match[1], int(match[2]))
            if "Ready: " in text:
                self.ready.set()

    async def wait_ready(self) -> tuple[str, int]:
        """The address it serves on, once it logged ``Ready:``."""
        ready = asyncio.ensure_future(self.ready.wait())
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait(
                {ready, exited},
                timeout=READY_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
            exited.cancel()
        if not self.ready.is_set():
            if self.proc.returncode is not None:
                why = f"exited with code {self.proc.returncode}"
            else:
                why = f"did not log Ready within {READY_TIMEOUT:.0f} s"
            raise BenchError(f"the manager {why}{self.tail()}")
        if self.address is None:
            raise BenchError(f"no 'Listening on http://...' line{self.tail()}")
        return self.address

    def hup(self) -> None:
        os.kill(self.proc.pid, signal.SIGHUP)
        self.hups.append(time.monotonic())

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> int | None:
        """SIGTERM; its exit code, or None if it had to be killed."""
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None

    async def finish(self) -> list[int]:
        """Kill (by pid) what is left of its session; return those pids."""
        if self.running:
            self.proc.kill()
            await self.proc.wait()
        leftovers = await asyncio.to_thread(settle_session, self.proc.pid)
        done, _ = await asyncio.wait({self.reader}, timeout=READER_TIMEOUT)
        if not done:
            self.reader.cancel()
        return leftovers

    def tail(self, lines: int = 12) -> str:
        return "".join(f"\n    | {line.text}" for line in self.lines[-lines:])


async def send_hups(manager: Manager, every: float, until: float) -> None:
    """SIGHUP the manager every ``every`` seconds until ``until`` (monotonic);
    never if ``every`` is 0."""
    if not every:
        return
    next_at = time.monotonic() + every
    while next_at < until:
        await asyncio.sleep(next_at - time.monotonic())
        manager.hup()
        next_at += every


# --- the bundled client -----------------------------------------------------


@dataclass
class Failure:
    started: float  # seconds since the load began, when the request began
    failed: float  # and when it failed
    kind: str
    error: str
    request: int  # its number on its connection, from 1 (0: no connection)
    worker: str | None  # the worker that last answered on that connection


@dataclass
class Load:
    tool: str
    duration: float = 0.0
    requests: int = 0  # complete responses, any status
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    p50_ms: float | None = None
    p99_ms: float | None = None
    connections_opened: int | None = None
    failures: list[Failure] = field(default_factory=list)


@dataclass(eq=False)
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    requests: int = 0
    worker: str | None = None


class Client:
    """C connections sending ``GET /`` one request at a time until ``until``."""

    def __init__(self, host: str, port: int, start: float, until: float) -> None:
        self.host, self.port = host, port
        self.start, self.until = start, until
        self.load = Load("bundled h11 client", connections_opened=0)
        self.latencies: list[float] = []

    async def run(self, connections: int) -> Load:
        await asyncio.gather(*(self.keep_busy() for _ in range(connections)))
        self.load.duration = time.monotonic() - self.start
        self.load.p50_ms = percentile(self.latencies, 0.50)
        self.load.p99_ms = percentile(self.latencies, 0.99)
        return self.load

    async def keep_busy(self) -> None:
        """One connection's worth of load, connecting again whenever it closes."""
        while time.monotonic() < self.until:
            began = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self.fail(began, RequestFailed("connect", exc), None)
                await asyncio.sleep(CONNECT_BACKOFF)
                continue
            self.load.connections_opened += 1
            conn = Conn(reader, writer)
            try:
                await self.use(conn)
            finally:
                writer.close()

    async def use(self, conn: Conn) -> None:
        """Send requests on ``conn`` until it must close or the time is up."""
        while time.monotonic() < self.until:
            conn.requests += 1
            began = time.monotonic()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status = await exchange(conn, self.host)
            except TimeoutError as exc:
                self.fail(began, RequestFailed("timeout", exc), conn)
                return
            except RequestFailed as exc:
                self.fail(began, exc, conn)
                return
            self.latencies.append(time.monotonic() - began)
            self.load.requests += 1
            if not 200 <= status < 300:
                self.fail(began, RequestFailed("status", status), conn)
            if not (conn.http.our_state is conn.http.their_state is h11.DONE):
                return  # Connection: close
            conn.http.start_next_cycle()

    def fail(self, began: float, exc: RequestFailed, conn: Conn | None) -> None:
        self.load.failed[exc.kind] += 1
        failure = Failure(
            started=began - self.start,
            failed=time.monotonic() - self.start,
            kind=exc.kind,
            error=repr(exc.error),
            request=conn.requests if conn else 0,
            worker=conn.worker if conn else None,
        )
        self.load.failures.append(failure)
        if len(self.load.failures) <= SHOWN:
            print(f"request failed: {failure}", file=sys.stderr, flush=True)


async def exchange(conn: Conn, host: str) -> int:
    """Send ``GET /`` on ``conn``; the status once the response is complete."""
    request = h11.Request(method="GET", target="/", headers=[("Host", host)])
    try:
        conn.writer.write(conn.http.send(request) + conn.http.send(h11.EndOfMessage()))
        await conn.writer.drain()
    except (OSError, h11.LocalProtocolError) as exc:
        raise RequestFailed("write", exc) from exc
    try:
        return await read_response(conn)
    except (OSError, h11.RemoteProtocolError) as exc:
        raise RequestFailed("read", exc) from exc


async def read_response(conn: Conn) -> int:
    status = 0
    while True:
        event = conn.http.next_event()
        if event is h11.NEED_DATA:
            conn.http.receive_data(await conn.reader.read(READ_SIZE))
        elif isinstance(event, h11.Response):
            status = event.status_code
            conn.worker = header(event, b"x-worker") or conn.worker
        elif isinstance(event, h11.EndOfMessage):
            return status
        elif isinstance(event, h11.ConnectionClosed):
            raise RequestFailed("read", "connection closed before the response")


def header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return value.decode(errors="replace")
    return None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (seconds), in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


# --- wrk --------------------------------------------------------------------

WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
WRK_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
WRK_STATUS = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


async def run_wrk(host: str, port: int, connections: int, duration: float) -> Load:
    threads = min(connections, os.cpu_count() or 1)
    proc = await asyncio.create_subprocess_exec(
        *["wrk", f"-t{threads}", f"-c{connections}", f"-d{math.ceil(duration)}s"],
        *["--latency", f"--timeout={REQUEST_TIMEOUT:.0f}s", f"http://{host}:{port}/"],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with code {proc.returncode}:\n{text}")
    return parse_wrk(text)


def parse_wrk(text: str) -> Load:
    total = WRK_TOTAL.search(text)
    if total is None:
        raise BenchError(f"no 'N requests in T' line in wrk's output:\n{text}")
    load = Load("wrk", requests=int(total[1]))
    load.duration = float(total[2]) * SECONDS[total[3]]
    if errors := WRK_ERRORS.search(text):
        for kind, count in zip(KINDS, errors.groups(), strict=False):
            load.failed[kind] = int(count)
    if status := WRK_STATUS.search(text):
        load.failed["status"] = int(status[1])
    for match in WRK_PERCENTILE.finditer(text):
        ms = float(match[2]) * SECONDS[match[3]] * 1000
        setattr(load, f"p{match[1]}_ms", ms)
    return load


# --- one run ----------------------------------------------------------------


@dataclass
class Result:
    method: str
    workers: int
    connections: int
    every: float
    load: Load | None = None
    hups_sent: int = 0
    hups_logged: int = 0
    worker_restarts: int = 0  # logged while the load ran
    worker_restarts_after: int = 0  # logged after the load, before the stop
    exit_code: int | None = None
    leftovers: list[int] = field(default_factory=list)
    error: str | None = None
    log: list[tuple[float, str]] = field(default_factory=list)  # (t, line)

    @property
    def rolling_restarts(self) -> float:
        return self.worker_restarts / self.workers


def add_load_tool(parser: argparse.ArgumentParser, what: str = "") -> None:
    """The ``--load-tool`` option that ``use_wrk`` reads."""
    parser.add_argument(
        "--load-tool",
        choices=["auto", "wrk", "bundled"],
        default="auto",
        help=f"{what}wrk, the bundled client, or wrk where installed (auto)",
    )


def use_wrk(tool: str) -> bool:
    """Whether ``--load-tool`` (auto, wrk or bundled) means wrk here."""
    if tool == "wrk" and not shutil.which("wrk"):
        raise BenchError("--load-tool wrk: wrk is not on the PATH")
    return tool == "wrk" or (tool == "auto" and shutil.which("wrk") is not None)


async def generate_load(
    host: str, port: int, args: argparse.Namespace, start: float
) -> Load:
    if use_wrk(args.load_tool):
        return await run_wrk(host, port, args.connections, args.duration)
    client = Client(host, port, start, start + args.duration)
    return await client.run(args.connections)


async def load_and_restart(
    manager: Manager, args: argparse.Namespace
) -> tuple[Load, float, float]:
    """The load with SIGHUPs alongside; (its result, its start, its end)."""
    host, port = await manager.wait_ready()
    print(f"serving on {host}:{port}; loading", file=sys.stderr, flush=True)
    start = time.monotonic()
    hups = asyncio.ensure_future(send_hups(manager, args.every, start + args.duration))
    try:
        load = await generate_load(host, port, args, start)
    finally:
        hups.cancel()
    return load, start, time.monotonic()


async def bench(args: argparse.Namespace) -> Result:
    result = Result(args.start_method, args.workers, args.connections, args.every)
    manager = await Manager.start(args.workers, args.start_method, args.runtime_arg)
    start = end = time.monotonic()
    try:
        result.load, start, end = await load_and_restart(manager, args)
    except BenchError as exc:
        result.error = str(exc)
    finally:
        if manager.running:
            result.exit_code = await manager.stop()
        else:
            result.exit_code = manager.proc.returncode
        result.leftovers = await manager.finish()
    count_restarts(result, manager, start, end)
    return result


def count_restarts(result: Result, manager: Manager, start: float, end: float) -> None:
    result.hups_sent = len(manager.hups)
    for line in manager.lines:
        result.log.append((round(line.at - start, 4), line.text))
        if "SIGHUP: restarting" in line.text:
            result.hups_logged += 1
        if line.text.endswith(RESTARTED):
            if line.at <= end:
                result.worker_restarts += 1
            else:
                result.worker_restarts_after += 1


# --- output -----------------------------------------------------------------


def problems(result: Result, min_restarts: int) -> list[str]:
    found = []
    if result.error:
        found.append(result.error)
    if result.load and (failed := sum(result.load.failed.values())):
        found.append(f"{failed} request(s) failed")
    if result.load and result.rolling_restarts < min_restarts:
        found.append(
            f"{result.rolling_restarts:.1f} rolling restarts, fewer than "
            f"--min-restarts {min_restarts}"
        )
    if result.exit_code != 0:
        found.append(f"the manager's exit code after SIGTERM was {result.exit_code}")
    if result.leftovers:
        found.append(f"killed leftover processes {result.leftovers}")
    return found


def table(result: Result) -> list[list[str]]:
    load = result.load
    assert load is not None
    failed = load.failed
    reads = failed["read"] + failed["write"] + failed["timeout"]
    header = ["method", "workers", "duration s", "requests", "req/s"]
    header += ["failed (connect/read/status)", "p50 ms", "p99 ms"]
    header += ["rolling restarts", "worker restarts"]
    row = [result.method, str(result.workers), f"{load.duration:.1f}"]
    row += [str(load.requests), f"{load.requests / load.duration:.0f}"]
    row += [f"{sum(failed.values())} ({failed['connect']}/{reads}/{failed['status']})"]
    row += [ms(load.p50_ms), ms(load.p99_ms)]
    row += [f"{result.rolling_restarts:.1f}", str(result.worker_restarts)]
    return [header, row]


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def print_table(result: Result) -> None:
    assert result.load is not None
    print(
        f"Python {platform.python_version()} on {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs; load: {result.load.tool}, "
        f"{result.connections} connections; SIGHUP every {result.every:g} s"
    )
    rows = table(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(notes(result))


def notes(result: Result) -> str:
    assert result.load is not None
    opened = result.load.connections_opened
    text = (
        f"SIGHUPs sent {result.hups_sent}, logged by the manager "
        f"{result.hups_logged}; worker restarts after the load "
        f"{result.worker_restarts_after}; manager exit code {result.exit_code}"
    )
    if opened is not None:
        text += f"; connections opened {opened}"
    return text


def print_failures(result: Result) -> None:
    if result.load is None:
        return
    failures = result.load.failures
    for failure in failures[:SHOWN]:
        print(
            f"FAILED REQUEST at {failure.started:.3f}–{failure.failed:.3f} s, "
            f"{failure.kind}: {failure.error}; request #{failure.request} on its "
            f"connection, last answered by {failure.worker}"
        )
        before, after = WINDOW
        for t, text in result.log:
            if failure.started - before <= t <= failure.failed + after:
                print(f"    {t:+8.3f} s | {text}")
    if len(failures) > SHOWN:
        print(f"... and {len(failures) - SHOWN} more failed requests (see --json)")


def print_log_problems(result: Result) -> None:
    for t, text in result.log:
        if " WARNING " in text or " ERROR " in text or "Traceback" in text:
            print(f"LOG {t:+.3f} s | {text}")


def print_json(result: Result, found: list[str]) -> None:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rolling_restarts": result.rolling_restarts,
        "problems": found,
        **asdict(result),
    }
    print(json.dumps(out, indent=2))


# --- command line -----------------------------------------------------------


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def seconds_or_never(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--workers", type=positive, default=2, help="server workers (default 2)")
    add(
        "--start-method",
        choices=multiprocessing.get_all_start_methods(),
        default="spawn",
        help="how workers start (default spawn)",
    )
    add("--duration", type=seconds, default=40.0, help="seconds of load (40)")
    add(
        "--every",
        type=seconds_or_never,
        default=1.5,
        help="seconds between SIGHUPs (1.5; 0: none, a plain throughput run)",
    )
    add("--connections", type=positive, default=32, help="connections (32)")
    add(
        "--min-restarts",
        type=int,
        default=20,
        help="fewest rolling restarts that pass (20)",
    )
    add(
        "--runtime-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to `runtime run` (repeatable), e.g. =--hang-timeout=0",
    )
    add_load_tool(parser)
    add("--json", action="store_true", help="print JSON instead")
    add(
        "--quick",
        action="store_true",
        help="2 s of load, a SIGHUP every 0.5 s, at least 1 rolling restart (CI)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.every, args.min_restarts = 2.0, 0.5, 1
    return args


def main(argv: list[str] | None = None) -> int:
    if not os.path.exists("/proc/self/stat"):
        sys.exit("this benchmark reads /proc; it runs on Linux only")
    args = parse_args(argv)
    result = asyncio.run(bench(args))
    found = problems(result, args.min_restarts)
    if args.json:
        print_json(result, found)
    else:
        if result.load is not None:
            print_table(result)
        print_failures(result)
        print_log_problems(result)
        for problem in found:
            print(f"PROBLEM: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
