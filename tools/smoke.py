"""Smoke test: built-in health checks of a database plus the user's own SQL / pgTAP tests.

Every function here is read-only towards the target: checks run inside transactions that are
rolled back, and user tests run inside a transaction that is always rolled back, whatever the
file says (its own BEGIN / COMMIT / ROLLBACK are skipped, so the final rollback stays ours).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, LiteralString, ParamSpec, cast

import psycopg
from psycopg import sql

from dbsage.tools.catalog import excluded_schemas, user_schemas_sql
from dbsage.tools.errors import DbsageError, ExitCode
from dbsage.tools.history import applied_checksums
from dbsage.tools.sqlfile import migration_version

if TYPE_CHECKING:
    from pglast.ast import RawStmt

Status = Literal["pass", "warn", "fail"]
TestMode = Literal["pgtap", "plain"]
P = ParamSpec("P")

SEQUENCE_LIMIT = 0.8
LOCK_TIMEOUT = "5s"
# The user schemas without Supabase's platform schemas: their health is not the user's to fix.
_USER_SCHEMA = user_schemas_sql(platform=False)
# The relation column `col` is one of %(tables)s (names; a dropped one is skipped), or any
# when %(tables)s is NULL.
_ON_TABLES = ("(%(tables)s::text[] IS NULL OR {col} = ANY(ARRAY(SELECT to_regclass(t) FROM "
              "unnest(%(tables)s::text[]) t WHERE to_regclass(t) IS NOT NULL)))")
EXCLUDED_SCHEMAS = excluded_schemas(platform=False)  # by name; tools/hotpaths.py reads it
# psql meta-commands that only change psql's output; anything else (\i, \c, ...) is an error.
_COSMETIC_META = {"set", "unset", "pset", "timing", "echo", "qecho", "t", "x", "a", "o"}
_META_LINE = re.compile(r"^[ \t]*\\(?P<cmd>[a-zA-Z!?]+)[^\n]*", re.MULTILINE)
_TX_SKIPPED = {"BEGIN", "START", "COMMIT", "ROLLBACK"}
# pgTAP's own functions: a test file calling any of them is a pgTAP test, whatever the server
# has installed (a file without them is plain SQL: it passes when every statement runs).
PGTAP_FUNCTIONS = frozenset({
    "plan", "no_plan", "finish", "runtests", "diag", "ok", "is", "isnt", "pass", "fail",
    "todo", "skip", "matches", "imatches", "doesnt_match", "alike", "unalike", "cmp_ok",
    "is_empty", "isnt_empty", "results_eq", "results_ne", "set_eq", "set_ne", "bag_eq",
    "bag_ne", "row_eq", "throws_ok", "throws_like", "throws_matching", "lives_ok",
    "performs_ok", "has_table", "hasnt_table", "has_view", "has_column", "hasnt_column",
    "col_is_pk", "col_not_null", "col_type_is", "col_has_default", "col_is_fk", "has_pk",
    "has_fk", "fk_ok", "has_index", "has_function", "has_trigger", "has_schema", "has_role",
    "has_type", "has_enum", "has_sequence", "has_extension", "policies_are", "policy_cmd_is",
    "policy_roles_are", "tables_are", "columns_are", "indexes_are", "schemas_are",
    "functions_are", "is_definer", "function_returns", "table_privs_are",
    "schema_privs_are", "has_rls", "is_partitioned"})
_TX_REFUSED = {"PREPARE", "COMMIT_PREPARED", "ROLLBACK_PREPARED"}


class SmokeTestError(DbsageError):
    """The smoke test itself could not run (e.g. the project folder does not exist)."""


class UserTestFileError(SmokeTestError):
    """A test file that cannot run as given (meta-command, syntax error, PREPARE TRANSACTION)."""

    def __init__(self, message: str, *, line: int, sqlstate: str | None = None) -> None:
        super().__init__(message, line=line, sqlstate=sqlstate)
        self.line = line
        self.sqlstate = sqlstate

    def located(self) -> str:
        """`line N: [SQLSTATE: ]message`, as reported in a UserTestResult."""
        state = f"{self.sqlstate}: " if self.sqlstate else ""
        return f"line {self.line}: {state}{self.message}"


class PgtapMissingError(SmokeTestError):
    """A test file is a pgTAP test, but the server has no pgTAP extension to run it with."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CheckOutcome:
    """One built-in check: its verdict, a one-line detail and the objects it is about."""

    id: str
    title: str
    status: Status
    detail: str
    items: list[str] = field(default_factory=list)
    duration_ms: float = 0.0


