"""The ``runtime`` command (also ``python -m runtime``).

Exit codes: 0 clean stop, 1 start-up failure or crash loop, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import logs, start_methods
from .app import Runtime
from .config import LOG_LEVELS
from .errors import ConfigError, RuntimeErrorBase, StartMethodError, TargetError
from .loader import import_target, runtime_for

DEMO = "runtime.demo:app"
BAD_ARGUMENTS = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(BAD_ARGUMENTS, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not in 0..65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 seconds")
    return value


def _fd(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file descriptor") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runtime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    run = commands.add_parser("run", help="serve an app on worker processes")
    run.add_argument(
        "target",
        nargs="?",
        default=None,
        help="MODULE:ATTR naming a Runtime or an ASGI app (default: a demo app)",
    )
    run.add_argument("--host", help="default: 127.0.0.1")
    run.add_argument("--port", type=_port, help="default: 8000; 0 picks a free one")
    run.add_argument("--uds", metavar="PATH", help="listen on a unix socket path")
    run.add_argument("--fd", type=_fd, help="listen on an inherited socket fd")
    run.add_argument(
        "--workers",
        type=_positive_int,
        help="server worker processes (default: 1, or 2 for the demo app)",
    )
    run.add_argument(
        "--single-process", action="store_true", help="serve without a manager"
    )
    run.add_argument(
        "--start-method",
        choices=start_methods.available(),
        help=f"how workers start (default: {start_methods.DEFAULT})",
    )
    run.add_argument(
        "--graceful-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="time for in-flight requests at stop (default: 15)",
    )
    run.add_argument(
        "--ack-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="time for each worker to start serving (default: "
        "ProcessGroup.THRESHOLD tenths of a second, 30 s unless changed)",
    )
    run.add_argument(
        "--log-level", type=_log_level, help=f"{', '.join(LOG_LEVELS)} (default: INFO)"
    )
    run.add_argument("--access-log", action="store_true", help="log every request")
    run.add_argument(
        "--app-dir", default=".", help="directory to import the target from"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    sys.exit(_run(args))


def _run(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.path.abspath(args.app_dir))
    target = args.target or DEMO
    logs.configure(args.log_level or "INFO")
    try:
        if args.start_method:
            Runtime.start_method = args.start_method
        runtime = runtime_for(import_target(target), _name_for(target))
        runtime.import_target = target
        return runtime.serve_until_stopped(
            host=args.host,
            port=args.port,
            uds=args.uds,
            fd=args.fd,
            workers=args.workers or _demo_workers(target, args),
            single_process=args.single_process or None,
            graceful_timeout=args.graceful_timeout,
            ack_timeout=args.ack_timeout,
            log_level=args.log_level,
            access_log=args.access_log or None,
        )
    except (ConfigError, StartMethodError, TargetError) as exc:
        return _fail(exc, BAD_ARGUMENTS)
    except RuntimeErrorBase as exc:
        return _fail(exc, 1)


def _demo_workers(target: str, args: argparse.Namespace) -> int | None:
    return 2 if target == DEMO and not args.single_process else None


def _fail(exc: Exception, code: int) -> int:
    print(f"runtime: error: {exc}", file=sys.stderr)
    return code


def _name_for(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", target)
