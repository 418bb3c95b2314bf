"""Smoke test on real PostgreSQL (embedded 18 and Debian 15): each check passes on a healthy
database and fails / warns on a broken one; user tests run and leave nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Db
from psycopg import sql

from dbsage.tools.errors import DbsageError
from dbsage.tools.smoke import (
    CheckOutcome,
    SmokeTestError,
    check_invalid_indexes,
    check_migration_history,
    check_not_valid_constraints,
    check_relations_selectable,
    check_rls_enabled,
    check_sequences,
    check_unindexed_foreign_keys,
    discover_user_tests,
    migration_version,
    parse_tap,
    pgtap_available,
    read_history_state,
    run_smoke_test,
    run_user_test,
    run_user_tests,
)
from dbsage.tools.sqlfile import read_migration


@pytest.fixture
def conn(db: Db) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database (on each server)."""
    with db.connect() as c:
        yield c


@pytest.fixture
def conn18(db18: Db) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a database on the embedded server only."""
    with db18.connect() as c:
        yield c


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _assert_clean(outcome: CheckOutcome) -> None:
    assert (outcome.status, outcome.items) == ("pass", []), outcome
    assert outcome.duration_ms >= 0


# --------------------------------------------------------------------------- relations


def test_relations_selectable_passes_for_tables_views_and_matviews(conn: psycopg.Connection) -> None:
    conn.execute("""
        CREATE TABLE todos (id int PRIMARY KEY, title text);
        CREATE VIEW open_todos AS SELECT * FROM todos;
        CREATE MATERIALIZED VIEW todo_count AS SELECT count(*) FROM todos;
        CREATE SCHEMA app; CREATE TABLE app.things (id int);""")
    outcome = check_relations_selectable(conn)
    _assert_clean(outcome)
    assert outcome.detail.startswith("4 relations")


def test_relations_selectable_reports_every_broken_relation(conn: psycopg.Connection,
                                                            db: Db) -> None:
    # Three real ways a relation stops answering: a view over an SQL function whose table was
    # dropped (function bodies are no dependencies, so no CASCADE removed the view), a view
    # whose owner lost the privilege on its table, and a materialized view never populated.
    owner = sql.Identifier(f"smoke_owner_{db.name}")  # roles are per cluster: unique name
    conn.execute(sql.SQL("CREATE ROLE {}").format(owner))
    conn.execute("""
        CREATE TABLE gone (id int);
        CREATE FUNCTION all_gone() RETURNS SETOF int STABLE LANGUAGE sql
            AS 'SELECT id FROM gone';
        CREATE VIEW a_over_dropped AS SELECT * FROM all_gone() AS g(id);
        CREATE TABLE secret (id int);
        CREATE VIEW b_revoked AS SELECT * FROM secret;
        CREATE MATERIALIZED VIEW c_empty AS SELECT 1 AS one WITH NO DATA;
        CREATE TABLE fine (id int);
        CREATE SCHEMA dbsage; CREATE VIEW dbsage.ignored AS SELECT * FROM all_gone() AS g(id);
        CREATE SCHEMA storage; CREATE VIEW storage.ignored AS SELECT * FROM all_gone() AS g(id);
        DROP TABLE gone;""")
    conn.execute(sql.SQL("ALTER VIEW b_revoked OWNER TO {}").format(owner))
    try:
        outcome = check_relations_selectable(conn)
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(owner))
    assert outcome.status == "fail"
    assert len(outcome.items) == 3, outcome.items
    dropped, revoked, empty = outcome.items
    assert dropped.startswith("public.a_over_dropped: 42P01") and '"gone"' in dropped
    # each failure is its own: none is a 25P02 left over from the one before
    assert revoked.startswith("public.b_revoked: 42501: permission denied for table secret")
    assert empty.startswith("public.c_empty: 55000")
    assert "3 of 5" in outcome.detail
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# --------------------------------------------------------------------------- indexes


def test_invalid_index_from_failed_concurrent_build_fails(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE dup (x int); INSERT INTO dup VALUES (1), (1), (2);"
                 "CREATE INDEX dup_ok ON dup (x)")
    _assert_clean(check_invalid_indexes(conn))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_x_key ON dup (x)")
    outcome = check_invalid_indexes(conn)
    assert outcome.status == "fail"
    assert outcome.items == ["public.dup_x_key on dup"]


# --------------------------------------------------------------------------- constraints


def test_not_valid_constraint_fails_until_validated(conn: psycopg.Connection) -> None:
    conn.execute("""
        CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent VALUES (1);
        CREATE TABLE child (id int, parent_id int); INSERT INTO child VALUES (1, 1);
        ALTER TABLE child ADD CONSTRAINT child_id_positive CHECK (id > 0) NOT VALID;
        ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id)
            REFERENCES parent NOT VALID;""")
    outcome = check_not_valid_constraints(conn)
    assert outcome.status == "fail"
    assert outcome.items == ["child: child_id_positive (CHECK)",
                             "child: child_parent_fk (FOREIGN KEY)"]
    conn.execute("ALTER TABLE child VALIDATE CONSTRAINT child_id_positive;"
                 "ALTER TABLE child VALIDATE CONSTRAINT child_parent_fk")
    _assert_clean(check_not_valid_constraints(conn))


# --------------------------------------------------------------------------- sequences


def test_sequence_fails_at_eighty_percent_of_its_maximum(conn: psycopg.Connection) -> None:
    # smallint: max 32767; 80% is 26213.6 -> 26213 passes, 26214 fails.
    conn.execute("CREATE SEQUENCE small AS smallint; SELECT setval('small', 26213);"
                 "CREATE SEQUENCE unused; CREATE TABLE t (id serial); INSERT INTO t DEFAULT VALUES")
    _assert_clean(check_sequences(conn))
    conn.execute("SELECT setval('small', 26214)")
    outcome = check_sequences(conn)
    assert outcome.status == "fail"
    assert outcome.items == ["public.small: 80.0% of its maximum"]


def test_descending_sequence_near_its_minimum_fails(conn: psycopg.Connection) -> None:
    conn.execute("CREATE SEQUENCE down AS smallint INCREMENT -1 MAXVALUE 0 START 0;"
                 "SELECT setval('down', -30000)")
    outcome = check_sequences(conn)
    assert outcome.status == "fail"
    assert outcome.items == ["public.down: 91.6% of its maximum"]


# --------------------------------------------------------------------------- foreign keys


def test_foreign_key_without_index_warns_until_indexed(conn: psycopg.Connection) -> None:
    conn.execute("""
        CREATE TABLE users (id int PRIMARY KEY);
        CREATE TABLE todos (id int PRIMARY KEY, user_id int REFERENCES users);
        CREATE TABLE pairs (a int, b int, PRIMARY KEY (a, b));
        CREATE TABLE pair_refs (a int, b int, c int, FOREIGN KEY (a, b) REFERENCES pairs);
        CREATE INDEX pair_refs_a ON pair_refs (a);  -- covers only half of the key""")
    outcome = check_unindexed_foreign_keys(conn)
    assert outcome.status == "warn"
    assert outcome.items == [
        "pair_refs (a, b) → pairs, constraint pair_refs_a_b_fkey: CREATE INDEX ON pair_refs "
        "(a, b)",
        "todos (user_id) → users, constraint todos_user_id_fkey: CREATE INDEX ON todos (user_id)",
    ]
    conn.execute("CREATE INDEX ON todos (user_id); CREATE INDEX ON pair_refs (b, a, c)")
    _assert_clean(check_unindexed_foreign_keys(conn))


# --------------------------------------------------------------------------- RLS


def test_tables_without_rls_in_exposed_schemas_warn(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE open_table (id int); CREATE TABLE locked (id int);"
                 "ALTER TABLE locked ENABLE ROW LEVEL SECURITY;"
                 "CREATE SCHEMA api; CREATE TABLE api.hidden (id int)")
    outcome = check_rls_enabled(conn)
    assert outcome.status == "warn"
    assert outcome.items == ["public.open_table"]
    assert check_rls_enabled(conn, exposed_schemas=("public", "api")).items == [
        "api.hidden", "public.open_table"]
    conn.execute("ALTER TABLE open_table ENABLE ROW LEVEL SECURITY")
    _assert_clean(check_rls_enabled(conn))


# --------------------------------------------------------------------------- history

HISTORY_DDL = """
CREATE SCHEMA supabase_migrations;
CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY, statements text[],
                                                    name text);