@dataclass(frozen=True)
class UserTestResult:
    """One file of `supabase/tests/`, run as pgTAP or as plain SQL (rolled back)."""

    path: str  # relative to the project folder
    mode: TestMode
    passed: bool
    planned: int | None  # pgTAP plan `1..N`; None for plain files or when no plan was seen
    ran: int  # pgTAP: assertions reported; plain: statements executed
    failures: list[str] = field(default_factory=list)
    error: str | None = None  # SQL error (SQLSTATE, message, line) that stopped the file
    duration_ms: float = 0.0


@dataclass(frozen=True)
class SmokeReport:
    """Everything a smoke test found; `passed` is False when a check or a user test fails."""

    checks: list[CheckOutcome]
    user_tests: list[UserTestResult]
    passed: bool


@dataclass(frozen=True)
class TapSummary:
    """What a TAP stream says: plan, assertions run, and the failures with their diagnostics."""

    planned: int | None
    ran: int
    failures: list[str]


@dataclass(frozen=True)
class HistoryState:
    """Migration files compared with the history table and dbsage's checksums."""

    pending: list[str]
    missing: list[str]
    drifted: list[str]
    unverified: list[str]  # applied versions without a dbsage checksum (e.g. by the Supabase CLI)
    ignored: list[str]  # files in supabase/migrations/ without a version (sqlfile's rule)
    duplicates: list[str]  # files whose version another file already has
    applied: list[str] = field(default_factory=list)  # files whose version is applied


# --------------------------------------------------------------------------- helpers


def _timed(func: Callable[P, CheckOutcome]) -> Callable[P, CheckOutcome]:
    """Fill in `duration_ms` of the outcome a check returns."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> CheckOutcome:
        start = time.perf_counter()
        outcome = func(*args, **kwargs)
        return replace(outcome, duration_ms=_ms_since(start))

    return wrapper


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _rows(conn: psycopg.Connection[Any], query: LiteralString,
          params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run a catalog query in a rolled-back transaction (leaves the connection as it was)."""
    with conn.transaction(force_rollback=True):
        return conn.execute(query, params or {}).fetchall()


def _outcome(check_id: str, title: str, bad: Status, items: list[str], ok_detail: str,
             bad_detail: str) -> CheckOutcome:
    """`pass` with `ok_detail` when there are no items, else `bad` with `bad_detail`."""
    if not items:
        return CheckOutcome(check_id, title, "pass", ok_detail)
    return CheckOutcome(check_id, title, bad, bad_detail, items)


def _error_text(exc: psycopg.Error) -> str:
    """`SQLSTATE: message` of a server error, first line only."""
    message = (exc.diag.message_primary or str(exc)).splitlines()[0]
    return f"{exc.sqlstate}: {message}" if exc.sqlstate else message


# --------------------------------------------------------------------------- built-in checks


