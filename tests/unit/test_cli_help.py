"""Every `giftcard ... --help` reads as a person expects: a flag is shown alone, an option
that takes a value names it in capitals (`--port PORT`, `--expires YYYY-MM-DD`), no type
placeholders or boxes, and each example on one line that can be copied."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from giftcard.cli import app

GIFTCARD = Path(sys.executable).with_name("giftcard")
WIDTH = 80


def _paths(group: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from _paths(command, (*path, name))


COMMANDS = list(_paths(typer.main.get_command(app), ()))
# An option line: two spaces, the option, and its value's name when it takes one.
_OPTION_LINE = re.compile(r"^  (--[a-z][a-z-]*)(?: ([A-Z][A-Z_]*|YYYY-MM-DD))?(?:  +\S|$)")


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_real_program_prints_plain_help() -> None:
    """`giftcard --help`, run as an operator runs it, lists the commands without boxes."""
    env = {**os.environ, "COLUMNS": str(WIDTH), "TERM": "xterm-256color"}
    result = subprocess.run(
        [str(GIFTCARD), "--help"], capture_output=True, text=True, env=env, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: giftcard [OPTIONS] COMMAND [ARGS]...")
    assert re.search(r"^  --help\s+Show this message and exit\.$", result.stdout, re.M)
    for command in ("serve", "migrate", "verify", "cards", "keys", "staff", "audit"):
        assert re.search(rf"^  {command}\s+[A-Z]", result.stdout, re.M), command
    assert "<bool>" not in result.stdout
    assert not set("╭│╰─") & set(result.stdout)


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(("giftcard", *p)) for p, _ in COMMANDS]
)
def test_each_help_reads_well(path: tuple[str, ...], command: Any) -> None:
    text = _help(path)
    lines = text.splitlines()
    options = {
        option: parameter
        for parameter in command.params
        if parameter.param_type_name == "option"
        for option in parameter.opts
    }

    # typer's own way with a positional argument (`{ID}` in the usage line, `ID <int>`
    # under Arguments) is left as it is; the options are what this is about.
    options_text = text.split("Options:", 1)[1]
    assert re.search(r"<\w[\w ]*>", options_text) is None, text  # <bool>, <str>, <int range>
    assert not set("╭│╰─") & set(text), text
    assert all(len(line) <= WIDTH for line in lines if not line.lstrip().startswith("Example:"))
    option_lines = [line for line in lines if line.startswith("  --")]
    assert [_OPTION_LINE.match(line) is not None for line in option_lines] == [True] * len(
        option_lines
    ), text
    shown = {match[1]: match[2] for line in option_lines if (match := _OPTION_LINE.match(line))}
    assert set(shown) == {*options, "--help"}
    for option, parameter in options.items():
        takes_value = not parameter.is_flag
        assert (shown[option] is not None) == takes_value, f"{option}: {shown[option]!r}"
    assert shown["--help"] is None
    if command.help and "Example:" in command.help:
        example = command.help.split("Example:", 1)[1].strip().splitlines()[0]
        assert f"Example: {example}" in text, "the example is wrapped"
