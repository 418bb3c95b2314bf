"""Statement analysis: lock levels, rewrites and destructive operations (checked against
pg_locks and relfilenodes on real servers), squawk findings, and the catalog look-ups."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from dbsage.tools.analyze import (
    DEFAULT_EXCLUDED_RULES,
    LOCK_MODES,
    DestructiveOp,
    LintUnavailableError,
    MissingObject,
    analyze_migration,
    analyze_statement,
    count_rows_at_stake,
    lint_with_squawk,
    missing_objects,
    strongest_lock,
    table_sizes,
)
from dbsage.tools.errors import DbsageError, MigrationFileError
from dbsage.tools.sqlfile import Statement, parse_statements, read_migration

AS, RS, RX, SUX, SH, SRX, EX, AX = LOCK_MODES

# The schema every lock probe runs against (each probe in its own rolled-back transaction).
SETUP = """
CREATE TABLE users (id bigint PRIMARY KEY, email text, legacy text);
CREATE TABLE todos (id bigint PRIMARY KEY, user_id bigint, title varchar(50), done boolean);
CREATE INDEX todos_title_idx ON todos (title);
ALTER TABLE todos ADD CONSTRAINT todos_title_check CHECK (title <> '') NOT VALID;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER todos_touch BEFORE UPDATE ON todos FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE events (id bigint, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2024 (id bigint, at date);
CREATE MATERIALIZED VIEW todo_counts AS SELECT user_id, count(*) AS n FROM todos GROUP BY 1;
CREATE UNIQUE INDEX todo_counts_user ON todo_counts (user_id);
CREATE TABLE users_extra (id bigint NOT NULL, email text, legacy text);
CREATE SCHEMA archive;
CREATE POLICY p ON users USING (id > 0);
CREATE VIEW todo_view AS SELECT id FROM todos;
CREATE TABLE archive.old_todos (id bigint);
INSERT INTO users VALUES (1, 'a@x', 'l1'), (2, 'b@x', NULL), (3, NULL, NULL);
INSERT INTO todos VALUES (1, 1, 'one', false), (2, 1, 'two', true);
"""

# sql, expected lock_level, expected destructive kind, expected rewrite,
# extra expected locks on other relations.
CASES: list[tuple[str, str | None, str | None, bool, dict[str, str]]] = [
    ("DROP TABLE users", AX, "drop_table", False, {}),
    ("TRUNCATE todos", AX, "truncate", False, {}),
    ("ALTER TABLE users ADD COLUMN nickname text", AX, None, False, {}),
    ("ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()", AX, None, False, {}),
    ("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()", AX, None, True, {}),
    ("ALTER TABLE users ADD COLUMN r float8 NOT NULL DEFAULT random()", AX, None, True, {}),
    ("ALTER TABLE users ADD COLUMN n bigserial", AX, None, True, {}),
    ("ALTER TABLE users ADD COLUMN code int GENERATED ALWAYS AS IDENTITY", AX, None, True, {}),
    ("ALTER TABLE users ADD COLUMN dom text GENERATED ALWAYS AS (lower(email)) STORED", AX, None,
     True, {}),
    ("ALTER TABLE todos ALTER COLUMN done TYPE int USING done::int", AX, "alter_type", True,
     {}),
    ("ALTER TABLE users DROP COLUMN legacy", AX, "drop_column", False, {}),
    ("ALTER TABLE users SET UNLOGGED", AX, None, True, {}),
    ("ALTER TABLE todos ALTER COLUMN done SET DEFAULT false", AX, None, False, {}),
    ("ALTER TABLE todos ALTER COLUMN title SET NOT NULL", AX, None, False, {}),
    ("ALTER TABLE todos ENABLE ROW LEVEL SECURITY", AX, None, False, {}),
    ("ALTER TABLE todos RENAME COLUMN title TO name", AX, None, False, {}),
    ("ALTER TABLE todos ALTER COLUMN title SET STATISTICS 500", SUX, None, False, {}),
    ("ALTER TABLE todos SET (fillfactor = 70)", SUX, None, False, {}),
    ("ALTER TABLE todos VALIDATE CONSTRAINT todos_title_check", SUX, None, False, {}),
    ("ALTER TABLE todos DISABLE TRIGGER todos_touch", SRX, None, False, {}),
    ("ALTER TABLE todos ADD CONSTRAINT todos_user_fk FOREIGN KEY (user_id) REFERENCES users(id)",
     SRX, None, False, {"public.users": SRX}),
    ("ALTER TABLE events ATTACH PARTITION events_2024 FOR VALUES FROM ('2024-01-01') "
     "TO ('2025-01-01')", AX, None, False, {"public.events": SUX, "public.events_2024": AX}),
    ("CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') "
     "TO ('2026-01-01')", AX, None, False, {"public.events": AX}),
    ("CREATE TABLE tags (id bigint PRIMARY KEY, todo_id bigint REFERENCES todos(id))", AX, None,
     False, {"public.todos": SRX}),
    ("CREATE INDEX todos_done_idx ON todos (done)", SH, None, False, {}),
    ("CREATE TRIGGER todos_after AFTER INSERT ON todos FOR EACH ROW EXECUTE FUNCTION touch()",
     SRX, None, False, {}),
    ("CREATE POLICY own ON todos USING (user_id = 1)", AX, None, False, {}),
    ("DROP TRIGGER todos_touch ON todos", AX, None, False, {}),
    ("COMMENT ON TABLE todos IS 'things to do'", SUX, None, False, {}),
    ("COMMENT ON COLUMN todos.title IS 'what'", SUX, None, False, {}),
    ("ANALYZE todos", SUX, None, False, {}),
    ("CLUSTER todos USING todos_pkey", AX, None, True, {}),
    ("REFRESH MATERIALIZED VIEW todo_counts", AX, None, True, {}),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY todo_counts", EX, None, False, {}),
    ("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", SRX, None, False, {}),
    ("ALTER INDEX todos_title_idx RENAME TO todos_title_idx2", SUX, None, False, {}),
    ("INSERT INTO todos VALUES (3, 2, 'three', false)", RX, None, False, {}),
    ("UPDATE todos SET done = true", RX, "update_without_where", False, {}),
    ("UPDATE todos SET done = true WHERE id = 1", RX, None, False, {}),
    ("DELETE FROM todos", RX, "delete_without_where", False, {}),
    ("DELETE FROM todos WHERE user_id IN (SELECT id FROM users WHERE email IS NULL)", RX, None,
     False, {"public.users": AS}),
    ("SELECT count(*) FROM todos", AS, None, False, {}),
    ("SELECT * FROM todos FOR UPDATE", RS, None, False, {}),
    ("DROP SCHEMA archive CASCADE", AX, "drop_schema", False, {}),
    ("ALTER TABLE todos ALTER COLUMN title SET STORAGE EXTERNAL", AX, None, False, {}),
    ("ALTER TABLE todos REPLICA IDENTITY FULL", AX, None, False, {}),
    ("ALTER TABLE todos OWNER TO CURRENT_USER", AX, None, False, {}),
    ("ALTER TABLE users_extra INHERIT users", AX, None, False, {"public.users": SUX}),
    ("ALTER TABLE todos SET SCHEMA archive", AX, None, False, {}),
    ("ALTER TRIGGER todos_touch ON todos RENAME TO todos_touch2", AX, None, False, {}),
    ("CREATE TABLE child (extra int) INHERITS (users)", AX, None, False, {"public.users": SUX}),
    ("CREATE VIEW open_todos AS SELECT * FROM todos WHERE NOT done", AX, None, False,
     {"public.todos": AS}),
    ("CREATE TABLE done_todos AS SELECT * FROM todos WHERE done", AX, None, False,
     {"public.todos": AS}),
    ("CREATE STATISTICS todos_stats ON user_id, done FROM todos", SUX, None, False, {}),
    ("CREATE RULE no_del AS ON DELETE TO todos DO INSTEAD NOTHING", AX, None, False, {}),
    ("ALTER POLICY p ON users USING (true)", AX, None, False, {}),
    ("DROP POLICY p ON users", AX, None, False, {}),
    ("REINDEX TABLE todos", SH, None, False, {}),
    ("DROP INDEX todos_title_idx", AX, None, False, {}),
    ("DROP VIEW todo_view", AX, None, False, {}),
    ("ALTER TABLE users ALTER COLUMN email TYPE varchar(100)", AX, "alter_type", True, {}),
    ("CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'", None, None, False, {}),
    ("GRANT SELECT ON todos TO PUBLIC", AS, None, False, {}),
]

# Locks that older servers do not take: sql -> (first major version that takes it).
NEWER_LOCKS = {"GRANT SELECT ON todos TO PUBLIC": 18}

# Statements PostgreSQL refuses inside a transaction: checked by parsing only.
NON_TRANSACTIONAL: list[tuple[str, str, bool]] = [
    ("CREATE INDEX CONCURRENTLY todos_done_idx ON todos (done)", SUX, False),
    ("DROP INDEX CONCURRENTLY todos_title_idx", SUX, False),
    ("VACUUM FULL todos", AX, True),
    ("VACUUM todos", SUX, False),
    ("ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY", SUX, False),
]


def one(sql: str) -> Statement:
    """Parse a single statement."""
    stmts, _ = parse_statements(sql)
    assert len(stmts) == 1
    return stmts[0]


def _mode_name(pg_mode: str) -> str:
    """pg_locks' `AccessExclusiveLock` -> `ACCESS EXCLUSIVE`."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", pg_mode.removesuffix("Lock")).upper()


@pytest.mark.parametrize(("sql", "lock", "destructive", "rewrites", "others"), CASES,
                         ids=[c[0][:50] for c in CASES])
def test_statement_table(sql: str, lock: str | None, destructive: str | None, rewrites: bool,
                         others: dict[str, str]) -> None:
    a = analyze_statement(one(sql))
    assert a.lock_level == lock
    assert (a.destructive.kind if a.destructive else None) == destructive
    assert a.rewrites_table is rewrites
    assert (a.rewrite_reason is not None) is rewrites
    for rel, mode in others.items():
        assert a.locks[rel] == mode
    assert a.description and "\n" not in a.description
    assert a.transactional


@pytest.mark.parametrize(("sql", "lock", "rewrites"), NON_TRANSACTIONAL,
                         ids=[c[0][:50] for c in NON_TRANSACTIONAL])
def test_non_transactional_statements(sql: str, lock: str, rewrites: bool) -> None:
    a = analyze_statement(one(sql))
    assert a.lock_level == lock
    assert a.rewrites_table is rewrites
    assert not a.transactional
    assert "cannot run in a transaction" in a.description


def _probe(conn: Any, sql: str, names: list[str]) -> tuple[dict[str, str], set[str]]:
    """Run `sql` in a rolled-back transaction; return the lock held on each named relation
    (strongest per relation) and the names whose relfilenode changed (rewritten)."""
    with conn.transaction(force_rollback=True):
        before = {n: conn.execute("SELECT to_regclass(%s)::oid", (n,)).fetchone()[0]
                  for n in names}
        files = {n: conn.execute("SELECT pg_relation_filenode(%s)", (oid,)).fetchone()[0]
                 for n, oid in before.items() if oid is not None}
        conn.execute(sql)
        oids = {n: before[n] or conn.execute("SELECT to_regclass(%s)::oid",
                                             (n,)).fetchone()[0] for n in names}
        rows = conn.execute(
            "SELECT relation, mode FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND locktype = 'relation' AND relation = ANY(%s)",
            ([o for o in oids.values() if o is not None],)).fetchall()
        rewritten = {n for n, f in files.items()
                     if conn.execute("SELECT pg_relation_filenode(%s)",
                                     (before[n],)).fetchone()[0] not in (f, None)}
    held: dict[str, str] = {}
    by_oid = {oid: n for n, oid in oids.items()}
    for oid, mode in rows:
        name, mode_name = by_oid[oid], _mode_name(mode)
        if LOCK_MODES.index(mode_name) > LOCK_MODES.index(held.get(name, AS)) or name not in held:
            held[name] = mode_name
    return held, rewritten


def test_lock_levels_match_pg_locks(db: Any) -> None:
    """What the analysis predicts is what PostgreSQL actually holds (and rewrites)."""
    db.execute(SETUP)
    problems = []
    with db.connect() as conn:
        for sql, *_ in CASES:
            a = analyze_statement(one(sql))
            try:
                held, rewritten = _probe(conn, sql, list(a.tables))
            except Exception as exc:  # report every failing case at once
                problems.append(f"{sql}: {type(exc).__name__}: {exc}")
                continue
            predicted = dict(a.locks)
            if db.server.major < NEWER_LOCKS.get(sql, 0):
                predicted = {}
            if held != predicted:
                problems.append(f"{sql}: predicted {predicted}, PostgreSQL held {held}")
            truncates = a.destructive is not None and a.destructive.kind == "truncate"
            if not truncates and bool(rewritten) != a.rewrites_table:
                problems.append(f"{sql}: rewrites predicted {a.rewrites_table}, "
                                    f"relfilenode changed for {sorted(rewritten)}")
    assert problems == []


def test_drop_schema_locks_its_tables(db18: Any) -> None:
    db18.execute(SETUP)
    a = analyze_statement(one("DROP SCHEMA archive CASCADE"))
    with db18.connect() as conn:
        oid = conn.execute("SELECT 'archive.old_todos'::regclass::oid").fetchone()[0]
        with conn.transaction(force_rollback=True):
            conn.execute("DROP SCHEMA archive CASCADE")
            mode = conn.execute("SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() "
                                "AND relation = %s", (oid,)).fetchone()[0]
    assert _mode_name(mode) == a.lock_level == AX
    assert a.destructive == DestructiveOp("drop_schema", "archive", (), 1, 1)


def test_targets_are_schema_qualified_and_ctes_are_not_tables() -> None:
    a = analyze_statement(one(
        "WITH doomed AS (SELECT id FROM app.users WHERE email IS NULL) "
        "DELETE FROM todos WHERE user_id IN (SELECT id FROM doomed)"))
    assert a.tables == ("public.todos", "app.users")
    assert a.locks == {"public.todos": RX, "app.users": AS}
    assert a.destructive is None


def test_several_destructive_operations_in_one_statement() -> None:
    a = analyze_statement(one("ALTER TABLE app.users DROP COLUMN a, DROP COLUMN b, "
                              "ALTER COLUMN c TYPE bigint"))
    assert [(op.kind, op.table, op.columns) for op in a.destructive_ops] == [
        ("drop_column", "app.users", ("a", "b")), ("alter_type", "app.users", ("c",))]
    b = analyze_statement(one("DROP TABLE IF EXISTS a, s.b"))
    assert [op.table for op in b.destructive_ops] == ["public.a", "s.b"]
    assert b.missing_ok and b.drops == ("public.a", "s.b")


def test_unknown_default_function_counts_as_a_rewrite() -> None:
    a = analyze_statement(one("ALTER TABLE t ADD COLUMN c text DEFAULT my_func()"))
    assert a.rewrites_table and "my_func" in (a.rewrite_reason or "")
    b = analyze_statement(one("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT CURRENT_TIMESTAMP"))
    assert not b.rewrites_table


def test_strongest_lock_helper() -> None:
    assert strongest_lock([RX, None, SUX, AS]) == SUX
    assert strongest_lock([]) is None
    assert strongest_lock([AX, EX]) == AX


def _write(project: Path, name: str, text: str) -> Path:
    path = project / "supabase" / "migrations" / name
    path.write_text(text)
    return path


def test_analyze_migration_rollups(project: Path) -> None:
    path = _write(project, "20250101000000_mixed.sql", """\
CREATE TABLE tags (id bigint PRIMARY KEY, todo_id bigint REFERENCES todos(id));
ALTER TABLE tags ADD COLUMN token uuid DEFAULT gen_random_uuid();
CREATE INDEX tags_todo_idx ON tags (todo_id);
ALTER TABLE users DROP COLUMN legacy;
DELETE FROM sessions;
""")
    m = analyze_migration(read_migration(path))
    assert [s.statement.line for s in m.statements] == [1, 2, 3, 4, 5]
    assert [(op.kind, op.table, op.line) for op in m.destructive] == [
        ("drop_column", "public.users", 4), ("delete_without_where", "public.sessions", 5)]
    assert [s.statement.index for s in m.rewrites] == [2]
    assert m.non_transactional == ()
    # tags is created by the migration: its ACCESS EXCLUSIVE locks block nobody; the
    # strongest lock on an existing table is DROP COLUMN's on users.
    assert m.strongest_lock == AX
    assert m.created == ("public.tags", "public.tags_todo_idx")
    assert m.tables[:2] == ("public.tags", "public.todos")
    json.dumps(m.to_dict())  # the plan writes it as JSON


def test_strongest_lock_ignores_tables_the_migration_creates(project: Path) -> None:
    path = _write(project, "20250101000001_new.sql", """\
CREATE TABLE tags (id bigint PRIMARY KEY, todo_id bigint REFERENCES todos(id));
CREATE INDEX tags_todo_idx ON tags (todo_id);
INSERT INTO tags SELECT id, id FROM todos;
""")
    m = analyze_migration(read_migration(path))
    assert m.statements[0].lock_level == AX
    assert m.strongest_lock == SRX  # the foreign key's lock on todos


def test_non_transactional_rollup(project: Path) -> None:
    path = _write(project, "20250101000002_idx.sql",
                  "CREATE INDEX CONCURRENTLY a_idx ON a (x);\n"
                  "CREATE INDEX CONCURRENTLY b_idx ON b (y);\n")
    m = analyze_migration(read_migration(path))
    assert [s.statement.line for s in m.non_transactional] == [1, 2]
    assert m.strongest_lock == SUX


# --------------------------------------------------------------------------- squawk


def test_squawk_reports_index_without_concurrently_on_its_line(project: Path) -> None:
    path = _write(project, "20250101000003_idx.sql", """\
-- an index built the blocking way
CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY);

CREATE INDEX IF NOT EXISTS t_id_idx ON t (id);
""")
    findings = lint_with_squawk(path)
    hits = [f for f in findings if f.rule == "require-concurrent-index-creation"]
    assert len(hits) == 1
    assert hits[0].line == 4 and hits[0].column == 1
    assert hits[0].level == "warning"
    assert "concurrently" in (hits[0].help or "").lower()
    assert not [f for f in findings if f.rule in DEFAULT_EXCLUDED_RULES]


def test_squawk_exclusions_can_be_turned_off(project: Path) -> None:
    path = _write(project, "20250101000004_x.sql",
                  "ALTER TABLE t ADD COLUMN IF NOT EXISTS c bigint NOT NULL;\n")
    default = {f.rule for f in lint_with_squawk(path)}
    everything = {f.rule for f in lint_with_squawk(path, exclude=())}
    assert "adding-required-field" in default
    assert "require-lock-timeout" in everything - default


def test_squawk_respects_pg_version(project: Path) -> None:
    path = _write(project, "20250101000005_default.sql",
                  "-- a constant default\n"
                  "ALTER TABLE t ADD COLUMN IF NOT EXISTS c bigint DEFAULT 5;\n")
    old = [f for f in lint_with_squawk(path, pg_version="10.0")
           if f.rule == "adding-field-with-default"]
    assert [f.line for f in old] == [2]
    assert not [f for f in lint_with_squawk(path, pg_version="15")
                if f.rule == "adding-field-with-default"]


def test_squawk_syntax_error_is_an_error_finding(project: Path) -> None:
    path = _write(project, "20250101000006_bad.sql", "SELECT 1;\nCREATE TABEL t (id int);\n")
    findings = lint_with_squawk(path)
    assert findings and all(f.rule == "syntax-error" for f in findings)
    assert {f.level for f in findings} == {"error"} and findings[0].line == 2


def test_squawk_clean_file_has_no_findings(project: Path) -> None:
    path = _write(project, "20250101000007_ok.sql", "SELECT 1;\n")
    assert lint_with_squawk(path) == []


def test_squawk_missing_binary_is_a_clear_error(project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(project, "20250101000008_x.sql", "SELECT 1;\n")
    monkeypatch.setattr(sys, "executable", str(project / "nowhere" / "python"))
    monkeypatch.setenv("PATH", str(project / "nowhere"))
    with pytest.raises(LintUnavailableError) as info:
        lint_with_squawk(path)
    assert isinstance(info.value, DbsageError)
    assert "squawk-cli" in (info.value.hint or "")


def test_squawk_missing_file(project: Path) -> None:
    with pytest.raises(MigrationFileError):
        lint_with_squawk(project / "nope.sql")


# --------------------------------------------------------------------------- catalog


def test_table_sizes(db: Any) -> None:
    db.execute(SETUP + """
        CREATE TABLE big (id bigint, pad text);
        INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g;
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01')
            TO ('2026-01-01');
        INSERT INTO events SELECT g, '2025-06-01' FROM generate_series(1, 300) g;
        CREATE TABLE never_analyzed (id int);
        ANALYZE big; ANALYZE users; ANALYZE events_2025;
    """)
    with db.connect() as conn:
        sizes = table_sizes(conn, ["public.big", "users", "public.events", "public.nope",
                                   "public.never_analyzed", "public.big"])
        big_bytes = conn.execute("SELECT pg_total_relation_size('big')").fetchone()[0]
    assert list(sizes) == ["public.big", "users", "public.events", "public.nope",
                           "public.never_analyzed"]
    assert sizes["public.big"].exists and sizes["public.big"].bytes == big_bytes
    assert sizes["public.big"].bytes > 1_000_000
    assert sizes["public.big"].estimated_rows == 5000
    assert sizes["public.big"].kind == "table"
    assert sizes["users"].estimated_rows == 3
    assert sizes["public.events"].kind == "partitioned table"
    assert sizes["public.events"].estimated_rows == 300
    assert sizes["public.events"].bytes and sizes["public.events"].bytes > 0
    assert not sizes["public.nope"].exists and sizes["public.nope"].bytes is None
    assert sizes["public.never_analyzed"].exists
    assert sizes["public.never_analyzed"].estimated_rows in (None, 0)
    assert sizes["public.big"].pretty_bytes.endswith("MB")


def test_count_rows_at_stake(db: Any) -> None:
    db.execute(SETUP)
    ops = [
        DestructiveOp("drop_table", "public.todos"),
        DestructiveOp("drop_column", "public.users", ("legacy",)),
        DestructiveOp("drop_column", "public.users", ("legacy", "email")),
        DestructiveOp("alter_type", "public.todos", ("done",)),
        DestructiveOp("delete_without_where", "public.users"),
        DestructiveOp("truncate", "public.gone"),
        DestructiveOp("drop_column", "public.users", ("no_such_column",)),
        DestructiveOp("drop_schema", "archive"),
        DestructiveOp("drop_schema", "no_schema"),
    ]
    db.execute("INSERT INTO archive.old_todos SELECT generate_series(1, 7)")
    with db.connect() as conn:
        counts = count_rows_at_stake(conn, ops)
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 3  # untouched
    assert [(c.rows, c.status) for c in counts.values()] == [
        (2, "counted"), (1, "counted"), (2, "counted"), (2, "counted"), (3, "counted"),
        (None, "missing"), (None, "missing"), (7, "counted"), (None, "missing")]


def test_count_rows_at_stake_times_out(db18: Any) -> None:
    db18.execute("CREATE TABLE huge AS SELECT g FROM generate_series(1, 3000000) g")
    op = DestructiveOp("truncate", "public.huge")
    with db18.connect() as conn:
        result = count_rows_at_stake(conn, [op], timeout_ms=1)[op]
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection still works
    assert (result.rows, result.status) == (None, "timeout")


def test_count_rows_at_stake_uses_the_analysis(db18: Any, project: Path) -> None:
    db18.execute(SETUP)
    path = _write(project, "20250101000009_cleanup.sql", """\
DELETE FROM todos;
ALTER TABLE users DROP COLUMN email;
""")
    m = analyze_migration(read_migration(path))
    with db18.connect() as conn:
        counts = count_rows_at_stake(conn, m.destructive)
    assert [counts[op].rows for op in m.destructive] == [2, 2]


def test_missing_objects(db: Any, project: Path) -> None:
    db.execute(SETUP)
    path = _write(project, "20250101000010_refs.sql", """\
CREATE TABLE tags (id bigint PRIMARY KEY, todo_id bigint REFERENCES todos(id));
CREATE INDEX tags_todo_idx ON tags (todo_id);
ALTER TABLE projects ADD COLUMN owner bigint;
INSERT INTO tags SELECT id, id FROM ghosts;
DROP TABLE IF EXISTS maybe_there;
ALTER TABLE users RENAME TO members;
UPDATE members SET email = lower(email) WHERE id = 1;
SELECT * FROM users;
CREATE TABLE reports.daily (id bigint);
CREATE SCHEMA audit;
CREATE TABLE audit.log (id bigint);
ALTER TABLE projects ADD COLUMN title text;
""")
    with db.connect() as conn:
        found = missing_objects(conn, analyze_migration(read_migration(path)))
    assert [(m.name, m.kind, m.statement_index, m.line) for m in found] == [
        ("public.projects", "relation", 3, 3),
        ("public.ghosts", "relation", 4, 4),
        ("public.users", "relation", 8, 8),
        ("reports", "schema", 9, 9),
    ]
    assert all(isinstance(m, MissingObject) and m.reason for m in found)


def test_missing_objects_none_when_everything_exists(db18: Any, project: Path) -> None:
    db18.execute(SETUP)
    path = _write(project, "20250101000011_fine.sql",
                  "ALTER TABLE todos ADD COLUMN note text;\n"
                  "UPDATE todos SET note = (SELECT email FROM users WHERE users.id = "
                  "todos.user_id) WHERE note IS NULL;\n")
    with db18.connect() as conn:
        assert missing_objects(conn, analyze_migration(read_migration(path))) == []