@_timed
def check_relations_selectable(conn: psycopg.Connection[Any]) -> CheckOutcome:
    """Every table, view and materialized view in user schemas answers `SELECT * ... LIMIT 0`.

    Each select runs in its own savepoint, so one broken relation does not hide the others.
    """
    relations = _rows(conn, f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMA}
        ORDER BY 1, 2""")
    broken: list[str] = []
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
        for schema, name in relations:
            query = sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(schema, name))
            try:
                with conn.transaction():
                    conn.execute(query)
            except psycopg.Error as exc:
                broken.append(f"{schema}.{name}: {_error_text(exc)}")
    return _outcome(
        "relations_selectable", "Tables and views can be selected from", "fail", broken,
        f"{len(relations)} relations answer SELECT.",
        f"{len(broken)} of {len(relations)} relations cannot be selected from.")


@_timed
def check_invalid_indexes(conn: psycopg.Connection[Any],
                          tables: Sequence[str] | None = None) -> CheckOutcome:
    """No index is left invalid (e.g. by a failed CREATE INDEX CONCURRENTLY); with `tables`,
    only indexes on those tables (the ones a migration touched) are looked at."""
    rows = _rows(conn, f"""
        SELECT format('%%I.%%I on %%s', n.nspname, ic.relname, i.indrelid::regclass)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE NOT i.indisvalid AND {_USER_SCHEMA} AND {_ON_TABLES.format(col="i.indrelid")}
        ORDER BY 1""", {"tables": None if tables is None else list(tables)})
    items = [r[0] for r in rows]
    return _outcome(
        "invalid_indexes", "No invalid indexes", "fail", items, "All indexes are valid.",
        f"{len(items)} invalid index(es): drop and re-create them (REINDEX INDEX CONCURRENTLY).")


@_timed
def check_not_valid_constraints(conn: psycopg.Connection[Any],
                                tables: Sequence[str] | None = None) -> CheckOutcome:
    """No constraint (table or domain) is still `NOT VALID`; with `tables`, only constraints
    of those tables are looked at."""
    rows = _rows(conn, f"""
        SELECT format('%%s: %%I (%%s)',
                      CASE WHEN c.conrelid <> 0 THEN c.conrelid::regclass::text
                           ELSE 'domain ' || c.contypid::regtype::text END,
                      c.conname,
                      CASE c.contype WHEN 'c' THEN 'CHECK' WHEN 'f' THEN 'FOREIGN KEY'
                           WHEN 'n' THEN 'NOT NULL' ELSE c.contype::text END)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE NOT c.convalidated AND {_USER_SCHEMA} AND {_ON_TABLES.format(col="c.conrelid")}
        ORDER BY 1""", {"tables": None if tables is None else list(tables)})
    items = [r[0] for r in rows]
    return _outcome(
        "not_valid_constraints", "No NOT VALID constraints", "fail", items,
        "All constraints are validated.",
        f"{len(items)} constraint(s) not validated: run ALTER TABLE ... VALIDATE CONSTRAINT.")


@_timed
def check_sequences(conn: psycopg.Connection[Any], limit: float = SEQUENCE_LIMIT) -> CheckOutcome:
    """Every non-cycling sequence has used less than `limit` of its range towards its bound."""
    rows = _rows(conn, f"""
        SELECT format('%%I.%%I', s.schemaname, s.sequencename),
               CASE WHEN s.increment_by > 0
                    THEN s.last_value::numeric / s.max_value
                    ELSE s.last_value::numeric / s.min_value END
        FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
        WHERE s.last_value IS NOT NULL AND NOT s.cycle AND {_USER_SCHEMA}
          AND (s.increment_by > 0 AND s.max_value > 0 OR s.increment_by < 0 AND s.min_value < 0)
        ORDER BY 2 DESC, 1""")
    items = [f"{name}: {float(used):.1%} of its maximum" for name, used in rows if used >= limit]
    return _outcome(
        "sequence_headroom", f"Sequences below {limit:.0%} of their maximum", "fail", items,
        f"{len(rows)} used sequence(s) below {limit:.0%}.",
        f"{len(items)} sequence(s) at or above {limit:.0%}: widen them (AS bigint) soon.")


@_timed
def check_unindexed_foreign_keys(conn: psycopg.Connection[Any]) -> CheckOutcome:
    """Foreign keys whose referencing columns lead no valid, non-partial index (warn)."""
    rows = _rows(conn, f"""
        SELECT c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text,
               array(SELECT quote_ident(a.attname)
                     FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                     ORDER BY k.ord)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE c.contype = 'f' AND c.conparentid = 0 AND {_USER_SCHEMA}
          AND NOT EXISTS (
              SELECT 1 FROM pg_index i
              WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
                AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(c.conkey)]
                    @> c.conkey)
        ORDER BY 1, 2""")
    items = [f"{table} ({', '.join(cols)}) → {ref}, constraint {name}: CREATE INDEX ON {table} "
             f"({', '.join(cols)})" for table, name, ref, cols in rows]
    return _outcome(
        "unindexed_foreign_keys", "Foreign keys have a supporting index", "warn", items,
        "Every foreign key has an index on its referencing columns.",
        f"{len(items)} foreign key(s) without an index: deletes on the referenced table scan.")


@_timed
def check_rls_enabled(conn: psycopg.Connection[Any],
                      exposed_schemas: Sequence[str] = ("public",)) -> CheckOutcome:
    """Tables in the API-exposed schemas have row level security enabled (warn)."""
    rows = _rows(conn, """
        SELECT format('%%I.%%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
          AND n.nspname = ANY(%(exposed)s::text[])
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1""", {"exposed": list(exposed_schemas)})
    items = [r[0] for r in rows]
    schemas = ", ".join(exposed_schemas)
    return _outcome(
        "rls_disabled", f"Row level security on exposed tables ({schemas})", "warn", items,
        f"Every table in {schemas} has row level security enabled.",
        f"{len(items)} table(s) readable by anyone with the API key: ALTER TABLE ... ENABLE ROW "
        "LEVEL SECURITY.")


def rls_check_url(url: str, exposed_schemas: Sequence[str] = ("public",)) -> CheckOutcome:
    """`check_rls_enabled` on a session of its own to `url`."""
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True) as conn:
        return check_rls_enabled(conn, exposed_schemas)


def read_history_state(conn: psycopg.Connection[Any], project_dir: Path) -> HistoryState:
    """Compare `supabase/migrations/*.sql` with the history table and dbsage's checksums."""
    files: dict[str, Path] = {}
    ignored: list[str] = []
    duplicates: list[str] = []
    for path in sorted((project_dir / "supabase" / "migrations").glob("*.sql")):
        version = migration_version(path)
        if version is None:
            ignored.append(path.name)
        elif version in files:
            duplicates.append(path.name)
        else:
            files[version] = path
    applied = applied_checksums(conn)
    pending = [files[v].name for v in sorted(files) if v not in applied]
    missing = sorted(v for v in applied if v not in files)
    drifted: list[str] = []
    unverified: list[str] = []
    for version in sorted(set(files) & set(applied)):
        logged = applied[version]
        if logged is None:
            unverified.append(version)
        elif hashlib.sha256(files[version].read_bytes()).hexdigest() != logged:
            drifted.append(files[version].name)
    applied_files = sorted(files[v].name for v in files if v in applied)
    return HistoryState(pending, missing, drifted, unverified, ignored, duplicates,
                        applied_files)


def history_state_url(url: str, project_dir: Path) -> HistoryState:
    """`read_history_state` on a session of its own to `url`."""
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True) as conn:
        return read_history_state(conn, project_dir)