CREATE SCHEMA dbsage;
CREATE TABLE dbsage.migration_log (id bigserial PRIMARY KEY, version text, checksum text,
                                   event text, status text);
"""


def _migration(project: Path, name: str, sql: str) -> Path:
    return _write(project / "supabase" / "migrations" / name, sql)


def _record(conn: psycopg.Connection, path: Path, checksum: str | None = None) -> None:
    version = migration_version(path)
    conn.execute("INSERT INTO supabase_migrations.schema_migrations (version, name) "
                 "VALUES (%s, %s) ON CONFLICT DO NOTHING", (version, path.stem))
    conn.execute("INSERT INTO dbsage.migration_log (version, checksum, event, status) "
                 "VALUES (%s, %s, 'apply', 'applied')",
                 (version, checksum or hashlib.sha256(path.read_bytes()).hexdigest()))


def test_migration_version_is_the_leading_digits() -> None:
    assert migration_version(Path("20250101000000_create_todos.sql")) == "20250101000000"
    assert migration_version(Path("notes.sql")) is None


def test_a_file_without_a_name_part_has_no_version_for_status_as_for_apply(
        conn: psycopg.Connection, project: Path) -> None:
    """It used to have one here and none in apply (which records it under the run's TS), so
    *status called it pending for ever; by the Supabase CLI's rule it has none."""
    path = _migration(project, "20250101000000.sql", "select 1;\n")
    assert migration_version(path) is None
    assert read_migration(path).version is None
    state = read_history_state(conn, project)
    assert (state.ignored, state.pending) == (["20250101000000.sql"], [])


def test_history_without_table_makes_everything_pending(conn: psycopg.Connection,
                                                        project: Path) -> None:
    _assert_clean(check_migration_history(conn, project))
    _migration(project, "20250102000000_b.sql", "select 2;")
    _migration(project, "20250101000000_a.sql", "select 1;")
    outcome = check_migration_history(conn, project)
    assert outcome.status == "warn"
    assert outcome.items == ["pending: 20250101000000_a.sql", "pending: 20250102000000_b.sql"]


def test_history_consistent_then_drift_and_missing_fail(conn: psycopg.Connection,
                                                        project: Path) -> None:
    conn.execute(HISTORY_DDL)
    a = _migration(project, "20250101000000_a.sql", "create table a (id int);\n")
    b = _migration(project, "20250102000000_b.sql", "create table b (id int);\n")
    _record(conn, a)
    _record(conn, b)
    _assert_clean(check_migration_history(conn, project))

    a.write_text("create table a (id bigint);\n")
    conn.execute("INSERT INTO supabase_migrations.schema_migrations (version) "
                 "VALUES ('20250103000000')")
    outcome = check_migration_history(conn, project)
    assert outcome.status == "fail"
    assert outcome.items == [
        "missing file: version 20250103000000 is applied but has no file",
        "checksum drift: 20250101000000_a.sql changed since it was applied",
    ]


def test_history_uses_the_latest_apply_checksum(conn: psycopg.Connection, project: Path) -> None:
    conn.execute(HISTORY_DDL)
    a = _migration(project, "20250101000000_a.sql", "select 1;\n")
    _record(conn, a, checksum="0" * 64)  # an earlier apply of an older file
    _record(conn, a)
    conn.execute("INSERT INTO dbsage.migration_log (version, checksum, event, status) "
                 "VALUES ('20250101000000', %s, 'rollback', 'rolled back')", ("1" * 64,))
    _assert_clean(check_migration_history(conn, project))
    _record(conn, a, checksum="2" * 64)
    assert check_migration_history(conn, project).status == "fail"


def test_history_duplicate_version_fails(conn: psycopg.Connection, project: Path) -> None:
    _migration(project, "20250101000000_a.sql", "select 1;\n")
    _migration(project, "20250101000000_b.sql", "select 2;\n")
    _migration(project, "README.sql", "-- notes\n")
    outcome = check_migration_history(conn, project)
    assert outcome.status == "fail"
    assert outcome.items == ["duplicate version: 20250101000000_b.sql",
                             "pending: 20250101000000_a.sql",
                             "ignored: README.sql has no leading version"]


def test_history_pending_warns_and_unlogged_versions_are_not_drift(
        conn: psycopg.Connection, project: Path) -> None:
    conn.execute(HISTORY_DDL)
    a = _migration(project, "20250101000000_a.sql", "select 1;\n")
    _migration(project, "20250102000000_b.sql", "select 2;\n")
    conn.execute("INSERT INTO supabase_migrations.schema_migrations (version) VALUES (%s)",
                 (migration_version(a),))  # applied by the Supabase CLI: no dbsage checksum
    outcome = check_migration_history(conn, project)
    assert outcome.status == "warn"
    assert outcome.items == ["pending: 20250102000000_b.sql"]
    assert "1 applied without a dbsage checksum" in outcome.detail


# --------------------------------------------------------------------------- TAP parsing


def test_parse_tap_counts_plan_failures_and_diagnostics() -> None:
    tap = parse_tap([
        "1..4", "ok 1 - first", "not ok 2 - second", "# Failed test 2: \"second\"",
        "#         have: 1", "#         want: 2", "not ok 3 - later # TODO not yet",
        "ok 4 - last",
    ])
    assert (tap.planned, tap.ran) == (4, 4)
    assert tap.failures == ['not ok 2 - second\n# Failed test 2: "second"\n'
                            "#         have: 1\n#         want: 2"]
    assert parse_tap(["ok 1", "Bail out! broken"]).failures == ["Bail out! broken"]
    assert parse_tap(["ok 1 - a"]).planned is None


# --------------------------------------------------------------------------- user tests (plain)


def _test_file(project: Path, name: str, sql: str) -> Path:
    return _write(project / "supabase" / "tests" / name, sql)


def test_discovers_nested_test_files_in_sorted_order(project: Path) -> None:
    _test_file(project, "b.sql", "select 1;")
    _test_file(project, "a/z.sql", "select 1;")
    _test_file(project, "a.sql", "select 1;")
    _test_file(project, "notes.txt", "")
    found = [p.relative_to(project / "supabase" / "tests").as_posix()
             for p in discover_user_tests(project)]
    assert found == ["a.sql", "a/z.sql", "b.sql"]


def test_plain_test_passes_and_its_changes_are_rolled_back(conn: psycopg.Connection,
                                                           project: Path) -> None:
    conn.execute("CREATE TABLE todos (id int, title text)")
    path = _test_file(project, "todos.sql", """\\set ON_ERROR_STOP 1
begin;
insert into todos values (1, '100% done');
select count(*) from todos where title like '100%%' or title like '100%';
commit;
update todos set title = 'changed';
""")
    result = run_user_test(conn, path, pgtap=False, project_dir=project)
    assert (result.path, result.mode, result.passed, result.error) == (
        "supabase/tests/todos.sql", "plain", True, None)
    assert result.ran == 3  # BEGIN/COMMIT belong to the runner, not to the file
    assert conn.execute("SELECT count(*) FROM todos").fetchone() == (0,)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_plain_test_reports_sqlstate_message_and_line(conn: psycopg.Connection,
                                                      project: Path) -> None:
    conn.execute("CREATE TABLE todos (id int)")
    path = _test_file(project, "bad.sql", "insert into todos values (1);\n\nselect 1,\n"
                      "  nope\nfrom todos;\ninsert into todos values (2);\n")
    result = run_user_test(conn, path, pgtap=False, project_dir=project)
    assert not result.passed
    assert result.error == 'line 4: 42703: column "nope" does not exist'
    assert result.ran == 1
    assert conn.execute("SELECT count(*) FROM todos").fetchone() == (0,)


@pytest.mark.parametrize(("sql", "error"), [
    ("select 1;\n\\i other.sql\n", "line 2: psql meta-command \\i is not supported"),
    ("select 1;\nselct 2;\n", 'line 2: 42601: syntax error at or near "selct"'),
    ("begin;\nselect 1;\nprepare transaction 'x';\n",
     "line 3: PREPARE is not allowed in a smoke test"),
])
def test_test_files_that_cannot_run_fail_before_running(conn18: psycopg.Connection,
                                                        project: Path, sql: str,
                                                        error: str) -> None:
    path = _test_file(project, "odd.sql", sql)
    result = run_user_test(conn18, path, pgtap=False, project_dir=project)
    assert (result.passed, result.error, result.ran) == (False, error, 0)


def test_embedded_server_falls_back_to_plain_mode(conn18: psycopg.Connection,
                                                  project: Path) -> None:
    assert not pgtap_available(conn18)
    _test_file(project, "ok.sql", "select 1;")
    _test_file(project, "broken.sql", "select * from missing_table;")
    results = run_user_tests(conn18, project)
    assert [(r.path, r.mode, r.passed) for r in results] == [
        ("supabase/tests/broken.sql", "plain", False), ("supabase/tests/ok.sql", "plain", True)]
    assert results[0].error == 'line 1: 42P01: relation "missing_table" does not exist'


# --------------------------------------------------------------------------- user tests (pgTAP)


@pytest.fixture
def tap_conn(db15: Db) -> Iterator[psycopg.Connection]:
    """A connection to the 15 cluster, where Debian's postgresql-15-pgtap provides pgTAP
    (.ci/run installs it; the embedded 18 server has none, so these tests run on 15 only)."""
    with psycopg.connect(db15.url, autocommit=True) as conn:
        if not pgtap_available(conn):
            pytest.skip("pgtap is not in pg_available_extensions on the 15 cluster: "
                        "apt-get install postgresql-15-pgtap")
        yield conn


PASSING_TAP = """begin;
select plan(2);
select has_table('public', 'todos', 'todos exists');
select is((select count(*)::int from todos), 0, 'starts empty');
select * from finish();
rollback;
"""

FAILING_TAP = """begin;
select plan(2);
select ok(true, 'fine');
select is(1 + 1, 3, 'arithmetic');
select * from finish();
rollback;
"""


def test_pgtap_passing_file(tap_conn: psycopg.Connection, project: Path) -> None:
    tap_conn.execute("CREATE TABLE todos (id int)")
    path = _test_file(project, "pass.sql", PASSING_TAP)
    result = run_user_test(tap_conn, path, pgtap=True, project_dir=project)
    assert (result.mode, result.passed, result.planned, result.ran) == ("pgtap", True, 2, 2)
    assert (result.failures, result.error) == ([], None)


def test_pgtap_failing_assertion_fails_with_diagnostics(tap_conn: psycopg.Connection,
                                                       project: Path) -> None:
    path = _test_file(project, "fail.sql", FAILING_TAP)
    result = run_user_test(tap_conn, path, pgtap=True, project_dir=project)
    assert (result.passed, result.planned, result.ran, result.error) == (False, 2, 2, None)
    assert len(result.failures) == 1
    first, *diagnostics = result.failures[0].splitlines()
    assert first == "not ok 2 - arithmetic"
    assert any("have: 2" in d for d in diagnostics) and any("want: 3" in d for d in diagnostics)


def test_pgtap_plan_mismatch_fails(tap_conn: psycopg.Connection, project: Path) -> None:
    path = _test_file(project, "plan.sql",
                      "select plan(3);\nselect ok(true, 'one');\nselect * from finish();\n")
    result = run_user_test(tap_conn, path, pgtap=True, project_dir=project)
    assert (result.passed, result.planned, result.ran) == (False, 3, 1)
    assert result.failures == ["planned 3 test(s) but ran 1"]


def test_pgtap_sql_error_fails_with_line(tap_conn: psycopg.Connection, project: Path) -> None:
    path = _test_file(project, "error.sql", "begin;\nselect plan(1);\n"
                      "select ok(count(*) = 0, 'none') from no_such_table;\nrollback;\n")
    result = run_user_test(tap_conn, path, pgtap=True, project_dir=project)
    assert not result.passed
    assert result.error == 'line 3: 42P01: relation "no_such_table" does not exist'
    assert (result.planned, result.ran) == (1, 0)


def test_pgtap_test_leaves_no_rows_and_no_extension_behind(tap_conn: psycopg.Connection,
                                                          project: Path) -> None:
    tap_conn.execute("CREATE TABLE todos (id int)")
    path = _test_file(project, "insert.sql", """begin;
select plan(1);
insert into todos values (1), (2);
select is((select count(*)::int from todos), 2, 'inserted');
select * from finish();
commit;
""")
    result = run_user_test(tap_conn, path, pgtap=True, project_dir=project)
    assert result.passed, result
    assert tap_conn.execute("SELECT count(*) FROM todos").fetchone() == (0,)
    assert tap_conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pgtap'"
                            ).fetchone() == (0,)


