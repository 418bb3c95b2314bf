"""Dry-run a migration: run it as apply would, inside a transaction that is always rolled back.

The schema change is computed with `results` (migra's successor): its inspector takes a psycopg 3
cursor, so it reads the catalog on *this* connection, inside the open dry-run transaction, and
sees the uncommitted changes that pg_dump cannot. The before-inspection runs in its own short
transaction just before the dry-run transaction (and is rolled back): the inspection queries take
locks of their own (RowExclusiveLock on every sequence, which PostgreSQL keeps until the end of
the top-level transaction even when a savepoint is rolled back) and would otherwise hide the
locks the migration's statements take. Under READ COMMITTED every catalog query takes a fresh
snapshot anyway, so one transaction would not make the two inspections more consistent.

Statements run, fail and are retried through tools/execute.py, as apply runs them, so that a
dry run executes and reports exactly as apply does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dbsage.tools.catalog import EXCLUDED_SCHEMAS, user_schemas_sql
from dbsage.tools.errors import (
    ConfigError,
    ConnectionFailedError,
    DbsageError,
    StatementFailure,
    TransactionShapeError,
)
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    StatementResult,
    describe_failure,
    failure_hint,
    run_statement,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.history import DryRunRecord as DryRunRecord  # re-exported: agent, tests
from dbsage.tools.history import find_passing_dry_run as find_passing_dry_run
from dbsage.tools.history import record_dry_run
from dbsage.tools.sqlfile import MigrationFile, Statement

if TYPE_CHECKING:
    import psycopg

STATUS_NOT_RUN = "not_run"
STATUS_PARSED_ONLY = "validated by parsing only"

# Transaction control a migration may hold: it stays inside dbsage's transaction.
_ALLOWED_TXN_KINDS = frozenset({"SAVEPOINT", "RELEASE", "ROLLBACK_TO"})


_USER_RELATIONS_SQL = f"""
SELECT c.oid, n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {user_schemas_sql()}
"""

# Relation locks of this backend in this database; system catalogs (oid < 16384) are the locks
# of this very query and of PostgreSQL's own catalog access, not the migration's.
_OWN_LOCKS_SQL = f"""
SELECT l.relation::oid::bigint, l.mode, n.nspname, c.relname
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation::oid::bigint >= 16384
  AND (n.nspname IS NULL OR ({user_schemas_sql()}))