@_timed
def check_migration_history(conn: psycopg.Connection[Any], project_dir: Path) -> CheckOutcome:
    """History agrees with `supabase/migrations/`.

    Missing files, checksum drift and duplicate versions fail; pending files warn.
    """
    state = read_history_state(conn, project_dir)
    items = ([f"missing file: version {v} is applied but has no file" for v in state.missing]
             + [f"checksum drift: {name} changed since it was applied" for name in state.drifted]
             + [f"duplicate version: {name}" for name in state.duplicates]
             + [f"pending: {name}" for name in state.pending]
             + [f"ignored: {name} has no leading version" for name in state.ignored])
    status: Status = ("fail" if state.missing or state.drifted or state.duplicates
                      else "warn" if state.pending or state.ignored else "pass")
    detail = (f"{len(state.pending)} pending, {len(state.missing)} missing, "
              f"{len(state.drifted)} drifted")
    if state.unverified:
        detail += f"; {len(state.unverified)} applied without a dbsage checksum (not verified)"
    return CheckOutcome("migration_history", "History matches supabase/migrations/", status,
                        detail + ".", items)


# --------------------------------------------------------------------------- user tests


def parse_tap(lines: Iterable[str]) -> TapSummary:
    """Parse TAP: plan `1..N`, `ok N - d`, `not ok N - d` (TODO excused), `# diagnostics`.

    Diagnostics that follow a `not ok` are attached to that failure.
    """
    planned: int | None = None
    ran = 0
    failures: list[str] = []
    current: list[str] | None = None  # the failure that diagnostics attach to
    for line in lines:
        line = line.rstrip()
        if m := re.match(r"^1\.\.(\d+)", line):
            planned = int(m.group(1))
        elif m := re.match(r"^(not )?ok\b", line):
            ran += 1
            current = None
            if m.group(1) and not re.search(r"#\s*TODO\b", line, re.IGNORECASE):
                current = [line]
                failures.append(line)
        elif line.startswith("#") and current is not None:
            current.append(line)
            failures[-1] = "\n".join(current)
        elif line.startswith("Bail out!"):
            failures.append(line)
    return TapSummary(planned, ran, failures)


