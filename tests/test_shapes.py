"""Statement shapes (tools/sqlfile.shape_key) and what rests on them: one tree per shape until
a statement's own is read, analysis and references computed once per shape, squawk's view of
the file, and runs of one shape sent in one message (tools/execute.batches / run_batch), on
the Supabase-shaped database as its non-superuser postgres, on 18 and 15."""

from __future__ import annotations

import time
from pathlib import Path

import pglast
import pytest
from helpers import run_cli_json
from supabase_shaped import SupaDb

from dbsage.tools import rollback_state
from dbsage.tools.analyze import analyze_migration, analyze_statement, lint_view
from dbsage.tools.execute import BATCH_STATEMENTS, batches
from dbsage.tools.sqlfile import UNPARSED, parse_statements, shape_key

# --- the key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("insert into t values (1, 'a')", "insert into t values (22, 'it''s')"),
    ("update t set x = 1.5 where id = 3", "update t set x = 2e10 where id = 40"),
    ("insert into t1 values (1)", "insert into t1 values ('1')"),
    ("insert into t values ('a\\')", "insert into t values ('b')"),  # a standard string
])
def test_statements_that_differ_only_in_constants_share_a_shape(a: str, b: str) -> None:
    assert shape_key(a) is not None
    assert shape_key(a) == shape_key(b)


@pytest.mark.parametrize(("a", "b"), [
    ("insert into t1 values (1)", "insert into t2 values (1)"),  # digits of a name are kept
    ("update t set x = 1 where id = 1", "update t set y = 1 where id = 1"),
    ("delete from t where id = 1", "delete from t"),
    ("select 1 + 2", "select 1 - 2"),
])
def test_anything_but_a_constant_makes_another_shape(a: str, b: str) -> None:
    assert shape_key(a) != shape_key(b)


@pytest.mark.parametrize("sql", [
    "insert into t values (1) -- one",  # a comment could hold anything
    "insert into t values (1) /* one */",
    'insert into "T" values (1)',  # a quoted name
    "insert into t values ($$a$$)",  # a dollar quote
    "insert into t values (E'a\\n')",  # a prefixed string (escapes)
    "insert into t values (U&'d')",
    "insert into t values (X'ff')",
    "select '{\"a\": 1}'::jsonb ? 'a'",  # an operator that looks like a placeholder
])
def test_a_text_that_is_not_plain_has_no_shape(sql: str) -> None:
    assert shape_key(sql) is None


# --- parsing ---------------------------------------------------------------------------------

FILE = "\n".join(
    ["create table public.items (id int primary key, name text);"]
    + [f"insert into public.items values ({i}, 'item {i}');" for i in range(1, 6)]
    + ["update public.items set name = 'x' where id = 2;",
       "insert into public.items values (9, /* a comment: no shape */ 'nine');",
       "delete from public.items;"]) + "\n"


def test_one_tree_per_shape_and_each_statement_gets_its_own_when_read() -> None:
    stmts, _ = parse_statements(FILE)
    inserts = [s for s in stmts if s.kind == "InsertStmt"]
    assert len(inserts) == 6
    assert inserts[0].tree is not UNPARSED
    assert all(s.tree is UNPARSED for s in inserts[1:5])  # same shape: parsed when read
    assert inserts[5].shape is None and inserts[5].tree is not UNPARSED
    for s in stmts:  # each node is the statement's own, constants included
        assert s.node == pglast.parse_sql(s.sql)[0].stmt
        assert s.transactional
    assert [s.line for s in stmts] == list(range(1, 10))
    assert inserts[3].sql == "insert into public.items values (4, 'item 4')"


def test_analysis_and_references_per_shape_equal_a_statement_by_statement_look() -> None:
    stmts, _ = parse_statements(FILE)
    from dbsage.tools.sqlfile import MigrationFile

    m = MigrationFile(Path("x.sql"), FILE, "c", stmts, None, "x", False)
    shared = analyze_migration(m)
    assert list(shared.statements) == [analyze_statement(s) for s in stmts]
    assert [a.statement.index for a in shared.statements] == list(range(1, 10))
    assert [op.kind for op in shared.destructive] == ["delete_without_where"]

    rollback_state._LAST_REFS.clear()
    refs = rollback_state.references(m)
    one_by_one = rollback_state.References()
    for s in stmts:
        rollback_state._refs_of(s.node, s.line, one_by_one)
    assert refs == one_by_one


def test_squawk_sees_one_statement_of_each_shape_on_its_own_lines() -> None:
    stmts, _ = parse_statements(FILE)
    from dbsage.tools.sqlfile import MigrationFile

    m = MigrationFile(Path("x.sql"), FILE, "c", stmts, None, "x", False)
    view = lint_view(m)
    assert view is not None and len(view) == len(FILE)
    assert view.count("\n") == FILE.count("\n")
    lines = view.splitlines()
    assert lines[1] == "insert into public.items values (1, 'item 1');"
    assert lines[2].strip() == ";" and lines[5].strip() == ";"  # the repeats: blank
    assert lines[6:] == FILE.splitlines()[6:]  # other shapes and unshaped ones: as written


