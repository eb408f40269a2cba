"""Every ``llmnode`` command and sub-command answers ``--help`` readably, after the CLI's split
into modules by subject (keys, node, agents, demo, models)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmnode.cli.main import app

COMMANDS = [
    [],
    ["init"],
    ["keys"],
    ["keys", "list"],
    ["keys", "add"],
    ["keys", "use"],
    ["keys", "remove"],
    ["start"],
    ["status"],
    ["peers"],
    ["schema"],
    ["send"],
    ["request"],
    ["chat"],
    ["embed"],
    ["demo"],
    ["models"],
    ["receipt"],
    ["receipt", "verify"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "llmnode")
def test_every_command_answers_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "Traceback" not in result.output


def test_the_root_help_lists_every_command_in_order() -> None:
    output = CliRunner().invoke(app, ["--help"]).output
    names = ["init", "start", "status", "peers", "schema", "send", "request", "chat", "embed"]
    positions = [output.index(f" {name} ") for name in names]
    assert positions == sorted(positions)
    for group in ("keys", "models", "demo"):
        assert f" {group} " in output


def test_start_keeps_every_option() -> None:
    output = CliRunner().invoke(app, ["start", "--help"], terminal_width=200).output
    for option in (
        "--data-dir", "--name", "--listen", "--advertise", "--join", "--no-beacon", "--model",
        "--agent", "--config", "--control", "--mesh-key", "--model-store", "--log-level",
        "--log-json", "--probe-interval", "--fault-delay-ms", "--fault-slow-ms", "--hedge",
        "--model-slots", "--model-queue-limit",
    ):  # fmt: skip
        assert option in output, option
    # Bracketed notes are shown, not taken for rich markup and dropped.
    assert "[env LLMNODE_NAME]" in " ".join(output.replace("│", " ").split())


def _every_command(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command under ``command`` (typer's own click), with the arguments that reach it."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _every_command(sub, [*path, name])
    return found


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("`", "").split())


@pytest.mark.parametrize(
    ("path", "command"),
    _every_command(typer.main.get_command(app), []),
    ids=lambda value: " ".join(value) or "llmnode" if isinstance(value, list) else "",
)
def test_every_option_help_is_shown_whole(path: list[str], command: Any) -> None:
    """No help text loses a bracketed note, a default or an env var to markup, in any command."""
    output = _flat(CliRunner().invoke(app, [*path, "--help"], terminal_width=200).output)
    for parameter in command.params:
        text = getattr(parameter, "help", None)
        if text:
            assert _flat(text) in output, (parameter.name, text)