def discover_user_tests(project_dir: Path) -> list[Path]:
    """Every `supabase/tests/**/*.sql` under the project, sorted by relative path."""
    root = project_dir / "supabase" / "tests"
    return sorted(root.glob("**/*.sql"), key=lambda p: p.relative_to(root).as_posix())


def pgtap_available(conn: psycopg.Connection[Any]) -> bool:
    """True when the server offers the pgtap extension (installed or installable)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgtap')"
        ).fetchone()
    return bool(row and row[0])


class _Lines:
    """Character offsets of a text to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


@dataclass(frozen=True)
class _TestStatement:
    offset: int  # character offset in the file
    sql: str


@dataclass(frozen=True)
class _TestFile:
    """A test file read and split, with the pgTAP functions it calls (name, line)."""

    path: Path
    lines: _Lines
    statements: list[_TestStatement]
    pgtap_calls: tuple[tuple[str, int], ...]
    error: UserTestFileError | None = None

    @property
    def pgtap(self) -> bool:
        return bool(self.pgtap_calls)


def _read_test_file(path: Path) -> _TestFile:
    """Read, split and classify a test file (an unusable one keeps its error)."""
    text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    lines = _Lines(text)
    try:
        statements, calls = _split_test_file(text)
    except UserTestFileError as exc:
        return _TestFile(path, lines, [], (), exc)
    return _TestFile(path, lines, statements, calls)


def _pgtap_calls(raw_statements: Sequence[RawStmt], lines: _Lines) -> tuple[tuple[str, int], ...]:
    """(name, line) of every call of a pgTAP function (unqualified, or in any schema)."""
    from pglast.visitors import Visitor

    found: list[tuple[str, int]] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors: Any, node: Any) -> None:  # pglast calls it
            name = str(node.funcname[-1].sval)
            if name in PGTAP_FUNCTIONS:
                found.append((name, lines.line(node.location or 0)))

    visit = Calls()
    for raw in raw_statements:
        visit(raw)
    return tuple(found)


def _split_test_file(text: str) -> tuple[list[_TestStatement], tuple[tuple[str, int], ...]]:
    """Split a test file into statements, dropping the transaction control the runner owns,
    and find the pgTAP functions it calls.

    Cosmetic psql meta-commands (`\\set`, `\\pset`, ...) are blanked; others are refused.
    Raises UserTestFileError for other meta-commands, PREPARE TRANSACTION and
    syntax errors.
    """
    from pglast import parse_sql
    from pglast.parser import ParseError

    lines = _Lines(text)
    for meta in _META_LINE.finditer(text):
        if meta["cmd"] not in _COSMETIC_META:
            raise UserTestFileError(f"psql meta-command \\{meta['cmd']} is not supported",
                                    line=lines.line(meta.start()))
    text = _META_LINE.sub(lambda m: " " * len(m.group(0)), text)
    try:
        raw_statements = parse_sql(text)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else 0
        raise UserTestFileError(str(exc.args[0]), line=lines.line(offset),
                                sqlstate="42601") from None
    statements = []
    for raw in raw_statements:
        kind = _transaction_kind(raw)
        start = raw.stmt_location or 0
        if kind in _TX_REFUSED:
            raise UserTestFileError(f"{kind.replace('_', ' ')} is not allowed in a smoke test",
                                    line=lines.line(start))
        if kind in _TX_SKIPPED:
            continue
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        statements.append(_TestStatement(start, text[start:end]))
    return statements, _pgtap_calls(raw_statements, lines)


