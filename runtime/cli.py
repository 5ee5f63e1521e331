"""The ``runtime`` command (also ``python -m runtime``).

Exit codes: 0 clean stop, 1 start-up failure or crash loop, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__ as version
from . import environment, logs, start_methods
from .app import Runtime
from .config import LOG_LEVELS, MIN_LIMIT, api_key_problem
from .errors import ConfigError, RuntimeErrorBase, StartMethodError, TargetError
from .loader import import_target, owner_of, runtime_for

log = logging.getLogger("runtime")

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
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def _whole(text: str, what: str, zero: str) -> int:
    """A whole number of 0 or more; ``what`` and ``zero`` word the errors."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be {zero} or more")
    return value


def _fd(text: str) -> int:
    return _whole(text, "a file descriptor", "0")


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"runtime {version}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    run = commands.add_parser(
        "run",
        help="serve an app on worker processes",
        epilog="Every flag also reads RUNTIME_<FLAG> from the environment "
        "(RUNTIME_WORKERS=4, RUNTIME_ACCESS_LOG=1; --inspect reads "
        "RUNTIME_INSPECTOR); a flag on the command line wins.",
    )
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
        "--single-process",
        action=argparse.BooleanOptionalAction,
        help="serve without a manager",
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
        "--app-dir", default=".", help="directory to import the target from"
    )
    _logging_options(run)
    run.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write the manager's pid there once listening; removed at exit",
    )
    run.add_argument(
        "--user",
        metavar="NAME|UID",
        help="switch to this user once the sockets are bound (needs root)",
    )
    run.add_argument(
        "--group",
        metavar="NAME|GID",
        help="switch to this group (default: the user's own)",
    )
    _health_options(run)
    _reload_options(run)
    _inspector_options(run)
    _inspect_command(commands)
    return parser


def _seconds_or_off(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 0 (off) or a finite number of seconds"
        )
    return value


def _limit_or_off(text: str) -> float:
    value = _seconds_or_off(text)
    if 0 < value < MIN_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 0 (off) or at least {MIN_LIMIT:g} s"
        )
    return value


def _count_or_off(text: str) -> int:
    return _whole(text, "a whole number", "0 (off)")


def _logging_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("logging", "the same in every process")
    group.add_argument(
        "--log-level", type=_log_level, help=f"{', '.join(LOG_LEVELS)} (default: INFO)"
    )
    group.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log every request (default: off)",
    )
    group.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text lines or one JSON object per line (default: text)",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        help="every process's records into this one file, written by the manager",
    )
    group.add_argument(
        "--log-config",
        metavar="FILE",
        help="a logging config applied in every process: dictConfig as .json or "
        ".yaml, else fileConfig INI",
    )


def _health_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group(
        "worker health", "hung-loop detection and recycling (0 turns each off)"
    )
    group.add_argument(
        "--hang-timeout",
        type=_limit_or_off,
        metavar="SECONDS",
        help="replace a worker whose event loop is blocked this long (default: 30)",
    )
    group.add_argument(
        "--max-requests",
        type=_count_or_off,
        metavar="N",
        help="replace a worker after N requests, without downtime",
    )
    group.add_argument(
        "--max-requests-jitter",
        type=_count_or_off,
        metavar="J",
        help="add a random 0..J to each worker's --max-requests",
    )
    group.add_argument(
        "--max-lifetime",
        type=_limit_or_off,
        metavar="SECONDS",
        help="replace a worker after it served this long, without downtime",
    )
    group.add_argument(
        "--max-lifetime-jitter",
        type=_seconds_or_off,
        metavar="SECONDS",
        help="add a random 0..SECONDS to each worker's --max-lifetime",
    )
    group.add_argument(
        "--max-worker-memory",
        type=_count_or_off,
        metavar="MIB",
        help="replace a worker whose resident memory exceeds MIB mebibytes",
    )


def _reload_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group(
        "reload", "restart the workers when source files change (for development)"
    )
    group.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        help="watch the app's source directory",
    )
    group.add_argument(
        "--reload-dir",
        action="append",
        metavar="DIR",
        help="also watch DIR (repeatable; implies --reload)",
    )
    group.add_argument(
        "--reload-include",
        action="append",
        metavar="PATTERN",
        help="files that count besides *.py, e.g. '*.html' (repeatable)",
    )
    group.add_argument(
        "--reload-exclude",
        action="append",
        metavar="PATTERN",
        help="files that never count, e.g. 'tests/*' (repeatable)",
    )


