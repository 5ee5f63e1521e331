"""The README documents every setting and every ``runtime run`` flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs

from runtime import cli
from runtime.config import Config

EXAMPLES = Path(__file__).parent.parent / "examples"
README = (EXAMPLES.parent / "README.rst").read_text()
SET_BY_THE_RUNTIME = {"RELOADED_FILES"}


def test_every_setting_is_in_the_settings_table():
    names = {f.name for f in attrs.fields(Config)} - SET_BY_THE_RUNTIME
    missing = sorted(n for n in names if f"``{n}``" not in README)
    assert not missing


def test_every_run_flag_is_documented():
    run = _subcommand(cli.build_parser(), "run")
    flags = {
        option
        for action in run._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    missing = sorted(f for f in flags if f"``{f}" not in README)
    assert not missing


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(f"no {name} command")


def test_code_marked_as_an_example_is_that_file():
    # ".. example: PATH" before a literal block: the block is PATH, verbatim.
    lines = README.splitlines()
    marked = [i for i, line in enumerate(lines) if line.startswith(".. example: ")]
    assert marked
    for i in marked:
        path = EXAMPLES.parent / lines[i].removeprefix(".. example: ").strip()
        start = next(j for j in range(i + 1, len(lines)) if lines[j].endswith("::"))
        block = []
        for line in lines[start + 2 :]:
            if line and not line.startswith("    "):
                break
            block.append(line[4:])
        assert "\n".join(block).strip() == path.read_text().strip(), path
