"""`dbsage rls-audit` / `*rls-audit` end to end, on the Supabase-shaped database as the
NON-superuser postgres role (PostgreSQL 18 and 15): the report, the lints, the impersonation
matrix against hand-computed expectations (and that it changes nothing), the exit codes, the
exposed schemas of supabase/config.toml, the CLI and the chat giving the same JSON, and the
post-migration menu's "Check RLS coverage"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import migration, run_cli
from supabase_shaped import SupaDb

from dbsage.agent.commands import Outcome, Session, execute, parse
from dbsage.agent.modes import ScriptedAsker
from dbsage.agent.runner import RunOptions, run_apply

U1 = "00000000-0000-0000-0000-000000000001"
U2 = "00000000-0000-0000-0000-000000000002"

# todos: owner-only reads, owner inserts; no UPDATE/DELETE policy (incomplete coverage)
# notes: RLS off (rls_disabled_in_public, ERROR); a password column (sensitive_columns_exposed)
# vault: RLS on, no policy (nobody but the owner and service_role)
# secret: RLS off, but anon and authenticated have no grant at all
SCHEMA = f"""
create table public.todos (id bigint generated always as identity primary key,
                           user_id uuid not null default auth.uid(), title text not null);
alter table public.todos enable row level security;
create policy "owner reads" on public.todos for select to authenticated
  using ((select auth.uid()) = user_id);
create policy "owner inserts" on public.todos for insert to authenticated
  with check ((select auth.uid()) = user_id);
insert into public.todos (user_id, title) values ('{U1}', 'a'), ('{U1}', 'b'), ('{U2}', 'c');
create table public.notes (id int primary key, body text, password text);
insert into public.notes values (1, 'x', 'hunter2'), (2, 'y', 'swordfish');
create table public.vault (id int primary key);
alter table public.vault enable row level security;
insert into public.vault values (1);
create table public.secret (id int primary key);
revoke all on public.secret from anon, authenticated;
insert into public.secret values (1);
"""

CLEAN = """
create table public.posts (id bigint generated always as identity primary key,
                           user_id uuid not null default auth.uid(), body text);
alter table public.posts enable row level security;
create policy "posts: anyone reads" on public.posts for select to anon, authenticated
  using (true);
create policy "posts: authors write" on public.posts for insert to authenticated
  with check ((select auth.uid()) = user_id);
create policy "posts: authors update" on public.posts for update to authenticated
  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create policy "posts: authors delete" on public.posts for delete to authenticated
  using ((select auth.uid()) = user_id);
"""


def run(line: str, db: SupaDb, project: Path) -> Outcome:
    return execute(parse(line), Session(db=db.url, project_dir=project, interactive=False))


def details(outcome: Outcome) -> dict[str, Any]:
    assert outcome.report is not None and outcome.report.details is not None, outcome.text
    return outcome.report.details


def state(db: SupaDb) -> dict[str, Any]:
    """Every row of the test's tables and every sequence, as the superuser sees them."""
    with db.connect(admin=True) as conn:
        found: dict[str, Any] = {}
        for table in ("todos", "notes", "vault", "secret"):
            found[table] = conn.execute(
                f"select coalesce(string_agg(t::text, '|' order by t::text), '') "
                f"from public.{table} t").fetchone()
        found["sequences"] = conn.execute(
            "select string_agg(format('%s=%s', sequencename, last_value), ',' order by 1) "
            "from pg_sequences where schemaname = 'public'").fetchone()
    return found