def _inspector_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("inspector", "the HTTP control service")
    group.add_argument(
        "--inspect",
        action=argparse.BooleanOptionalAction,
        help="run the inspector",
    )
    group.add_argument("--inspector-host", help="default: localhost")
    group.add_argument(
        "--inspector-port",
        type=_port,
        help="default: 6457",
    )
    group.add_argument(
        "--inspector-api-key",
        help="key every request must carry",
    )
    group.add_argument(
        "--inspector-tls-cert",
        metavar="PATH",
        help="serve the inspector over HTTPS",
    )
    group.add_argument(
        "--inspector-tls-key",
        metavar="PATH",
        help="the certificate's private key",
    )
    group.add_argument(
        "--health-without-key",
        action=argparse.BooleanOptionalAction,
        help="GET /healthz and /readyz on the inspector need no API key",
    )
    group.add_argument(
        "--health-port",
        type=_port,
        help="also serve only /healthz and /readyz, without a key, on this port "
        "(even without --inspect)",
    )
    group.add_argument(
        "--health-host",
        help="where the health port listens (default: the inspector's host)",
    )


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise LookupError(f"no {name} command")


def _inspect_command(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="see or steer a running group through its inspector",
        description="Commands: status (default), reload [--zero-downtime] "
        "[--name PROCESS], shutdown, scale N, or a custom command with values "
        "(its parameters in order) and --key=value arguments (after -- when a "
        "key is one of these options).",
        allow_abbrev=False,
    )
    inspect.add_argument("what", nargs="?", default="status", metavar="command")
    inspect.add_argument("args", nargs="*", help="scale: the number of workers")
    inspect.add_argument("--host", default="localhost", help="RUNTIME_INSPECTOR_HOST")
    inspect.add_argument(
        "--port", type=_port, default=6457, help="RUNTIME_INSPECTOR_PORT"
    )
    inspect.add_argument(
        "--api-key", help="the inspector's key (RUNTIME_INSPECTOR_API_KEY)"
    )
    inspect.add_argument("--secure", action="store_true", help="use HTTPS")
    inspect.add_argument("--cafile", help="CA certificate to trust for --secure")
    inspect.add_argument("--zero-downtime", action="store_true", help="for reload")
    inspect.add_argument("--name", help="for reload: restart only these processes")
    inspect.add_argument("--json", action="store_true", help="print raw JSON")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # again, with the defaults the environment gives
    if args.command == "run":
        run = subcommand(parser, "run")
        used = environment.read(run)
        args, extra = parser.parse_known_args(argv)
        given = sys.argv[1:] if argv is None else argv
        args.environment = environment.sources(run, args, used, given)
    elif args.command == "inspect":
        environment.read(subcommand(parser, "inspect"), environment.inspect_name)
        args, extra = parser.parse_known_args(argv)
    if args.command == "inspect":
        sys.exit(_inspect(parser, args, extra))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    sys.exit(_run(args))