def test_a_plain_file_runs_as_plain_sql_even_where_pgtap_is_installed(
        conn: psycopg.Connection, project: Path) -> None:
    """The content decides, not the server: on 15 (with pgTAP) as on 18 (without)."""
    _test_file(project, "one.sql", "select 1;\n-- plan(1) in a comment is not a call\n"
               "select 'ok(true)';\n")
    [result] = run_user_tests(conn, project)
    assert (result.mode, result.passed, result.ran, result.failures) == ("plain", True, 2, [])


def test_pgtap_files_are_known_by_their_content(tap_conn: psycopg.Connection,
                                               project: Path) -> None:
    _test_file(project, "a_tap.sql", PASSING_TAP.replace("has_table('public', 'todos', "
                                                         "'todos exists')", "ok(true, 'x')")
               .replace("(select count(*)::int from todos)", "0"))
    _test_file(project, "b_xunit.sql", "select * from no_plan();\nselect is(1, 1);\n"
               "select * from finish();\n")
    _test_file(project, "c_plain.sql", "select 1;\n")
    results = run_user_tests(tap_conn, project)
    assert [(r.path.rsplit("/", 1)[1], r.mode, r.passed) for r in results] == [
        ("a_tap.sql", "pgtap", True), ("b_xunit.sql", "pgtap", True),
        ("c_plain.sql", "plain", True)]


