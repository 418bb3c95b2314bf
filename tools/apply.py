"""Apply a parsed migration: one transaction, SET LOCAL timeouts, retry on lock timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dbsage.tools.errors import (
    LockTimeoutExhaustedError,
    MigrationFailedError,
    StatementFailure,
)
from dbsage.tools.sqlfile import MigrationFile, Statement

if TYPE_CHECKING:
    import psycopg

# lock_not_available (lock_timeout fired) and deadlock_detected: the whole transaction can
# be retried safely because nothing of it committed.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01"})


@dataclass(frozen=True)
class LockRetryPolicy:
    """Exponential backoff between whole-transaction retries after a lock timeout."""

    attempts: int = 10
    first_wait_s: float = 0.1
    max_wait_s: float = 3.0


@dataclass
class StatementResult:
    """How one statement went."""

    index: int
    line: int
    summary: str
    status: str  # "ok", "failed" or "not_run"
    rows_affected: int = 0
    duration_ms: float = 0.0


@dataclass
class ApplyResult:
    """The outcome of a successful apply."""

    statements: list[StatementResult]
    attempts: int
    duration_s: float
    transactional: bool
    lock_timeouts: int = 0
    retry_waits_s: list[float] = field(default_factory=list)

    @property
    def rows_affected(self) -> int:
        return sum(s.rows_affected for s in self.statements)


class _Retryable(Exception):
    def __init__(self, failure: StatementFailure, results: list[StatementResult]) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.results = results


BeforeCommit = Callable[["psycopg.Connection", list[StatementResult]], None]
OnStatement = Callable[[StatementResult], None]
BeforeStatements = Callable[["psycopg.Connection"], None]


def apply_migration(conn: psycopg.Connection, migration: MigrationFile, *,
                    lock_timeout: str = "1s", statement_timeout: str | None = None,
                    retry: LockRetryPolicy | None = None,
                    before_commit: BeforeCommit | None = None,
                    on_statement: OnStatement | None = None,
                    before_statements: BeforeStatements | None = None) -> ApplyResult:
    """Run the migration's statements on an autocommit connection.

    A transactional migration runs in one transaction; `before_commit` runs inside it (the
    history rows), so all of it commits or none does. A lock timeout rolls everything back and
    retries with backoff. A file made only of non-transactional statements runs them one by
    one, then `before_commit` in its own transaction. `on_statement` hears of each statement
    that finished (so an interrupted run can tell what ran). `before_statements` runs inside
    the transaction before the first statement, again on every retry (saving the data the
    migration destroys, under the same lock_timeout).
    """
    if migration.transactional:
        return _apply_in_transaction(conn, migration, lock_timeout, statement_timeout,
                                     retry or LockRetryPolicy(), before_commit, on_statement,
                                     before_statements)
    if before_statements:  # nothing that destroys data runs outside a transaction
        before_statements(conn)
    return _apply_one_by_one(conn, migration, lock_timeout, statement_timeout, before_commit,
                             on_statement)


def _set_timeouts(conn: psycopg.Connection, lock_timeout: str, statement_timeout: str | None,
                  local: bool) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, %s), "
                 "set_config('statement_timeout', %s, %s)",
                 (lock_timeout or "0", local, statement_timeout or "0", local))


def _apply_in_transaction(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                          statement_timeout: str | None, policy: LockRetryPolicy,
                          before_commit: BeforeCommit | None,
                          on_statement: OnStatement | None = None,
                          before_statements: BeforeStatements | None = None) -> ApplyResult:
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
    )

    started = time.perf_counter()
    waits: list[float] = []
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(multiplier=policy.first_wait_s, max=policy.max_wait_s),
        retry=retry_if_exception_type(_Retryable),
        before_sleep=lambda rs: waits.append(rs.upcoming_sleep),
    )
    try:
        for attempt in retrying:
            with attempt:
                results = _run_transaction(conn, migration, lock_timeout, statement_timeout,
                                           before_commit, on_statement, before_statements)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        assert isinstance(last, _Retryable)
        err = LockTimeoutExhaustedError(
            f"{migration.path}:{last.failure.line}: could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times; everything was rolled back "
            "each time and nothing was applied.",
            failure=last.failure, path=str(migration.path),
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start), let it finish, then run dbsage again; or raise --lock-timeout.",
        )
        err.data["statements"] = [r.__dict__ for r in last.results]
        raise err from None
    n = retrying.statistics.get("attempt_number", 1)
    return ApplyResult(results, n, time.perf_counter() - started, True, n - 1, waits)


def _run_transaction(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                     statement_timeout: str | None, before_commit: BeforeCommit | None,
                     on_statement: OnStatement | None = None,
                     before_statements: BeforeStatements | None = None
                     ) -> list[StatementResult]:
    import psycopg

    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    try:
        with conn.transaction():
            _set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            if before_statements:
                before_statements(conn)
            for stmt, res in zip(migration.statements, results, strict=True):
                _run_statement(conn, stmt, res)
                if on_statement:
                    on_statement(res)
            if before_commit:
                before_commit(conn, results)
    except psycopg.Error as exc:
        failed = next((r for r in results if r.status == "failed"), None)
        stmt = migration.statements[failed.index - 1] if failed else None
        failure = _failure(exc, stmt)
        if failure.sqlstate in RETRYABLE_SQLSTATES:
            raise _Retryable(failure, results) from None
        err = MigrationFailedError(_describe(migration, failure, stmt), failure=failure,
                                   path=str(migration.path), hint=_hint(failure, stmt))
        err.data["statements"] = [r.__dict__ for r in results]
        raise err from None
    return results


def _run_statement(conn: psycopg.Connection, stmt: Statement, res: StatementResult) -> None:
    t0 = time.perf_counter()
    res.status = "failed"  # until it returns
    cur = conn.execute(stmt.sql)  # type: ignore[arg-type,unused-ignore]  # user SQL as-is
    res.duration_ms = (time.perf_counter() - t0) * 1000
    res.rows_affected = max(cur.rowcount, 0)
    res.status = "ok"


def _apply_one_by_one(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                      statement_timeout: str | None, before_commit: BeforeCommit | None,
                      on_statement: OnStatement | None = None) -> ApplyResult:
    import psycopg

    started = time.perf_counter()
    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    _set_timeouts(conn, lock_timeout, statement_timeout, local=False)
    try:
        for stmt, res in zip(migration.statements, results, strict=True):
            try:
                _run_statement(conn, stmt, res)
            except psycopg.Error as exc:
                failure = _failure(exc, stmt)
                done = sum(r.status == "ok" for r in results)
                err = MigrationFailedError(
                    _describe(migration, failure, stmt) + f" {done} earlier statement(s) of this "
                    "non-transactional file ran and stay applied; the rest did not run.",
                    failure=failure, path=str(migration.path), rolled_back=False,
                    hint=_hint(failure, stmt))
                err.data["statements"] = [r.__dict__ for r in results]
                raise err from None
            if on_statement:
                on_statement(res)
        if before_commit:
            with conn.transaction():
                before_commit(conn, results)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout; RESET statement_timeout")
    return ApplyResult(results, 1, time.perf_counter() - started, False)


def _failure(exc: Exception, stmt: Statement | None) -> StatementFailure:
    import psycopg

    diag = exc.diag if isinstance(exc, psycopg.Error) else None
    line = stmt.line if stmt else 0
    pos = getattr(diag, "statement_position", None) if diag else None
    if stmt and pos and pos.isdigit():
        line = stmt.line + stmt.sql.count("\n", 0, int(pos) - 1)
    message = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    return StatementFailure(
        line=line, sqlstate=getattr(exc, "sqlstate", None), message=message,
        detail=diag.message_detail if diag else None, hint=diag.message_hint if diag else None,
        statement=stmt.sql if stmt else "", index=stmt.index if stmt else 0)


def _describe(migration: MigrationFile, f: StatementFailure, stmt: Statement | None) -> str:
    where = f"{migration.path}:{f.line}"
    which = f" (statement {stmt.index} of {len(migration.statements)})" if stmt else ""
    return f"{where}{which}: {f.message} [SQLSTATE {f.sqlstate}]."


def _hint(f: StatementFailure, stmt: Statement | None) -> str | None:
    if f.hint:
        return f.hint
    if f.sqlstate == "57014":
        return "statement_timeout cancelled it: raise --statement-timeout, or split the work."
    if stmt and stmt.kind == "IndexStmt" and not stmt.transactional:
        return ("A failed CREATE INDEX CONCURRENTLY leaves an INVALID index: DROP INDEX "
                "CONCURRENTLY it before trying again.")
    return None
