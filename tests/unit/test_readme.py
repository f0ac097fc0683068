"""README.md documents the whole command line and every setting the code reads.

The command tree is read from the typer app itself and the setting names from the
source, so a new command, option or environment variable fails here until the README
names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from giftcard.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SOURCE_FILES = sorted((ROOT / "src" / "giftcard").rglob("*.py"))

_SETTING_NAME = re.compile(r"\bGIFTCARD_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
# os.environ.get("X"), os.environ["X"], env.get("X", ...), os.environ.setdefault("X", ...)
_ENVIRONMENT_READ = re.compile(
    r"""\b(?:environ|env)(?:\.get|\.setdefault)?[\[(]\s*["']([A-Z][A-Z0-9_]*)["']"""
)


# typer builds click commands (its own copy of click, in recent versions), so they are
# told apart by what they have: a group has `commands`, an option `param_type_name`.


def _commands(group: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every command below `group` with its full path, e.g. "giftcard cards issue"."""
    for name, command in sorted(group.commands.items()):
        command_path = f"{path} {name}"
        if hasattr(command, "commands"):
            yield from _commands(command, command_path)
        else:
            yield command_path, command


COMMANDS = list(_commands(typer.main.get_command(app), "giftcard"))
COMMAND_IDS = [path for path, _ in COMMANDS]


def _long_options(command: Any) -> list[str]:
    return sorted(
        option
        for parameter in command.params
        if parameter.param_type_name == "option"
        for option in (*parameter.opts, *parameter.secondary_opts)
        if option.startswith("--")
    )


def _mentions(text: str, word: str) -> bool:
    """`word` appears on its own, not as part of a longer name (--name in --names)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_the_command_tree_is_what_the_readme_describes() -> None:
    """The walk finds the six commands the README documents, so the tests below are
    about real commands."""
    assert set(COMMAND_IDS) >= {
        "giftcard serve",
        "giftcard migrate",
        "giftcard verify",
        "giftcard cards issue",
        "giftcard keys create",
        "giftcard staff create",
    }


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_readme_documents_each_command_and_its_options(path: str, command: Any) -> None:
    """Each command path and each of its long options is in README.md."""
    missing = [option for option in _long_options(command) if not _mentions(README, option)]

    assert path in README, f"README.md does not mention `{path}`"
    assert missing == [], f"README.md does not mention {missing} of `{path}`"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_each_command_help_has_an_example(path: str, command: Any) -> None:
    """`giftcard ... --help` shows an example of the command in use."""
    help_text = command.help or ""

    assert "Example:" in help_text, f"`{path} --help` has no example"
    assert path in help_text.split("Example:", 1)[1], f"`{path}`'s example runs another command"


def test_readme_documents_every_giftcard_setting() -> None:
    """Every GIFTCARD_* name in the source is in README.md."""
    names = {
        name for file in SOURCE_FILES for name in _SETTING_NAME.findall(file.read_text("utf-8"))
    }
    missing = sorted(name for name in names if not _mentions(README, name))

    assert "GIFTCARD_DATABASE_URL" in names
    assert missing == []


def test_readme_documents_every_environment_variable_read() -> None:
    """Every variable the code reads from the environment, GIFTCARD_* or not (such as
    PROMETHEUS_MULTIPROC_DIR), is in README.md."""
    names = {
        name for file in SOURCE_FILES for name in _ENVIRONMENT_READ.findall(file.read_text("utf-8"))
    }
    missing = sorted(name for name in names if not _mentions(README, name))

    assert {"GIFTCARD_SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR"} <= names
    assert missing == []


def test_readme_opens_with_the_two_set_up_commands() -> None:
    """The first commands a newcomer reads are `make run` and `make test`."""
    first_block = README.split("```", 2)[1]

    assert "make run" in first_block
    assert "make test" in first_block
