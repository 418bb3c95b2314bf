"""Dry run on real PostgreSQL 18 and 15: runs as apply would, always rolls back, logs the run."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from conftest import Db
from helpers import fast_retry, migration, user_tables

from dbsage.tools.connection import connect
from dbsage.tools.dryrun import (
    STATUS_PARSED_ONLY,
    DryRunResult,
    dry_run_migration,
    find_passing_dry_run,
)
from dbsage.tools.errors import TransactionShapeError
from dbsage.tools.lock import acquire_lock, find_lock_holder
from dbsage.tools.sqlfile import Statement, read_migration

# Everything a migration can change, in user schemas (dbsage's own log schema excluded).
FINGERPRINT_SQL = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog',
            'information_schema', 'dbsage') AND nspname NOT LIKE 'pg_toast%'
            AND nspname NOT LIKE 'pg_temp%')
SELECT x FROM (
  SELECT 'schema ' || nspname AS x FROM ns
  UNION ALL SELECT 'rel ' || c.oid::regclass || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL SELECT 'col ' || a.attrelid::regclass || '.' || a.attname || ' '
      || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull || ' default='
      || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(co.oid)
    FROM pg_constraint co JOIN ns ON ns.oid = co.connamespace
  UNION ALL SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL SELECT 'pol ' || polrelid::regclass || ' ' || polname || ' '
      || coalesce(pg_get_expr(polqual, polrelid), '') FROM pg_policy
  UNION ALL SELECT 'fn ' || p.oid::regprocedure || ' ' || md5(p.prosrc)
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  UNION ALL SELECT 'view ' || c.oid::regclass || ' ' || pg_get_viewdef(c.oid)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
  UNION ALL SELECT 'trg ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
) f ORDER BY x
"""

SETUP = """
create table public.profiles (id int primary key, nickname text, bio text);
insert into public.profiles values (1, 'ann', 'a'), (2, 'bob', 'b');
create table public.items (id int generated always as identity primary key, title text);
insert into public.items (title) values ('x');
create view public.profile_ids as select id from public.profiles;
create function public.old_fn() returns int language sql as 'select 1';
"""

# Adds a table, a column, an index, a constraint, a policy, a function, a trigger; drops a
# column; alters a column, a function, a view and RLS; and writes rows.
CHANGES = """create table public.notes (id bigint primary key, body text not null);
alter table public.profiles add column age int not null default 0;
create index profiles_age_idx on public.profiles (age);
alter table public.profiles add constraint age_positive check (age >= 0);
alter table public.profiles enable row level security;
create policy read_all on public.profiles for select using (true);
create function public.add_one(i int) returns int language sql as 'select i + 1';
create or replace function public.old_fn() returns int language sql as 'select 2';
create function public.touch() returns trigger language plpgsql as $$
begin
  return new;
end $$;
create trigger notes_touch before insert on public.notes for each row
  execute function public.touch();
create or replace view public.profile_ids as select id, bio from public.profiles;
alter table public.profiles drop column nickname;
alter table public.profiles alter column bio set not null;
update public.profiles set bio = 'changed';
insert into public.items (title) values ('y'), ('z');
delete from public.items where title = 'x';
"""


@contextmanager
def locked(db: Db) -> Iterator[psycopg.Connection]:
    """A connection holding the migration lock, as the pipeline's."""
    conn = connect(db.url, autocommit=True)
    try:
        acquire_lock(conn)
        yield conn
    finally:
        conn.close()


def dry_run(db: Db, path: Path, **kw: object) -> DryRunResult:
    with locked(db) as conn:
        return dry_run_migration(conn, read_migration(path), **kw)


def fingerprint(db: Db) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute(FINGERPRINT_SQL).fetchall()]


def rows(db: Db, table: str) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return conn.execute(f"select * from {table} order by 1").fetchall()


def test_passing_dry_run_leaves_the_database_unchanged(db: Db, project: Path) -> None:
    db.execute(SETUP)
    schema, profiles, items = fingerprint(db), rows(db, "public.profiles"), rows(db, "public.items")
    path = migration(project, "20250101000000_changes.sql", CHANGES)

    result = dry_run(db, path)

    assert result.passed, result.message
    assert result.failure is None
    assert result.attempts == 1
    assert {s.status for s in result.statements} == {"ok"}
    assert [s.rows_affected for s in result.statements][-3:] == [2, 2, 1]
    assert fingerprint(db) == schema
    assert rows(db, "public.profiles") == profiles
    assert rows(db, "public.items") == items
    assert "public.notes" not in user_tables(db)
    assert any("public.items_id_seq" in w for w in result.warnings)  # nextval is not undone
    # Control: the fingerprint does see these changes when they are made for real.
    db.execute(CHANGES)
    assert fingerprint(db) != schema