def _transaction_kind(raw: RawStmt) -> str | None:
    """BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ... for a transaction statement, else None."""
    if type(raw.stmt).__name__ != "TransactionStmt":
        return None
    return str(raw.stmt.kind.name).removeprefix("TRANS_STMT_")  # type: ignore[union-attr]


def _located_error(exc: psycopg.Error, stmt: _TestStatement, lines: _Lines) -> str:
    """`line N: SQLSTATE: message` for an error raised by `stmt`."""
    position = exc.diag.statement_position
    offset = stmt.offset + (int(position) - 1 if position else 0)
    return f"line {lines.line(offset)}: {_error_text(exc)}"


def _run_statements(conn: psycopg.Connection[Any], statements: list[_TestStatement],
                    lines: _Lines, output: list[str]) -> tuple[int, str | None]:
    """Run statements in order, collecting text output; stop at the first error.

    Returns (statements executed, located error or None).
    """
    for done, stmt in enumerate(statements):
        try:
            cur = conn.execute(cast(LiteralString, stmt.sql))  # the user's own test SQL
        except psycopg.Error as exc:
            return done, _located_error(exc, stmt, lines)
        if cur.description is not None:
            for row in cur.fetchall():
                output.extend(line for value in row if isinstance(value, str)
                              for line in value.splitlines())
    return len(statements), None


def run_user_test(conn: psycopg.Connection[Any], path: Path, *, pgtap: bool | None = None,
                  project_dir: Path | None = None) -> UserTestResult:
    """Run one test file inside a transaction that is always rolled back.

    A file that calls pgTAP's functions (plan, ok, is, finish, ...) is a pgTAP test (`pgtap`
    forces one way or the other): the extension is created first (rolled back with the rest)
    and the TAP output decides. Any other file is plain SQL: it passes when every statement
    runs without error.
    """
    return _run_test_file(conn, _read_test_file(path), pgtap, project_dir)


def _run_test_file(conn: psycopg.Connection[Any], file: _TestFile, pgtap: bool | None,
                   project_dir: Path | None) -> UserTestResult:
    start = time.perf_counter()
    path = file.path
    shown = path.relative_to(project_dir).as_posix() if project_dir else str(path)
    use_pgtap = file.pgtap if pgtap is None else pgtap
    mode: TestMode = "pgtap" if use_pgtap else "plain"
    if file.error is not None:
        return UserTestResult(shown, mode, False, None, 0, [], file.error.located(),
                              _ms_since(start))
    output: list[str] = []
    done, error = 0, None
    with conn.transaction(force_rollback=True):
        if use_pgtap:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
            except psycopg.Error as exc:
                error = f"CREATE EXTENSION pgtap: {_error_text(exc)}"
        if error is None:
            done, error = _run_statements(conn, file.statements, file.lines, output)
    if not use_pgtap:
        return UserTestResult(shown, mode, error is None, None, done, [], error,
                              _ms_since(start))
    return _pgtap_result(shown, parse_tap(output), error, _ms_since(start))


def _pgtap_result(shown: str, tap: TapSummary, error: str | None,
                  duration_ms: float) -> UserTestResult:
    """Verdict of a pgTAP file: no `not ok`, ran what it planned, and no SQL error."""
    failures = list(tap.failures)
    if tap.planned is None and error is None:
        failures.append("no TAP plan: call plan(n) (or no_plan() with finish())")
    elif tap.planned is not None and tap.planned != tap.ran:
        failures.append(f"planned {tap.planned} test(s) but ran {tap.ran}")
    passed = error is None and not failures
    return UserTestResult(shown, "pgtap", passed, tap.planned, tap.ran, failures, error,
                          duration_ms)


