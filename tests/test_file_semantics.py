"""A migration file cannot switch dbsage's protections off, act as another role, release the
migration lock, read from a client that is not there, end dbsage's transaction behind its
back, or hide text from the parser (issue 10, item 6 and 8; issue 13, the matching items).

The pure tests read files only; the database ones run on the Supabase-shaped servers (18 and
15) as the NON-superuser `postgres` role, through the tools and through `dbsage` itself.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import migration, run_cli
from supabase_shaped import SupaDb

from dbsage.tools.analyze import analyze_migration, file_warnings
from dbsage.tools.apply import apply_migration
from dbsage.tools.errors import (
    LockTimeoutExhaustedError,
    MigrationFailedError,
    MigrationFileError,
    TransactionShapeError,
)
from dbsage.tools.execute import LockRetryPolicy
from dbsage.tools.lock import MIGRATION_LOCK_KEY, acquire_lock, release_lock
from dbsage.tools.sqlfile import parse_statements, read_migration

PG_DUMP_HEADER = """--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE TABLE public.dumped (id bigint NOT NULL, note text);
"""


def _file(tmp_path: Path, sql: str | bytes, name: str = "20250101000000_m.sql") -> Path:
    p = tmp_path / name
    if isinstance(sql, bytes):
        p.write_bytes(sql)
    else:
        p.write_text(sql)
    return p


# --------------------------------------------------------------------------- analysis, no database


def test_every_pg_dump_header_line_is_recognised_with_its_line(tmp_path: Path) -> None:
    a = analyze_migration(read_migration(_file(tmp_path, PG_DUMP_HEADER)))
    by_line = {c.line: c for c in a.settings}
    assert sorted(by_line) == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert all(c.pg_dump_header for c in a.settings)
    assert (by_line[6].name, by_line[6].value, by_line[6].scope) == ("lock_timeout", "0",
                                                                    "session")
    assert by_line[6].changes_timeouts and by_line[5].changes_timeouts
    assert "dbsage sets its own lock_timeout again" in by_line[6].effect
    assert (by_line[10].name, by_line[10].value) == ("search_path", "")
    assert "schema-qualified" in by_line[10].effect
    assert "row-level security" in by_line[14].effect
    # the statement's own analysis carries it too, and the report sentence names the line
    assert a.statements[1].settings == (by_line[6],)
    assert a.warnings[1].startswith("line 6: SET lock_timeout = 0 (a pg_dump header line): ")


@pytest.mark.parametrize("sql, line, name, value, scope", [
    ("create table t (id bigint);\nSET LOCAL statement_timeout = '5s';", 2, "statement_timeout",
     "5s", "transaction"),
    ("select set_config('lock_timeout', '10s', false);", 1, "lock_timeout", "10s", "session"),
    ("select 1;\n\nselect pg_catalog.set_config('search_path', 'app, public', true);", 3,
     "search_path", "app, public", "transaction"),
    ("SET search_path = app, extensions;", 1, "search_path", "app, extensions", "session"),
    ("RESET lock_timeout;", 1, "lock_timeout", None, "session"),
    ("SET SESSION lock_timeout TO DEFAULT;", 1, "lock_timeout", None, "session"),
    ("do $$\nbegin\n  set lock_timeout = 0;\nend $$;", 3, "lock_timeout", "0", "session"),
])
def test_settings_the_file_changes_are_found_with_their_line(
        tmp_path: Path, sql: str, line: int, name: str, value: str | None, scope: str) -> None:
    a = analyze_migration(read_migration(_file(tmp_path, sql)))
    [change] = a.settings
    assert (change.line, change.name, change.value, change.scope) == (line, name, value, scope)
    assert not change.pg_dump_header


@pytest.mark.parametrize("sql, line, what", [
    ("select 1;\ncopy public.t to program 'cat > /tmp/x';", 2, "COPY ... TO PROGRAM"),
    ("copy public.t from '/etc/passwd';", 1, "COPY ... FROM '/etc/passwd'"),
    ("copy public.t to '/tmp/t.csv';", 1, "COPY ... TO '/tmp/t.csv'"),
    ("select lo_export(1, '/tmp/y');", 1, "lo_export()"),
    ("select lo_import('/etc/hosts');", 1, "lo_import()"),
    ("select pg_terminate_backend(pid)\n  from pg_stat_activity where usename = 'x';", 1,
     "pg_terminate_backend()"),
    ("select pg_reload_conf();", 1, "pg_reload_conf()"),
    ("select dblink_exec('dbname=x', 'drop table y');", 1, "dblink_exec()"),
    ("do $$\nbegin\n  perform pg_cancel_backend(1);\nend $$;", 3, "pg_cancel_backend()"),
])
def test_statements_that_act_on_the_database_host_are_flagged(tmp_path: Path, sql: str,
                                                              line: int, what: str) -> None:
    a = analyze_migration(read_migration(_file(tmp_path, sql)))
    [action] = a.server_actions
    assert action.line == line and action.what.startswith(what)
    flagged = [s for s in a.statements if s.acts_on_server]
    assert [s.acts_on_server for s in flagged] == [action]  # the flag the dry-run reads
    assert "acts on the database host" in action.message


def test_a_view_that_calls_such_a_function_does_not_call_it_now(tmp_path: Path) -> None:
    sql = ("create view public.v as select pg_terminate_backend(1);\n"
           "create function public.f() returns void language sql as "
           "'select pg_reload_conf()';\n")
    m = read_migration(_file(tmp_path, sql))
    assert analyze_migration(m).server_actions == () and file_warnings(m) == ()


@pytest.mark.parametrize("sql, line, needle, key", [
    ("create table t (id bigint);\nSET ROLE anon;\n", 2, "SET ROLE", "role"),
    ("SET LOCAL ROLE service_role;", 1, "SET ROLE", "role"),
    ("SET SESSION AUTHORIZATION supabase_admin;", 1, "SET SESSION AUTHORIZATION", "role"),
    ("select 1;\nRESET ROLE;", 2, "RESET ROLE", "role"),
    ("select set_config('role', 'anon', false);", 1, "set_config('role'", "role"),
    ("DISCARD PLANS;", 1, "DISCARD PLANS", "discard"),
    ("select 1;\nselect pg_advisory_unlock_all();", 2, "pg_advisory_unlock_all()",
     "advisory_lock"),
    ("select pg_catalog.pg_advisory_unlock(hashtext('dbsage:migrate'));", 1,
     "pg_advisory_unlock()", "advisory_lock"),
    ("select pg_advisory_lock(42);", 1, "pg_advisory_lock()", "advisory_lock"),
    ("do $$\nbegin\n  perform pg_advisory_unlock_all();\nend $$;", 3, "pg_advisory_unlock_all()",
     "advisory_lock"),
    ("do $$ begin set role anon; end $$;", 1, "set role", "role"),
    ("SET standard_conforming_strings = off;", 1, "standard_conforming_strings",
     "standard_conforming_strings"),
])
def test_identity_and_lock_statements_are_refused_with_the_reason(
        tmp_path: Path, sql: str, line: int, needle: str, key: str) -> None:
    with pytest.raises(MigrationFileError) as e:
        read_migration(_file(tmp_path, sql))
    assert e.value.exit_code == 2 and e.value.line == line
    assert needle in e.value.message and "Nothing was run" in e.value.message
    assert e.value.data["refused"] == key and e.value.hint


def test_reset_all_is_applied_and_dbsage_keeps_its_timeouts(tmp_path: Path) -> None:
    """`supabase db dump` writes RESET ALL: psql applies it, so dbsage does; the analysis
    marks it as changing every setting, so the executor sets dbsage's timeouts again."""
    from dbsage.tools.analyze import analyze_migration

    m = read_migration(_file(tmp_path, "create table t (id bigint);\nRESET ALL;\n"))
    changes = [c for s in analyze_migration(m).statements for c in s.settings]
    assert [(c.name, c.line) for c in changes] == [("all", 2)]
    assert changes[0].changes_timeouts


