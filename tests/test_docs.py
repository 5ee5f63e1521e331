"""The README: every setting, flag and variable documented, every code block checked.

Each literal block in README.rst follows an RST comment that says how it is
checked: ``.. example: PATH`` (the block is that file, verbatim), ``.. runs:``
(each command runs against a real group), ``.. parses:`` (each command is
parsed by the real CLI), ``.. output: SCRIPT`` (the table's columns are the
script's) or ``.. setup:`` (the commands CI runs).
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import docutils.core
import httpx
import pytest
from conftest import free_port, python

from runtime import cli, environment
from runtime.config import Config

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
README = (ROOT / "README.rst").read_text()
SCRIPT = str(Path(sys.executable).parent / "runtime")
MARKER = re.compile(r"^\.\. (example|runs|parses|output|setup):\s*(.*)$")
SET_BY_THE_RUNTIME = {"RELOADED_FILES"}


def test_every_setting_is_in_the_settings_table():
    names = {f.name for f in attrs.fields(Config)} - SET_BY_THE_RUNTIME
    missing = sorted(n for n in names if f"``{n}``" not in README)
    assert not missing


def test_every_run_flag_is_documented():
    run = cli.subcommand(cli.build_parser(), "run")
    flags = {
        option
        for action in run._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    missing = sorted(f for f in flags if f"``{f}" not in README)
    assert not missing


def test_every_environment_variable_is_documented():
    run = cli.subcommand(cli.build_parser(), "run")
    names = {environment.env_name(action) for action in environment.flag_actions(run)}
    missing = sorted(n for n in names if f"``{n}``" not in README)
    assert not missing


@attrs.frozen
class Block:
    kind: str | None
    argument: str
    lines: list[str]
    where: int  # the README line that opens it

    def commands(self) -> list[list[str]]:
        return [shlex.split(line, comments=True) for line in self.lines if line]


def readme_blocks() -> list[Block]:
    lines = README.splitlines()
    blocks, pending = [], (None, "")
    for number, line in enumerate(lines):
        if marker := MARKER.match(line):
            pending = (marker[1], marker[2].strip())
        elif line.endswith("::") and not line.startswith(".."):
            body = []
            for text in lines[number + 2 :]:
                if text and not text.startswith("    "):
                    break
                body.append(text[4:])
            while body and not body[-1]:
                body.pop()
            blocks.append(Block(*pending, body, number + 1))
            pending = (None, "")
    return blocks


BLOCKS = readme_blocks()


def of_kind(kind: str) -> list[Block]:
    return [block for block in BLOCKS if block.kind == kind]


def test_the_readme_renders_without_a_warning():
    docutils.core.publish_string(
        README, writer="null", settings_overrides={"halt_level": 2}
    )


def test_every_literal_block_says_how_it_is_checked():
    unmarked = [block.where for block in BLOCKS if block.kind is None]
    assert not unmarked, f"README lines {unmarked}: add a check comment"
    assert {block.kind for block in BLOCKS} == {
        "example",
        "runs",
        "parses",
        "output",
        "setup",
    }


@pytest.mark.parametrize("block", of_kind("example"), ids=lambda b: b.argument)
def test_an_example_block_is_that_file_verbatim(block):
    text = (ROOT / block.argument).read_text()
    assert "\n".join(block.lines).strip() == text.strip()


def test_every_example_is_in_the_readme_and_run_by_a_test():
    tested = (ROOT / "tests" / "test_examples.py").read_text()
    for path in EXAMPLES.glob("*.py"):
        assert f"examples/{path.name}" in README, path.name
        assert f'"{path.name}"' in tested, path.name


def test_the_setup_commands_are_what_ci_runs():
    (block,) = of_kind("setup")
    install_and_run, install_and_test = block.lines
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == install_and_test
    # the run half is the demo; tests/test_cli.py serves it with this command
    assert install_and_run.endswith("&& .venv/bin/runtime run")
    assert install_and_run.startswith(install_and_test.split("'")[0].rstrip())


@pytest.mark.parametrize("block", of_kind("output"), ids=lambda b: b.argument)
def test_benchmark_output_has_the_scripts_columns(block):
    source = (ROOT / block.argument).read_text()
    rule = next(i for i, line in enumerate(block.lines) if line.startswith("---"))
    columns = re.split(r"\s{2,}", block.lines[rule - 1].strip())
    # a memory column says which measure it used: PSS, or RSS without smaps_rollup
    missing = [c for c in columns if c.replace("PSS", "{kind}") not in source]
    assert not missing, missing


def _runtime_arguments(argv: list[str]) -> list[str]:
    if argv[0] == "sudo":
        argv = argv[1:]
    if argv[0] == "runtime":
        return argv[1:]
    assert argv[:3] == ["python", "-m", "runtime"], argv
    return argv[3:]


@pytest.mark.parametrize("block", of_kind("parses"), ids=lambda b: str(b.where))
def test_a_command_that_needs_root_parses(block):
    for argv in block.commands():
        cli.build_parser().parse_args(_runtime_arguments(argv))  # exits 2 if not


class Commands:
    """Runs one ``.. runs:`` block: servers one after the other, and
    ``runtime inspect`` commands against the server started last."""

    def __init__(self, launch, tmp_path: Path) -> None:
        self.launch, self.tmp_path = launch, tmp_path
        self.server = None
        self.inspector = free_port()

    def run(self, argv: list[str]) -> None:
        if argv[:2] == ["runtime", "inspect"]:
            self.inspect(argv[2:])
        else:
            self.stop()
            self.server = self.start(argv)
            self.check_serving()

    def start(self, argv: list[str]):
        env = {"RUNTIME_INSPECTOR_PORT": str(self.inspector)}
        if argv[0] == "python" and argv[1].startswith("examples/"):
            env["PORT"] = str(free_port())
            return self.launch(*python(*argv[1:]), env=env, cwd=ROOT)
        command = [SCRIPT] if argv[0] == "runtime" else python("-m", "runtime")
        args = self.local(_runtime_arguments(argv))
        if not {"--port", "--uds", "--fd"} & set(args):
            env["RUNTIME_PORT"] = "0"
        return self.launch(*command, *args, env=env, cwd=ROOT)

    def local(self, args: list[str]) -> list[str]:
        """The same command with free ports and a unix socket of this test's."""
        out = list(args)
        for i, arg in enumerate(out[:-1]):
            if arg in ("--port", "--health-port", "--inspector-port"):
                out[i + 1] = str(free_port())
            elif arg == "--uds":
                out[i + 1] = str(self.tmp_path / Path(out[i + 1]).name)
        return out

    def check_serving(self) -> None:
        self.server.wait_for(r"Ready: |Runtime-Main\[\d+\] INFO Serving")
        url = self.server.url
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
            with httpx.Client(transport=transport) as client:
                assert client.get("http://localhost/").status_code == 200
        else:
            assert httpx.get(url).status_code == 200

    def inspect(self, args: list[str]) -> None:
        result = subprocess.run(
            [SCRIPT, "inspect", *args, "--port", str(self.inspector)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, (args, result.stderr)
        if args == ["shutdown"]:
            assert self.server.wait() == 0, self.server.output
            self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.signal(signal.SIGTERM)
            assert self.server.wait() == 0, self.server.output
            self.server = None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", of_kind("runs"), ids=lambda b: str(b.where))
def test_the_commands_of_a_block_run(block, launch, tmp_path):
    commands = Commands(launch, tmp_path)
    for argv in block.commands():
        commands.run(argv)
    commands.stop()


def test_the_summary_table_quotes_the_full_benchmark_run():
    (peers,) = [b for b in of_kind("output") if b.argument == "benchmarks/peers.py"]
    full: dict[str, str] = {}
    for line in peers.lines:  # the first table; the ratio table repeats the names
        if line.strip():
            full.setdefault(line.split()[0], line)
    summary = README.split("When to pick it")[1].split("Quick start")[0]
    rows = [line for line in summary.splitlines() if re.match(r"^\w.*\d$", line)]
    assert len(rows) == 7
    for row in rows:
        name, numbers = re.match(r"^(\D+?)\s{2,}(.*)$", row).groups()
        key = re.sub(r" \((\w+)\)", r"-\1", name).split(" + ")[0].lower()
        for number in numbers.split():  # each is a median of that server's row
            assert f"{number} (" in full[key], (name, number)