LOCKS = """select count(*) from public.items;
alter table public.items add column flag boolean;
insert into public.events (kind) values ('a'), ('b');
insert into public.events (kind) values ('c');
update public.items set note = 'x' where id <= 2;
create index orders_total_idx on public.orders (total);
"""


def test_reports_rows_affected_and_the_locks_each_statement_took(db: Db, project: Path) -> None:
    db.execute("""create table public.items (id int primary key, note text);
insert into public.items values (1), (2), (3);
create table public.events (id int generated by default as identity primary key, kind text);
create table public.orders (id int primary key, total int);""")
    path = migration(project, "20250101000000_locks.sql", LOCKS)

    result = dry_run(db, path)

    assert result.passed, result.message
    st = result.statements
    assert [s.line for s in st] == [1, 2, 3, 4, 5, 6]
    assert [s.rows_affected for s in st] == [1, 0, 2, 1, 2, 0]
    locks = [{(lk.relation, lk.mode) for lk in s.locks} for s in st]
    assert ("public.items", "AccessShareLock") in locks[0]
    assert ("public.items", "AccessExclusiveLock") in locks[1]
    assert {rel for rel, _ in locks[1]} == {"public.items"}
    assert ("public.events", "RowExclusiveLock") in locks[2]
    assert ("public.events_id_seq", "RowExclusiveLock") in locks[2]
    assert locks[3] == set()  # new per statement: statement 3 took these already
    assert ("public.items", "RowExclusiveLock") in locks[4]
    assert ("public.orders", "ShareLock") in locks[5]
    assert not any(rel.startswith(("pg_catalog.", "information_schema."))
                   for s in locks for rel, _ in s)
    assert "public.orders_total_idx" not in user_tables(db)


def test_lists_the_schema_changes_with_ddl(db: Db, project: Path) -> None:
    db.execute(SETUP)
    path = migration(project, "20250101000000_changes.sql", CHANGES)

    result = dry_run(db, path)

    assert result.passed, result.message
    assert {(c.kind, c.action, c.name) for c in result.changes} == {
        ("table", "added", "public.notes"),
        ("column", "added", "public.profiles.age"),
        ("column", "dropped", "public.profiles.nickname"),
        ("column", "altered", "public.profiles.bio"),
        ("view", "altered", "public.profile_ids"),
        ("index", "added", "public.profiles_age_idx"),
        ("constraint", "added", "public.notes.notes_pkey"),
        ("constraint", "added", "public.profiles.age_positive"),
        ("rls", "altered", "public.profiles"),
        ("policy", "added", "public.profiles.read_all"),
        ("function", "added", "public.add_one(i integer)"),
        ("function", "added", "public.touch()"),
        ("function", "altered", "public.old_fn()"),
        ("trigger", "added", "public.notes.notes_touch"),
    }
    ddl = {(c.kind, c.action, c.name): c.ddl for c in result.changes}
    assert ddl["index", "added", "public.profiles_age_idx"] == (
        "CREATE INDEX profiles_age_idx ON public.profiles USING btree (age);")
    assert ddl["column", "added", "public.profiles.age"] == (
        'alter table "public"."profiles" add column "age" integer not null default 0;')
    assert ddl["column", "dropped", "public.profiles.nickname"] == (
        'alter table "public"."profiles" drop column "nickname";')
    assert ddl["column", "altered", "public.profiles.bio"] == (
        'alter table "public"."profiles" alter column "bio" set not null;')
    assert ddl["constraint", "added", "public.profiles.age_positive"] == (
        'alter table "public"."profiles" add constraint "age_positive" CHECK ((age >= 0));')
    assert ddl["rls", "altered", "public.profiles"] == (
        'alter table "public"."profiles" enable row level security;')
    assert ddl["table", "added", "public.notes"].startswith('create table "public"."notes"')
    assert "select 2" in ddl["function", "altered", "public.old_fn()"]
    assert "for select" in ddl["policy", "added", "public.profiles.read_all"]
    assert 'alter table "public"."profiles" drop column "nickname";' in result.ddl_script
    assert "public.notes" not in user_tables(db)