def test_transaction_level_advisory_locks_are_fine(tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, "select pg_advisory_xact_lock(42);"))
    assert len(m.statements) == 1


@pytest.mark.parametrize("sql, needle", [
    ("create table public.t (id bigint);\ncopy public.t from stdin;", "COPY ... FROM STDIN"),
    ("copy (select 1) to stdout;", "COPY ... TO STDOUT"),
    # pg_dump's data section: the rows follow the COPY and end with \.
    ("create table public.t (id bigint, v text);\ncopy public.t (id, v) FROM stdin;\n1\tx\n"
     "2\ty\n\\.\n", "COPY ... FROM STDIN"),
])
def test_copy_from_stdin_is_refused_with_how_to_load_data(tmp_path: Path, sql: str,
                                                          needle: str) -> None:
    with pytest.raises(MigrationFileError) as e:
        read_migration(_file(tmp_path, sql))
    assert e.value.line == 2 or needle.endswith("STDOUT")
    assert needle in e.value.message
    assert "\\copy" in (e.value.hint or "") and "seed" in (e.value.hint or "")


def test_a_nul_byte_is_refused_with_line_and_column(tmp_path: Path) -> None:
    p = _file(tmp_path, b"create table public.a (id bigint);\ncreate table public.b (id bigint);"
                        b"\x00\ncreate table public.c (id bigint);\n")
    with pytest.raises(MigrationFileError) as e:
        read_migration(p)
    assert (e.value.line, e.value.column) == (2, 35)
    assert f"{p}:2:35:" in e.value.message and "silently left out" in e.value.message


