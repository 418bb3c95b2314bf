"""The console entry point: a plain invocation runs through the chat's grammar without typer,
with exactly the values typer would pass; anything else goes to typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import Db
from helpers import cli_env, migration, run_cli
from supabase_shaped import SupaDb

from dbsage.agent.cli import app
from dbsage.agent.commands import COMMANDS
from dbsage.agent.front import GLOBAL_OPTIONS, plain_invocation
from dbsage.agent.grammar import CommandSpec, validate

CLI_SPECS = [s for s in COMMANDS if s.cli]


def _typer_values(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """What the generated subcommand receives from typer for `argv`, merged and validated as
    agent/cli.py does before it runs the command: (subcommand, values)."""
    group = typer.main.get_command(app)
    root = group.make_context("dbsage", list(argv))
    words = [*root._protected_args, *root.args]  # what the group has not parsed itself
    name, command, rest = group.resolve_command(root, words)  # type: ignore[attr-defined]
    assert command is not None and name is not None
    sub = command.make_context(name, rest, parent=root)
    values = dict(sub.params)
    for _flag, param in GLOBAL_OPTIONS:
        given = root.params.get(param)
        if given not in (None, False):
            values[param] = given
    spec = next(s for s in CLI_SPECS if (s.cli_name or s.name) == name)
    for a in spec.args:
        if a.variadic:
            values[a.param] = tuple(values.get(a.param) or ())
    return name, validate(spec, values)


def _flags_only(spec: CommandSpec) -> list[str]:
    """The subcommand with its required arguments and every flag it has."""
    args = [("x.sql" if a.metavar == "PATH" else "20250101000000") for a in spec.args
            if not a.optional]
    return [spec.cli_name or spec.name, *args, *(o.flag for o in spec.options
                                                 if not o.takes_value)]


PLAIN = [
    ["apply", "x.sql", "--mode", "yolo"],
    ["--db", "postgresql://h/d", "-m", "yolo", "--json", "apply", "x.sql"],
    ["--db=postgresql://h/d", "migrate", "x.sql", "--lock-timeout=5s", "-v"],
    ["apply", "--statement-timeout", "2min", "x.sql", "-m", "preflight", "--yes"],
    ["dry-run", "--", "x.sql"],
    ["status", "--json"],
]


@pytest.mark.parametrize("argv", PLAIN + [_flags_only(s) for s in CLI_SPECS],
                         ids=lambda a: " ".join(a))
def test_a_plain_invocation_gets_exactly_what_typer_would_pass(argv: list[str]) -> None:
    found = plain_invocation(argv)
    assert found is not None, argv
    spec, values = found
    name, expected = _typer_values(argv)
    assert (spec.cli_name or spec.name) == name
    assert values == expected


UNCLEAR = [
    [], ["--help"], ["apply", "-h"], ["apply", "x.sql", "--help"], ["-V"], ["help", "apply"],
    ["db", "start"], ["chat"], ["aply", "x.sql"], ["completion", "bash"],
    ["apply", "x.sql", "--mode", "fast"],  # a refused value: typer says so, in its words
    ["apply", "x.sql", "--lock-timeout", "banana"],
    ["apply", "x.sql", "--mode", "yolo", "--mode", "interactive"],
    ["--mode", "yolo", "apply", "x.sql", "--mode", "interactive"],
    ["--mode", "yolo", "apply", "x.sql", "--mode", "yolo"],  # typer judges both sides
    ["-m=yolo", "apply", "x.sql"],  # click reads "=yolo" as the value
    ["apply", "x.sql", "-my"], ["-vq", "apply", "x.sql"],
    ["apply", "--db", "--json"], ["status", "--db"], ["--db"],
    ["apply", "x.sql", "--json=yes"], ["apply", "x.sql", "y.sql"],
    ["new"],  # a required argument missing
    ["new", "--nosuch"],
]


@pytest.mark.parametrize("argv", UNCLEAR, ids=lambda a: " ".join(a) or "(none)")
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    assert plain_invocation(argv) is None


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_DBSAGE_COMPLETE", "complete_bash")
    assert plain_invocation(["apply", "x.sql"]) is None


def _modules_after(argv: list[str], cwd: Path, *, top: bool = True
                   ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the entry point on `argv`; (the process, the modules it had loaded: only the
    top-level names with `top`)."""
    names = "{m.split('.')[0] for m in sys.modules}" if top else "sys.modules"
    code = ("import atexit, sys\n"
            "atexit.register(lambda: open('modules.txt', 'w').write("
            f"'\\n'.join(sorted({names}))))\n"
            f"sys.argv = ['dbsage', *{argv!r}]\n"
            "from dbsage.agent.launch import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=60)
    return done, set((cwd / "modules.txt").read_text().split())


def test_a_plain_command_runs_without_typer(tmp_path: Path) -> None:
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    done, modules = _modules_after(["new", "add_things"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [made] = (tmp_path / "supabase" / "migrations").glob("*_add_things.sql")
    assert made.name in done.stdout
    assert "typer" not in modules and "click" not in modules


def _apply_modules(db: Db | SupaDb, project: Path) -> set[str]:
    migration(project, "20300101000000_t.sql", "create table public.t (id bigint primary key);\n"
              "alter table public.t enable row level security;\n")  # what the gate asks
    done, modules = _modules_after(["apply", "supabase/migrations/20300101000000_t.sql",
                                    "--mode", "yolo", "--db", db.url], project, top=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert db.scalar("SELECT to_regclass('public.t') IS NOT NULL") is True
    assert "dbsage.tools.analyze" in modules  # what the run needed is there
    return modules


def test_a_plain_postgresql_apply_loads_no_supabase_only_module(db: Db, project: Path) -> None:
    # Each module costs every apply its import (dataclasses, regexes): the advisor lints
    # matter only where Supabase's API roles exist, and one catalog query says they do not.
    assert "dbsage.tools.advisors" not in _apply_modules(db, project)


def test_a_supabase_apply_runs_the_advisor_gate(supa_db: SupaDb, project: Path) -> None:
    # As Supabase's non-superuser postgres: the API roles exist, so the gate's lints load.
    assert "dbsage.tools.advisors" in _apply_modules(supa_db, project)


def test_an_unclear_command_runs_through_typer_with_its_messages(tmp_path: Path) -> None:
    done, modules = _modules_after(["new", "Bad-Name"], tmp_path)
    assert "typer" in modules
    assert done.returncode == 2
    assert "dbsage new" in done.stderr and "*new" not in done.stderr
    assert not (tmp_path / "supabase").exists()


def test_both_paths_refuse_a_bad_value_the_same_way(tmp_path: Path) -> None:
    refused = run_cli("apply", "x.sql", "--mode", "fast", cwd=tmp_path)
    also = run_cli("--mode", "fast", "apply", "x.sql", cwd=tmp_path)
    assert refused.returncode == also.returncode == 2
    assert "unknown mode 'fast'" in refused.stderr
    assert refused.stderr == also.stderr
