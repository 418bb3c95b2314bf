"""`dbsage up`: every pending migration, in order, under one lock, with one snapshot pair.

Real PostgreSQL, Supabase-shaped, as the NON-superuser postgres role (tests/supabase_shaped.py);
most tests run the installed `dbsage` as a user does (tests/helpers.run_cli).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Db
from helpers import migration, run_cli
from realism.sets import SETS, RealismSet, psql_command
from supabase_shaped import SupaDb, SupaServer, _new_database

from dbsage.agent.commands import Session, execute, parse
from dbsage.agent.modes import ScriptedAsker, YesAsker
from dbsage.agent.runner import RunOptions, run_named
from dbsage.tools.cli_split import statements_for_history

A = "20250101000000_a.sql"
B = "20250102000000_b.sql"
C = "20250103000000_c.sql"
# Each file records the session it ran on and the advisory locks that session held.
SEEN = ("insert into public.seen select {n}, pg_backend_pid(), (select count(*) from pg_locks "
        "where locktype = 'advisory' and granted and pid = pg_backend_pid());\n")


def _up(project: Path, db: SupaDb, *args: str) -> subprocess.CompletedProcess[str]:
    # --force: these files make public tables without RLS, which the advisor gate refuses
    # (rls_disabled_in_public); the gate itself is tested in tests/test_up_advisors.py.
    return run_cli("up", "--mode", "yolo", "--force", "--db", db.url, *args, cwd=project)


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def _versions(db: SupaDb) -> list[str]:
    with db.connect() as conn:
        if conn.execute("select to_regclass('supabase_migrations.schema_migrations')"
                        ).fetchone() == (None,):
            return []
        rows = conn.execute("select version from supabase_migrations.schema_migrations "
                            "order by version").fetchall()
    return [r[0] for r in rows]


def _three(project: Path, *, bad_second: bool = False) -> None:
    migration(project, A, "create table public.seen (n int, pid int, locks int);\n"
              + SEEN.format(n=1) + "create table public.a (id bigint primary key);\n")
    second = ("create table public.b (id bigint primary key, a_id bigint references "
              "public.nope (id));\n" if bad_second else
              "create table public.b (id bigint primary key, a_id bigint references "
              "public.a (id));\n")
    migration(project, B, SEEN.format(n=2) + second)
    migration(project, C, SEEN.format(n=3) + "alter table public.a add column note text;\n")


def test_up_applies_every_pending_file_in_order_under_one_lock(supa_db: SupaDb,
                                                               project: Path) -> None:
    _three(project)
    done = _up(project, supa_db, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = _report(done)
    assert report["status"] == "applied"
    assert [f["file"] for f in report["batch"]] == [A, B, C]
    assert [f["status"] for f in report["batch"]] == ["applied"] * 3
    assert _versions(supa_db) == ["20250101000000", "20250102000000", "20250103000000"]
    # one session, holding exactly one advisory lock (the migration lock) in every file
    with supa_db.connect() as conn:
        rows = conn.execute("select n, pid, locks from public.seen order by n").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert len({r[1] for r in rows}) == 1 and {r[2] for r in rows} == {1}
        log = conn.execute("select distinct ts, mode from dbsage.migration_log").fetchall()
        recorded = conn.execute("select version, statements from "
                                "supabase_migrations.schema_migrations order by 1").fetchall()
    ts = report["ts"]
    assert log == [(ts, "yolo")]  # one run TS for the whole batch
    for (_, statements), name in zip(recorded, (A, B, C), strict=True):
        text = (project / "supabase" / "migrations" / name).read_text()
        assert statements == statements_for_history(text)  # exactly the Supabase CLI's split
    snaps = sorted(p.name for p in (project / "supabase" / "snapshots").iterdir())
    assert snaps == [f"{ts}_after.sql", f"{ts}_before.sql", f"{ts}_decisions.json",
                     f"{ts}_diff.patch"]  # one snapshot pair for the batch
    diff = (project / "supabase" / "snapshots" / f"{ts}_diff.patch").read_text()
    assert "+CREATE TABLE public.a" in diff and "+CREATE TABLE public.b" in diff
    assert supa_db.scalar("select count(*) from pg_locks where locktype = 'advisory'") == 0

    again = _up(project, supa_db)
    assert again.returncode == 0 and "Nothing to apply" in again.stdout
    assert len(list((project / "supabase" / "snapshots").iterdir())) == 4  # nothing new


def test_a_second_up_while_one_runs_is_refused(supa_db18: SupaDb, project: Path) -> None:
    _three(project)
    with supa_db18.connect() as other:
        other.execute("select pg_advisory_lock(hashtext('dbsage:migrate'))")
        done = _up(project, supa_db18)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "Another migration is running" in done.stdout
        status = run_cli("status", "--json", "--db", supa_db18.url, cwd=project)
        assert _report(status)["lock"]["pid"] is not None
    assert _versions(supa_db18) == []


def test_up_stops_at_the_failing_file_and_says_which_committed(supa_db: SupaDb,
                                                               project: Path) -> None:
    _three(project, bad_second=True)
    done = _up(project, supa_db, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = _report(done)
    assert [f["status"] for f in report["batch"]] == ["applied", "failed", "not_run"]
    error = report["error"]
    assert error["committed"] == [A] and error["failed"] == B and error["not_run"] == [C]
    assert f"{B}:2" in error["message"] and "Committed before it" in error["message"]
    assert _versions(supa_db) == ["20250101000000"]
    assert supa_db.scalar("select to_regclass('public.b')") is None
    # the run's snapshots describe what it did commit
    assert {"before", "after", "diff"} <= set(report["files"])
    # fixed, the rest applies
    migration(project, B, "create table public.b (id bigint primary key);\n")
    assert _up(project, supa_db).returncode == 0
    assert _versions(supa_db)[-1] == "20250103000000"


def test_a_batch_rolls_back_file_by_file(supa_db18: SupaDb, project: Path) -> None:
    migration(project, A, "create table public.a (id bigint primary key);\n"
              "alter table public.a enable row level security;\n")
    assert _up(project, supa_db18).returncode == 0
    migration(project, B, "create table public.b (id bigint primary key);\n"
              "alter table public.b enable row level security;\n")
    migration(project, C, "alter table public.a add column note text;\n")
    done = _up(project, supa_db18, "--rollback-plans")
    assert done.returncode == 0, done.stdout
    assert "rollback --to 20250101000000" in done.stderr
    last = run_cli("rollback", "latest", "--mode", "yolo", "--db", supa_db18.url, cwd=project)
    assert last.returncode == 0, last.stdout + last.stderr
    assert _versions(supa_db18) == ["20250101000000", "20250102000000"]
    assert supa_db18.scalar("select count(*) from information_schema.columns where "
                            "table_name = 'a' and column_name = 'note'") == 0
    rest = run_cli("rollback", "--to", "20250101000000", "--mode", "yolo", "--db",
                   supa_db18.url, cwd=project)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert _versions(supa_db18) == ["20250101000000"]
    assert supa_db18.scalar("select to_regclass('public.b')") is None


def test_without_rollback_plans_a_rollback_refuses_and_changes_nothing(
        supa_db18: SupaDb, project: Path) -> None:
    _three(project)
    done = _up(project, supa_db18)
    assert done.returncode == 0 and "--rollback-plans" in done.stderr
    undo = run_cli("rollback", "latest", "--mode", "yolo", "--allow-data-loss", "--db",
                   supa_db18.url, cwd=project)
    assert undo.returncode != 0
    assert len(_versions(supa_db18)) == 3
    assert supa_db18.scalar("select count(*) from information_schema.columns where "
                            "table_name = 'a' and column_name = 'note'") == 1


def test_atomic_applies_all_in_one_transaction_or_none(supa_db: SupaDb, project: Path) -> None:
    _three(project, bad_second=True)
    failed = _up(project, supa_db, "--atomic", "--json")
    assert failed.returncode == 1
    report = _report(failed)
    assert [f["status"] for f in report["batch"]] == ["rolled_back", "failed", "not_run"]
    assert "none of the 3 file(s) is applied" in report["error"]["message"]
    assert _versions(supa_db) == [] and supa_db.scalar("select to_regclass('public.a')") is None

    migration(project, B, "create table public.b (id bigint primary key);\n")
    done = _up(project, supa_db, "--atomic", "--json")
    assert done.returncode == 0, done.stdout
    assert len(_versions(supa_db)) == 3
    # one transaction: every history row has the same xmin
    assert supa_db.scalar("select count(distinct xmin::text) from "
                          "supabase_migrations.schema_migrations") == 1


def test_dry_run_runs_the_batch_in_one_rolled_back_transaction(supa_db: SupaDb,
                                                                project: Path) -> None:
    _three(project)
    done = _up(project, supa_db, "--dry-run", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = _report(done)
    assert report["task"] == "up-dry-run" and report["status"] == "passed"
    assert [f["status"] for f in report["batch"]] == ["passed"] * 3
    assert _versions(supa_db) == [] and supa_db.scalar("select to_regclass('public.a')") is None
    assert supa_db.scalar("select count(*) from dbsage.dry_run_log where passed") == 3

    migration(project, C, "alter table public.nope add column x int;\n")
    bad = _up(project, supa_db, "--dry-run", "--json")
    assert bad.returncode == 1
    report = _report(bad)
    assert [f["status"] for f in report["batch"]] == ["passed", "passed", "failed"]
    assert C in report["error"]["message"]
    assert supa_db.scalar("select to_regclass('public.a')") is None


def test_to_stops_after_that_version(supa_db18: SupaDb, project: Path) -> None:
    _three(project)
    done = _up(project, supa_db18, "--to", "20250102000000")
    assert done.returncode == 0, done.stdout
    assert _versions(supa_db18) == ["20250101000000", "20250102000000"]
    assert run_cli("up", "--to", "20990101000000", "--db", supa_db18.url,
                   cwd=project).returncode == 2  # no such file: a typo, not "nothing to do"


def test_out_of_order_files_are_refused_unless_included(supa_db18: SupaDb,
                                                        project: Path) -> None:
    migration(project, A, "create table public.a (id int);\n")
    migration(project, C, "create table public.c (id int);\n")
    assert _up(project, supa_db18).returncode == 0
    migration(project, B, "create table public.b (id int);\n")
    refused = _up(project, supa_db18)
    assert refused.returncode == 6, refused.stdout
    assert B in refused.stdout and "--include-all" in refused.stdout
    assert _up(project, supa_db18, "--include-all").returncode == 0
    assert _versions(supa_db18) == ["20250101000000", "20250102000000", "20250103000000"]


def test_an_applied_version_without_its_file_is_refused(supa_db18: SupaDb,
                                                        project: Path) -> None:
    first = migration(project, A, "create table public.a (id int);\n")
    assert _up(project, supa_db18).returncode == 0
    first.unlink()
    migration(project, B, "create table public.b (id int);\n")
    refused = _up(project, supa_db18)
    assert refused.returncode == 6
    assert "repair --status reverted 20250101000000" in refused.stdout


def test_a_syntax_error_is_reported_before_connecting(project: Path) -> None:
    migration(project, A, "create table public.a (id int);\n")
    migration(project, B, "create tabel public.b (id int);\n")
    done = run_cli("up", "--mode", "yolo", "--db", "postgresql://nobody@127.0.0.1:1/x",
                   cwd=project)
    assert done.returncode == 2
    assert f"{B}:1" in done.stdout and "tabel" in done.stdout
    assert "connect" not in done.stdout.lower().split("hint")[0]


def test_settings_and_temporary_tables_do_not_leak_between_files(supa_db18: SupaDb,
                                                                 project: Path) -> None:
    migration(project, A, "select set_config('search_path', '', false);\n"
              "create temporary table scratch (id int);\n"
              "create table public.a (id int);\n")
    migration(project, B, "create table b (id int);\ncreate temporary table scratch (id int);\n")
    done = _up(project, supa_db18)
    assert done.returncode == 0, done.stdout
    assert supa_db18.scalar("select to_regclass('public.b')::text") == "b"


def test_concurrently_files_run_outside_a_transaction_and_refuse_atomic(
        supa_db18: SupaDb, project: Path) -> None:
    migration(project, A, "create table public.a (id int, name text);\n")
    migration(project, B, "create index concurrently a_name_idx on public.a (name);\n")
    refused = _up(project, supa_db18, "--atomic")
    assert refused.returncode == 6 and B in refused.stdout
    done = _up(project, supa_db18)
    assert done.returncode == 0, done.stdout
    assert supa_db18.scalar("select indisvalid from pg_index where indexrelid = "
                            "'public.a_name_idx'::regclass") is True


def test_destructive_files_need_the_flag_and_their_data_is_saved(supa_db18: SupaDb,
                                                                 project: Path) -> None:
    migration(project, A, "create table public.a (id int primary key, note text);\n"
              "insert into public.a values (1, 'x'), (2, 'y');\n")
    assert _up(project, supa_db18).returncode == 0
    migration(project, B, "alter table public.a drop column note;\n")
    refused = _up(project, supa_db18)
    assert refused.returncode == 6 and "destroys data" in refused.stdout
    done = _up(project, supa_db18, "--allow-destructive", "--json")
    assert done.returncode == 0, done.stdout
    report = _report(done)
    saved = project / report["files"]["data"] / "20250102000000_b"
    assert (saved / "manifest.json").exists()
    assert report["batch"][0]["saved_rows"] == 2


def test_interactive_asks_once_for_the_whole_batch(supa_db18: SupaDb, project: Path) -> None:
    _three(project)
    asker = ScriptedAsker({"confirm_database": "yes", "dry_run_done": "yes",
                           "confirm_batch": "yes",
                           "post_migration_menu": "3"})
    session = Session(db=supa_db18.url, project_dir=project, asker=asker)
    outcome = execute(parse("*up"), session)
    assert outcome.ok, outcome.report and outcome.report.error
    asked = [q.id for q in asker.asked]
    assert asked == ["confirm_database", "dry_run_done", "confirm_batch",
                     "post_migration_menu"]  # once for the batch, not once per file
    plan = next(q for q in asker.asked if q.id == "confirm_batch").detail
    assert all(name in plan for name in (A, B, C)) and "ACCESS EXCLUSIVE" in plan


def test_declining_the_batch_dry_run_question_offers_one_now(db18: Db,
                                                              project: Path) -> None:
    """'Has a dry-run passed?' defaults to no; no offers to run the batch's dry-run now (yes:
    it runs, then the batch applies); declining that too stops with nothing applied. (Plain
    PostgreSQL: no advisor gate dry-runs the batch as well, so each file is logged once.)"""
    _three(project)
    answers = {"confirm_database": "yes", "dry_run_done": "no", "run_dry_run_now": "no"}
    stopped = execute(parse("*up"), Session(db=db18.url, project_dir=project,
                                            asker=ScriptedAsker(answers)))
    assert not stopped.ok and stopped.report is not None
    assert "up --dry-run" in stopped.report.error["message"] and _versions(db18) == []
    asker = ScriptedAsker({**answers, "run_dry_run_now": "yes", "confirm_batch": "yes",
                           "post_migration_menu": "4"})
    outcome = execute(parse("*up"), Session(db=db18.url, project_dir=project, asker=asker))
    assert outcome.ok, outcome.report and outcome.report.error
    gate = next(q for q in asker.asked if q.id == "dry_run_done")
    assert gate.default == "no"
    assert [q.id for q in asker.asked][:3] == ["confirm_database", "dry_run_done",
                                               "run_dry_run_now"]
    assert len(_versions(db18)) == 3
    assert db18.scalar("select count(*) from dbsage.dry_run_log where passed") == 3


def test_yes_runs_the_batch_dry_run_instead_of_claiming_one(db18: Db, project: Path) -> None:
    _three(project)
    outcome = execute(parse("*up --yes --mode interactive"),
                      Session(db=db18.url, project_dir=project))
    assert outcome.ok and outcome.report is not None, outcome.text
    gate = next(d for d in outcome.report.decisions if d["point"] == "dry_run_done")
    assert gate["answer"] == "run" and gate["by"] == "rule" and "--yes" in gate["why"]
    assert db18.scalar("select count(*) from dbsage.dry_run_log where passed") == 3
    assert len(_versions(db18)) == 3


def test_preflight_plans_the_batch_and_asks_everything_up_front(supa_db18: SupaDb,
                                                                 project: Path) -> None:
    _three(project)
    order: list[str] = []
    asker = ScriptedAsker({"confirm_database": "yes",
                           "confirm_batch": "yes", "post_migration_menu": "3"},
                          on_ask=lambda q: order.append(f"{q.id}:{len(_versions(supa_db18))}"))
    session = Session(db=supa_db18.url, project_dir=project, asker=asker, mode="preflight")
    outcome = execute(parse("*up --force"), session)  # public tables without RLS (see _up)
    assert outcome.ok, outcome.report and outcome.report.error
    assert outcome.report is not None
    plan = json.loads((project / outcome.report.files["plan_json"]).read_text())
    assert [f["file"] for f in plan["files"]] == [A, B, C] and plan["dry_run"]["passed"]
    # every question before anything was applied (0 versions then), the menu after
    assert [x for x in order if not x.startswith("post")] == [
        "confirm_database:0", "confirm_batch:0"]
    assert len(_versions(supa_db18)) == 3


def test_apply_migration_without_a_path_applies_every_pending_file(supa_db18: SupaDb,
                                                                   project: Path) -> None:
    _three(project)
    session = Session(db=supa_db18.url, project_dir=project, asker=YesAsker(), mode="yolo")
    outcome = execute(parse("*apply-migration --force"), session)  # see _up
    assert outcome.ok and outcome.command == "up", outcome.text
    assert len(_versions(supa_db18)) == 3


# --- the realism sets: `dbsage up` ends where psql file by file ends ------------------------


def _dump(url: str, server: SupaServer) -> str:
    out = subprocess.run([str(server.bin_dir / "pg_dump"), "--schema-only", "--no-owner",
                          "-n", "public", "--restrict-key=x", "-d", url],
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("realism", SETS, ids=lambda s: s.name)
def test_up_applies_each_realism_set_as_psql_does(realism: RealismSet, supa_server: SupaServer,
                                                 tmp_path: Path) -> None:
    gen_psql, gen_up = _new_database(supa_server), _new_database(supa_server)
    by_psql, by_up = next(gen_psql), next(gen_up)
    try:
        for path in realism.migrations:
            cmd = psql_command(by_psql.url, path)
            cmd[0] = str(supa_server.bin_dir / "psql")
            assert subprocess.run(cmd, capture_output=True).returncode == 0, path.name
        project = tmp_path / realism.name
        shutil.copytree(realism.root, project)
        opts = RunOptions(mode="yolo", db=by_up.url, project_dir=project, asker=YesAsker(),
                          flags={"allow_destructive": True})
        report = run_named("up", opts)
        assert report.exit_code == 0, report.error
        assert [f["status"] for f in report.batch or []] == ["applied"] * len(realism.migrations)
        assert _dump(by_psql.url, supa_server) == _dump(by_up.url, supa_server)
        assert len(_versions(by_up)) == len(realism.migrations)
    finally:
        for gen in (gen_psql, gen_up):
            gen.close()


@pytest.mark.parametrize("atomic", [False, True], ids=["each", "atomic"])
def test_a_files_own_set_does_not_switch_dbsages_lock_timeout_off(
        atomic: bool, supa_db18: SupaDb, project: Path) -> None:
    migration(project, A, "create table public.t (file text, v text);\n")
    migration(project, B, "SET lock_timeout = 0;\n"  # as a pg_dump header has it
              "insert into public.t select 'b', current_setting('lock_timeout');\n")
    migration(project, C, "insert into public.t select 'c', current_setting('lock_timeout');\n")
    done = _up(project, supa_db18, "--lock-timeout", "750ms", *(["--atomic"] if atomic else []))
    assert done.returncode == 0, done.stdout
    with supa_db18.connect() as conn:
        rows = conn.execute("select file, v from public.t order by 1").fetchall()
    assert rows == [("b", "750ms"), ("c", "750ms")]
