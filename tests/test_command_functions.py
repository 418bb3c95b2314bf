"""The command functions: every *command reaches the right part of the engine with the
session's defaults; real PostgreSQL wherever a database is involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Db
from helpers import apply, migration, user_tables

from dbsage.agent import runner
from dbsage.agent.commands import COMMANDS, Outcome, Session, execute, help_text, parse
from dbsage.agent.modes import ScriptedAsker, YesAsker
from dbsage.agent.report import RunReport


def session_for(db: Db, project: Path, **kw: Any) -> Session:
    return Session(db=db.url, project_dir=project, **kw)


def run(line: str, session: Session) -> Outcome:
    return execute(parse(line), session)


def test_every_command_is_a_typed_function_with_a_summary() -> None:
    for spec in COMMANDS:
        assert spec.func is not None and spec.summary, spec.name
        assert spec.func.__doc__ and spec.summary == spec.func.__doc__.strip().splitlines()[0]


def test_status_lists_applied_pending_and_drifted(db18: Db, project: Path) -> None:
    first = migration(project, "20250101000000_a.sql", "create table a (id int);")
    second = migration(project, "20250102000000_b.sql", "create table b (id int);")
    migration(project, "20250103000000_c.sql", "create table c (id int);")
    assert apply(db18, first, project).status == "applied"
    assert apply(db18, second, project).status == "applied"
    second.write_text("create table b (id bigint);")  # edited after it was applied: drift
    result = run("*status", session_for(db18, project))
    assert result.data["applied"] == ["20250101000000_a.sql", "20250102000000_b.sql"]
    assert result.data["pending"] == ["20250103000000_c.sql"]
    assert result.data["drifted"] == ["20250102000000_b.sql"]
    assert not result.ok and result.exit_code == 1  # drift is a problem worth a failing exit
    assert "Pending: 1\n  - 20250103000000_c.sql" in result.text
    assert "Drifted (changed since applied): 1" in result.text
    assert "Next: *dry-run supabase/migrations/20250103000000_c.sql" in result.text


def test_status_of_a_fresh_database_and_as_json(db18: Db, project: Path) -> None:
    migration(project, "20250101000000_a.sql", "create table a (id int);")
    result = run("*status --json", session_for(db18, project))
    assert result.ok and result.as_json
    assert '"pending": [\n    "20250101000000_a.sql"' in result.text
    assert result.data["applied"] == [] and result.data["drifted"] == []


def test_mode_switches_the_session_default(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    seen: list[runner.RunOptions] = []

    def fake_apply(path: Path, options: runner.RunOptions) -> RunReport:
        seen.append(options)
        return RunReport(task="apply-migration", status="applied")

    monkeypatch.setattr(runner, "run_apply", fake_apply)
    session = Session(project_dir=project, asker=ScriptedAsker({}))
    result = run("*mode preflight", session)
    assert session.mode == "preflight" and result.ok
    assert result.text.startswith("Mode is now preflight")
    run("*apply-migration x.sql", session)
    run("*apply-migration x.sql --mode yolo --yes --allow-destructive --db postgresql://h/d",
        session)
    assert [o.mode for o in seen] == ["preflight", "yolo"]
    assert seen[0].asker is session.asker and isinstance(seen[1].asker, YesAsker)
    assert seen[1].flags["allow_destructive"] and not seen[0].flags["allow_destructive"]
    assert (seen[0].db, seen[1].db) == (None, "postgresql://h/d")
    assert session.mode == "preflight"  # an option applies to one command only


def test_help_and_exit(project: Path) -> None:
    session = Session(project_dir=project)
    assert run("*help", session).text == help_text()
    assert run("*help dry-run", session).text.startswith("Usage: *dry-run PATH")
    assert run("*exit", session).exit


def test_rollback_calls_the_runner(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    session = Session(project_dir=project)
    calls: list[tuple[str, str]] = []

    def fake_rollback(ts: str, options: runner.RunOptions) -> RunReport:
        calls.append((ts, options.mode))
        return RunReport(task="rollback", status="rolled_back")

    monkeypatch.setattr(runner, "run_rollback_task", fake_rollback)
    result = run("*rollback 20250101000000 --mode yolo", session)
    assert result.ok and calls == [("20250101000000", "yolo")]


def test_apply_dry_run_plan_and_smoke_reach_the_database(db18: Db, project: Path) -> None:
    path = "supabase/migrations/20250101000000_todos.sql"
    migration(project, "20250101000000_todos.sql",
              "create table todos (id int primary key);\nalter table todos enable row level "
              "security;\n")
    session = session_for(db18, project, mode="yolo", asker=YesAsker())
    dry = run(f"*dry-run {path}", session)
    assert dry.ok and dry.report is not None and dry.report.status == "passed"
    assert db18.scalar("select to_regclass('public.todos')") is None  # a dry run changes nothing
    plan = run(f"*plan {path}", session)
    assert plan.ok and plan.report is not None and plan.report.status == "planned"
    assert (project / plan.report.files["plan_md"]).exists()
    applied = run(f"*apply-migration {path}", session)
    assert applied.ok and applied.report is not None and applied.report.status == "applied"
    assert "public.todos" in user_tables(db18)
    again = run(f"*apply-migration {path}", session)
    assert not again.ok and again.exit_code == 4  # already applied
    smoke = run("*smoke-test --json", session)
    assert smoke.report is not None and smoke.report.task == "smoke-test"
    assert smoke.as_json and '"task": "smoke-test"' in smoke.text


def test_rls_audit_names_tables_without_rls(db18: Db, project: Path) -> None:
    db18.execute("create table open_t (id int); create table closed_t (id int); "
                 "alter table closed_t enable row level security;")
    result = run("*rls-audit", session_for(db18, project))
    assert result.report is not None and result.report.details is not None
    # closed_t has RLS on but no policy: nobody reaches a row, also flagged
    assert result.report.details["rls"]["uncovered_tables"] == ["public.closed_t",
                                                                "public.open_t"]
    assert not result.ok and result.exit_code == 1  # an exposed table without RLS


def test_errors_become_failed_results(project: Path) -> None:
    session = Session(db="postgresql://u:s3cret@127.0.0.1:1/x", project_dir=project)
    result = run("*status", session)
    assert not result.ok and result.exit_code == 2
    assert result.text.startswith("❌") and "s3cret" not in result.text


def test_rollback_latest_undoes_the_last_apply(db18: Db, project: Path) -> None:
    migration(project, "20250101000000_t.sql", "create table t (id int);")
    session = session_for(db18, project, mode="yolo", asker=YesAsker())
    assert run("*apply-migration supabase/migrations/20250101000000_t.sql", session).ok
    result = run("*rollback latest", session)
    assert result.ok, result.report and result.report.error
    assert db18.scalar("select to_regclass('public.t')") is None
    status = run("*status", session)
    assert status.data["pending"] == ["20250101000000_t.sql"]