@pytest.mark.parametrize("sql, line, col, needle", [
    ("select 1;\n-- \u202e evil comment\n", 2, 4, "U+202E"),  # Trojan Source, in a comment
    ("create table public.foo\u200b (id bigint);", 1, 24, "U+200B ZERO WIDTH SPACE"),
    ("create table public.a (id bigint);\nselect 1\u2028;", 2, 9, "U+2028"),
])
def test_characters_that_read_differently_from_how_they_look_are_refused(
        tmp_path: Path, sql: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(MigrationFileError) as e:
        read_migration(_file(tmp_path, sql))
    assert (e.value.line, e.value.column) == (line, col) and needle in e.value.message


def test_invisible_characters_inside_strings_and_comments_are_data(tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, "select 'a\u200bb', 'x\u00ady'; -- \u200b\n"))
    assert len(m.statements) == 1


MID_FILE = ("create table public.a (id bigint);\nbegin;\ncreate table public.b (id bigint);\n"
            "commit;\ncreate table public.c (id bigint);\n")


def test_a_mid_file_begin_commit_is_refused_naming_both_lines(tmp_path: Path) -> None:
    with pytest.raises(TransactionShapeError) as e:
        read_migration(_file(tmp_path, MID_FILE))
    err = e.value
    assert err.line == 2 and err.exit_code == 2
    assert "BEGIN at line 2, COMMIT at line 4" in err.message
    assert "Nothing was run" in err.message
    assert "allowing its transaction control" in (err.hint or "")
    assert err.data["transaction_control"] == [{"statement": "BEGIN", "line": 2},
                                               {"statement": "COMMIT", "line": 4}]
    assert err.data["run_as_written"] is True


def test_allowed_it_is_kept_as_written(tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, MID_FILE), allow_transaction_control=True)
    assert [s.line for s in m.statements] == [1, 2, 3, 4, 5]  # BEGIN/COMMIT run too
    assert [s.line for s in m.transaction_control] == [2, 4]
    assert not m.transactional and not m.wrapped_in_transaction


def test_an_outer_begin_commit_needs_no_permission(tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, "BEGIN;\ncreate table public.a (id bigint);\nCOMMIT;\n"))
    assert m.wrapped_in_transaction and m.transactional and m.transaction_control == ()


@pytest.mark.parametrize("sql, line, needle", [
    ("create table public.a (id bigint);\nrollback;\n", 2, "ROLLBACK at line 2"),
    ("begin;\ncreate table public.a (id bigint);\nbegin;\nselect 1;\ncommit;\n", 3,
     "inside the transaction begun at line 1"),
    ("select 1;\nbegin;\ncreate table public.a (id bigint);\n", 2, "never committed"),
])
def test_even_allowed_what_cannot_be_recorded_is_refused(tmp_path: Path, sql: str, line: int,
                                                         needle: str) -> None:
    with pytest.raises(TransactionShapeError) as e:
        read_migration(_file(tmp_path, sql), allow_transaction_control=True)
    assert e.value.line == line and needle in e.value.message


def test_apply_refuses_a_file_read_with_transaction_control_unless_allowed(
        tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, MID_FILE), allow_transaction_control=True)
    with pytest.raises(TransactionShapeError) as e:  # before any SQL: no connection needed
        apply_migration(_NoConnection(), m)  # type: ignore[arg-type]
    assert "BEGIN at line 2, COMMIT at line 4" in e.value.message


