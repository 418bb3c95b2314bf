"""Rollback without data loss: reverse DDL (results), saved data, one transaction, history."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import Db
from helpers import apply, migration

from dbsage.tools.errors import DbsageError
from dbsage.tools.lock import acquire_lock, release_lock
from dbsage.tools.rollback import (
    DataTarget,
    InvalidTimestampError,
    Loss,
    RollbackError,
    RollbackFailedError,
    SavedData,
    apply_rollback,
    destructive_targets,
    load_saved_data,
    plan_from_snapshot,
    prepare_rollback,
    read_rollback_script,
    reverse_ddl,
    rows_at_stake,
    save_data,
    scratch_database,
    validate_ts,
)
from dbsage.tools.snapshot import dump_schema
from dbsage.tools.sqlfile import read_migration

VERSION = "20250101000000"
ROLLBACK_TS = "20990101000000"

PROFILES = """
create table public.profiles (id bigint primary key, email text, nickname text not null);
create index profiles_nickname_idx on public.profiles (nickname);
grant select on public.profiles to public;
insert into public.profiles
  select g, 'user' || g || '@example.com',
         case when g % 10 = 0 then 'odd, "quoted"' || E'\\n' || g else 'nick-' || g end
  from generate_series(1, 100) g;
"""

DROP_NICKNAME = """alter table public.profiles drop column nickname;
create table public.badges (
  id bigint generated always as identity primary key,
  profile_id bigint not null references public.profiles (id),
  label text
);
grant select on public.badges to public;
revoke select on public.profiles from public;
"""


def _scratch_dbs(db: Db) -> list[str]:
    with psycopg.connect(db.server.url(), autocommit=True) as conn:
        rows = conn.execute("select datname from pg_database where datname like "
                            "'dbsage\\_scratch\\_%'").fetchall()
    return [r[0] for r in rows]


def _nicknames(db: Db) -> dict[int, str]:
    with db.connect() as conn:
        return dict(conn.execute("select id, nickname from public.profiles").fetchall())


def _snapshots(project: Path, ts: str) -> tuple[Path, Path]:
    snaps = project / "supabase" / "snapshots"
    return snaps / f"{ts}_before.sql", snaps / f"{ts}_after.sql"


def _apply_with_saved_data(db: Db, project: Path, name: str,
                           sql: str) -> tuple[str, list[SavedData]]:
    """Apply through the pipeline, which saves the destroyed data under {TS}_data first."""
    path = migration(project, name, sql)
    report = apply(db, path, project)
    assert report.status == "applied", report.error
    assert report.ts
    data_dir = project / "supabase" / "snapshots" / f"{report.ts}_data"
    expected = bool(destructive_targets(read_migration(path)))
    assert data_dir.exists() == expected
    return report.ts, load_saved_data(data_dir)


def _prepare(db: Db, project: Path, ts: str) -> Path:
    """The pipeline wrote the reverse script at apply time; a second prepare keeps it."""
    before, after = _snapshots(project, ts)
    dest = project / "supabase" / "rollback" / f"{ts}_rollback.sql"
    written = dest.read_text()
    result = prepare_rollback(db.url, before, after, dest, server_major=db.server.major)
    assert result.user_written is True and dest.read_text() == written
    return dest


def _rollback(db: Db, dest: Path, saved: list[SavedData], version: str = VERSION) -> int:
    with db.connect() as conn:
        acquire_lock(conn)
        try:
            result = apply_rollback(conn, read_rollback_script(dest), saved, version,
                                    ts=ROLLBACK_TS, path=str(dest))
        finally:
            release_lock(conn)
    return result.rows_restored


def test_acceptance_rollback_brings_back_column_values_and_drops_new_table(
        db: Db, project: Path) -> None:
    db.execute(PROFILES)
    nicknames = _nicknames(db)
    assert len(nicknames) == 100

    ts, saved = _apply_with_saved_data(db, project, f"{VERSION}_drop_nickname.sql",
                                       DROP_NICKNAME)
    assert [(s.table, s.columns, s.key_columns, s.rows) for s in saved] == [
        ("profiles", ("id", "nickname"), ("id",), 100)]
    db.execute("insert into public.badges (profile_id, label) "
               "select g, 'b' from generate_series(1, 12) g")

    dest = _prepare(db, project, ts)
    script = read_rollback_script(dest)
    assert [s.sql for s in script.deferred] == [
        'ALTER TABLE "public"."profiles" ALTER COLUMN "nickname" SET NOT NULL']
    with db.connect() as conn:
        assert rows_at_stake(conn, script) == [Loss("public", "badges", None, 12, "drop table")]
        assert validate_ts(ts, conn) == ts
        assert validate_ts("latest", conn) == ts

    assert _rollback(db, dest, saved) == 100

    assert _nicknames(db) == nicknames
    assert db.scalar("select to_regclass('public.badges')") is None
    before, _ = _snapshots(project, ts)
    assert dump_schema(db.url, db.server.major)[0] == before.read_text()
    assert db.scalar("select count(*) from supabase_migrations.schema_migrations "
                     "where version = %s", (VERSION,)) == 0
    with db.connect() as conn:
        log = conn.execute("select event, ts, version, status from dbsage.migration_log "
                           "order by id").fetchall()
        with pytest.raises(InvalidTimestampError, match="rolled back already"):
            validate_ts(ts, conn)
    assert log == [("apply", ts, VERSION, "applied"),
                   ("rollback", ROLLBACK_TS, VERSION, "rolled_back")]
    assert _scratch_dbs(db) == []


def test_dropped_table_comes_back_with_rows_nulls_and_sequence(db18: Db, project: Path) -> None:
    db18.execute("""create table public.notes (
        id bigint generated always as identity primary key, body text, n int);
        insert into public.notes (body, n) values ('a,b', 1), (null, 2), ('', null),
          ('line' || E'\\n' || 'two "q"', 4);""")
    with db18.connect() as conn:
        rows = conn.execute("select * from public.notes order by id").fetchall()
    ts, saved = _apply_with_saved_data(db18, project, f"{VERSION}_drop_notes.sql",
                                       "drop table public.notes;")
    assert [(s.whole_table, s.columns, s.rows) for s in saved] == [(True, ("id", "body", "n"), 4)]

    assert _rollback(db18, _prepare(db18, project, ts), saved) == 4

    with db18.connect() as conn:
        assert conn.execute("select * from public.notes order by id").fetchall() == rows
        new_id = conn.execute("insert into public.notes (body) values ('x') returning id")
        assert new_id.fetchone() == (5,)
    before, _ = _snapshots(project, ts)
    assert dump_schema(db18.url, 18)[0] == before.read_text()


def test_data_only_migration_deleted_rows_and_updated_column_come_back(
        db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    nicknames = _nicknames(db18)
    ts, saved = _apply_with_saved_data(
        db18, project, f"{VERSION}_cleanup.sql",
        "delete from public.profiles where id > 90;\nupdate public.profiles set nickname = 'x';")
    assert db18.scalar("select count(*) from public.profiles") == 90
    dest = _prepare(db18, project, ts)
    assert read_rollback_script(dest).empty

    assert _rollback(db18, dest, saved) == 100  # 10 rows re-inserted, 90 rows reset
    assert _nicknames(db18) == nicknames


def test_column_order_warning_and_middle_column_values(db18: Db) -> None:
    before_sql = "create table public.t (id int primary key, mid text, tail int);"
    db18.execute(before_sql + "alter table public.t drop column mid;")
    with scratch_database(db18.url) as before_url:
        with psycopg.connect(before_url, autocommit=True) as conn:
            conn.execute(before_sql)
        script = reverse_ddl(db18.url, before_url)
    assert [s.sql for s in script.statements] == ['alter table "public"."t" add column "mid" text']
    assert len(script.warnings) == 1
    assert "t.mid comes back as the last column (it was column 2 of 3)" in script.warnings[0]


def test_users_own_rollback_file_is_never_overwritten(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    path = migration(project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME)
    report = apply(db18, path, project)
    assert report.ts
    before, after = _snapshots(project, report.ts)
    dest = project / "supabase" / "rollback" / f"{report.ts}_rollback.sql"
    dest.parent.mkdir(parents=True, exist_ok=True)
    mine = "-- mine\ndrop table public.badges;\nalter table public.profiles add column nickname text;\n"
    dest.write_text(mine)

    result = prepare_rollback(db18.url, before, after, dest, server_major=18)

    assert result.user_written is True
    assert result.script is None
    assert dest.read_text() == mine
    assert [s.sql for s in read_rollback_script(dest).statements] == [
        "drop table public.badges", "alter table public.profiles add column nickname text"]


def test_destructive_targets_reads_the_parsed_statements(tmp_path: Path) -> None:
    path = tmp_path / f"{VERSION}_x.sql"
    path.write_text("""create table a (id int);