# --------------------------------------------------------------------------- the whole run


def test_smoke_test_of_a_healthy_project_passes_with_warnings(conn: psycopg.Connection,
                                                              project: Path) -> None:
    conn.execute("CREATE TABLE todos (id int PRIMARY KEY)")  # no RLS: a warning only
    _test_file(project, "ok.sql", "begin; select plan(1); select ok(true); "
               "select * from finish(); rollback;" if pgtap_available(conn) else "select 1;")
    report = run_smoke_test(conn, project)
    assert [c.id for c in report.checks] == [
        "relations_selectable", "invalid_indexes", "not_valid_constraints", "sequence_headroom",
        "unindexed_foreign_keys", "rls_disabled", "migration_history"]
    statuses = {c.id: c.status for c in report.checks}
    assert statuses.pop("rls_disabled") == "warn"
    assert set(statuses.values()) == {"pass"}
    assert [t.passed for t in report.user_tests] == [True]
    assert report.passed is True
    assert all(c.duration_ms > 0 for c in report.checks)


def test_smoke_test_fails_on_a_failing_check(conn: psycopg.Connection, project: Path) -> None:
    conn.execute("CREATE TABLE t (x int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;"
                 "ALTER TABLE t ADD CONSTRAINT t_x CHECK (x > 0) NOT VALID")
    report = run_smoke_test(conn, project)
    assert report.passed is False
    assert [c.id for c in report.checks if c.status == "fail"] == ["not_valid_constraints"]


def test_smoke_test_fails_on_a_failing_user_test(conn: psycopg.Connection, project: Path) -> None:
    _test_file(project, "bad.sql", "select 1/0;")
    report = run_smoke_test(conn, project)
    assert all(c.status == "pass" for c in report.checks)
    assert [t.error for t in report.user_tests] == ["line 1: 22012: division by zero"]
    assert report.passed is False


def test_smoke_test_refuses_a_missing_project(conn18: psycopg.Connection, tmp_path: Path) -> None:
    with pytest.raises(SmokeTestError) as info:
        run_smoke_test(conn18, tmp_path / "nowhere")
    assert isinstance(info.value, DbsageError)
    assert "nowhere" in info.value.message


def test_smoke_test_leaves_a_non_autocommit_connection_idle(db18: Db, project: Path) -> None:
    db18.execute("CREATE TABLE t (id int)")
    _test_file(project, "ins.sql", "insert into t values (1);")
    with db18.connect(autocommit=False) as c:
        report = run_smoke_test(c, project)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert report.user_tests[0].passed
    assert db18.scalar("SELECT count(*) FROM t") == 0