class _NoConnection:
    """Fails the test if anything reaches the database."""

    def execute(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"ran SQL: {args[0]!r}")


# --------------------------------------------------------------------------- on the database


def _setup(db: SupaDb, sql: str) -> None:
    with db.connect() as conn:
        conn.execute(sql.encode())


def _waiting_alter(db: SupaDb, table: str, deadline: float) -> bool:
    """Until `deadline`: an ALTER TABLE queued for ACCESS EXCLUSIVE on `table`."""
    with db.connect() as mon:
        while time.monotonic() < deadline:
            row = mon.execute(
                "select count(*) from pg_locks where relation = %s::regclass and "
                "mode = 'AccessExclusiveLock' and not granted", (table,)).fetchone()
            if row and row[0]:
                return True
            time.sleep(0.01)
    return False


def _reader_wait(db: SupaDb, run: Any, hold_s: float = 2.5) -> tuple[float, Any]:
    """A blocker holds ACCESS SHARE on public.accounts for `hold_s`; `run()` queues an ALTER
    behind it; a reader arriving after the ALTER queued is timed. (reader wait, run's
    outcome)."""
    blocker = db.connect(autocommit=False)
    blocker.execute("select * from public.accounts")  # ACCESS SHARE until it commits
    release = threading.Timer(hold_s, blocker.commit)
    release.start()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run()
        except Exception as exc:  # the test looks at it
            outcome["result"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert _waiting_alter(db, "public.accounts", time.monotonic() + 2.0)
        with db.connect() as reader:
            t0 = time.monotonic()
            reader.execute("select count(*) from public.accounts").fetchone()
            waited = time.monotonic() - t0
        worker.join(10)
    finally:
        release.cancel()
        blocker.close()
    return waited, outcome.get("result")


TIMEOUT_OFF = "SET lock_timeout = 0;\nALTER TABLE public.accounts ADD COLUMN note text;\n"


def test_a_file_cannot_turn_off_the_lock_timeout(supa_db: SupaDb, tmp_path: Path) -> None:
    """The measurement of issue 10, item 6: the file starts `SET lock_timeout = 0;`, a blocker
    holds the table, the ALTER queues; a reader's wait stays within dbsage's lock_timeout."""
    _setup(supa_db, "create table public.accounts (id bigint primary key);"
                    "insert into public.accounts values (1)")
    lock_timeout = 0.3
    m = read_migration(_file(tmp_path, TIMEOUT_OFF))

    def with_dbsage() -> Any:
        with psycopg.connect(supa_db.url, autocommit=True) as conn:
            return apply_migration(conn, m, lock_timeout=f"{int(lock_timeout * 1000)}ms",
                                   retry=LockRetryPolicy(attempts=1))

    def as_the_file_says() -> Any:  # what happened before: the file's SET won
        with psycopg.connect(supa_db.url, autocommit=True) as conn, conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'".encode())
            for s in m.statements:
                conn.execute(s.sql.encode())

    fixed, result = _reader_wait(supa_db, with_dbsage)
    assert isinstance(result, LockTimeoutExhaustedError)  # the ALTER gave up, not the reader
    unprotected, _ = _reader_wait(supa_db, as_the_file_says)
    print(f"\nPostgreSQL {supa_db.server.major}: reader waited {fixed:.2f}s with dbsage's "
          f"lock_timeout {lock_timeout}s kept, {unprotected:.2f}s when the file's "
          "`SET lock_timeout = 0` wins")
    assert fixed <= lock_timeout + 0.25
    assert unprotected >= 1.5


def test_the_file_sees_dbsages_timeouts_and_leaks_no_setting(supa_db: SupaDb,
                                                             tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, PG_DUMP_HEADER + "select 1;\n"))
    seen: dict[int, tuple[str, str]] = {}
    with psycopg.connect(supa_db.url, autocommit=True) as conn:
        before = [conn.execute(f"show {n}".encode()).fetchone() for n in
                  ("lock_timeout", "statement_timeout", "search_path", "check_function_bodies",
                   "row_security", "client_min_messages")]

        def look(res: Any) -> None:
            row = conn.execute("select current_setting('lock_timeout'), "
                               "current_setting('statement_timeout')").fetchone()
            assert row is not None
            seen[res.line] = (row[0], row[1])

        result = apply_migration(conn, m, lock_timeout="750ms", statement_timeout="40s",
                                 on_statement=look)
        after = [conn.execute(f"show {n}".encode()).fetchone() for n in
                 ("lock_timeout", "statement_timeout", "search_path", "check_function_bodies",
                  "row_security", "client_min_messages")]
        role = conn.execute("select current_user").fetchone()
    assert seen[5] == ("750ms", "40s") and seen[6] == ("750ms", "40s")  # after the SET lines
    assert after == before  # nothing the file SET for the session outlives it
    assert {"search_path", "check_function_bodies", "row_security"} <= set(result.reset_settings)
    assert role == ("postgres",)
    assert supa_db.scalar("select count(*) from public.dumped") == 0


