"""Rollback without data loss: the plan captured in the migration's transaction, the data it
keeps, one verified transaction, history and addressing (tools/rollback.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import Db
from helpers import apply, migration

from dbsage.tools.errors import DbsageError
from dbsage.tools.history import dbsage_runs, load_rollback_plan
from dbsage.tools.lock import acquire_lock, release_lock
from dbsage.tools.rollback import (
    DataTarget,
    InvalidTimestampError,
    Loss,
    RollbackError,
    RollbackFailedError,
    RollbackRefusedError,
    RollbackVerificationError,
    RunToUndo,
    apply_rollback,
    apply_rollbacks,
    destructive_targets,
    load_plan,
    load_saved_data,
    plan_from_json,
    read_rollback_script,
    resolve_runs,
    rows_at_stake,
    save_data,
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


def _nicknames(db: Db) -> dict[int, str]:
    with db.connect() as conn:
        return dict(conn.execute("select id, nickname from public.profiles").fetchall())


def _applied(db: Db, project: Path, name: str, sql: str) -> str:
    path = migration(project, name, sql)
    report = apply(db, path, project)
    assert report.status == "applied", report.error
    assert report.ts
    return report.ts


def _plan(db: Db, project: Path, ts: str):  # type: ignore[no-untyped-def]
    """The run's plan as `dbsage rollback` loads it (and the run record)."""
    with db.connect() as conn:
        run = next(r for r in dbsage_runs(conn) if r.ts == ts)
        rb = project / "supabase" / "rollback" / f"{ts}_rollback.sql"
        script, _source, rows = load_plan(conn, run, rb, rb.with_suffix(".json"))
    return run, script, rows


def _rollback(db: Db, project: Path, ts: str, **kw: object) -> int:
    run, script, rows = _plan(db, project, ts)
    with db.connect() as conn:
        acquire_lock(conn)
        try:
            result = apply_rollbacks(conn, [RunToUndo(run.ts, run.version, script, (), rows)],
                                     ts=ROLLBACK_TS, **kw)  # type: ignore[arg-type]
        finally:
            release_lock(conn)
    return result.rows_restored


def test_acceptance_rollback_brings_back_column_values_and_drops_new_table(
        db: Db, project: Path) -> None:
    db.execute(PROFILES)
    nicknames = _nicknames(db)
    assert len(nicknames) == 100
    before = dump_schema(db.url, db.server.major)[0]

    ts = _applied(db, project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME)
    data_dir = project / "supabase" / "snapshots" / f"{ts}_data"
    saved = load_saved_data(data_dir)  # the CSV copy for people
    assert [(s.table, s.columns, s.key_columns, s.rows) for s in saved] == [
        ("profiles", ("id", "nickname"), ("id",), 100)]
    db.execute("insert into public.badges (profile_id, label) "
               "select g, 'b' from generate_series(1, 12) g")

    _run, script, _rows = _plan(db, project, ts)
    assert script.stored and script.source == "dbsage.rollback_plan"
    assert [(d.kind, d.table, d.rows) for d in script.data] == [("columns", "profiles", 100)]
    assert 'ALTER TABLE public.profiles ALTER COLUMN nickname SET NOT NULL' in \
        [s.sql for s in script.deferred]
    with db.connect() as conn:
        assert rows_at_stake(conn, script) == [Loss("public", "badges", None, 12, "drop table")]
        assert [r.ts for r in resolve_runs(conn, "latest")] == [ts]
        assert [r.ts for r in resolve_runs(conn, VERSION)] == [ts]
        assert [r.ts for r in resolve_runs(conn, ts)] == [ts]

    assert _rollback(db, project, ts) == 100

    assert _nicknames(db) == nicknames
    assert db.scalar("select to_regclass('public.badges')") is None
    assert dump_schema(db.url, db.server.major)[0] == before
    assert db.scalar("select count(*) from supabase_migrations.schema_migrations "
                     "where version = %s", (VERSION,)) == 0
    with db.connect() as conn:
        log = conn.execute("select event, ts, version, status from dbsage.migration_log "
                           "order by id").fetchall()
        with pytest.raises(InvalidTimestampError, match="rolled back already"):
            resolve_runs(conn, ts)
        marked = conn.execute("select rolled_back_by from dbsage.rollback_plan").fetchall()
    assert log == [("apply", ts, VERSION, "applied"),
                   ("rollback", ROLLBACK_TS, VERSION, "rolled_back")]
    assert marked == [(ROLLBACK_TS,)]