def test_the_audit_reports_tables_policies_coverage_and_lints(supa_db: SupaDb,
                                                             project: Path) -> None:
    supa_db.execute(SCHEMA)
    out = run("*rls-audit", supa_db, project)
    assert (out.ok, out.exit_code) == (False, 1)
    d = details(out)
    tables = {t["table"]: t for t in d["rls"]["tables"]}
    assert sorted(tables) == ["public.notes", "public.secret", "public.todos", "public.vault"]
    todos = tables["public.todos"]
    assert (todos["rls_enabled"], todos["rls_forced"], todos["flags"]) == (
        True, False, ["incomplete_coverage"])
    assert todos["covered"] == ["SELECT", "INSERT"] and todos["uncovered"] == ["UPDATE", "DELETE"]
    reads = next(p for p in todos["policies"] if p["name"] == "owner reads")
    assert (reads["command"], reads["permissive"], reads["roles"]) == (
        "SELECT", True, ["authenticated"])
    assert "auth.uid()" in reads["using"] and reads["with_check"] is None
    assert tables["public.notes"]["flags"] == ["rls_off"]
    assert tables["public.vault"]["flags"] == ["rls_on_no_policy"]
    assert d["rls"]["uncovered_tables"] == ["public.notes", "public.secret", "public.vault"]
    summary = d["rls"]["summary"]
    assert (summary["tables"], summary["rls_enabled"], summary["policies"]) == (4, 2, 2)
    lints = {(f["name"], f["object"]) for f in d["lints"]["findings"]}
    assert {("rls_disabled_in_public", "public.notes"),
            ("sensitive_columns_exposed", "public.notes"),
            ("rls_enabled_no_policy", "public.vault")} <= lints
    assert ("rls_disabled_in_public", "public.secret") not in lints  # no API grant: not exposed
    assert d["lints"]["counts"]["ERROR"] == 2
    first = d["lints"]["findings"][0]
    assert first["level"] == "ERROR" and first["why"] and first["fix"] and first["docs"]
    checks = {c["id"]: c["status"] for c in out.report.checks}  # type: ignore[union-attr]
    assert checks == {"connection_established": "pass", "no_error_lints": "fail",
                      "exposed_tables_covered": "fail"}
    assert "access" not in d  # no --as: nobody impersonated


def test_the_impersonation_matrix_matches_what_each_role_may_do(supa_db: SupaDb,
                                                                project: Path) -> None:
    supa_db.execute(SCHEMA)
    before = state(supa_db)
    claims = json.dumps({"sub": U1})
    out = run(f"*rls-audit --as anon,authenticated,service_role --claims '{claims}'",
              supa_db, project)
    access = details(out)["access"]
    assert access["roles"] == ["anon", f"authenticated sub={U1}", "service_role"]
    assert access["total_rows"] == {"public.notes": 2, "public.secret": 1, "public.todos": 3,
                                    "public.vault": 1}
    cells = {(c["table"], c["role"]): c for c in access["cells"]}

    def seen(table: str, role: str) -> tuple[tuple[str, int | None], ...]:
        c = cells[(f"public.{table}", role)]
        return tuple((c[k]["outcome"], c[k]["rows"]) for k in ("select", "insert", "update",
                                                               "delete"))

    user = f"authenticated sub={U1}"
    # todos: anon has grants but no policy; the user sees and may add their own rows only
    assert seen("todos", "anon") == (("allowed", 0), ("denied_rls", None), ("allowed", 0),
                                     ("allowed", 0))
    assert seen("todos", user) == (("allowed", 2), ("allowed", 1), ("allowed", 0),
                                   ("allowed", 0))
    # service_role bypasses RLS; its probe row has no user (auth.uid() is null: NOT NULL)
    assert seen("todos", "service_role") == (("allowed", 3), ("not_testable", None),
                                             ("allowed", 3), ("allowed", 3))
    # notes: RLS off, so the grants decide: everyone reads and changes every row
    for role in ("anon", user, "service_role"):
        assert seen("notes", role) == (("allowed", 2), ("allowed", 1), ("allowed", 2),
                                       ("allowed", 2))
    # vault: RLS on, no policy: nothing for the API roles; service_role bypasses RLS
    assert seen("vault", "anon")[0] == ("allowed", 0) and seen("vault", user)[0] == ("allowed", 0)
    assert seen("vault", "anon")[1][0] == "denied_rls"
    assert seen("vault", "service_role")[0] == ("allowed", 1)
    # secret: no grant to anon or authenticated at all
    for role in ("anon", user):
        assert {c[0] for c in seen("secret", role)} == {"denied_privilege"}
    assert state(supa_db) == before  # every probe was rolled back: no row, no sequence moved
    text = "\n".join(_rendered(out))
    assert "Who can do what" in text and "public.todos" in text and "S:2 I:1 U:0 D:0" in text


def _rendered(out: Outcome) -> list[str]:
    from dbsage.agent.render import _details_lines

    assert out.report is not None and out.report.details is not None
    return _details_lines(out.report.details, out.report.files)