def test_no_unlock_inside_the_transaction_lets_a_second_migration_in(supa_db: SupaDb,
                                                                      tmp_path: Path) -> None:
    # A function defined earlier hides the unlock from the analysis: the guard still holds.
    _setup(supa_db, "create function public.sneaky() returns void language sql as "
                    "'select pg_advisory_unlock_all()'")
    m = read_migration(_file(tmp_path, "select public.sneaky();\n"
                                       "create table public.after_unlock (id bigint);\n"))
    second: list[bool] = []
    with psycopg.connect(supa_db.url, autocommit=True) as conn, \
            psycopg.connect(supa_db.url, autocommit=True) as other:
        acquire_lock(conn)

        def try_lock(res: Any) -> None:
            row = other.execute("select pg_try_advisory_lock(hashtext(%s))",
                                (MIGRATION_LOCK_KEY,)).fetchone()
            assert row is not None
            second.append(bool(row[0]))
            if row[0]:
                other.execute("select pg_advisory_unlock(hashtext(%s))", (MIGRATION_LOCK_KEY,))

        apply_migration(conn, m, on_statement=try_lock)
        release_lock(conn)
    assert second == [False, False]  # held through the transaction, the unlock notwithstanding


def test_history_is_written_as_the_connecting_role(supa_db: SupaDb, project: Path) -> None:
    """A function that does SET ROLE (invisible to the analysis) runs in the migration; the
    history row is still written, as postgres (it used to fail: permission denied for schema
    dbsage, blamed on line 0)."""
    _setup(supa_db, "create function public.become_anon() returns void language plpgsql as "
                    "$$ begin set role anon; end $$")
    path = migration(project, "20250101000000_role.sql",
                     "create table public.r (id bigint);\nselect public.become_anon();\n")
    done = _apply(supa_db, project, path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert supa_db.scalar("select count(*) from supabase_migrations.schema_migrations "
                          "where version = '20250101000000'") == 1


# --------------------------------------------------------------------------- through dbsage


def _apply(db: SupaDb, project: Path, path: Path, *extra: str) -> Any:
    # --force: these files make tables in public without RLS, which the advisors refuse
    return run_cli("apply", str(path), "--db", db.url, "--mode", "yolo", "--force", *extra,
                   cwd=project)


def _tables(db: SupaDb) -> list[str]:
    rows: list[str] = []
    with db.connect() as conn:
        rows = [r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = 'public' order by 1").fetchall()]
    return rows


def _history(db: SupaDb) -> int:
    with db.connect() as conn:
        row = conn.execute("select to_regclass('supabase_migrations.schema_migrations')"
                           ).fetchone()
        if row is None or row[0] is None:
            return 0
        return int(conn.execute("select count(*) from supabase_migrations.schema_migrations"
                                ).fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize("sql, needle", [
    ("create table public.t1 (id bigint);\nset role anon;\ncreate table public.t2 (id bigint);\n",
     ":2: SET ROLE"),
    ("create table public.t1 (id bigint);\nselect pg_advisory_unlock_all();\n",
     ":2: pg_advisory_unlock_all()"),
    ("create table public.t1 (id bigint);\ncopy public.t1 from stdin;\n", ":2: COPY ... FROM STDIN"),
])
def test_refused_before_anything_runs_and_nothing_changes(supa_db18: SupaDb, project: Path,
                                                         sql: str, needle: str) -> None:
    path = migration(project, "20250101000000_bad.sql", sql)
    done = _apply(supa_db18, project, path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stdout
    assert _tables(supa_db18) == [] and _history(supa_db18) == 0
    assert not (project / "supabase" / "snapshots").exists()  # refused before the lock


def test_a_nul_byte_is_refused_by_dbsage_with_line_and_column(supa_db18: SupaDb,
                                                              project: Path) -> None:
    path = project / "supabase" / "migrations" / "20250101000000_nul.sql"
    path.write_bytes(b"create table public.a (id bigint);\x00\ncreate table public.b (id bigint);\n")
    done = _apply(supa_db18, project, path)
    assert done.returncode == 2 and f"{path}:1:35: the file holds a NUL byte" in done.stdout
    assert _tables(supa_db18) == [] and _history(supa_db18) == 0


def test_mid_file_transaction_control_refused_then_run_as_written(supa_db: SupaDb,
                                                                  project: Path) -> None:
    path = migration(project, "20250101000000_parts.sql", MID_FILE)
    refused = _apply(supa_db, project, path)
    assert refused.returncode == 2
    assert "BEGIN at line 2, COMMIT at line 4" in refused.stdout
    assert f"dbsage apply {path} --allow-transaction-control" in refused.stdout
    assert _tables(supa_db) == [] and _history(supa_db) == 0

    done = _apply(supa_db, project, path, "--allow-transaction-control", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    assert _tables(supa_db) == ["a", "b", "c"] and _history(supa_db) == 1
    risk = [w for w in report["warnings"] if w.startswith("Run as written")]
    assert risk and "lines 2-4 (BEGIN at line 2 ... COMMIT at line 4)" in risk[0]
    assert "had a statement failed after a COMMIT" in risk[0]


def test_run_as_written_a_failure_after_a_commit_keeps_that_part_and_no_history(
        supa_db18: SupaDb, project: Path) -> None:
    path = migration(project, "20250101000000_half.sql",
                     "begin;\ncreate table public.a (id bigint);\ncommit;\nbegin;\n"
                     "create table public.b (id bigint);\ncreate table public.c (id bigint "
                     "references public.nope);\ncommit;\n")
    done = _apply(supa_db18, project, path, "--allow-transaction-control")
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "still applied: lines 1-3 (BEGIN at line 1 ... COMMIT at line 3)" in out
    assert "The transaction begun at line 4 was rolled back" in out
    assert "not marked applied" in out
    assert _tables(supa_db18) == ["a"] and _history(supa_db18) == 0


def test_plan_and_dry_run_say_what_the_files_settings_change(supa_db18: SupaDb,
                                                             project: Path) -> None:
    path = migration(project, "20250101000000_dump.sql", PG_DUMP_HEADER +
                     "select pg_terminate_backend(pid) from pg_stat_activity where pid = -1;\n")
    for command in ("plan", "dry-run"):
        done = run_cli(command, str(path), "--db", supa_db18.url, "--json", cwd=project)
        assert done.stdout.startswith("{"), done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert done.returncode == 0, report
        warnings = report["warnings"]
        assert any(w.startswith("20250101000000_dump.sql line 6: SET lock_timeout = 0 (a "
                                "pg_dump header line)") for w in warnings), warnings
        assert any("line 10: set_config('search_path', '', false)" in w for w in warnings)
        assert any("line 17: pg_terminate_backend() acts on the database host" in w
                   for w in warnings)
    applied = _apply(supa_db18, project, path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "line 6: SET lock_timeout = 0 (a pg_dump header line)" in " ".join(
        applied.stdout.split())


def test_tools_report_a_failure_inside_the_first_part_as_nothing_committed(
        supa_db18: SupaDb, tmp_path: Path) -> None:
    m = read_migration(_file(tmp_path, "select 1;\nbegin;\ncreate table public.x (id bigint "
                                       "references public.nope);\ncommit;\n"),
                       allow_transaction_control=True)
    with psycopg.connect(supa_db18.url, autocommit=True) as conn:
        with pytest.raises(MigrationFailedError) as e:
            apply_migration(conn, m, allow_transaction_control=True)
        assert conn.info.transaction_status == 0  # the file's open transaction was ended
    assert e.value.data["committed_parts"] == [[1, 1, False]]
    assert "The transaction begun at line 2 was rolled back" in e.value.message
    assert _tables(supa_db18) == []


def test_parse_statements_refuses_the_same_for_every_caller() -> None:
    with pytest.raises(MigrationFileError):
        parse_statements("select 1;\x00select 2", "rollback.sql")
