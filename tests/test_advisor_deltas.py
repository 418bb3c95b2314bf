"""Advisor deltas: the Supabase advisor lints evaluated before a migration and inside its
dry-run transaction after its statements, in `dbsage dry-run`, `dbsage plan` and pre-flight;
and the apply gate: an ERROR-level lint the migration introduces stops yolo unless --force
(logged), is a question in interactive mode, and stops pre-flight unless --force. On the
Supabase-shaped database as the NON-superuser postgres role (18 and 15); plain PostgreSQL
shows the delta but is never gated."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Db
from helpers import migration, run_cli
from supabase_shaped import SupaDb

from dbsage.agent.commands import Session, execute, parse
from dbsage.agent.modes import ScriptedAsker
from dbsage.agent.report import RunReport
from dbsage.agent.runner import RunOptions, run_apply, run_dry_run_task

BASE = """
create table public.todos (id bigint generated always as identity primary key,
                           user_id uuid not null default auth.uid(), title text);
alter table public.todos enable row level security;
create policy "todos: owner" on public.todos for all to authenticated
  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create table public.orders (id bigint primary key, todo_id bigint references public.todos (id));
alter table public.orders enable row level security;
create policy "orders: read" on public.orders for select to authenticated using (true);
"""
# disables RLS on todos (introduces rls_disabled_in_public and, as todos has a policy,
# policy_exists_rls_disabled: both ERROR) and indexes the foreign key of orders (fixes
# unindexed_foreign_keys, INFO)
RISKY = """alter table public.todos disable row level security;
create index orders_todo_id_idx on public.orders (todo_id);
"""
SAFE = "create index orders_todo_id_idx on public.orders (todo_id);\n"


def _exists(db: SupaDb | Db, name: str) -> bool:
    return db.scalar("select to_regclass(%s) is not null", (name,)) is True


def _rls(db: SupaDb) -> bool:
    return bool(db.scalar("select relrowsecurity from pg_class where oid = 'public.todos'::regclass"))


def applied_versions(db: SupaDb) -> list[str]:
    if db.scalar("select to_regclass('supabase_migrations.schema_migrations')") is None:
        return []
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            "select version from supabase_migrations.schema_migrations order by 1")]


def _advisors(report: RunReport) -> dict:  # type: ignore[type-arg]
    assert report.details is not None and "advisors" in report.details, report.error
    return report.details["advisors"]


def test_dry_run_shows_what_the_migration_introduces_and_fixes(supa_db: SupaDb,
                                                             project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_risky.sql", RISKY)
    report = run_dry_run_task(path, RunOptions(mode="yolo", db=supa_db.url, project_dir=project))
    assert report.status == "passed", report.error
    delta = _advisors(report)
    assert delta["summary"] == (
        "introduces rls_disabled_in_public on public.todos, policy_exists_rls_disabled on "
        "public.todos; fixes unindexed_foreign_keys on public.orders (orders_todo_id_fkey)")
    assert [(f["level"], f["name"], f["object"]) for f in delta["introduced"]] == [
        ("ERROR", "rls_disabled_in_public", "public.todos"),
        ("ERROR", "policy_exists_rls_disabled", "public.todos")]
    assert "enable row level security" in delta["introduced"][0]["fix"]
    assert [(f["name"], f["object"]) for f in delta["fixed"]] == [
        ("unindexed_foreign_keys", "public.orders")]
    assert delta["introduced_errors"] == ["rls_disabled_in_public on public.todos",
                                          "policy_exists_rls_disabled on public.todos"]
    assert any("introduces ERROR-level lint(s): rls_disabled_in_public on public.todos" in w
               for w in report.warnings)
    assert _rls(supa_db) and not _exists(supa_db, "public.orders_todo_id_idx")  # rolled back


def test_plan_writes_the_delta_into_its_json_and_markdown(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_risky.sql", RISKY)
    out = execute(parse(f"*plan {path} --json"), Session(db=supa_db.url, project_dir=project))
    assert out.ok, out.text
    report = out.report
    assert report is not None
    plan = json.loads((project / report.files["plan_json"]).read_text())
    assert plan["advisors"]["summary"].startswith("introduces rls_disabled_in_public on "
                                                  "public.todos, policy_exists_rls_disabled")
    markdown = (project / report.files["plan_md"]).read_text()
    assert "## Advisor lints" in markdown and "**ERROR rls_disabled_in_public**" in markdown
    assert json.loads(out.text)["details"]["advisors"] == plan["advisors"]
    safe = migration(project, "20250102000000_safe.sql", SAFE)
    clean = execute(parse(f"*plan {safe}"), Session(db=supa_db.url, project_dir=project))
    assert clean.report is not None
    assert _advisors(clean.report)["summary"] == (
        "fixes unindexed_foreign_keys on public.orders (orders_todo_id_fkey)")
    assert _advisors(clean.report)["introduced_errors"] == []


def test_yolo_apply_stops_on_an_introduced_error_lint_unless_forced(supa_db: SupaDb,
                                                                    project: Path) -> None:
    supa_db.execute(BASE)
    migration(project, "20250101000000_risky.sql", RISKY)
    rel = "supabase/migrations/20250101000000_risky.sql"
    refused = run_cli("apply", rel, "--mode", "yolo", "--db", supa_db.url, cwd=project)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "introduces ERROR-level advisor lint(s): rls_disabled_in_public on public.todos" in (
        refused.stdout)
    assert "--force" in refused.stdout
    assert _rls(supa_db) and not _exists(supa_db, "public.orders_todo_id_idx")
    assert "20250101000000" not in applied_versions(supa_db)
    forced = run_cli("apply", rel, "--mode", "yolo", "--force", "--json", "--db", supa_db.url,
                     cwd=project)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    report = json.loads(forced.stdout)
    assert report["status"] == "applied" and not _rls(supa_db)
    assert applied_versions(supa_db) == ["20250101000000"]
    gate = [d for d in report["decisions"] if d["point"] == "advisor_errors"]
    assert [d["answer"] for d in gate] == ["skipped", "yes"]  # the checkpoint, then the rule
    assert "allowed by --force" in gate[-1]["why"]
    logged = json.loads((project / report["files"]["decisions"]).read_text())["decisions"]
    assert gate[-1] in logged
    assert any("Applied although it introduces ERROR-level lint(s)" in w
               for w in report["warnings"])


def test_yolo_applies_what_introduces_no_error_lint(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_safe.sql", SAFE)
    report = run_apply(path, RunOptions(mode="yolo", db=supa_db.url, project_dir=project))
    assert report.status == "applied", report.error
    assert _exists(supa_db, "public.orders_todo_id_idx")


INTERACTIVE = {"confirm_migration_file": "yes", "confirm_database": "yes", "dry_run_done": "yes",
               "confirm_apply": "yes", "post_migration_menu": "4"}


def test_interactive_asks_and_no_stops_before_anything_is_applied(supa_db: SupaDb,
                                                                  project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_risky.sql", RISKY)
    asker = ScriptedAsker({**INTERACTIVE, "advisor_errors": "no"})
    report = run_apply(path, RunOptions(mode="interactive", db=supa_db.url, project_dir=project,
                                        asker=asker))
    assert report.status == "refused" and report.exit_code == 6
    question = next(q for q in asker.asked if q.id == "advisor_errors")
    assert "rls_disabled_in_public on public.todos" in question.detail
    assert "enable row level security" in question.detail  # its fix is shown with it
    assert "confirm_apply" not in [q.id for q in asker.asked]  # stopped before
    assert _rls(supa_db) and not _exists(supa_db, "public.orders_todo_id_idx")
    yes = ScriptedAsker({**INTERACTIVE, "advisor_errors": "yes"})
    applied = run_apply(path, RunOptions(mode="interactive", db=supa_db.url, project_dir=project,
                                         asker=yes))
    assert applied.status == "applied", applied.error
    assert not _rls(supa_db) and _exists(supa_db, "public.orders_todo_id_idx")


def test_interactive_asks_nothing_more_when_nothing_error_level_is_introduced(
        supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_safe.sql", SAFE)
    asker = ScriptedAsker(INTERACTIVE)
    report = run_apply(path, RunOptions(mode="interactive", db=supa_db.url, project_dir=project,
                                        asker=asker))
    assert report.status == "applied", report.error
    assert "advisor_errors" not in [q.id for q in asker.asked]
    logged = [d for d in report.decisions if d["point"] == "advisor_errors"]
    assert logged and logged[0]["answer"] == "yes" and "no ERROR-level lint" in logged[0]["why"]


def test_preflight_stops_unless_forced(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(BASE)
    path = migration(project, "20250101000000_risky.sql", RISKY)
    answers = {"confirm_migration_file": "yes", "confirm_database": "yes", "confirm_apply": "yes"}
    stopped = run_apply(path, RunOptions(mode="preflight", db=supa_db.url, project_dir=project,
                                         asker=ScriptedAsker(answers)))
    assert stopped.status == "refused" and stopped.exit_code == 6
    assert "The plan shows this migration introduces ERROR-level advisor lint(s)" in (
        stopped.error or {}).get("message", "")
    assert _rls(supa_db)
    forced = run_apply(path, RunOptions(mode="preflight", db=supa_db.url, project_dir=project,
                                        asker=ScriptedAsker(answers), flags={"force": True}))
    assert forced.status == "applied", forced.error
    assert not _rls(supa_db)


def test_plain_postgresql_shows_the_delta_but_does_not_gate(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);\n")
    dry = run_dry_run_task(path, RunOptions(mode="yolo", db=db18.url, project_dir=project))
    assert _advisors(dry)["introduced_errors"] == ["rls_disabled_in_public on public.t"]
    assert not any("Applying it stops" in w for w in dry.warnings)  # no API roles: no gate
    applied = run_apply(path, RunOptions(mode="yolo", db=db18.url, project_dir=project))
    assert applied.status == "applied", applied.error
    assert _exists(db18, "public.t")