"""

_SEQUENCES_SQL = f"""
SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences
WHERE {user_schemas_sql("schemaname")}
"""


@dataclass(frozen=True)
class LockTaken:
    """A relation lock a statement took (granted, on the dry run's own backend)."""

    relation: str  # schema.name
    mode: str  # e.g. "AccessExclusiveLock"


@dataclass
class DryRunStatement(StatementResult):
    """How one statement went in the dry run; `locks` are the ones new since the previous one."""

    locks: list[LockTaken] = field(default_factory=list)


@dataclass(frozen=True)
class SchemaChange:
    """One change the migration would make to the schema."""

    kind: str  # table | column | index | constraint | policy | function | view | trigger | rls
    action: str  # added | dropped | altered
    name: str  # schema.table[.member], or schema.function(args)
    detail: str
    ddl: str


@dataclass
class DryRunResult:
    """The outcome of a dry run; nothing of it persisted except its dry_run_log row."""

    passed: bool
    statements: list[DryRunStatement]
    changes: list[SchemaChange]
    failure: StatementFailure | None
    duration_s: float
    attempts: int
    record_id: int
    message: str | None = None  # apply's description of the failure, when one failed
    ddl_script: str = ""  # the whole change as one ordered DDL script (results/migra)
    warnings: list[str] = field(default_factory=list)

    @property
    def parsed_only(self) -> list[DryRunStatement]:
        """Statements that cannot run in a transaction, checked by parsing alone."""
        return [s for s in self.statements if s.status == STATUS_PARSED_ONLY]


@dataclass
class _Attempt:
    statements: list[DryRunStatement]
    changes: list[SchemaChange] = field(default_factory=list)
    ddl_script: str = ""
    failure: StatementFailure | None = None
    failed: Statement | None = None


class _StatementFailed(Exception):
    def __init__(self, exc: Exception, stmt: Statement) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.stmt = stmt


def dry_run_migration(conn: psycopg.Connection, migration: MigrationFile, *,
                      lock_timeout: str = "1s", statement_timeout: str | None = None,
                      retry: LockRetryPolicy | None = None,
                      describe_changes: bool = True, observe: bool = True,
                      inside: Callable[[psycopg.Connection], None] | None = None) -> DryRunResult:
    """Run the migration in a transaction that is always rolled back, then log the outcome.

    Args:
        conn: an autocommit connection that already holds the migration advisory lock.
        migration: the parsed migration file.
        lock_timeout: SET LOCAL lock_timeout for the transaction, as apply uses it.
        statement_timeout: SET LOCAL statement_timeout, or None for no limit.
        retry: backoff between whole-transaction retries after a lock timeout.
        describe_changes: inspect the catalog before and after to list the schema change.
            A gate that only needs pass/fail (yolo's automatic dry-run) skips it: two full
            catalog inspections cost about 0.7 s at 1,000 tables and 3.7 s at 5,000.
        observe: record the locks each statement takes and the sequences the run moves. A
            pass/fail gate skips that too: both read a row per user relation or sequence.
        inside: called with the connection inside the transaction, after every statement ran
            and before it is rolled back (again on each lock-timeout retry; not when a
            statement failed), to look at the migration's uncommitted effect.

    A failing statement gives `passed=False` and its `failure`; only connection trouble raises.
    """
    _check_connection(conn)
    _refuse_transaction_control(migration)
    started = time.perf_counter()
    sequences = _sequence_values(conn) if observe else {}
    attempt, attempts = _run_with_retry(conn, migration, lock_timeout, statement_timeout,
                                        retry or LockRetryPolicy(), describe_changes, observe,
                                            inside)
    warnings = _sequence_warnings(sequences, _sequence_values(conn)) if observe else []
    duration = time.perf_counter() - started
    message = (describe_failure(migration.path, len(migration.statements), attempt.failure,
                                attempt.failed) if attempt.failure else None)
    record_id = record_dry_run(conn, migration.version, str(migration.path), migration.checksum,
                               attempt.failure is None, len(migration.statements), message,
                               duration * 1000)
    return DryRunResult(attempt.failure is None, attempt.statements, attempt.changes,
                        attempt.failure, duration, attempts, record_id, message,
                        attempt.ddl_script, warnings)


def _check_connection(conn: psycopg.Connection) -> None:
    from psycopg.pq import TransactionStatus

    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        raise ConfigError("A dry run needs an idle autocommit connection (it opens and rolls "
                          "back its own transaction).",
                          hint="Connect with autocommit=True, as the apply pipeline does.")


def _refuse_transaction_control(migration: MigrationFile) -> None:
    """Defence in depth: read_migration refuses these already; never let one end the dry run."""
    for s in migration.statements:
        if s.kind != "TransactionStmt":
            continue
        kind = str(s.node.kind.name).removeprefix("TRANS_STMT_") if s.node is not None else "?"
        if kind not in _ALLOWED_TXN_KINDS:
            raise TransactionShapeError(
                f"{migration.path}:{s.line}: {s.summary.upper()} would end the dry run's "
                "transaction. Nothing was run.", path=str(migration.path), line=s.line,
                hint="Remove it, or split the file into two migrations at that line.")


def _run_with_retry(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                    statement_timeout: str | None, policy: LockRetryPolicy,
                    describe: bool = True, observe: bool = True,
                    inside: Callable[[psycopg.Connection], None] | None = None
                    ) -> tuple[_Attempt, int]:
    try:
        return with_lock_retry(lambda: _run_once(conn, migration, lock_timeout,
                                                 statement_timeout, policy, describe, observe,
                                                 inside),
                               policy)
    except LockRetry as last:
        attempt = cast(_Attempt, last.outcome)
        attempt.failure = dataclasses.replace(last.failure, hint=(
            f"lock_timeout {lock_timeout} fired {policy.attempts} times: a long transaction "
            "holds the table. Find it in pg_stat_activity (state, xact_start) and let it "
            "finish; or allow a longer lock_timeout."))
        return attempt, policy.attempts


def _run_once(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
              statement_timeout: str | None, policy: LockRetryPolicy, describe: bool = True,
              observe: bool = True,
              inside: Callable[[psycopg.Connection], None] | None = None) -> _Attempt:
    """One transaction: inspect, run every statement, inspect again, roll back. A failure the
    policy retries raises LockRetry with this attempt."""
    import psycopg

    attempt = _Attempt([DryRunStatement(s.index, s.line, s.summary, STATUS_NOT_RUN)
                        for s in migration.statements])
    try:
        before = _inspect_before(conn, lock_timeout, statement_timeout) if describe else None
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            _run_statements(conn, migration, attempt.statements, observe)
            if inside is not None:
                inside(conn)
            if describe:
                after = _inspect(conn)
                attempt.changes = diff_schemas(before, after)
                attempt.ddl_script = _ddl_script(before, after)
            raise psycopg.Rollback()  # always: a dry run never commits
    except _StatementFailed as failed:
        failure = statement_failure(failed.exc, failed.stmt)
        attempt.failure = dataclasses.replace(failure, hint=failure_hint(failure, failed.stmt))
        attempt.failed = failed.stmt
    except psycopg.Error as exc:
        raise _infrastructure_error(conn, exc) from exc
    if attempt.failure and policy.retries(attempt.failure.sqlstate):
        raise LockRetry(attempt.failure, attempt)
    return attempt


def _infrastructure_error(conn: psycopg.Connection, exc: Exception) -> DbsageError:
    if conn.broken or conn.closed:
        return ConnectionFailedError(f"The connection broke during the dry run: {exc}",
                                     hint="Nothing was committed. Check the server, then retry.")
    return DbsageError(f"The dry run could not inspect the database: {exc}",
                       hint="Nothing was committed. This is a dbsage bug if it repeats.")


def _run_statements(conn: psycopg.Connection, migration: MigrationFile,
                    results: list[DryRunStatement], observe: bool = True) -> None:
    """Run each transactional statement, recording the relation locks new since the last one
    (when `observe`)."""
    import psycopg

    names = _user_relation_names(conn) if observe else {}
    held = _own_relation_locks(conn, names) if observe else set()
    for stmt, res in zip(migration.statements, results, strict=True):
        if not stmt.transactional:
            res.status = STATUS_PARSED_ONLY
            continue
        try:
            run_statement(conn, stmt, res)
        except psycopg.Error as exc:
            if conn.broken:
                raise
            raise _StatementFailed(exc, stmt) from None
        if not observe:
            continue
        current = _own_relation_locks(conn, names)
        res.locks = sorted((lk for lk in current if lk not in held),
                           key=lambda lk: (lk.relation, lk.mode))
        held |= current


def _user_relation_names(conn: psycopg.Connection) -> dict[int, str]:
    """oid -> schema.name of every user relation, so locks on dropped ones keep their name."""
    return {int(oid): name for oid, name in conn.execute(_USER_RELATIONS_SQL).fetchall()}


def _own_relation_locks(conn: psycopg.Connection, names: dict[int, str]) -> set[LockTaken]:
    locks: set[LockTaken] = set()
    for oid, mode, nsp, rel in conn.execute(_OWN_LOCKS_SQL).fetchall():
        if nsp is not None:
            names[int(oid)] = f"{nsp}.{rel}"
        locks.add(LockTaken(names.get(int(oid), f"(dropped relation {oid})"), mode))
    return locks


def _inspect(conn: psycopg.Connection) -> Any:
    """results' catalog inspector over this connection, without dbsage's own schemas."""
    from results.schemainspect import PostgreSQL

    inspected = PostgreSQL(conn.cursor())
    for schema in EXCLUDED_SCHEMAS:  # PostgreSQL's own and the bookkeeping schemas
        inspected.exclude_schema(schema)
    return inspected


def _inspect_before(conn: psycopg.Connection, lock_timeout: str,
                    statement_timeout: str | None) -> Any:
    """Inspect in a transaction of its own (rolled back), so its locks are gone before the run."""
    import psycopg

    inspected = None
    with conn.transaction():
        set_timeouts(conn, lock_timeout, statement_timeout, local=True)
        inspected = _inspect(conn)
        raise psycopg.Rollback()
    return inspected


def _ddl_script(before: Any, after: Any) -> str:
    from results.dbdiff import Migration

    m = Migration(before, after)
    m.set_safety(False)
    m.add_all_changes_ordered()
    return str(m.statements.sql)


# ---- schema diff -------------------------------------------------------------------------

def _plain(key: str) -> str:
    """`"public"."a"."x"` -> `public.a.x` for reports."""
    return key.replace('"', "")


def diff_schemas(before: Any, after: Any) -> list[SchemaChange]:
    """Readable changes between two results inspectors, in dependency-friendly order."""
    tables_b, tables_a = _relations(before, "r", "p"), _relations(after, "r", "p")
    views_b, views_a = _relations(before, "v", "m"), _relations(after, "v", "m")
    return [
        *_diff_objects("table", tables_b, tables_a, _table_detail, None),
        *_diff_columns(tables_b, tables_a),
        *_diff_objects("view", views_b, views_a, _view_detail, _create_new),
        *_diff_objects("index", _plain_indexes(before), _plain_indexes(after),
                       lambda i: f"on {i.schema}.{i.table_name}", _recreate),
        *_diff_objects("constraint", before.constraints, after.constraints,
                       lambda c: f"{c.constraint_type} on {c.schema}.{c.table_name}: "
                                 f"{c.definition}", _recreate, _add_constraint),
        *_diff_rls(tables_b, tables_a),
        *_diff_objects("policy", before.rlspolicies, after.rlspolicies, _policy_detail,
                       _recreate),
        *_diff_objects("function", before.functions, after.functions,
                       lambda f: f"{f.thing} returning {f.result_string}, language {f.language}",
                       _create_new),
        *_diff_objects("trigger", before.triggers, after.triggers,
                       lambda t: f"on {t.schema}.{t.table_name}, calls {t.proc_schema}."
                                 f"{t.proc_name}()", _recreate),
    ]


def _relations(inspected: Any, *relkinds: str) -> dict[str, Any]:
    return {k: v for k, v in inspected.relations.items() if v.relationtype in relkinds}


def _create(obj: Any) -> str:
    return str(obj.create_statement).strip()


def _drop(obj: Any) -> str:
    return str(obj.drop_statement).strip()


def _create_new(new: Any, old: Any) -> str:
    """CREATE OR REPLACE kinds (views, functions): the new definition replaces the old."""
    return _create(new)


def _recreate(new: Any, old: Any) -> str:
    return f"{_drop(old)}\n{_create(new)}"


def _add_constraint(c: Any) -> str:
    """Self-contained (results' own says `PRIMARY KEY using index`, an index not listed)."""
    return f"alter table {c.quoted_full_table_name} add constraint {c.quoted_name} {c.definition};"


def _diff_objects(kind: str, before: Mapping[str, Any], after: Mapping[str, Any],
                  detail: Callable[[Any], str], alter: Callable[[Any, Any], str] | None,
                  create: Callable[[Any], str] | None = None) -> list[SchemaChange]:
    """Dropped, added and (when `alter` is given) altered objects of one kind, by key."""
    create = create or _create
    changes = [SchemaChange(kind, "dropped", _plain(k), detail(before[k]), _drop(before[k]))
               for k in sorted(before.keys() - after.keys())]
    changes += [SchemaChange(kind, "added", _plain(k), detail(after[k]), create(after[k]))
                for k in sorted(after.keys() - before.keys())]
    if alter is not None:
        changes += [SchemaChange(kind, "altered", _plain(k), detail(after[k]),
                                 alter(after[k], before[k]))
                    for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return changes


def _table_detail(t: Any) -> str:
    return f"{len(t.columns)} column(s): {', '.join(t.columns)}"


def _view_detail(v: Any) -> str:
    kind = "materialized view" if v.relationtype == "m" else "view"
    return f"{kind}: {' '.join(str(v.definition).split())}"


def _policy_detail(p: Any) -> str:
    text = f"on {p.schema}.{p.table_name} for {p.commandtype_keyword}"
    if p.qual:
        text += f" using ({p.qual})"
    if p.withcheck:
        text += f" with check ({p.withcheck})"
    return text


def _plain_indexes(inspected: Any) -> dict[str, Any]:
    """Indexes that do not back a constraint (those show as the constraint)."""
    return {k: i for k, i in inspected.indexes.items() if not getattr(i, "constraint", None)}


def _diff_columns(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SchemaChange]:
    changes: list[SchemaChange] = []
    for key in sorted(before.keys() & after.keys()):
        cols_b, cols_a = before[key].columns, after[key].columns
        for name in sorted(cols_b.keys() - cols_a.keys()):
            changes.append(SchemaChange(
                "column", "dropped", f"{_plain(key)}.{name}", cols_b[name].dbtypestr,
                f"alter table {key} {cols_b[name].drop_column_clause};"))
        for name in sorted(cols_a.keys() - cols_b.keys()):
            col = cols_a[name]
            changes.append(SchemaChange(
                "column", "added", f"{_plain(key)}.{name}", _column_detail(col),
                f"alter table {key} {col.add_column_clause};"))
        for name in sorted(cols_a.keys() & cols_b.keys()):
            old, new = cols_b[name], cols_a[name]
            if old != new:
                changes.append(SchemaChange(
                    "column", "altered", f"{_plain(key)}.{name}",
                    f"{_column_detail(old)} -> {_column_detail(new)}",
                    "\n".join(new.alter_table_statements(old, key))))
    return changes


def _column_detail(col: Any) -> str:
    text = str(col.dbtypestr) + (" not null" if col.not_null else "")
    return text + (f" default {col.default}" if col.default else "")


def _diff_rls(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SchemaChange]:
    changes = []
    for key in sorted(after):
        new = after[key]
        old = before.get(key)
        if old is None and new.rowsecurity:
            changes.append(SchemaChange("rls", "added", _plain(key), "row level security enabled",
                                        f"{new.alter_rls_statement}".strip()))
        elif old is not None and old.rowsecurity != new.rowsecurity:
            state = "enabled" if new.rowsecurity else "disabled"
            changes.append(SchemaChange("rls", "altered", _plain(key),
                                        f"row level security {state}",
                                        f"{new.alter_rls_statement}".strip()))
    return changes


# ---- what persists: the log row, and what a rollback cannot undo ---------------------------

def _sequence_values(conn: psycopg.Connection) -> dict[str, int | None]:
    return dict(conn.execute(_SEQUENCES_SQL).fetchall())


def _sequence_warnings(before: dict[str, int | None], after: dict[str, int | None]) -> list[str]:
    """Sequences are not transactional: nextval() in a dry run stays consumed."""
    return [f"sequence {name} moved from {before[name] or '(unused)'} to {value} during the dry "
            "run; "
            "nextval() is not undone by a rollback (this leaves only a gap in the numbering)."
            for name, value in sorted(after.items())
            if name in before and before[name] != value]
