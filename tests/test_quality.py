"""The code base stays lint-clean, typed, and quick to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    out = subprocess.run([str(BIN / "ruff"), "check", "agent", "tools", "tests", "bench"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_mypy_is_clean_on_agent_and_tools() -> None:
    out = subprocess.run([str(BIN / "mypy"), "agent", "tools"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout


def test_cli_and_commands_do_not_import_langchain() -> None:
    code = ("import sys, dbsage.agent.cli, dbsage.agent.commands, dbsage.agent.runner\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('langchain', 'langchain_core', 'langgraph')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_installed_under_the_dbsage_namespace_only() -> None:
    code = ("import importlib.util as u\n"
            "print(u.find_spec('dbsage.agent') is not None, u.find_spec('dbsage.tools') is not "
            "None, u.find_spec('agent'), u.find_spec('tools'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.split() == ["True", "True", "None", "None"]


def test_every_cli_command_has_help_and_is_in_the_readme() -> None:
    from dbsage.agent.cli import app, db_app

    readme = (REPO / "README.md").read_text()
    names = [c.name for c in app.registered_commands if not c.hidden]  # aliases are hidden
    names += [g.name for g in app.registered_groups]
    assert {"apply", "plan", "dry-run", "rollback", "smoke-test", "chat", "db"} <= set(names)
    for cmd in app.registered_commands + db_app.registered_commands:
        assert cmd.callback is not None and (cmd.callback.__doc__ or "").strip(), cmd.name
    for name in names:
        assert f"dbsage {name}" in readme, name