FAILING = """create table public.t1 (id int primary key);
insert into public.t1 values (1);

insert into public.t1
  values (public.nope(1));
create table public.t2 (id int);
"""


def test_failing_statement_reports_line_sqlstate_hint_and_changes_nothing(
        db: Db, project: Path) -> None:
    before = fingerprint(db)
    path = migration(project, "20250101000000_fails.sql", FAILING)

    result = dry_run(db, path)

    assert not result.passed
    f = result.failure
    assert f is not None
    assert (f.line, f.sqlstate, f.index) == (5, "42883", 3)
    assert "public.nope(integer) does not exist" in f.message
    assert f.hint and "explicit type casts" in f.hint
    assert [s.status for s in result.statements] == ["ok", "ok", "failed", "not_run"]
    assert result.message and f"{path}:5" in result.message and "42883" in result.message
    assert result.changes == []
    assert fingerprint(db) == before
    assert user_tables(db) == ["dbsage.dry_run_log", "dbsage.dry_run_log_checksum_idx",
                               "dbsage.dry_run_log_id_seq", "dbsage.dry_run_log_pkey"]
    assert db.scalar("select failure from dbsage.dry_run_log where id = %s",
                     (result.record_id,)) == result.message


def test_failure_carries_the_detail(db18: Db, project: Path) -> None:
    db18.execute("create table public.t (id int primary key); insert into public.t values (1)")
    path = migration(project, "20250101000000_dup.sql",
                     "insert into public.t values (2);\ninsert into public.t values (1);\n")

    result = dry_run(db18, path)

    assert result.failure is not None
    assert (result.failure.line, result.failure.sqlstate) == (2, "23505")
    assert result.failure.detail == "Key (id)=(1) already exists."
    assert rows(db18, "public.t") == [(1,)]


def test_non_transactional_statements_are_validated_by_parsing_only(db: Db, project: Path) -> None:
    db.execute("create table public.t (a int); insert into public.t values (1)")
    before = fingerprint(db)
    path = migration(project, "20250101000000_concurrently.sql",
                     "create index concurrently t_a_idx on public.t (a);\nvacuum public.t;\n")

    result = dry_run(db, path)

    assert result.passed
    assert [s.status for s in result.statements] == [STATUS_PARSED_ONLY] * 2
    assert result.parsed_only == result.statements
    assert all(s.locks == [] and s.rows_affected == 0 for s in result.statements)
    assert result.changes == []
    assert fingerprint(db) == before
    assert db.scalar("select count(*) from pg_indexes where indexname = 't_a_idx'") == 0


TRIES_TO_COMMIT = {
    "do-block": ("create table public.leak (id int);\ndo $$ begin commit; end $$;\n",
                 "2D000", 2),
    "procedure": ("create table public.leak (id int);\n"
                  "create procedure public.p() language plpgsql as $$\n"
                  "begin insert into public.leak values (1); commit; end $$;\n"
                  "call public.p();\n", "2D000", 4),
    "set-transaction": ("create table public.leak (id int);\n"
                        "set transaction isolation level serializable;\n", "25001", 2),
    "savepoint-release": ("savepoint s1;\ncreate table public.leak (id int);\n"
                          "release savepoint s1;\n", None, None),
}


@pytest.mark.parametrize("case", TRIES_TO_COMMIT)
def test_a_file_that_tries_to_commit_changes_nothing(db: Db, project: Path, case: str) -> None:
    sql, sqlstate, line = TRIES_TO_COMMIT[case]
    before = fingerprint(db)
    path = migration(project, "20250101000000_commit.sql", sql)

    result = dry_run(db, path)

    assert result.passed is (sqlstate is None)
    if sqlstate:
        assert result.failure is not None
        assert (result.failure.sqlstate, result.failure.line) == (sqlstate, line)
    else:
        assert ("table", "added", "public.leak") in {(c.kind, c.action, c.name)
                                                    for c in result.changes}
    assert "public.leak" not in user_tables(db)
    assert fingerprint(db) == before


@pytest.mark.parametrize("ending", ["commit;", "end;", "commit and chain;",
                                    "prepare transaction 'x';", "rollback;"])
