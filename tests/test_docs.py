"""The README documents every setting and every ``runtime run`` flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs

from runtime import cli
from runtime.config import Config

README = (Path(__file__).parent.parent / "README.rst").read_text()
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
