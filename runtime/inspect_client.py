"""``runtime inspect``: the command-line client of the inspector.

It speaks HTTP with the standard library's client and prints either a table of
the processes or the raw JSON. Errors are one line and exit code 1: the
service could not be reached, or it refused the key.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

TIMEOUT = 10.0


class InspectError(Exception):
    """Raised when the inspector cannot be reached or refuses the request."""


def call(
    address: str,
    command: str,
    body: dict[str, Any] | None,
    *,
    api_key: str | None,
    cafile: str | None = None,
) -> dict[str, Any]:
    """Send one command; return the JSON answer or raise InspectError."""
    method = "GET" if command == "status" else "POST"
    url = f"{address}/" if command == "status" else f"{address}/{command}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    context = _tls_context(cafile) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as reply:
            return json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise InspectError(_http_error(address, exc, bool(api_key))) from None
    except http.client.HTTPException as exc:  # not HTTP at all: TLS, say
        raise InspectError(
            f"the inspector at {address} did not answer in HTTP ({exc!r}); if it "
            f"serves HTTPS, pass --secure"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise InspectError(
                f"the inspector at {address} answered, but its certificate failed "
                f"verification ({reason.verify_message}); pass its CA with --cafile"
            ) from None
        if address.startswith("http://") and isinstance(reason, ConnectionResetError):
            raise InspectError(
                f"the inspector at {address} closed the connection without an "
                f"answer ({reason}); if it serves HTTPS, pass --secure"
            ) from None
        raise InspectError(
            f"cannot reach the inspector at {address} ({reason}); is the runtime "
            f"running with the inspector on (--inspect), on that host and port?"
        ) from None


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise InspectError(f"cannot load --cafile {cafile!r}: {exc}") from None


def _http_error(address: str, exc: urllib.error.HTTPError, keyed: bool) -> str:
    if exc.code == 401:
        what = "refused the API key" if keyed else "needs an API key"
        return (
            f"the inspector at {address} {what} (401); pass the right one with "
            f"--api-key or RUNTIME_INSPECTOR_API_KEY"
        )
    try:
        detail = json.loads(exc.read()).get("error", "")
    except ValueError:
        detail = ""
    return f"the inspector at {address} answered {exc.code}: {detail}"


def table(status: dict[str, Any]) -> str:
    """A readable table of the processes in a status answer."""
    now = time.time()
    rows = [("NAME", "STATE", "PID", "STARTS", "AGE")]
    for name, entry in status.get("workers", {}).items():
        rows.append(
            (
                name,
                str(entry.get("state", "")),
                str(entry.get("pid") or "-"),
                str(entry.get("starts", "")),
                _age(entry.get("start_at"), now),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in rows
    ]
    head = (
        f"{status.get('name')} (runtime {status.get('version')}, start method "
        f"{status.get('start_method')}, up {_duration(status.get('uptime', 0))})"
    )
    return "\n".join([head, *(line.rstrip() for line in lines)])


def _age(start_at: str | None, now: float) -> str:
    if not start_at:
        return "-"
    return _duration(now - datetime.fromisoformat(start_at).timestamp())


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def print_result(command: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json or command != "status":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(result))
