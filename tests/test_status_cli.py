"""`dbsage status`: every version with its name, run TS, when, by whom, mode and duration; the
lock holder while a migration runs. Real Supabase-shaped PostgreSQL, as the postgres role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import migration, run_cli
from supabase_shaped import SupaDb

A = "20250101000000_a.sql"
B = "20250102000000_b.sql"
C = "20250103000000_c.sql"


def _status(project: Path, db: SupaDb, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("status", "--json", "--db", db.url, *args, cwd=project)
    return done.returncode, json.loads(done.stdout)


def test_status_lists_each_version_with_its_run(supa_db: SupaDb, project: Path) -> None:
    migration(project, A, "create table public.a (id int);\n")
    migration(project, B, "create table public.b (id int);\n")
    up = run_cli("up", "--mode", "yolo", "--force", "--db", supa_db.url, "--json", cwd=project)
    assert up.returncode == 0, up.stdout
    ts = json.loads(up.stdout)["ts"]
    migration(project, C, "create table public.c (id int);\n")
    code, data = _status(project, supa_db)
    assert code == 0
    rows = {r["version"]: r for r in data["migrations"]}
    a = rows["20250101000000"]
    assert (a["name"], a["state"], a["ts"], a["applied_by"], a["mode"], a["recorded_by"]) == (
        "a", "applied", ts, "postgres", "yolo", "dbsage")
    assert a["applied_at"] and a["duration_ms"] is not None
    assert rows["20250103000000"]["state"] == "pending" and rows["20250103000000"]["ts"] is None
    assert data["pending"] == [C] and data["applied"] == [A, B] and data["lock"] is None

    text = run_cli("status", "--db", supa_db.url, cwd=project).stdout
    assert "run TS" in text and ts in text and "Migration lock: free" in text
    assert "dbsage up" in text  # the next step for the pending file


def test_status_names_the_lock_holder_while_a_migration_runs(supa_db18: SupaDb,
                                                             project: Path) -> None:
    with supa_db18.connect() as other:
        other.execute("set application_name = 'deploy-42'")
        other.execute("select pg_advisory_lock(hashtext('dbsage:migrate'))")
        code, data = _status(project, supa_db18)
        assert code == 0
        assert data["lock"]["application_name"] == "deploy-42" and data["lock"]["pid"]
        text = run_cli("status", "--db", supa_db18.url, cwd=project).stdout
        assert "Migration lock: held by pid" in text and "deploy-42" in text


def test_status_shows_rows_the_cli_wrote_missing_files_and_drift(supa_db18: SupaDb,
                                                                 project: Path) -> None:
    migration(project, A, "create table public.a (id int);\n")
    assert run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url, cwd=project).returncode == 0
    with supa_db18.connect() as conn:  # as `supabase migration repair --status applied` would
        conn.execute("insert into supabase_migrations.schema_migrations (version, name, "
                     "statements) values ('20240101000000', 'gone', '{}'), "
                     "('20250102000000', 'b', '{\"create table public.b (id int)\"}')")
    migration(project, B, "create table public.b (id int);\n")
    (project / "supabase" / "migrations" / A).write_text("create table public.a (id bigint);\n")
    code, data = _status(project, supa_db18)
    assert code == 1  # drift and a missing file are problems
    states = {r["version"]: r["state"] for r in data["migrations"]}
    assert states == {"20240101000000": "missing", "20250101000000": "drifted",
                      "20250102000000": "unverified"}
    cli_row = next(r for r in data["migrations"] if r["version"] == "20250102000000")
    assert cli_row["recorded_by"] == "supabase" and cli_row["ts"] is None
    assert data["missing"] == ["20240101000000"] and data["drifted"] == [A]


def test_status_marks_out_of_order_pending_files(supa_db18: SupaDb, project: Path) -> None:
    migration(project, A, "create table public.a (id int);\n")
    migration(project, C, "create table public.c (id int);\n")
    assert run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url, cwd=project).returncode == 0
    migration(project, B, "create table public.b (id int);\n")
    _, data = _status(project, supa_db18)
    assert data["out_of_order"] == [B] and data["pending"] == [B]