def test_a_transaction_ending_statement_is_refused_before_anything_runs(
        db18: Db, project: Path, ending: str) -> None:
    path = migration(project, "20250101000000_ends.sql",
                     f"create table public.leak (id int);\n{ending}\ncreate table public.b (id int);\n")
    with pytest.raises(TransactionShapeError) as exc:
        read_migration(path)
    assert exc.value.line == 2


def test_dry_run_refuses_a_hand_built_commit_statement(db18: Db, project: Path) -> None:
    from pglast import parse_sql

    path = migration(project, "20250101000000_ok.sql", "create table public.leak (id int);\n")
    parsed = read_migration(path)
    commit = Statement(2, "commit", 2, 1, 2, "TransactionStmt", True, parse_sql("commit")[0].stmt)
    crafted = dataclasses.replace(parsed, statements=(*parsed.statements, commit))

    with locked(db18) as conn, pytest.raises(TransactionShapeError):
        dry_run_migration(conn, crafted)
    assert "public.leak" not in user_tables(db18)


def test_dry_run_log_records_runs_and_finds_passing_ones_by_checksum(db: Db, project: Path) -> None:
    good = read_migration(migration(project, "20250101000000_good.sql",
                                    "create table public.a (id int);\ncreate table public.b (id int);\n"))
    bad = read_migration(migration(project, "20250101000001_bad.sql",
                                   "create table public.c (id int);\nselect 1/0;\n"))
    with locked(db) as conn:
        assert find_passing_dry_run(conn, good.checksum) is None  # no log table yet
        first = dry_run_migration(conn, good)
        failed = dry_run_migration(conn, bad)
        found = find_passing_dry_run(conn, good.checksum)
        assert find_passing_dry_run(conn, bad.checksum) is None
        assert find_passing_dry_run(conn, "0" * 64) is None
        second = dry_run_migration(conn, good)
        latest = find_passing_dry_run(conn, good.checksum)
        holder = find_lock_holder(db.connect())
        assert holder is not None and holder.pid == conn.info.backend_pid  # lock kept

    assert found is not None and found.id == first.record_id
    assert (found.version, found.path, found.checksum, found.passed, found.statements,
            found.failure) == ("20250101000000", str(good.path), good.checksum, True, 2, None)
    assert found.duration_ms > 0
    assert latest is not None and latest.id == second.record_id > first.record_id
    assert not failed.passed and failed.failure and failed.failure.sqlstate == "22012"
    assert db.scalar("select count(*) from dbsage.dry_run_log") == 3
    assert db.scalar("select passed from dbsage.dry_run_log where id = %s",
                     (failed.record_id,)) is False
    assert [t for t in user_tables(db) if t.startswith("public.")] == []


def _release_after_a_wait(db: Db, holder: psycopg.Connection) -> None:
    """Roll `holder` back once another session has queued for its lock on public.t and given
    up (its lock_timeout fired): the next attempt then gets the lock."""
    query = ("select exists (select from pg_locks where not granted and "
             "relation = 'public.t'::regclass)")
    with psycopg.connect(db.url, autocommit=True) as watcher:
        for waiting in (True, False):
            while watcher.execute(query).fetchone() != (waiting,):
                pass
    holder.rollback()


def test_lock_timeout_is_retried_then_reported(db18: Db, project: Path) -> None:
    db18.execute("create table public.t (id int)")
    path = migration(project, "20250101000000_t.sql", "insert into public.t values (1);\n")
    holder = psycopg.connect(db18.url)
    try:
        holder.execute("lock table public.t in access exclusive mode")
        blocked = dry_run(db18, path, lock_timeout="50ms", retry=fast_retry(2))
        # Let go once the dry-run has waited (and timed out) at least once: a fixed delay was
        # shorter than the dry-run's start-up on a loaded machine.
        threading.Thread(target=_release_after_a_wait, args=(db18, holder), daemon=True).start()
        waited = dry_run(db18, path, lock_timeout="50ms", retry=fast_retry(10))
    finally:
        holder.close()

    assert not blocked.passed and blocked.attempts == 2
    assert blocked.failure is not None and blocked.failure.sqlstate == "55P03"
    assert blocked.failure.hint and "lock_timeout 50ms" in blocked.failure.hint
    assert waited.passed and waited.attempts > 1
    assert waited.statements[0].rows_affected == 1
    assert rows(db18, "public.t") == []
