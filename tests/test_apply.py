"""The apply pipeline end to end on real PostgreSQL 18 and 15."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from conftest import Db
from helpers import apply, fast_retry, lock_is_free, migration, user_tables

from dbsage.tools.cli_split import statements_for_history

TODOS = """-- todos
create table public.todos (
  id bigint generated always as identity primary key,
  title text not null
);
create index todos_title_idx on public.todos (title);
insert into public.todos (title) values ('a'), ('b'), ('c');
"""

FIVE_WITH_BAD_THIRD = """create table public.t1 (id int primary key);
insert into public.t1 values (1), (2);

insert into public.t1 values (1);
create table public.t2 (id int);
create table public.t3 (id int);
"""


def test_happy_path_applies_writes_files_and_history(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_create_todos.sql", TODOS)
    report = apply(db, path, project)

    assert report.status == "applied", report.error
    assert report.exit_code == 0
    assert db.scalar("select count(*) from public.todos") == 3
    assert [s["line"] for s in report.statements] == [2, 6, 7]
    assert [s["rows_affected"] for s in report.statements] == [0, 0, 3]
    assert report.records_affected == 3
    ts = report.ts
    assert ts and len(ts) == 14 and ts.isdigit()
    snaps = project / "supabase" / "snapshots"
    for suffix in ("before.sql", "after.sql", "diff.patch"):
        assert (snaps / f"{ts}_{suffix}").stat().st_size > 0
    assert report.files == {"before": f"supabase/snapshots/{ts}_before.sql",
                            "after": f"supabase/snapshots/{ts}_after.sql",
                            "diff": f"supabase/snapshots/{ts}_diff.patch",
                            "decisions": f"supabase/snapshots/{ts}_decisions.json",
                            "rollback": f"supabase/rollback/{ts}_rollback.sql"}
    assert "drop table" in (project / report.files["rollback"]).read_text().lower()
    assert "CREATE TABLE public.todos" not in (snaps / f"{ts}_before.sql").read_text()
    assert "CREATE TABLE public.todos" in (snaps / f"{ts}_after.sql").read_text()
    assert "+CREATE TABLE public.todos" in (snaps / f"{ts}_diff.patch").read_text()

    with db.connect() as conn:
        hist = conn.execute("select version, name, statements from "
                            "supabase_migrations.schema_migrations").fetchall()
        log = conn.execute("select ts, event, version, checksum, status, mode, rows_affected, "
                           "statements, snapshot_before from dbsage.migration_log").fetchall()
    # `statements` exactly as the Supabase CLI would record this file (comments kept).
    assert hist == [("20250101000000", "create_todos",
                     statements_for_history(path.read_bytes().decode()))]
    assert hist[0][2][0].startswith("-- todos")
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    assert log == [(ts, "apply", "20250101000000", checksum, "applied", "yolo", 3, 3,
                    f"supabase/snapshots/{ts}_before.sql")]
    assert lock_is_free(db)


def test_failure_in_statement_3_of_5_changes_nothing(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_bad.sql", FIVE_WITH_BAD_THIRD)
    report = apply(db, path, project)

    assert report.status == "failed"
    assert report.exit_code == 1
    err = report.error or {}
    assert err["line"] == 4
    assert err["sqlstate"] == "23505"
    assert "duplicate key" in err["message"]
    assert err["message"].startswith(f"{path}:4 (statement 3 of 5)")
    assert "Key (id)=(1) already exists" in (err.get("detail") or "")
    assert [s["status"] for s in report.statements] == ["ok", "ok", "failed", "not_run",
                                                        "not_run"]
    assert user_tables(db) == []  # t1 and its rows are gone with the rollback
    assert db.scalar("select to_regnamespace('supabase_migrations')") is None
    assert db.scalar("select to_regnamespace('dbsage')") is None
    assert lock_is_free(db)
    assert (project / "supabase" / "snapshots" / f"{report.ts}_before.sql").exists()
    assert not (project / "supabase" / "snapshots" / f"{report.ts}_after.sql").exists()


def test_error_line_points_inside_a_multiline_statement(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_x.sql",
                     "create table a (id int);\nselect\n  1,\n  no_such_column\nfrom a;\n")
    report = apply(db18, path, project)
    assert report.error and report.error["line"] == 4
    assert report.error["sqlstate"] == "42703"


def test_reapplying_is_refused_and_an_edited_file_is_drift(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_create_todos.sql", TODOS)
    first = apply(db18, path, project)
    assert first.status == "applied"

    again = apply(db18, path, project)
    assert again.status == "refused"
    assert again.exit_code == 4
    assert again.error and "already applied" in again.error["message"]
    assert f"*rollback {first.ts}" in again.error["hint"]
    assert db18.scalar("select count(*) from public.todos") == 3

    path.write_text(TODOS + "insert into public.todos (title) values ('d');\n")
    drift = apply(db18, path, project)
    assert drift.exit_code == 5
    assert drift.error and "has changed" in drift.error["message"]
    assert db18.scalar("select count(*) from public.todos") == 3
    assert lock_is_free(db18)


def test_supabase_cli_history_without_dbsage_log_is_respected(db18: Db, project: Path) -> None:
    db18.execute("create schema supabase_migrations; create table "
                 "supabase_migrations.schema_migrations (version text primary key, statements "
                 "text[], name text); insert into supabase_migrations.schema_migrations values "
                 "('20250101000000', array['create table x (id int)'], 'x')")
    path = migration(project, "20250101000000_x.sql", "create table x (id int);")
    assert apply(db18, path, project).exit_code == 4
    path.write_text("create table x (id bigint);")
    assert apply(db18, path, project).exit_code == 5


def test_outer_begin_commit_in_the_file_is_accepted(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_x.sql",
                     "BEGIN;\ncreate table x (id int);\ninsert into x values (1);\nCOMMIT;\n")
    report = apply(db18, path, project)
    assert report.status == "applied"
    assert [s["line"] for s in report.statements] == [2, 3]
    assert db18.scalar("select count(*) from x") == 1


def test_commit_in_the_middle_is_refused_before_anything_runs(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_x.sql",
                     "create table a (id int);\ncommit;\ncreate table b (id int);\n")
    report = apply(db18, path, project)
    assert report.status == "refused" and report.exit_code == 2
    assert report.error and report.error["line"] == 2
    assert user_tables(db18) == []
    assert report.ts is None  # refused before the lock: no snapshot, no timestamp


def test_concurrently_only_file_runs_outside_a_transaction(db: Db, project: Path) -> None:
    db.execute("create table big (id int, v text); insert into big select g, 'x' from "
               "generate_series(1, 1000) g")
    path = migration(project, "20250101000001_idx.sql",
                     "create index concurrently big_v_idx on big (v);\nvacuum big;\n")
    report = apply(db, path, project)
    assert report.status == "applied", report.error
    assert [s["status"] for s in report.statements] == ["ok", "ok"]
    assert [s["transactional"] for s in report.statements] == [False, False]
    assert db.scalar("select indisvalid from pg_index where indexrelid = "
                     "'big_v_idx'::regclass") is True
    assert db.scalar("select count(*) from supabase_migrations.schema_migrations") == 1
    assert db.scalar("select current_setting('lock_timeout')") == "0"  # a new session anyway


def test_concurrently_failure_reports_what_ran_and_the_invalid_index(db18: Db,
                                                                     project: Path) -> None:
    db18.execute("create table d (v int); insert into d values (1), (1)")
    path = migration(project, "20250101000001_idx.sql",
                     "create index concurrently d_plain on d (v);\n"
                     "create unique index concurrently d_v_key on d (v);\n"
                     "create index concurrently d_never on d (v);\n")
    report = apply(db18, path, project)
    assert report.status == "failed"
    assert [s["status"] for s in report.statements] == ["ok", "failed", "not_run"]
    assert report.error and report.error["line"] == 2 and report.error["rolled_back"] is False
    assert "stay applied" in report.error["message"]
    assert "INVALID" in report.error["hint"] or "DETAIL" in report.error.get("hint", "")
    assert db18.scalar("select to_regnamespace('supabase_migrations')") is None


def test_mixed_file_is_refused_and_changes_nothing(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_mixed.sql",
                     "create table m (id int);\ncreate index concurrently m_id on m (id);\n")
    report = apply(db, path, project)
    assert report.status == "refused" and report.exit_code == 2
    assert "cannot run inside a transaction" in (report.error or {})["message"]
    assert user_tables(db) == []


def test_lock_timeout_retry_succeeds_once_the_blocker_ends(db: Db, project: Path) -> None:
    db.execute("create table accounts (id int primary key, balance int)")
    path = migration(project, "20250101000000_add.sql",
                     "alter table accounts add column note text;\n")
    blocker = db.connect(autocommit=False)
    blocker.execute("select * from accounts")  # ACCESS SHARE until commit
    release = threading.Timer(1.0, blocker.commit)
    release.start()
    t0 = time.monotonic()
    try:
        report = apply(db, path, project, lock_timeout="150ms", lock_retry=fast_retry(20))
    finally:
        release.join()
        blocker.close()
    assert report.status == "applied", report.error
    assert report.attempts > 1
    assert time.monotonic() - t0 >= 1.0
    assert any("lock_timeout 150ms fired" in w for w in report.warnings)
    assert db.scalar("select count(*) from information_schema.columns where table_name = "
                     "'accounts' and column_name = 'note'") == 1


def test_lock_timeout_exhausted_applies_nothing(db18: Db, project: Path) -> None:
    db18.execute("create table accounts (id int primary key)")
    path = migration(project, "20250101000000_add.sql",
                     "create table side (id int);\nalter table accounts add column note text;\n")
    with db18.connect(autocommit=False) as blocker:
        blocker.execute("select * from accounts")
        report = apply(db18, path, project, lock_timeout="50ms", lock_retry=fast_retry(3))
    assert report.status == "failed"
    assert report.error and report.error["error"] == "LockTimeoutExhaustedError"
    assert report.error["sqlstate"] == "55P03" and report.error["line"] == 2
    assert "3 times" in report.error["message"]
    assert user_tables(db18) == ["public.accounts", "public.accounts_pkey"]
    assert lock_is_free(db18)


def test_statement_timeout_cancels_and_rolls_back(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_slow.sql",
                     "create table s (id int);\nselect pg_sleep(5);\n")
    t0 = time.monotonic()
    report = apply(db18, path, project, statement_timeout="300ms")
    assert time.monotonic() - t0 < 4
    assert report.error and report.error["sqlstate"] == "57014"
    assert "statement_timeout" in report.error["hint"]
    assert user_tables(db18) == []


def test_the_migrating_session_holds_the_lock_throughout(db18: Db, project: Path) -> None:
    """Original defect 2: the lock was released as soon as the checking psql exited."""
    path = migration(project, "20250101000000_check.sql", """