def test_exit_codes(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(CLEAN)
    clean = run("*rls-audit", supa_db, project)
    assert (clean.ok, clean.exit_code) == (True, 0), clean.report
    assert details(clean)["rls"]["uncovered_tables"] == []
    # incomplete coverage is a warning, not a failure
    supa_db.execute('drop policy "posts: authors delete" on public.posts')
    partial = run("*rls-audit", supa_db, project)
    assert partial.exit_code == 0
    assert any("DELETE" in w for w in partial.report.warnings)  # type: ignore[union-attr]
    # RLS on and no policy: an uncovered table, exit 1 without any ERROR-level lint
    supa_db.execute("create table public.hidden (id int); "
                    "alter table public.hidden enable row level security")
    hidden = run("*rls-audit", supa_db, project)
    assert hidden.exit_code == 1 and details(hidden)["lints"]["counts"]["ERROR"] == 0
    supa_db.execute("drop table public.hidden")
    # an ERROR-level lint while every table is covered: a view that runs as its owner
    supa_db.execute("create view public.all_posts as select * from public.posts")
    definer = run("*rls-audit", supa_db, project)
    assert definer.exit_code == 1
    assert details(definer)["rls"]["uncovered_tables"] == []
    assert [f["name"] for f in details(definer)["lints"]["findings"]
            if f["level"] == "ERROR"] == ["security_definer_view"]
    # bad input is refused before anything runs
    refused = run("*rls-audit --as anon --claims '{\"sub\": \"x\"}'", supa_db, project)
    assert refused.exit_code == 2 and "authenticated" in refused.text


def test_exposed_schemas_come_from_config_toml(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute("create schema api; grant usage on schema api to anon, authenticated; "
                    "create table api.open_t (id int); "
                    "grant select on api.open_t to anon, authenticated; " + CLEAN)
    assert run("*rls-audit", supa_db, project).exit_code == 0  # no config.toml: public
    (project / "supabase" / "config.toml").write_text('[api]\nschemas = ["public", "api"]\n')
    out = run("*rls-audit", supa_db, project)
    assert details(out)["rls"]["schemas"] == ["public", "api"]
    assert details(out)["rls"]["uncovered_tables"] == ["api.open_t"] and out.exit_code == 1
    only = run("*rls-audit --exposed-schemas public", supa_db, project)  # the flag wins
    assert details(only)["rls"]["schemas"] == ["public"] and only.exit_code == 0


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The --json document without what differs between two runs (timings)."""
    doc = dict(doc)
    for key in ("execution_time", "apply_time"):
        doc.pop(key, None)
    doc["steps"] = [{k: v for k, v in s.items() if k != "duration_ms"} for s in doc["steps"]]
    doc["checks"] = [{k: v for k, v in c.items() if k != "duration_ms"} for c in doc["checks"]]
    return doc


def test_cli_and_chat_give_the_same_json(supa_db: SupaDb, project: Path) -> None:
    supa_db.execute(SCHEMA)
    args = ["--as", "anon,authenticated", "--claims", json.dumps({"sub": U2}), "--json"]
    cli = run_cli("rls-audit", "--db", supa_db.url, *args, cwd=project)
    chat = run("*rls-audit " + " ".join(f"'{a}'" for a in args), supa_db, project)
    assert cli.returncode == chat.exit_code == 1, cli.stderr
    assert chat.as_json
    assert _stable(json.loads(cli.stdout)) == _stable(json.loads(chat.text))
    human = run_cli("rls-audit", "--db", supa_db.url, cwd=project)
    assert human.returncode == 1
    assert "RLS audit of public" in human.stdout and "rls_disabled_in_public" in human.stdout
    assert "Fix" in human.stdout and "alter table public.notes enable row level security" in (
        human.stdout)


INTERACTIVE = {"confirm_migration_file": "yes", "confirm_database": "yes", "dry_run_done": "yes",
               "confirm_apply": "yes"}


def test_post_migration_menu_check_rls_coverage_runs_the_audit(supa_db: SupaDb,
                                                               project: Path) -> None:
    path = migration(project, "20250101000000_posts.sql", CLEAN)
    asker = ScriptedAsker({**INTERACTIVE, "post_migration_menu": "2"})
    report = run_apply(path, RunOptions(mode="interactive", db=supa_db.url, project_dir=project,
                                        asker=asker))
    assert report.status == "applied", report.error
    assert report.follow_up == "*rls-audit"
    result = report.follow_up_result
    assert result is not None and result["passed"]
    assert {c["id"] for c in result["checks"]} == {"no_error_lints", "exposed_tables_covered"}
    tables = {t["table"]: t for t in result["details"]["rls"]["tables"]}
    assert tables["public.posts"]["covered"] == ["SELECT", "INSERT", "UPDATE", "DELETE"]
    assert "advisor_errors" not in [q.id for q in asker.asked]  # nothing ERROR-level introduced


@pytest.mark.parametrize("as_roles", ["anon", "service_role"])
def test_probing_only_some_roles(supa_db: SupaDb, project: Path, as_roles: str) -> None:
    supa_db.execute(CLEAN)
    access = details(run(f"*rls-audit --as {as_roles}", supa_db, project))["access"]
    assert access["roles"] == [as_roles] and access["tables"] == ["public.posts"]