drop table if exists s1.t1, t2;
alter table s2.t3 drop column c1, alter column c2 type bigint, add column c3 int;
truncate t4, s3.t5;
delete from t6 where id = 1;
update t7 set a = 1, b = 2;
update t8 set a = 1 where id = 2;
insert into t9 values (1);
""")
    assert destructive_targets(read_migration(path)) == [
        DataTarget("s1", "t1", None, "drop table", 2),
        DataTarget(None, "t2", None, "drop table", 2),
        DataTarget("s2", "t3", ("c1",), "drop column", 3),
        DataTarget("s2", "t3", ("c2",), "alter column type", 3),
        DataTarget(None, "t4", None, "truncate", 4),
        DataTarget("s3", "t5", None, "truncate", 4),
        DataTarget(None, "t6", None, "delete", 5),
        DataTarget(None, "t7", ("a", "b"), "update without where", 6),
    ]


def test_save_data_writes_key_plus_columns_and_skips_unknown_tables(db18: Db,
                                                                    tmp_path: Path) -> None:
    db18.execute("create table public.p (a int, b int, c text, d text, primary key (b, a));"
                 "insert into public.p values (1, 1, 'x', 'y'), (2, 1, null, 'z');"
                 "create table public.nokey (v text); insert into public.nokey values ('q');")
    targets = [DataTarget(None, "p", ("c",), "drop column"),
               DataTarget("public", "p", ("c", "a"), "alter column type"),
               DataTarget(None, "nokey", ("v",), "drop column"),
               DataTarget(None, "created_later", None, "drop table")]
    with db18.connect() as conn:
        saved = save_data(conn, targets, tmp_path / "data")
    assert [(s.table, s.columns, s.key_columns, s.whole_table, s.rows) for s in saved] == [
        ("p", ("b", "a", "c"), ("b", "a"), False, 2),
        ("nokey", ("v",), (), True, 1)]
    assert saved[0].file.read_text() == 'b,a,c\n1,1,x\n1,2,\n'
    assert load_saved_data(tmp_path / "data") == saved
    with db18.connect() as conn, pytest.raises(DbsageError, match="never overwrites"):
        save_data(conn, targets, tmp_path / "data")


def test_rows_at_stake_counts_dropped_tables_and_column_values(db18: Db, tmp_path: Path) -> None:
    db18.execute("create table public.badges (id int); insert into public.badges "
                 "select generate_series(1, 12);"
                 "create table public.p (id int, extra text); insert into public.p values "
                 "(1, 'a'), (2, null), (3, 'c'); create table public.empty (id int);")
    script_path = tmp_path / "r.sql"
    script_path.write_text("drop table public.badges;\nalter table p drop column extra;\n"
                           "drop table public.empty;\ndrop table if exists public.gone;\n"
                           "alter table public.p add column z int;\n")
    with db18.connect() as conn:
        losses = rows_at_stake(conn, read_rollback_script(script_path))
    assert losses == [Loss("public", "badges", None, 12, "drop table"),
                      Loss("public", "p", "extra", 2, "drop column")]
    assert [x.describe() for x in losses] == [
        "rollback drops table public.badges with 12 rows",
        "rollback drops column public.p.extra holding 2 non-null values"]


@pytest.mark.parametrize(("value", "why"), [
    ("../x", "looks like a path"), ("/etc/passwd", "looks like a path"),
    ("20250101000000.sql", "looks like a path"), ("..", "looks like a path"),
    ("supabase/snapshots/20250101000000_before.sql", "looks like a path"),
    ("123", "expected 14 digits"), ("2025010100000a", "expected 14 digits"),
    ("202501010000001", "expected 14 digits"), ("", "expected 14 digits")])
def test_validate_ts_refuses_paths_and_malformed_values(db18: Db, value: str, why: str) -> None:
    with db18.connect() as conn, pytest.raises(InvalidTimestampError, match=why) as err:
        validate_ts(value, conn)
    assert err.value.exit_code == 2


def test_validate_ts_needs_an_applied_run(db18: Db, project: Path) -> None:
    with db18.connect() as conn, pytest.raises(InvalidTimestampError, match="No migration"):
        validate_ts("latest", conn)
    report = apply(db18, migration(project, f"{VERSION}_t.sql", "create table t (id int);"),
                   project)
    with db18.connect() as conn:
        assert validate_ts(str(report.ts), conn) == report.ts
        assert validate_ts("latest", conn) == report.ts
        with pytest.raises(InvalidTimestampError, match="No migration run 20000101000000"):
            validate_ts("20000101000000", conn)


def test_plan_from_snapshot_diffs_in_a_scratch_database_only(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    report = apply(db18, migration(project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME),
                   project)
    assert report.ts
    before, after = _snapshots(project, report.ts)

    script = plan_from_snapshot(db18.url, before, server_major=18)

    stmts = [s.sql for s in script.statements]
    assert stmts[-3:] == [
        "ALTER TABLE public.profiles ADD COLUMN nickname text",
        "CREATE INDEX profiles_nickname_idx ON public.profiles USING btree (nickname)",
        'grant select on table "public"."profiles" to PUBLIC']
    assert 'drop table "public"."badges"' in stmts
    assert not [s for s in stmts if s.startswith("revoke")]  # badges is dropped anyway
    assert not [s.sql for s in script.statements if "dbsage" in s.sql or "supabase" in s.sql]
    assert dump_schema(db18.url, 18)[0] == after.read_text()  # the target is untouched
    assert db18.scalar("select count(*) from public.profiles") == 100
    assert _scratch_dbs(db18) == []
    with pytest.raises(InvalidTimestampError, match=r"_before\.sql"):
        plan_from_snapshot(db18.url, after, server_major=18)


def test_apply_rollback_refuses_a_database_without_history(db18: Db, tmp_path: Path) -> None:
    script_path = tmp_path / "r.sql"
    script_path.write_text("create table public.x (id int);\n")
    with db18.connect() as conn:
        acquire_lock(conn)
        with pytest.raises(RollbackError, match="is not applied"):
            apply_rollback(conn, read_rollback_script(script_path), [], VERSION, ts=ROLLBACK_TS)
        release_lock(conn)
    assert db18.scalar("select to_regclass('public.x')") is None


def test_scratch_database_is_dropped_when_the_body_fails(db18: Db) -> None:
    with pytest.raises(RuntimeError), scratch_database(db18.url) as url:
        assert psycopg.connect(url).execute("select 1").fetchone() == (1,)
        assert len(_scratch_dbs(db18)) == 1
        raise RuntimeError("boom")
    assert _scratch_dbs(db18) == []


def test_apply_rollback_needs_the_lock_and_is_all_or_nothing(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    ts, saved = _apply_with_saved_data(db18, project, f"{VERSION}_drop_nickname.sql",
                                       DROP_NICKNAME)
    dest = _prepare(db18, project, ts)
    bad = project / "bad_rollback.sql"
    bad.write_text(dest.read_text() + "\nselect 1 / 0;\n")
    with db18.connect() as conn:
        with pytest.raises(RollbackError, match="holds the migration lock"):
            apply_rollback(conn, read_rollback_script(dest), saved, VERSION, ts=ROLLBACK_TS)
        acquire_lock(conn)
        with pytest.raises(RollbackError, match="20000101000000 is not applied"):
            apply_rollback(conn, read_rollback_script(dest), saved, "20000101000000",
                           ts=ROLLBACK_TS)
        with pytest.raises(RollbackFailedError, match="division by zero") as err:
            apply_rollback(conn, read_rollback_script(bad), saved, VERSION, ts=ROLLBACK_TS)
        release_lock(conn)
    assert err.value.data["sqlstate"] == "22012"
    assert db18.scalar("select to_regclass('public.badges') is not null") is True
    assert db18.scalar("select count(*) from information_schema.columns where "
                       "table_name = 'profiles' and column_name = 'nickname'") == 0
    assert db18.scalar("select count(*) from supabase_migrations.schema_migrations") == 1
    assert db18.scalar("select count(*) from dbsage.migration_log "
                       "where event = 'rollback'") == 0


def test_rows_written_just_before_the_migration_are_saved_and_come_back(
        db: Db, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data is saved inside the migration's own transaction (under a SHARE lock), so a
    write that commits after the pipeline's earlier steps is still in it."""
    from dbsage.agent import steps
    from dbsage.agent.runner import RunOptions, run_rollback_task

    db.execute(PROFILES)
    planned = steps.STEPS["save_destroyed_data"]

    def plan_then_someone_writes(ctx: steps.RunState) -> None:
        planned(ctx)
        db.execute("insert into public.profiles values (101, 'late@example.com', 'late'); "
                   "update public.profiles set nickname = 'renamed' where id = 1")

    monkeypatch.setitem(steps.STEPS, "save_destroyed_data", plan_then_someone_writes)
    ts, saved = _apply_with_saved_data(db, project, f"{VERSION}_drop_nickname.sql",
                                       "alter table public.profiles drop column nickname;\n")
    assert [(s.table, s.rows) for s in saved] == [("profiles", 101)]
    monkeypatch.undo()
    report = run_rollback_task(ts, RunOptions(mode="yolo", db=db.url, project_dir=project))
    assert report.status == "rolled_back", report.error
    nicknames = _nicknames(db)
    assert nicknames[101] == "late" and nicknames[1] == "renamed" and len(nicknames) == 101


def test_a_failed_migration_keeps_no_saved_data(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    path = migration(project, f"{VERSION}_fails.sql",
                     "alter table public.profiles drop column nickname;\nselect 1/0;\n")
    report = apply(db18, path, project)
    assert report.status == "failed"
    assert "data" not in report.files
    assert not list((project / "supabase" / "snapshots").glob("*_data"))
    assert len(_nicknames(db18)) == 100
