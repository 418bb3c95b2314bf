"""One grammar: the CLI and the chat accept exactly the same options with the same validation,
and the LLM tools are built from the same functions."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from helpers import run_cli

from dbsage.agent.cli import app
from dbsage.agent.commands import COMMANDS, CommandError, parse
from dbsage.agent.grammar import CommandSpec

CLI_SPECS = [s for s in COMMANDS if s.cli]


def _click_command(spec: CommandSpec) -> typer.main.TyperCommand:
    group = typer.main.get_command(app)
    command = group.commands[spec.cli_name or spec.name]  # type: ignore[attr-defined]
    return command  # type: ignore[no-any-return]


@pytest.mark.parametrize("spec", CLI_SPECS, ids=lambda s: s.name)
def test_cli_and_chat_accept_the_same_options(spec: CommandSpec) -> None:
    command = _click_command(spec)
    cli_options = {o for p in command.params if p.param_type_name == "option"
                   for o in p.opts if o.startswith("--") and o != "--help"}
    cli_args = [p.name for p in command.params if p.param_type_name == "argument"]
    assert cli_options == {o.flag for o in spec.options}
    assert cli_args == [a.param for a in spec.args]
    flags = {p.name: p.is_flag for p in command.params if p.param_type_name == "option"}
    assert flags == {o.param: not o.takes_value for o in spec.options}


def test_every_chat_command_with_a_cli_side_is_a_subcommand() -> None:
    group = typer.main.get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    assert {s.cli_name or s.name for s in CLI_SPECS} <= names
    assert {"status", "rls-audit", "analyze-hotpaths"} <= names  # once chat-only
    assert {s.name for s in COMMANDS if not s.cli} == {"mode", "help", "exit"}


BAD = [
    ("apply", ["x.sql", "--lock-timeout", "banana"], "*apply-migration x.sql --lock-timeout banana",
     "not a duration"),
    ("apply", ["x.sql", "--mode", "fast"], "*apply x.sql --mode fast", "unknown mode 'fast'"),
    ("dry-run", ["x.sql", "--statement-timeout", "10"], "*dry-run x.sql --statement-timeout 10",
     "needs a unit"),
    ("rollback", ["../20250101000000"], "*rollback ../20250101000000", "not a path"),
    ("smoke-test", ["--exposed-schemas", "a b"], "*smoke-test --exposed-schemas 'a b'",
     "schema names"),
]


@pytest.mark.parametrize(("cli", "argv", "line", "message"), BAD, ids=[b[3] for b in BAD])
def test_the_same_value_is_refused_the_same_way(cli: str, argv: list[str], line: str,
                                                message: str, tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        parse(line)
    assert message in caught.value.message
    done = run_cli(cli, *argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / ".dbsage").exists()  # refused before anything ran


def test_llm_tools_come_from_the_command_functions() -> None:
    pytest.importorskip("langchain_core")
    from dbsage.agent import llm
    from dbsage.agent.commands import Session

    tools = {t.name: t for t in llm.build_tools(Session(project_dir=Path.cwd()))}
    by_tool = {s.tool: s for s in COMMANDS if s.tool}
    for name, spec in by_tool.items():
        assert tools[name].description.startswith(spec.summary)
        assert set(tools[name].args) == {a.param for a in spec.args if a.llm} | {
            o.param for o in spec.options if o.llm}