do $$ begin
  if not exists (select 1 from pg_locks where locktype = 'advisory' and granted
                 and pid = pg_backend_pid()
                 and ((classid::bigint << 32) | objid::bigint) = hashtext('dbsage:migrate')) then
    raise exception 'the migrating session does not hold the migration lock';
  end if;
end $$;
""")
    report = apply(db18, path, project)
    assert report.status == "applied", report.error
    assert not any("release" in w for w in report.warnings)
    assert lock_is_free(db18)


def test_each_run_gets_its_own_timestamp(db18: Db, project: Path) -> None:
    """Original defect 6: runs shared one /tmp file for their timestamp."""
    a = apply(db18, migration(project, "20250101000000_a.sql", "create table a (id int);"),
              project)
    b = apply(db18, migration(project, "20250101000001_b.sql", "create table b (id int);"),
              project)
    assert a.ts and b.ts and a.ts != b.ts
    before = {p.name for p in (project / "supabase" / "snapshots").iterdir()}
    assert {f"{a.ts}_before.sql", f"{b.ts}_before.sql"} <= before


def test_a_file_without_a_version_is_not_a_migration(db18: Db, project: Path) -> None:
    """No invented version: a file the Supabase CLI would skip is refused (exit 2) and
    nothing is recorded."""
    path = migration(project, "add_things.sql", "create table things (id int);")
    report = apply(db18, path, project)
    assert report.status == "refused" and report.exit_code == 2
    assert "not a migration" in report.error["message"]  # type: ignore[index]
    assert db18.scalar("select to_regclass('public.things')") is None
    assert db18.scalar("select to_regclass('supabase_migrations.schema_migrations')") is None


@pytest.mark.parametrize("port", ["6543"])
def test_transaction_pooler_is_refused(project: Path, port: str) -> None:
    from dbsage.agent.runner import RunOptions, run_apply

    path = migration(project, "20250101000000_x.sql", "create table x (id int);")
    report = run_apply(path, RunOptions(mode="yolo", db=f"postgresql://u:pw@127.0.0.1:{port}/d",
                                        project_dir=project))
    assert report.error and report.error["error"] == "PoolerError"
    assert "pw" not in str(report.to_dict())


def test_writing_history_does_not_lock_readers_of_the_supabase_history(db: Db, project: Path
                                                                       ) -> None:
    """Once the history tables are complete, the migration transaction only inserts into them:
    no ALTER TABLE (ACCESS EXCLUSIVE) that would block `supabase migration list` until commit."""
    from datetime import UTC, datetime

    import psycopg

    from dbsage.tools.history import HistoryRecord, record_applied

    first = migration(project, "20300101000000_a.sql", "create table public.a (id int);\n")
    assert apply(db, first, project).status == "applied"
    rec = HistoryRecord(ts="20300101000001", version="20300101000001", name="b", path="b.sql",
                        checksum="x", mode="yolo", started_at=datetime.now(UTC),
                        duration_ms=1.0, rows_affected=0, statements=["select 1"],
                        snapshot_before=None, snapshot_after=None, diff_patch=None)
    with db.connect() as writer, db.connect() as reader, writer.transaction():
        record_applied(writer, rec)
        reader.execute("SET lock_timeout = '300ms'")
        try:
            rows = reader.execute("SELECT count(*) FROM supabase_migrations.schema_migrations"
                                  ).fetchone()
        except psycopg.errors.LockNotAvailable:
            pytest.fail("recording history locked out readers of schema_migrations")
        assert rows == (1,)  # the uncommitted row is not visible; the reader was not blocked
        raise psycopg.Rollback()