def test_dropped_table_comes_back_with_rows_nulls_and_sequence(db18: Db, project: Path) -> None:
    db18.execute("""create table public.notes (
        id bigint generated always as identity primary key, body text, n int);
        insert into public.notes (body, n) values ('a,b', 1), (null, 2), ('', null),
          ('line' || E'\\n' || 'two "q"', 4);""")
    with db18.connect() as conn:
        rows = conn.execute("select * from public.notes order by id").fetchall()
    before = dump_schema(db18.url, 18)[0]
    ts = _applied(db18, project, f"{VERSION}_drop_notes.sql", "drop table public.notes;")

    assert _rollback(db18, project, ts) == 4

    with db18.connect() as conn:
        assert conn.execute("select * from public.notes order by id").fetchall() == rows
        new_id = conn.execute("insert into public.notes (body) values ('x') returning id")
        assert new_id.fetchone() == (5,)
    assert dump_schema(db18.url, 18)[0] == before


def test_data_only_migration_deleted_inserted_and_updated_rows_come_back(
        db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    nicknames = _nicknames(db18)
    ts = _applied(db18, project, f"{VERSION}_cleanup.sql",
                  "delete from public.profiles where id > 90;\n"
                  "update public.profiles set nickname = 'x' where id <= 45;\n"
                  "insert into public.profiles values (500, 'n@x', 'new');\n")
    assert db18.scalar("select count(*) from public.profiles") == 91
    _run, script, _rows = _plan(db18, project, ts)
    assert not script.statements and not script.deferred
    assert sorted((d.kind, d.rows) for d in script.data) == [
        ("deleted", 10), ("inserted", 1), ("updated", 45)]
    assert "data: delete 1 row(s) the migration inserted into public.profiles" in \
        script.render()

    assert _rollback(db18, project, ts) == 56  # 1 deleted, 10 re-inserted, 45 reset
    assert _nicknames(db18) == nicknames


def test_a_middle_column_comes_back_last_with_a_warning(db18: Db, project: Path) -> None:
    db18.execute("create table public.t (id int primary key, mid text, tail int);"
                 "insert into public.t values (1, 'a', 10), (2, null, 20);")
    ts = _applied(db18, project, f"{VERSION}_drop_mid.sql", "alter table public.t drop column mid;")
    _run, script, _rows = _plan(db18, project, ts)
    assert [s.sql for s in script.statements][-1] == "ALTER TABLE public.t ADD COLUMN mid text"
    assert len(script.warnings) == 1
    assert "t.mid comes back as the last column (it was column 2 of 3)" in script.warnings[0]
    # The comparison is by name and definition: the column order alone is not a difference.
    assert _rollback(db18, project, ts) == 2
    with db18.connect() as conn:
        assert conn.execute("select id, mid, tail from public.t order by id").fetchall() == [
            (1, "a", 10), (2, None, 20)]


def test_the_users_own_rollback_file_is_run_instead_of_the_plan(db18: Db,
                                                                project: Path) -> None:
    ts = _applied(db18, project, f"{VERSION}_t.sql", "create table public.t (id int);")
    mine = project / "supabase" / "rollback" / f"{ts}_rollback.sql"
    assert "DROP TABLE public.t" in mine.read_text()
    mine.write_text("drop table public.t;\ncreate table public.kept_by_user (id int);\n")
    _run, script, _rows = _plan(db18, project, ts)
    assert script.source == str(mine) and script.before is not None  # still verified
    assert [s.sql for s in script.statements] == [
        "drop table public.t", "create table public.kept_by_user (id int)"]
    _rollback(db18, project, ts)
    assert db18.scalar("select to_regclass('public.kept_by_user') is not null") is True


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


def test_rows_at_stake_counts_only_rows_written_since_the_migration(db18: Db,
                                                                    project: Path) -> None:
    ts = _applied(db18, project, f"{VERSION}_t.sql",
                  "create table public.t (id int); insert into public.t values (1), (2);\n"
                  "create table public.empty (id int);\n"
                  "create table public.p (id int primary key); insert into public.p values (1);\n"
                  "alter table public.p add column extra text default 'd';")
    db18.execute("insert into public.t values (3); insert into public.p values (2), (3);"
                 "update public.p set extra = 'mine' where id = 3;")
    _run, script, _rows = _plan(db18, project, ts)
    with db18.connect() as conn:
        losses = rows_at_stake(conn, script)
    assert sorted(losses, key=lambda x: x.table) == [
        Loss("public", "p", None, 2, "drop table"), Loss("public", "t", None, 1, "drop table")]
    assert losses[0].describe().startswith("rollback drops table public.")


@pytest.mark.parametrize(("value", "why"), [
    ("../x", "looks like a path"), ("/etc/passwd", "looks like a path"),
    ("20250101000000.sql", "looks like a path"), ("..", "looks like a path"),
    ("supabase/snapshots/20250101000000_before.sql", "looks like a path"),
    ("2025010100000a", "neither a version"), ("", "neither a version")])
def test_resolve_refuses_paths_and_malformed_values(db18: Db, value: str, why: str) -> None:
    with db18.connect() as conn, pytest.raises(InvalidTimestampError, match=why) as err:
        resolve_runs(conn, value)
    assert err.value.exit_code == 2


def test_resolve_needs_an_applied_run_and_undoes_only_the_newest(db18: Db,
                                                                 project: Path) -> None:
    with db18.connect() as conn, pytest.raises(InvalidTimestampError, match="No migration"):
        resolve_runs(conn, "latest")
    first = _applied(db18, project, f"{VERSION}_a.sql",
                     "create table public.a (id int primary key);")
    second = _applied(db18, project, "20250102000000_b.sql",
                      "create table public.b (id int references public.a (id) deferrable);")
    with db18.connect() as conn:
        assert [r.ts for r in resolve_runs(conn, "latest")] == [second]
        with pytest.raises(RollbackRefusedError, match="not the newest applied run") as err:
            resolve_runs(conn, VERSION)
        assert err.value.exit_code == 6 and "--to" in (err.value.hint or "")
        with pytest.raises(RollbackRefusedError, match="not the newest"):
            resolve_runs(conn, first)
        assert [r.version for r in resolve_runs(conn, None, to=VERSION)] == ["20250102000000"]
        with pytest.raises(InvalidTimestampError, match="No migration run or version 123"):
            resolve_runs(conn, "123")
        with pytest.raises(InvalidTimestampError, match="No run was applied after"):
            resolve_runs(conn, None, to="20250102000000")


def test_a_plan_survives_json_and_is_kept_on_disk_too(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    ts = _applied(db18, project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME)
    with db18.connect() as conn:
        stored = load_rollback_plan(conn, ts, VERSION)
    assert stored is not None
    again = plan_from_json(stored, source="dbsage.rollback_plan")
    _run, script, _rows = _plan(db18, project, ts)
    assert again == script
    on_disk = project / "supabase" / "rollback" / f"{ts}_rollback.json"
    assert on_disk.is_file() and '"nickname"' in on_disk.read_text()
    assert read_rollback_script(on_disk.with_suffix(".sql")).same_statements(script)


def test_apply_rollback_needs_the_lock_and_is_all_or_nothing(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    ts = _applied(db18, project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME)
    _run, script, _rows = _plan(db18, project, ts)
    bad = project / "bad_rollback.sql"
    bad.write_text((project / "supabase" / "rollback" / f"{ts}_rollback.sql").read_text()
                   + "\nselect 1 / 0;\n")
    broken = read_rollback_script(bad)
    with db18.connect() as conn:
        with pytest.raises(RollbackError, match="holds the migration lock"):
            apply_rollback(conn, script, [], VERSION, ts=ROLLBACK_TS, applied_ts=ts)
        acquire_lock(conn)
        with pytest.raises(RollbackError, match="20000101000000 is not applied"):
            apply_rollback(conn, script, [], "20000101000000", ts=ROLLBACK_TS, applied_ts=ts)
        with pytest.raises(RollbackFailedError, match="division by zero") as err:
            apply_rollback(conn, type(script)(broken.statements, broken.deferred,
                                              source=str(bad), data=script.data, ts=ts,
                                              version=VERSION, stored=True),
                           [], VERSION, ts=ROLLBACK_TS, applied_ts=ts)
        release_lock(conn)
    assert err.value.data["sqlstate"] == "22012"
    assert db18.scalar("select to_regclass('public.badges') is not null") is True
    assert db18.scalar("select count(*) from information_schema.columns where "
                       "table_name = 'profiles' and column_name = 'nickname'") == 0
    assert db18.scalar("select count(*) from supabase_migrations.schema_migrations") == 1
    assert db18.scalar("select count(*) from dbsage.migration_log "
                       "where event = 'rollback'") == 0


def test_a_difference_from_the_state_before_aborts_unless_accepted(db18: Db,
                                                                   project: Path) -> None:
    db18.execute("create table public.t (id int primary key, a text);")
    ts = _applied(db18, project, f"{VERSION}_add_b.sql", "alter table public.t add column b int;")
    db18.execute("comment on table public.t is 'changed by hand since'")
    with pytest.raises(RollbackVerificationError, match=r"relation public\.t differs") as err:
        _rollback(db18, project, ts)
    assert err.value.data["differences"] and "comment" in err.value.data["differences"][0]
    assert db18.scalar("select count(*) from information_schema.columns where "
                       "table_name = 't' and column_name = 'b'") == 1  # nothing changed
    _rollback(db18, project, ts, accept_difference=True)
    assert db18.scalar("select count(*) from information_schema.columns where "
                       "table_name = 't' and column_name = 'b'") == 0
    with db18.connect() as conn:
        accepted = conn.execute("select accepted_differences from dbsage.rollback_plan"
                                ).fetchone()
    assert accepted is not None and "comment" in accepted[0][0]


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
    ts = _applied(db, project, f"{VERSION}_drop_nickname.sql",
                  "alter table public.profiles drop column nickname;\n")
    saved = load_saved_data(project / "supabase" / "snapshots" / f"{ts}_data")
    assert [(s.table, s.rows) for s in saved] == [("profiles", 101)]
    monkeypatch.undo()
    report = run_rollback_task(ts, RunOptions(mode="yolo", db=db.url, project_dir=project))
    assert report.status == "rolled_back", report.error
    nicknames = _nicknames(db)
    assert nicknames[101] == "late" and nicknames[1] == "renamed" and len(nicknames) == 101


def test_a_failed_migration_keeps_no_saved_data_and_no_plan(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    path = migration(project, f"{VERSION}_fails.sql",
                     "alter table public.profiles drop column nickname;\nselect 1/0;\n")
    report = apply(db18, path, project)
    assert report.status == "failed"
    assert "data" not in report.files and "rollback" not in report.files
    assert not list((project / "supabase" / "snapshots").glob("*_data"))
    assert len(_nicknames(db18)) == 100
    assert db18.scalar("select to_regclass('dbsage.rollback_plan')") is None


def test_no_scratch_database_is_ever_made(db18: Db, project: Path) -> None:
    db18.execute(PROFILES)
    ts = _applied(db18, project, f"{VERSION}_drop_nickname.sql", DROP_NICKNAME)
    seen: list[str] = []
    real = psycopg.Connection.execute

    def spy(self, query, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(str(query))
        return real(self, query, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psycopg.Connection, "execute", spy)
        _rollback(db18, project, ts)
    assert not [q for q in seen if "CREATE DATABASE" in q.upper()]