def test_batches_are_runs_of_one_shape_within_the_limits() -> None:
    stmts, _ = parse_statements(FILE)
    assert list(batches(stmts)) == [(0, 1), (1, 6), (6, 7), (7, 8), (8, 9)]
    assert list(batches(stmts, frozenset({3}))) == [(0, 1), (1, 2), (2, 3), (3, 6), (6, 7),
                                                    (7, 8), (8, 9)]
    many, _ = parse_statements("".join(f"insert into t values ({i});\n"
                                       for i in range(BATCH_STATEMENTS + 3)))
    assert list(batches(many)) == [(0, BATCH_STATEMENTS), (BATCH_STATEMENTS,
                                                           BATCH_STATEMENTS + 3)]


# --- running them ----------------------------------------------------------------------------

N = 1200


def _bulk(project: Path, bad_at: int | None = None) -> Path:
    rows = [f"insert into public.bulk (name) values ('row {i}');" for i in range(1, N + 1)]
    if bad_at is not None:  # the same shape, but a name that is already there
        rows[bad_at - 1] = "insert into public.bulk (name) values ('row 1');"
    text = ("create table public.bulk (id bigint generated always as identity primary key,\n"
            "  name text not null unique);\n"
            "alter table public.bulk enable row level security;\n" + "\n".join(rows) + "\n")
    path = project / "supabase" / "migrations" / "20250101000000_bulk.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_bulk_file_applies_in_few_messages_with_psql_s_ids(supa_db: SupaDb,
                                                             project: Path) -> None:
    path = _bulk(project)
    rc, report, out = run_cli_json(project, "apply", str(path), "--mode", "yolo",
                                   "--db", supa_db.url)
    assert rc == 0, out
    assert report["records_affected"] == N
    assert [s["status"] for s in report["statements"]] == ["ok"] * (N + 2)
    assert all(s["rows_affected"] == 1 for s in report["statements"][2:])
    # ids as psql -1 -f gives them: 1..N in file order (one sequence, no statement run twice)
    assert supa_db.scalar("select count(*) from public.bulk where name = 'row ' || id") == N
    history = supa_db.scalar("select statements from supabase_migrations.schema_migrations")
    assert len(history) == N + 2 and history[-1] == f"insert into public.bulk (name) values " \
                                                    f"('row {N}')"


@pytest.mark.parametrize("bad_at", [2, 499, 500, 501, 1200])
def test_a_failure_inside_a_run_names_its_own_line_and_nothing_stays(supa_db: SupaDb,
                                                                     project: Path,
                                                                     bad_at: int) -> None:
    path = _bulk(project, bad_at)
    rc, report, out = run_cli_json(project, "apply", str(path), "--mode", "yolo",
                                   "--db", supa_db.url)
    assert rc == 1, out
    line = bad_at + 3  # two lines of CREATE TABLE, one ALTER
    index = bad_at + 2
    assert f"{path}:{line} (statement {index} of {N + 2})" in report["error"]["message"]
    assert "[SQLSTATE 23505]" in report["error"]["message"]
    statuses = [s["status"] for s in report["statements"]]
    assert statuses[index - 1] == "failed"
    assert set(statuses[:index - 1]) == {"ok"}
    assert set(statuses[index:]) <= {"not_run"}
    assert supa_db.scalar("select to_regclass('public.bulk')") is None  # all rolled back
    if supa_db.scalar("select to_regclass('supabase_migrations.schema_migrations')"):
        assert supa_db.scalar("select count(*) from supabase_migrations.schema_migrations") == 0


def test_statement_timeout_holds_for_each_statement_of_a_run(supa_db: SupaDb,
                                                             project: Path) -> None:
    """Three 0.3 s statements of one shape under a 1 s statement_timeout: each is within it
    (PostgreSQL times each statement of a message on its own), the run of them is not."""
    path = project / "supabase" / "migrations" / "20250101000000_slow.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("create table public.s (x int);\nalter table public.s enable row level "
                    "security;\n"
                    + "insert into public.s select 1 from pg_sleep(0.4);\n" * 3)
    started = time.monotonic()
    rc, report, out = run_cli_json(project, "apply", str(path), "--mode", "yolo",
                                   "--statement-timeout", "1s", "--db", supa_db.url)
    assert rc == 0, out
    assert time.monotonic() - started >= 1.2  # the three did run, together over 1 s
    assert supa_db.scalar("select count(*) from public.s") == 3

    slow = project / "supabase" / "migrations" / "20250102000000_slower.sql"
    slow.write_text("insert into public.s select 2 from pg_sleep(1.5);\n" * 2)
    rc, report, out = run_cli_json(project, "apply", str(slow), "--mode", "yolo",
                                   "--statement-timeout", "1s", "--db", supa_db.url)
    assert rc == 1, out
    assert f"{slow}:1 (statement 1 of 2)" in report["error"]["message"]
    assert "[SQLSTATE 57014]" in report["error"]["message"]
    assert supa_db.scalar("select count(*) from public.s") == 3