def _inspect(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> int:
    body = _inspect_body(parser, args, extra)
    if problem := api_key_problem(args.api_key):
        parser.error(f"--api-key {problem}")
    scheme = "https" if args.secure else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    address = f"{scheme}://{host}:{args.port}"
    from . import inspect_client  # only this command needs an HTTP client

    try:
        result = inspect_client.call(
            address, args.what, body, api_key=args.api_key, cafile=args.cafile
        )
    except inspect_client.InspectError as exc:
        print(f"runtime inspect: {exc}", file=sys.stderr)
        return 1
    try:
        inspect_client.print_result(args.what, result, args.json)
    except BrokenPipeError:  # | head: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _inspect_body(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> dict[str, Any] | None:
    command, rest = args.what, args.args
    if command == "status":
        _no_arguments(parser, command, rest + extra)
        return None
    if command == "reload":
        _no_arguments(parser, command, rest + extra)
        body: dict[str, Any] = {"zero_downtime": args.zero_downtime}
        if args.name:
            body["name"] = args.name
        return body
    if command == "shutdown":
        _no_arguments(parser, command, rest + extra)
        return {}
    if command == "scale":
        if len(rest) != 1 or not rest[0].isdigit() or extra:
            got = " ".join(rest + extra) or "nothing"
            parser.error(f"scale needs one whole number of workers, got {got}")
        return {"replicas": int(rest[0])}
    if args.name is not None or args.zero_downtime:
        parser.error(
            f"--name and --zero-downtime belong to reload; pass {command}'s own "
            f"arguments of those names after --, as in: {command} -- --name=VALUE"
        )
    body = {}
    if "--" in extra:  # what follows it is the command's, even --port=...
        extra.remove("--")
    positional = []
    for item in rest + extra:
        if not item.startswith("-"):
            positional.append(_json_or_text(item))
            continue
        key, sep, value = item.removeprefix("--").partition("=")
        key = key.replace("-", "_")
        if not item.startswith("--") or not sep or not key.isidentifier():
            parser.error(
                f"custom command arguments are values or --key=value, got {item!r}"
            )
        body[key] = _json_or_text(value)
    if positional:
        body["args"] = positional  # the command's parameters, in order
    return body


def _no_arguments(
    parser: argparse.ArgumentParser, command: str, rest: list[str]
) -> None:
    if rest:
        parser.error(f"{command} takes no arguments, got {' '.join(rest)}")


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _run(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.app_dir):
        message = (
            f"--app-dir {args.app_dir!r} is not a directory; give the one that "
            f"holds the target's module"
        )
        return _fail(environment.sourced(message, args.environment), BAD_ARGUMENTS)
    sys.path.insert(0, os.path.abspath(args.app_dir))
    target = args.target or DEMO
    logs.configure(logs.LogSettings(level=args.log_level or "INFO"))
    try:
        if args.start_method:  # so that the module's own code sees it
            Runtime.start_method = args.start_method
        found = import_target(target)
        if args.start_method:  # again: the command line wins over the module's
            Runtime.start_method = args.start_method
            if start_methods.setup_skipped():
                log.warning(
                    "--start-method %s is ignored: %s called "
                    "skip_start_method_setup(), so Python's global start method "
                    "is used as it is",
                    args.start_method,
                    target.partition(":")[0],
                )
        if not isinstance(found, Runtime) and (owner := owner_of(target, found)):
            log.warning(
                "%s is the app of the Runtime %s; served bare, it runs without "
                "that runtime's listeners and settings. Serve %s to keep them.",
                target,
                owner,
                owner,
            )
        runtime = runtime_for(found, _name_for(target))
        runtime.import_target = target
        return runtime.serve_until_stopped(
            host=args.host,
            port=args.port,
            uds=args.uds,
            fd=args.fd,
            workers=args.workers or _demo_workers(target, args),
            single_process=args.single_process,
            graceful_timeout=args.graceful_timeout,
            ack_timeout=args.ack_timeout,
            log_level=args.log_level,
            access_log=args.access_log,
            log_format=args.log_format,
            log_file=args.log_file,
            log_config=args.log_config,
            inspector=args.inspect,
            inspector_host=args.inspector_host,
            inspector_port=args.inspector_port,
            inspector_api_key=args.inspector_api_key,
            inspector_tls_cert=args.inspector_tls_cert,
            inspector_tls_key=args.inspector_tls_key,
            health_without_key=args.health_without_key,
            health_port=args.health_port,
            health_host=args.health_host,
            pid_file=args.pid_file,
            user=args.user,
            group=args.group,
            hang_timeout=args.hang_timeout,
            max_requests=args.max_requests,
            max_requests_jitter=args.max_requests_jitter,
            max_lifetime=args.max_lifetime,
            max_lifetime_jitter=args.max_lifetime_jitter,
            max_worker_memory=args.max_worker_memory,
            auto_reload=args.reload,
            reload_dirs=args.reload_dir,
            reload_include=args.reload_include,
            reload_exclude=args.reload_exclude,
        )
    except (ConfigError, StartMethodError, TargetError) as exc:
        return _fail(environment.sourced(str(exc), args.environment), BAD_ARGUMENTS)
    except RuntimeErrorBase as exc:
        return _fail(environment.sourced(str(exc), args.environment), 1)


def _demo_workers(target: str, args: argparse.Namespace) -> int | None:
    return 2 if target == DEMO and not args.single_process else None


def _fail(exc: Exception | str, code: int) -> int:
    print(f"runtime: error: {exc}", file=sys.stderr)
    return code


def _name_for(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", target)
