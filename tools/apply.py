"""Apply a parsed migration: one transaction, SET LOCAL timeouts, retry on lock timeout.

How statements run, fail and are retried is tools/execute.py's, shared with dry-run and
rollback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dbsage.tools.errors import (
    LockTimeoutExhaustedError,
    MigrationFailedError,
    StatementFailure,
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
from dbsage.tools.sqlfile import MigrationFile, Statement

if TYPE_CHECKING:
    import psycopg

__all__ = ["ApplyResult", "LockRetryPolicy", "StatementResult", "apply_migration"]


@dataclass
class ApplyResult:
    """The outcome of a successful apply."""

    statements: list[StatementResult]
    attempts: int
    duration_s: float
    transactional: bool
    lock_timeouts: int = 0

    @property
    def rows_affected(self) -> int:
        return sum(s.rows_affected for s in self.statements)


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


def _apply_in_transaction(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                          statement_timeout: str | None, policy: LockRetryPolicy,
                          before_commit: BeforeCommit | None,
                          on_statement: OnStatement | None = None,
                          before_statements: BeforeStatements | None = None) -> ApplyResult:
    started = time.perf_counter()
    try:
        results, n = with_lock_retry(
            lambda: _run_transaction(conn, migration, lock_timeout, statement_timeout, policy,
                                     before_commit, on_statement, before_statements), policy)
    except LockRetry as last:
        err = LockTimeoutExhaustedError(
            f"{migration.path}:{last.failure.line}: could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times; everything was rolled back "
            "each time and nothing was applied.",
            failure=last.failure, path=str(migration.path),
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start) and let it finish; or allow a longer lock_timeout.",
        )
        results = cast(list[StatementResult], last.outcome)
        err.data.update(statements=[r.__dict__ for r in results], lock_timeout=lock_timeout,
                        attempts=policy.attempts)
        raise err from None
    return ApplyResult(results, n, time.perf_counter() - started, True, n - 1)


def _run_transaction(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                     statement_timeout: str | None, policy: LockRetryPolicy,
                     before_commit: BeforeCommit | None,
                     on_statement: OnStatement | None = None,
                     before_statements: BeforeStatements | None = None
                     ) -> list[StatementResult]:
    import psycopg

    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    try:
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            if before_statements:
                before_statements(conn)
            for stmt, res in zip(migration.statements, results, strict=True):
                run_statement(conn, stmt, res)
                if on_statement:
                    on_statement(res)
            if before_commit:
                before_commit(conn, results)
    except psycopg.Error as exc:
        failed = next((r for r in results if r.status == "failed"), None)
        stmt = migration.statements[failed.index - 1] if failed else None
        failure = statement_failure(exc, stmt)
        if policy.retries(failure.sqlstate):
            raise LockRetry(failure, results) from None
        raise _failed(migration, failure, stmt, results) from None
    return results


def _failed(migration: MigrationFile, failure: StatementFailure, stmt: Statement | None,
            results: list[StatementResult], *, rolled_back: bool = True,
            more: str = "") -> MigrationFailedError:
    err = MigrationFailedError(
        describe_failure(migration.path, len(migration.statements), failure, stmt) + more,
        failure=failure, path=str(migration.path), hint=failure_hint(failure, stmt),
        rolled_back=rolled_back)
    err.data["statements"] = [r.__dict__ for r in results]
    return err


def _apply_one_by_one(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                      statement_timeout: str | None, before_commit: BeforeCommit | None,
                      on_statement: OnStatement | None = None) -> ApplyResult:
    import psycopg

    started = time.perf_counter()
    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    set_timeouts(conn, lock_timeout, statement_timeout, local=False)
    try:
        for stmt, res in zip(migration.statements, results, strict=True):
            try:
                run_statement(conn, stmt, res)
            except psycopg.Error as exc:
                done = sum(r.status == "ok" for r in results)
                raise _failed(migration, statement_failure(exc, stmt), stmt, results,
                              rolled_back=False,
                              more=f" {done} earlier statement(s) of this non-transactional "
                              "file ran and stay applied; the rest did not run.") from None
            if on_statement:
                on_statement(res)
        if before_commit:
            with conn.transaction():
                before_commit(conn, results)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout; RESET statement_timeout")
    return ApplyResult(results, 1, time.perf_counter() - started, False)
