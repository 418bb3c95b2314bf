"""Apply a parsed migration: one transaction, SET LOCAL timeouts, retry on lock timeout.

How statements run, fail and are retried is tools/execute.py's, shared with dry-run and
rollback. The file cannot switch dbsage's protections off: after a statement that changes
lock_timeout or statement_timeout dbsage's own values are set again; the transaction holds
a transaction-level advisory lock on the migration key that no unlock call can release; the
history is written as the connecting role; and whatever the file SET for the session is put
back once it has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dbsage.tools.analyze import setting_changes
from dbsage.tools.errors import (
    LockTimeoutExhaustedError,
    MigrationFailedError,
    StatementFailure,
    TransactionShapeError,
)
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    StatementResult,
    batches,
    describe_failure,
    failure_hint,
    reset_role,
    restore_session_settings,
    run_batch,
    run_statement,
    session_settings,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.lock import MIGRATION_LOCK_KEY
from dbsage.tools.sqlfile import MigrationFile, Statement, transaction_control_lines

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
    #: Run as written (the file's own BEGIN/COMMIT): what committed, as (first line, last
    #: line, whether it was a BEGIN ... COMMIT block), in order.
    committed_parts: tuple[tuple[int, int, bool], ...] = ()
    #: Settings the file changed for the session, put back after it ran.
    reset_settings: tuple[str, ...] = ()
    #: Things worth saying that did not stop the run.
    notes: tuple[str, ...] = ()

    @property
    def rows_affected(self) -> int:
        return sum(s.rows_affected for s in self.statements)

    @property
    def parts_text(self) -> str:
        """`line 1 on its own; lines 3-7 (BEGIN ... COMMIT)`: what committed, run as written."""
        return describe_parts(self.committed_parts)


def describe_parts(parts: tuple[tuple[int, int, bool], ...] | list[tuple[int, int, bool]]) -> str:
    """The committed parts of a file run as written, in words."""
    words = []
    for first, last, block in parts:
        if block:
            words.append(f"lines {first}-{last} (BEGIN at line {first} ... COMMIT at line {last})")
        else:
            words.append(f"line {first} on its own")
    return "; ".join(words)


BeforeCommit = Callable[["psycopg.Connection", list[StatementResult]], None]
OnStatement = Callable[[StatementResult], None]
BeforeStatements = Callable[["psycopg.Connection"], None]


def apply_migration(conn: psycopg.Connection, migration: MigrationFile, *,
                    lock_timeout: str = "1s", statement_timeout: str | None = None,
                    retry: LockRetryPolicy | None = None,
                    before_commit: BeforeCommit | None = None,
                    on_statement: OnStatement | None = None,
                    before_statements: BeforeStatements | None = None,
                    allow_transaction_control: bool = False) -> ApplyResult:
    """Run the migration's statements on an autocommit connection.

    A transactional migration runs in one transaction; `before_commit` runs inside it (the
    history rows), so all of it commits or none does. A lock timeout rolls everything back and
    retries with backoff. A file made only of non-transactional statements runs them one by
    one, then `before_commit` in its own transaction. `on_statement` hears of each statement
    that finished (so an interrupted run can tell what ran). `before_statements` runs inside
    the transaction before the first statement, again on every retry (saving the data the
    migration destroys, under the same lock_timeout).

    A file read with its own mid-file BEGIN/COMMIT kept (`migration.transaction_control`)
    runs only with `allow_transaction_control`: statement by statement on the session, as
    psql and the Supabase CLI run it, its BEGIN/COMMIT deciding what commits together, and
    `before_commit` once every part has committed (a failure after an inner COMMIT leaves the
    part before it applied: the error says which lines).

    Whatever the file does, dbsage's lock_timeout and statement_timeout are set again after
    each statement that changes them, and the settings it SET for the session are put back.
    """
    if migration.transaction_control and not allow_transaction_control:
        raise _transaction_control_refused(migration)
    changes = setting_changes(migration)
    reapply = frozenset(c.statement_index for c in changes if c.changes_timeouts)
    names = tuple(dict.fromkeys(c.name for c in changes if c.scope == "session" and c.name))
    before = session_settings(conn)
    result: ApplyResult | None = None
    try:
        if migration.transaction_control:
            result = _apply_as_written(conn, migration, lock_timeout, statement_timeout,
                                       before_commit, on_statement, before_statements, reapply)
        elif migration.transactional:
            result = _apply_in_transaction(conn, migration, lock_timeout, statement_timeout,
                                           retry or LockRetryPolicy(), before_commit,
                                           on_statement, before_statements, reapply)
        else:
            if before_statements:  # nothing that destroys data runs outside a transaction
                before_statements(conn)
            result = _apply_one_by_one(conn, migration, lock_timeout, statement_timeout,
                                       before_commit, on_statement, reapply)
    finally:
        restored, note = _restore(conn, before, names)
    assert result is not None
    result.reset_settings = restored
    result.notes = (note,) if note else ()
    return result


def _restore(conn: psycopg.Connection, before: dict[str, str],
             names: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """Put the session's settings back after the file ran: (the names put back, or why that
    failed). Never raises: the migration's outcome is decided already."""
    import psycopg
    from psycopg.pq import TransactionStatus

    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return (), None
    try:
        return restore_session_settings(conn, before, names), None
    except psycopg.Error as exc:
        return (), f"The session settings the file changed could not be put back: {exc}"


def _transaction_control_refused(migration: MigrationFile) -> TransactionShapeError:
    first = migration.transaction_control[0]
    return TransactionShapeError(
        f"{migration.path}:{first.line}: the file controls its own transactions "
        f"({transaction_control_lines(migration.transaction_control)}); it runs only as "
        "written, with that allowed explicitly. Nothing was run.",
        path=str(migration.path), line=first.line)


