"""A dry-run never acts outside its transaction (issue 13): statements that act on the database
host (COPY ... TO PROGRAM, COPY ... TO a server file, ...) are not run by any dry-run
(`dbsage dry-run`, `plan`, interactive apply's dry-run, `up --dry-run`) and are reported as
"not run in the dry-run: acts on the server"; the statements after them still run; one apply
runs them once. On the Supabase-shaped database (PostgreSQL 18 and 15) as postgres, granted
pg_execute_server_program and pg_write_server_files for the test (roles are per cluster, and
each pytest worker runs its own clusters one test at a time)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli
from helpers import run_cli_json as cli
from supabase_shaped import SupaDb

from dbsage.tools.analyze import STATUS_ACTS_ON_SERVER

ROLES = "pg_execute_server_program, pg_write_server_files"


@pytest.fixture
def host_dir(supa_db: SupaDb) -> Iterator[Path]:
    """A folder the server's user may write to, and postgres granted the roles that let it
    run programs and write files there."""
    folder = Path(tempfile.mkdtemp(prefix="dbsage-host-"))
    os.chmod(folder, 0o777)
    supa_db.execute(f"grant {ROLES} to postgres", admin=True)
    try:
        yield folder
    finally:
        supa_db.execute(f"revoke {ROLES} from postgres", admin=True)
        shutil.rmtree(folder, ignore_errors=True)


def host_sql(folder: Path, tail: str = "") -> str:
    return ("create table public.t (id int primary key);\n"
            "alter table public.t enable row level security;\n"
            f"copy (select 1) to program 'cat >> {folder}/program.txt';\n"
            f"copy (select 1) to '{folder}/file.csv';\n"
            "insert into public.t values (1);\n" + tail)


def write(project: Path, sql: str, version: str = "20250101000000") -> Path:
    path = project / "supabase" / "migrations" / f"{version}_host.sql"
    path.write_text(sql)
    return path


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_no_dry_run_runs_them_and_one_apply_runs_them_once(
        supa_db: SupaDb, project: Path, host_dir: Path) -> None:
    path = write(project, host_sql(host_dir))
    program, file = host_dir / "program.txt", host_dir / "file.csv"

    rc, report, out = cli(project, "dry-run", str(path), "--db", supa_db.url)
    assert rc == 0, out
    statuses = [s["status"] for s in report["statements"]]
    assert statuses == ["ok", "ok", STATUS_ACTS_ON_SERVER, STATUS_ACTS_ON_SERVER, "ok"]
    assert report["statements"][4]["rows_affected"] == 1  # the statement after them ran
    said = [w for w in report["warnings"] if STATUS_ACTS_ON_SERVER in w]
    assert [w.split(":")[0] for w in said] == ["line 3", "line 4"]
    assert "runs a shell command" in said[0] and "writes the file" in said[1]
    assert not program.exists() and not file.exists()
    text = run_cli("dry-run", str(path), "--db", supa_db.url, cwd=project)
    assert text.returncode == 0 and "⊘" in text.stdout, text.stdout + text.stderr
    assert not program.exists()

    rc, plan, out = cli(project, "plan", str(path), "--db", supa_db.url)
    assert rc == 0, out
    assert any("acts on the database host" in w and "line 3" in w for w in plan["warnings"])
    assert not program.exists() and not file.exists()

    rc, batch, out = cli(project, "up", "--dry-run", "--db", supa_db.url)
    assert rc == 0, out
    assert [s["status"] for s in batch["statements"]].count(STATUS_ACTS_ON_SERVER) == 2
    assert sum(STATUS_ACTS_ON_SERVER in w for w in batch["warnings"]) == 2
    assert any("acts on the database host" in w for w in batch["warnings"])
    assert not program.exists() and not file.exists()

    # interactive with --yes: a dry-run first (none on record for this checksum? the one above
    # is; edit the file's text so it is not), then the apply
    path.write_text(host_sql(host_dir) + "-- again\n")
    rc, applied, out = cli(project, "apply", str(path), "--mode", "interactive", "--yes",
                           "--db", supa_db.url)
    assert rc == 0, out
    assert any("acts on the database host" in w for w in applied["warnings"])
    assert lines(program) == 1 and file.read_text() == "1\n"  # once, by the apply
    assert supa_db.scalar("select count(*) from public.t") == 1


def test_a_failure_after_them_is_still_found(supa_db: SupaDb, project: Path,
                                             host_dir: Path) -> None:
    path = write(project, host_sql(host_dir, "insert into public.t values (1);\n"))
    rc, report, out = cli(project, "dry-run", str(path), "--db", supa_db.url)
    assert rc == 1, out
    assert report["error"]["line"] == 6 and "duplicate key" in report["error"]["message"]
    assert not (host_dir / "program.txt").exists()


def test_yolo_apply_runs_them_once(supa_db: SupaDb, project: Path, host_dir: Path) -> None:
    path = write(project, host_sql(host_dir))
    rc, report, out = cli(project, "apply", str(path), "--mode", "yolo", "--db", supa_db.url)
    assert rc == 0, out
    assert lines(host_dir / "program.txt") == 1
    assert any("acts on the database host" in w for w in report["warnings"])


def test_pre_flight_runs_none_of_them_before_its_apply(supa_db: SupaDb, project: Path,
                                                      host_dir: Path) -> None:
    path = write(project, host_sql(host_dir))
    rc, report, out = cli(project, "apply", str(path), "--mode", "preflight", "--yes",
                          "--db", supa_db.url)
    assert rc == 0, out
    assert lines(host_dir / "program.txt") == 1  # the apply's run; the plan's dry-run skipped it
    assert any(STATUS_ACTS_ON_SERVER in w for w in report["warnings"])


def test_a_dry_run_ends_no_other_session(supa_db: SupaDb, project: Path) -> None:
    """pg_terminate_backend (postgres is in pg_signal_backend): the dry-run leaves the other
    session alone; the apply ends it."""
    import psycopg

    path = write(project, "select pg_terminate_backend(pid) from pg_stat_activity\n"
                          "  where application_name = 'dbsage-victim';\n"
                          "create table public.t (id int primary key);\n"
                          "alter table public.t enable row level security;\n")
    with psycopg.connect(supa_db.url, autocommit=True,
                         application_name="dbsage-victim") as victim:
        rc, report, out = cli(project, "dry-run", str(path), "--db", supa_db.url)
        assert rc == 0, out
        assert report["statements"][0]["status"] == STATUS_ACTS_ON_SERVER
        assert report["statements"][1]["status"] == "ok"
        assert victim.execute("select 1").fetchone() == (1,)  # still connected
        rc, report, out = cli(project, "apply", str(path), "--mode", "yolo", "--db",
                              supa_db.url)
        assert rc == 0, out
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
