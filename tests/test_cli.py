"""The `dbsage` command as a user runs it: output, exit codes, JSON, secrets, embedded server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import EXAMPLES, Db
from helpers import migration, run_cli

from dbsage.tools.embedded import embedded_status, stop_embedded


def with_password(db: Db, password: str) -> str:
    # The test clusters trust local connections, so any password is accepted: a real
    # password-bearing URL all the way through psycopg and pg_dump.
    return db.url.replace("postgres@", f"postgres:{password}@", 1)


def test_apply_prints_the_success_block(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_create_todos.sql",
                     (EXAMPLES / "20250101000000_create_todos.sql").read_text())
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", db.url, cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    ts = re.search(r"Timestamp: (\d{14})", out.stdout)
    assert ts, out.stdout
    t = ts.group(1)
    for line in ("✅ Migration Applied Successfully",
                 f"Migration: {path}",
                 f"- Before: supabase/snapshots/{t}_before.sql",
                 f"- After:  supabase/snapshots/{t}_after.sql",
                 f"- Diff:   supabase/snapshots/{t}_diff.patch",
                 "Next steps:", "dbsage smoke-test", "dbsage rls-audit", f"dbsage rollback {t}"):
        assert line in out.stdout
    assert "*rollback" not in out.stdout + out.stderr  # hints in the syntax of the shell


def test_json_report_has_the_documented_fields(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_t.sql",
                     "create table t (id int);\ninsert into t values (1), (2);\n")
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", db18.url, "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "applied"
    assert report["records_affected"] == 2
    assert report["execution_time"] > 0
    assert [(s["line"], s["rows_affected"]) for s in report["statements"]] == [(1, 0), (2, 2)]
    assert all(s["duration_ms"] >= 0 for s in report["statements"])
    assert set(report["files"]) == {"before", "after", "diff", "decisions", "rollback"}
    assert [s["step"] for s in report["steps"]][-1] == "release_lock"


def test_password_never_appears_in_any_output(db18: Db, project: Path) -> None:
    secret = "Sup3rS3cret"
    url = with_password(db18, secret)
    ok = migration(project, "20250101000000_ok.sql", "create table ok (id int);")
    bad = migration(project, "20250101000001_bad.sql", "create table ok (id int);")
    runs = [
        run_cli("apply", str(ok), "--mode", "yolo", "--db", url, cwd=project),
        run_cli("apply", str(ok), "--mode", "yolo", "--db", url, "--json", cwd=project),
        run_cli("apply", str(bad), "--mode", "yolo", cwd=project, env={"DATABASE_URL": url}),
        run_cli("apply", str(bad), "--mode", "yolo", "--json", cwd=project,
                env={"SUPABASE_DB_URL": url}),
        run_cli("apply", str(ok), "--mode", "yolo", "--db",
                f"postgresql://u:{secret}@127.0.0.1:1/x", cwd=project),
        run_cli("apply", str(ok), "--mode", "yolo", "--db",
                f"postgresql://u:{secret}@127.0.0.1:6543/x", cwd=project),
        run_cli("db", "url", "--db", url, cwd=project),
    ]
    assert [r.returncode for r in runs] == [0, 4, 1, 1, 2, 2, 0]
    for r in runs:
        assert secret not in r.stdout + r.stderr
    assert "***" in runs[-1].stdout
    assert "host 127.0.0.1, port 1" in runs[4].stdout
    for f in (project / "supabase" / "snapshots").iterdir():
        assert secret not in f.read_text()
    with db18.connect() as conn:
        rows = conn.execute("select * from dbsage.migration_log").fetchall()
    assert secret not in str(rows)


def test_syntax_error_shows_location_line_caret_and_suggestion(project: Path) -> None:
    path = migration(project, "20250101000000_typo.sql",
                     "create table a (id int);\ncreate tabel b (id int);\n")
    # An unreachable --db proves the file is checked before any connection is tried.
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", "postgresql://u@127.0.0.1:1/x",
                  cwd=project)
    assert out.returncode == 2
    assert f"{path}:2:8: syntax error at or near \"tabel\"" in out.stdout
    lines = out.stdout.splitlines()
    i = lines.index("    create tabel b (id int);")
    assert lines[i + 1] == "           ^"
    assert "Did you mean `table` instead of `tabel`?" in out.stdout
    assert "Cannot connect" not in out.stdout


def test_unknown_mode_and_missing_terminal_are_clear(project: Path) -> None:
    path = migration(project, "20250101000000_x.sql", "select 1;")
    bad_mode = run_cli("apply", str(path), "--mode", "fast", cwd=project)
    assert bad_mode.returncode == 2 and "yolo, interactive, preflight" in bad_mode.stderr
    no_tty = run_cli("apply", str(path), cwd=project)
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr


def test_every_subcommand_has_help_and_accepts_db() -> None:
    for args in (["apply"], ["db", "url"], ["db", "start"], ["db", "stop"]):
        out = run_cli(*args, "--help", cwd=Path.cwd())
        assert out.returncode == 0
        assert "--db" in out.stdout


@pytest.fixture
def embedded_project(project: Path) -> Iterator[Path]:
    """A project whose embedded server is always stopped at the end."""
    try:
        yield project
    finally:
        stop_embedded(project)


def test_without_a_url_the_embedded_server_is_used_and_managed(embedded_project: Path) -> None:
    project = embedded_project
    path = migration(project, "20250101000000_create_todos.sql",
                     (EXAMPLES / "20250101000000_create_todos.sql").read_text())
    out = run_cli("apply", str(path), "--mode", "yolo", cwd=project, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    notice = [ln for ln in out.stderr.splitlines() if "Supabase-compatible" in ln]
    assert len(notice) == 1 and ".dbsage/pgdata" in notice[0]
    assert (project / ".dbsage" / "pgdata" / "PG_VERSION").exists()

    url = run_cli("db", "url", cwd=project)
    assert url.returncode == 0 and url.stdout.strip() == embedded_status(project).url
    # A project with a supabase/ folder gets Supabase's platform, as postgres (no superuser).
    with psycopg.connect(url.stdout.strip(), autocommit=True) as conn:
        row = conn.execute("select current_user, (select rolsuper from pg_roles where rolname "
                           "= current_user), to_regprocedure('auth.uid()') is not null, "
                           "to_regclass('storage.buckets') is not null").fetchone()
    assert row == ("postgres", False, True, True)
    assert run_cli("db", "start", cwd=project).returncode == 0  # already running: fine

    assert run_cli("db", "stop", cwd=project).returncode == 0
    assert not embedded_status(project).running
    assert run_cli("db", "url", cwd=project).returncode == 1
    assert "not running" in run_cli("db", "stop", cwd=project).stdout

    # Data survives a restart: the migration is still recorded as applied.
    assert run_cli("db", "start", cwd=project).returncode == 0
    again = run_cli("apply", str(path), "--mode", "yolo", cwd=project)
    assert again.returncode == 4, again.stdout


def test_a_plain_local_server_outside_a_supabase_project(tmp_path: Path) -> None:
    try:
        started = run_cli("db", "start", "--plain", cwd=tmp_path, timeout=180)
        assert started.returncode == 0, started.stderr
        assert "embedded PostgreSQL" in started.stdout
        status = embedded_status(tmp_path)
        assert status.running and status.kind == "plain"
        (tmp_path / "supabase").mkdir()
        again = run_cli("db", "start", cwd=tmp_path)  # an existing server stays what it is
        assert again.returncode == 0 and embedded_status(tmp_path).kind == "plain"
    finally:
        stop_embedded(tmp_path)


def test_success_block_and_next_steps_come_from_the_task_definition(db18: Db,
                                                                    project: Path) -> None:
    from dbsage.agent.runner import load_definition

    d = load_definition("apply-migration")
    path = migration(project, "20250101000000_t.sql", "create table t (id int);")
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", db18.url, cwd=project)
    assert out.returncode == 0, out.stdout
    assert d.success_output.splitlines()[0] in out.stdout
    for step in d.next_steps:
        assert step.description in out.stdout
