"""The environment: each ``runtime run`` flag also reads ``RUNTIME_<FLAG>``.

Design note
-----------
A variable becomes its flag's default, so argparse still decides: a flag on
the command line wins, and the value is converted and checked by the flag's own
type (a bad one is one line naming the variable). Switches take 1/true/yes/on or
0/false/no/off, so a variable can turn off what the code turned on; a
repeatable flag's variable is a ``:``-separated list the flags add to.

Two things need the command line itself, not just the parsed result: which
variables a flag replaced (only the others can have caused a later error, which
then names them, "(set by RUNTIME_PID_FILE)"), and where to listen, which is one
place (host and port together, a unix path, or an fd): one given on the command
line sets aside the variables of the others rather than contradicting them.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")
ENV_NAMES = {"--inspect": "RUNTIME_INSPECTOR"}  # the setting's name, INSPECTOR
INSPECT_ENV_NAMES = {  # runtime inspect finds the inspector runtime run started
    "--host": "RUNTIME_INSPECTOR_HOST",
    "--port": "RUNTIME_INSPECTOR_PORT",
    "--api-key": "RUNTIME_INSPECTOR_API_KEY",
}


def env_name(action: argparse.Action) -> str:
    """The environment variable a ``runtime run`` flag also reads."""
    flag = next(o for o in action.option_strings if o.startswith("--"))
    return ENV_NAMES.get(flag, "RUNTIME_" + flag[2:].replace("-", "_").upper())


def inspect_name(action: argparse.Action) -> str | None:
    return INSPECT_ENV_NAMES.get(action.option_strings[0])


def flag_actions(run: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in run._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]


def read(
    command: argparse.ArgumentParser,
    name_of: Callable[[argparse.Action], str | None] = env_name,
) -> dict[argparse.Action, tuple[str, str]]:
    """Turn each variable set for a flag into its default, checked like the flag;
    return the flags so set, with each variable's name and text.

    A flag on the command line still wins; a repeatable flag adds to the list the
    variable gave (its items separated by the path separator, ``:``).
    """
    used = {}
    for action in flag_actions(command):
        name = name_of(action)
        text = os.environ.get(name, "").strip() if name else ""
        if not text:
            continue
        try:
            command.set_defaults(**{action.dest: _from_text(action, text)})
        except argparse.ArgumentTypeError as exc:
            command.error(f"{name}={text!r}: {exc}")
        used[action] = (name, text)
    return used


# Where to listen: one place, host and port together, a unix path or an fd.
PLACES = {"host": "tcp", "port": "tcp", "uds": "uds", "fd": "fd"}


def sources(
    run: argparse.ArgumentParser,
    args: argparse.Namespace,
    used: dict[argparse.Action, tuple[str, str]],
    argv: Sequence[str],
) -> dict[str, str]:
    """The variables that gave a value no flag replaced: name to text.

    A listening place given on the command line (``--uds``) also sets aside the
    variables for the other places (``RUNTIME_PORT``), which would contradict it.
    """
    on_line = {a.dest for a in flag_actions(run) if _on_command_line(a, argv)}
    places = {PLACES[dest] for dest in on_line if dest in PLACES}
    sources = {}
    for action, (name, text) in used.items():
        if action.dest in on_line:
            continue
        place = PLACES.get(action.dest)
        if place is not None and places and place not in places:
            setattr(args, action.dest, None)  # the command line chose another place
            continue
        sources[name] = text
    return sources


def _on_command_line(action: argparse.Action, argv: Sequence[str]) -> bool:
    return any(
        token == option or token.startswith(option + "=")
        for token in argv
        for option in action.option_strings
    )


def _from_text(action: argparse.Action, text: str) -> Any:
    if action.nargs == 0:  # a switch
        if text.lower() not in ON + OFF:
            raise argparse.ArgumentTypeError(f"{text!r} is not a switch; use 1 or 0")
        return text.lower() in ON
    if isinstance(action, argparse._AppendAction):
        return [_one_value(action, part) for part in text.split(os.pathsep) if part]
    return _one_value(action, text)


def _one_value(action: argparse.Action, text: str) -> Any:
    value = action.type(text) if callable(action.type) else text
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(map(str, action.choices))}"
        )
    return value


def sourced(message: str, environment: dict[str, str]) -> str:
    """The message, saying which variables gave the values or settings it names."""
    names = [
        name
        for name, text in environment.items()
        if repr(text) in message
        or (len(text) > 2 and text in message)
        or _names_setting(message, name)
    ]
    return f"{message} (set by {', '.join(names)})" if names else message


def _names_setting(message: str, name: str) -> bool:
    # RUNTIME_INSPECTOR_API_KEY: "inspector_api_key" or "inspector API key"
    setting = name.removeprefix("RUNTIME_").lower()
    spoken = setting.replace("_", " ")
    return any(
        re.search(rf"\b{re.escape(words)}\b", message, re.IGNORECASE)
        for words in (setting, spoken)
    )