def _apply_in_transaction(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                          statement_timeout: str | None, policy: LockRetryPolicy,
                          before_commit: BeforeCommit | None,
                          on_statement: OnStatement | None = None,
                          before_statements: BeforeStatements | None = None,
                          reapply: frozenset[int] = frozenset()) -> ApplyResult:
    started = time.perf_counter()
    try:
        results, n = with_lock_retry(
            lambda: _run_transaction(conn, migration, lock_timeout, statement_timeout, policy,
                                     before_commit, on_statement, before_statements, reapply),
            policy)
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
                     before_statements: BeforeStatements | None = None,
                     reapply: frozenset[int] = frozenset()) -> list[StatementResult]:
    import psycopg

    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    try:
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True,
                         guard_key=MIGRATION_LOCK_KEY)
            if before_statements:
                before_statements(conn)
            statements = migration.statements
            for start, end in batches(statements, reapply):
                if end - start == 1:
                    run_statement(conn, statements[start], results[start])
                else:  # a run of one shape (a bulk load): one round trip
                    run_batch(conn, statements[start:end], results[start:end])
                for stmt, res in zip(statements[start:end], results[start:end], strict=True):
                    if stmt.index in reapply:  # the file changed a timeout: dbsage's own again
                        set_timeouts(conn, lock_timeout, statement_timeout, local=True)
                    if on_statement:
                        on_statement(res)
            if before_commit:
                reset_role(conn)  # the history is written as the connecting role
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
                      on_statement: OnStatement | None = None,
                      reapply: frozenset[int] = frozenset()) -> ApplyResult:
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
            if stmt.index in reapply:
                set_timeouts(conn, lock_timeout, statement_timeout, local=False)
            if on_statement:
                on_statement(res)
        if before_commit:
            with conn.transaction():
                reset_role(conn)
                before_commit(conn, results)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout; RESET statement_timeout")
    return ApplyResult(results, 1, time.perf_counter() - started, False)


def _apply_as_written(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                      statement_timeout: str | None, before_commit: BeforeCommit | None,
                      on_statement: OnStatement | None,
                      before_statements: BeforeStatements | None,
                      reapply: frozenset[int]) -> ApplyResult:
    """The file as psql and the Supabase CLI run it: statement by statement on the session,
    its own BEGIN ... COMMIT deciding what commits together (a statement outside them
    commits on its own); the history once every part has committed."""
    import psycopg
    from psycopg.pq import TransactionStatus

    started = time.perf_counter()
    results = [StatementResult(s.index, s.line, s.summary, "not_run")
               for s in migration.statements]
    control = {s.index: str(s.node.kind.name).removeprefix("TRANS_STMT_")
               for s in migration.transaction_control}
    parts: list[tuple[int, int, bool]] = []
    opened: Statement | None = None
    if before_statements:
        before_statements(conn)
    set_timeouts(conn, lock_timeout, statement_timeout, local=False)
    try:
        for stmt, res in zip(migration.statements, results, strict=True):
            try:
                run_statement(conn, stmt, res)
            except psycopg.Error as exc:
                failure = statement_failure(exc, stmt)
                open_block = conn.info.transaction_status in (TransactionStatus.INTRANS,
                                                               TransactionStatus.INERROR)
                if open_block and not conn.broken:
                    conn.rollback()
                raise _failed_as_written(migration, failure, stmt, results, parts,
                                         opened if open_block else None) from None
            kind = control.get(stmt.index)
            if kind in ("BEGIN", "START"):
                opened = stmt
                # Held until the file's COMMIT: no unlock call inside can let a second run in.
                set_timeouts(conn, lock_timeout, statement_timeout, local=False,
                             guard_key=MIGRATION_LOCK_KEY)
            elif kind == "COMMIT":
                if opened is not None:
                    parts.append((opened.line, stmt.line, True))
                opened = None
            elif opened is None:
                parts.append((stmt.line, stmt.line, False))  # committed on its own
            if stmt.index in reapply:
                set_timeouts(conn, lock_timeout, statement_timeout, local=False)
            if on_statement:
                on_statement(res)
        if before_commit:
            with conn.transaction():
                reset_role(conn)
                before_commit(conn, results)
    finally:
        if not conn.closed and not conn.broken:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.rollback()  # interrupted inside one of the file's transactions
            conn.execute("RESET lock_timeout; RESET statement_timeout")
    return ApplyResult(results, 1, time.perf_counter() - started, False,
                       committed_parts=tuple(parts))


def _failed_as_written(migration: MigrationFile, failure: StatementFailure, stmt: Statement,
                       results: list[StatementResult], parts: list[tuple[int, int, bool]],
                       opened: Statement | None) -> MigrationFailedError:
    """A statement of a file run as written failed: what stays committed, what did not."""
    if opened is not None:
        lost = (f" The transaction begun at line {opened.line} was rolled back (lines "
                f"{opened.line}-{stmt.line}).")
    else:
        lost = f" The statement at line {stmt.line} did not commit."
    if parts:
        kept = (f" Committed before it by the file's own transaction control, and still "
                f"applied: {describe_parts(parts)}.")
    else:
        kept = " Nothing of the file was committed."
    more = kept + lost + (" The history was not recorded: the migration is not marked "
                          "applied. Fix the failure, then apply the rest in a new migration "
                          "file (running this one again would repeat what committed)."
                          if parts else " The history was not recorded.")
    err = _failed(migration, failure, stmt, results, rolled_back=not parts, more=more)
    err.data["committed_parts"] = [list(p) for p in parts]
    return err