def run_user_tests(conn: psycopg.Connection[Any], project_dir: Path) -> list[UserTestResult]:
    """Run every `supabase/tests/**/*.sql`: pgTAP files (by their content) with pgTAP, the
    others as plain SQL.

    Raises:
        PgtapMissingError: a pgTAP file, and the server has no pgTAP (checked before any
            file runs).
    """
    files = read_user_tests(conn, project_dir)
    return [_run_test_file(conn, f, None, project_dir) for f in files]


def read_user_tests(conn: psycopg.Connection[Any], project_dir: Path) -> list[_TestFile]:
    """The user's test files, read and classified; PgtapMissingError when one is a pgTAP test
    and the server cannot run it."""
    files = [_read_test_file(p) for p in discover_user_tests(project_dir)]
    tap = [f for f in files if f.pgtap]
    if tap and not pgtap_available(conn):
        first = tap[0]
        called = ", ".join(dict.fromkeys(f"{name}()" for name, _ in first.pgtap_calls))
        rel = first.path.relative_to(project_dir).as_posix()
        others = f" (and {len(tap) - 1} more)" if len(tap) > 1 else ""
        major = conn.info.server_version // 10000
        raise PgtapMissingError(
            f"{rel}:{first.pgtap_calls[0][1]}: a pgTAP test (it calls {called}){others}, but "
            f"this PostgreSQL {major} server has no pgTAP extension (not in "
            "pg_available_extensions); nothing was run.",
            hint=f"Install pgTAP on the server (Debian/Ubuntu: apt-get install "
                 f"postgresql-{major}-pgtap; Supabase and its local stack have it), and dbsage "
                 "creates it for each test in a transaction that is rolled back; or write the "
                 "test as plain SQL (it passes when every statement runs).",
            path=rel, line=first.pgtap_calls[0][1])
    return files


# --------------------------------------------------------------------------- the whole run


def run_checks(conn: psycopg.Connection[Any], project_dir: Path, *,
               exposed_schemas: Sequence[str] = ("public",)) -> list[CheckOutcome]:
    """Every built-in check, in report order."""
    return [
        check_relations_selectable(conn),
        check_invalid_indexes(conn),
        check_not_valid_constraints(conn),
        check_sequences(conn),
        check_unindexed_foreign_keys(conn),
        check_rls_enabled(conn, exposed_schemas),
        check_migration_history(conn, project_dir),
    ]


def run_smoke_test(conn: psycopg.Connection[Any], project_dir: Path, *,
                   exposed_schemas: Sequence[str] = ("public",)) -> SmokeReport:
    """Run the built-in checks and the user's tests; nothing is left changed in the database.

    Args:
        conn: An open connection to the target database (autocommit or not).
        project_dir: The project root, the folder that holds `supabase/`.
        exposed_schemas: Schemas the API exposes, whose tables should have RLS enabled.

    Raises:
        SmokeTestError: `project_dir` is not a folder.
        PgtapMissingError: a test file is a pgTAP test and the server has no pgTAP (before
            any check runs).
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise SmokeTestError(f"{project_dir}: no such project folder.",
                             hint="Run from the project root, the folder holding supabase/.")
    files = read_user_tests(conn, project_dir)  # a pgTAP test pgTAP cannot run: exit 2 now
    checks = run_checks(conn, project_dir, exposed_schemas=exposed_schemas)
    user_tests = [_run_test_file(conn, f, None, project_dir) for f in files]
    passed = (all(c.status != "fail" for c in checks) and all(t.passed for t in user_tests))
    return SmokeReport(checks, user_tests, passed)


def smoke_test_url(url: str, project_dir: Path, *,
                   exposed_schemas: Sequence[str] = ("public",)) -> SmokeReport:
    """`run_smoke_test` on a session of its own to `url`."""
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True) as conn:
        return run_smoke_test(conn, project_dir, exposed_schemas=exposed_schemas)
