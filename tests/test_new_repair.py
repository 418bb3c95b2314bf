"""`dbsage new`, `repair`, `baseline`, `prune` and the project root. Real Supabase-shaped
PostgreSQL as the postgres role where a database is involved."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import migration, run_cli
from supabase_shaped import SupaDb

from dbsage.tools.cli_split import statements_for_history
from dbsage.tools.errors import ConfigError
from dbsage.tools.project import create_migration, find_project_root, prune_snapshots

A = "20250101000000_a.sql"
B = "20250102000000_b.sql"
C = "20250103000000_c.sql"
A_SQL = "-- profiles\ncreate table public.a (id int primary key);\ncreate index a_idx on public.a (id);\n"
B_SQL = ("create or replace function public.f() returns int language sql as $$ select 1 $$;\n"
         "create table public.b (id int references public.a (id));\n")
C_SQL = ("create or replace function public.f() returns int language sql as $$ select 2 $$;\n"
         "alter table public.b add column note text;\n")


def _history(db: SupaDb) -> list[tuple[str, str, list[str]]]:
    with db.connect() as conn:
        if conn.execute("select to_regclass('supabase_migrations.schema_migrations')"
                        ).fetchone() == (None,):
            return []
        rows = conn.execute("select version, name, statements from "
                            "supabase_migrations.schema_migrations order by 1").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


# --- new --------------------------------------------------------------------------------------


def test_new_writes_a_timestamped_file_from_the_template(project: Path) -> None:
    done = run_cli("new", "add_profiles", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert re.fullmatch(r"supabase/migrations/\d{14}_add_profiles\.sql", made["path"])
    now = datetime.now(UTC).strftime("%Y%m%d%H")
    assert made["version"].startswith(now[:8])
    text = (project / made["path"]).read_text()
    assert "-- SET lock_timeout" in text and "-- SET statement_timeout" in text
    assert "dbsage up" in text


def test_new_refuses_bad_names_and_never_overwrites(project: Path) -> None:
    bad = run_cli("new", "Add-Profiles", cwd=project)
    assert bad.returncode == 2 and "lowercase letters, digits and underscores" in bad.stderr
    moment = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    first = create_migration(project, "x", moment)
    second = create_migration(project, "y", moment)  # same second: the next free version
    assert (first.version, second.version) == ("20300101120000", "20300101120001")
    assert first.path.read_text().startswith("-- Migration: x")
    first.path.write_text("mine")
    third = create_migration(project, "x", moment)
    assert third.path != first.path and first.path.read_text() == "mine"
    with pytest.raises(ConfigError):
        create_migration(project, "Nope", moment)


# --- repair -----------------------------------------------------------------------------------


def test_repair_applied_and_reverted_as_the_supabase_cli_does(supa_db: SupaDb,
                                                               project: Path) -> None:
    a = migration(project, A, A_SQL)
    migration(project, B, B_SQL)
    done = run_cli("repair", "--status", "applied", "20250101000000", "20250102000000",
                   "--db", supa_db.url, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20250101000000 20250102000000 => applied" in done.stdout
    hist = _history(supa_db)
    assert [h[:2] for h in hist] == [("20250101000000", "a"), ("20250102000000", "b")]
    assert hist[0][2] == statements_for_history(a.read_text())  # the CLI's own split
    assert supa_db.scalar("select to_regclass('public.a')") is None  # nothing was run
    # applied again: an upsert, not a duplicate
    assert run_cli("repair", "--status", "applied", "20250101000000", "--db", supa_db.url,
                   cwd=project).returncode == 0
    assert len(_history(supa_db)) == 2

    gone = run_cli("repair", "--status", "reverted", "20250102000000", "--db", supa_db.url,
                   cwd=project)
    assert gone.returncode == 0 and "=> reverted" in gone.stdout
    assert [h[0] for h in _history(supa_db)] == ["20250101000000"]
    # `up` now applies b (a is recorded as applied, so it is not run)
    up = run_cli("up", "--mode", "yolo", "--force", "--db", supa_db.url, "--json", cwd=project)
    assert up.returncode != 0  # b references public.a, which the repair never created
    assert "public.a" in json.loads(up.stdout)["error"]["message"]


def test_repair_refuses_a_version_without_a_file_and_bad_usage(supa_db18: SupaDb,
                                                               project: Path) -> None:
    done = run_cli("repair", "--status", "applied", "20990101000000", "--db", supa_db18.url,
                   cwd=project)
    assert done.returncode == 2 and "20990101000000" in done.stderr
    assert run_cli("repair", "20250101000000", "--db", supa_db18.url,
                   cwd=project).returncode == 2  # no --status
    assert run_cli("repair", "--status", "done", "1", cwd=project).returncode == 2
    assert run_cli("repair", "--status", "applied", "v1", cwd=project).returncode == 2


# --- baseline ---------------------------------------------------------------------------------


def _psql(db: SupaDb, sql: str) -> None:
    psql = db.server.bin_dir / "psql"
    subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.url, "-c", sql],
                   check=True, capture_output=True)


def test_baseline_records_what_the_database_already_holds(supa_db: SupaDb,
                                                          project: Path) -> None:
    migration(project, A, A_SQL)
    migration(project, B, B_SQL)
    migration(project, C, C_SQL)
    # Built by hand (the dashboard, a lost history): what a and b make, not c.
    _psql(supa_db, A_SQL + B_SQL)
    preview = run_cli("baseline", "--dry-run", "--json", "--db", supa_db.url, cwd=project)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    data = json.loads(preview.stdout)
    assert data["contained"] == [A, B] and data["not_contained"] == [C]
    assert not data["recorded"] and _history(supa_db) == []

    done = run_cli("repair", "--baseline", "--yes", "--db", supa_db.url, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 3 file(s)" in done.stdout
    assert [h[0] for h in _history(supa_db)] == ["20250101000000", "20250102000000"]
    with supa_db.connect() as conn:
        modes = conn.execute("select distinct mode, status from dbsage.migration_log").fetchall()
    assert modes == [("baseline", "baseline")]
    up = run_cli("up", "--mode", "yolo", "--force", "--db", supa_db.url, "--json", cwd=project)
    assert up.returncode == 0, up.stdout
    assert [f["file"] for f in json.loads(up.stdout)["batch"]] == [C]


def test_baseline_of_a_database_ahead_of_an_early_file(supa_db18: SupaDb,
                                                       project: Path) -> None:
    migration(project, A, A_SQL)
    migration(project, B, B_SQL)
    migration(project, C, C_SQL)
    _psql(supa_db18, A_SQL + B_SQL + C_SQL)  # f() is already at c's version
    done = run_cli("baseline", "--yes", "--json", "--db", supa_db18.url, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["contained"] == [A, B, C]
    assert len(_history(supa_db18)) == 3
    assert run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url,
                   cwd=project).stdout.count("Nothing to apply") == 1


# --- prune ------------------------------------------------------------------------------------


def test_prune_keeps_the_newest_runs(project: Path) -> None:
    snaps = project / "supabase" / "snapshots"
    snaps.mkdir(parents=True)
    for ts in ("20250101000000", "20250102000000", "20250103000000"):
        for suffix in ("before.sql", "after.sql", "diff.patch", "decisions.json"):
            (snaps / f"{ts}_{suffix}").write_text("x")
    (snaps / "20250101000000_data").mkdir()
    (snaps / "20250101000000_data" / "01_public.t.csv").write_text("id\n1\n")
    (snaps / "notes.txt").write_text("mine")
    dry = prune_snapshots(project, 1, dry_run=True)
    assert dry.removed == ("20250101000000", "20250102000000") and (snaps / "20250101000000_data").exists()
    done = run_cli("prune", "--keep", "1", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == ["20250101000000", "20250102000000"]
    assert sorted(p.name for p in snaps.iterdir()) == [
        "20250103000000_after.sql", "20250103000000_before.sql", "20250103000000_decisions.json",
        "20250103000000_diff.patch", "notes.txt"]
    assert run_cli("prune", "--keep", "x", cwd=project).returncode == 2


# --- the project root -------------------------------------------------------------------------


def test_the_root_is_found_upward_and_holds_the_snapshots(supa_db18: SupaDb,
                                                           project: Path) -> None:
    (project / "supabase" / "config.toml").write_text('project_id = "x"\n')
    migration(project, A, "create table public.a (id int);\n")
    inner = project / "supabase" / "migrations"
    assert find_project_root(inner).path == project.resolve()
    assert find_project_root(inner).found_by == "supabase/config.toml"
    done = run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url, cwd=inner)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "supabase" / "snapshots").is_dir()
    assert not (inner / "supabase").exists() and not (inner / ".dbsage").exists()
    # a path relative to where the user is, as the shell completes it
    migration(project, B, "create table public.b (id int);\n"
              "alter table public.b enable row level security;\n")
    one = run_cli("apply", B, "--mode", "yolo", "--db", supa_db18.url, cwd=inner)
    assert one.returncode == 0, one.stdout + one.stderr


def test_outside_a_project_dbsage_says_so_instead_of_making_a_database(tmp_path: Path) -> None:
    lost = tmp_path / "somewhere"
    lost.mkdir()
    for args in (["up", "--mode", "yolo"], ["status"], ["new", "x"]):
        done = run_cli(*args, cwd=lost)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Not in a project" in done.stdout + done.stderr
    assert list(lost.iterdir()) == []  # no .dbsage/, no supabase/


def test_a_git_project_gets_its_gitignore_entries(supa_db18: SupaDb, project: Path) -> None:
    (project / ".git").mkdir()
    (project / ".gitignore").write_text("node_modules/")
    migration(project, A, "create table public.a (id int);\n")
    done = run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url, cwd=project)
    assert done.returncode == 0, done.stdout
    text = (project / ".gitignore").read_text()
    assert text.startswith("node_modules/\n") and ".dbsage/\n" in text
    assert "supabase/snapshots/*_data/\n" in text
    assert "Added .dbsage/, supabase/snapshots/*_data/ to .gitignore" in done.stderr
    migration(project, B, "create table public.b (id int);\n")
    assert run_cli("up", "--mode", "yolo", "--force", "--db", supa_db18.url, cwd=project).returncode == 0
    assert (project / ".gitignore").read_text() == text  # added once
