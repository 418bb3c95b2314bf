"""Running statements, the one way apply, dry-run and rollback all do it: session timeouts, one
statement at a time, what PostgreSQL said when one failed, and the one lock-timeout retry.

A lock timeout (or a deadlock) rolls the whole transaction back, so nothing of it committed and
all of it can simply run again: `with_lock_retry` does that with exponential backoff, so a
migration waiting behind a long transaction never queues other sessions for longer than
lock_timeout at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dbsage.tools.errors import StatementFailure

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.sqlfile import Statement

T = TypeVar("T")

#: The error kinds a retry policy may name (the task definitions' `on:`), by SQLSTATE.
#: lock_timeout: lock_not_available (lock_timeout fired) and deadlock_detected (the deadlock
#: detector chose this transaction); either way a lock could not be had and nothing committed.
RETRYABLE_KINDS: dict[str, frozenset[str]] = {
    "lock_timeout": frozenset({"55P03", "40P01"}),
}


@dataclass(frozen=True)
class LockRetryPolicy:
    """Exponential backoff between whole-transaction retries after a lock timeout.

    The n-th wait is `first_wait_s * multiplier ** (n - 1)`, at most `max_wait_s`; `retry_on`
    names the error kinds (RETRYABLE_KINDS) that are retried.
    """

    attempts: int = 10
    first_wait_s: float = 0.1
    max_wait_s: float = 3.0
    multiplier: float = 2.0
    retry_on: tuple[str, ...] = ("lock_timeout",)
    #: Told (next attempt, attempts) before each wait between attempts: a live display.
    on_retry: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)

    def retries(self, sqlstate: str | None) -> bool:
        """A failure with this SQLSTATE is one this policy retries."""
        return any(sqlstate in RETRYABLE_KINDS.get(kind, frozenset()) for kind in self.retry_on)


@dataclass
class StatementResult:
    """How one statement went."""

    index: int
    line: int
    summary: str
    status: str  # "ok", "failed" or "not_run"
    rows_affected: int = 0
    duration_ms: float = 0.0


class LockRetry(Exception):
    """One attempt failed in a way the policy retries; it was rolled back entirely.

    `outcome` is whatever the attempt wants its caller to have if it was the last one.
    """

    def __init__(self, failure: StatementFailure, outcome: object = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.outcome = outcome


def with_lock_retry(attempt: Callable[[], T], policy: LockRetryPolicy) -> tuple[T, int]:
    """Call `attempt()` until it returns, again (after a backoff wait) each time it raises
    LockRetry; after `policy.attempts` attempts the last LockRetry propagates.

    Returns the result and how many attempts it took.
    """
    return with_retry(attempt, attempts=policy.attempts, first_wait_s=policy.first_wait_s,
                      multiplier=policy.multiplier, max_wait_s=policy.max_wait_s,
                      retry_if=lambda exc: isinstance(exc, LockRetry), on_retry=policy.on_retry)


def with_retry(call: Callable[[], T], *, attempts: int, first_wait_s: float,
               max_wait_s: float, retry_if: Callable[[BaseException], bool],
               multiplier: float = 2.0,
               on_retry: Callable[[int, int], None] | None = None) -> tuple[T, int]:
    """The one retry helper (statements here, connections in tools/connection.py): call
    `call()` until it returns; again after a wait each time it raises an exception
    `retry_if` accepts, `attempts` times at most, after which the last exception propagates.
    The n-th wait is `first_wait_s * multiplier ** (n - 1)`, at most `max_wait_s`;
    `on_retry(next attempt, attempts)` is told before each. Returns the result and how many
    attempts it took.

    The first attempt runs before tenacity is imported: nearly every call succeeds at once,
    and the import (~7 ms) stays off the path of a run that needs no retry."""
    try:
        return call(), 1
    except Exception as exc:
        if attempts <= 1 or not retry_if(exc):
            raise
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    if on_retry is not None:
        on_retry(2, attempts)
    time.sleep(min(first_wait_s, max_wait_s))
    retrying = Retrying(  # attempts 2.. : its n-th attempt is attempt n + 1
        stop=stop_after_attempt(attempts - 1),
        wait=wait_exponential(multiplier=first_wait_s * multiplier, exp_base=multiplier,
                              max=max_wait_s),
        retry=retry_if_exception(retry_if),
        reraise=True,
        before_sleep=(lambda rs: on_retry(rs.attempt_number + 2, attempts)) if on_retry else None,
    )
    result = retrying(call)
    return result, 1 + int(retrying.statistics.get("attempt_number", 1))


def set_timeouts(conn: psycopg.Connection, lock_timeout: str, statement_timeout: str | None,
                 *, local: bool, guard_key: str | None = None) -> None:
    """lock_timeout and statement_timeout ("0"/None: none) for the transaction or the session.

    With `guard_key` (inside a transaction), also take the transaction-level advisory lock on
    that key, in the same round trip: held until the transaction ends whatever its
    statements do, so no pg_advisory_unlock* they run can let a second migration in (a
    session that holds the session-level lock on the key gets it at once).
    """
    if guard_key is None:
        conn.execute("SELECT set_config('lock_timeout', %s, %s), "
                     "set_config('statement_timeout', %s, %s)",
                     (lock_timeout or "0", local, statement_timeout or "0", local))
        return
    conn.execute("SELECT set_config('lock_timeout', %s, %s), "
                 "set_config('statement_timeout', %s, %s), pg_advisory_xact_lock(hashtext(%s))",
                 (lock_timeout or "0", local, statement_timeout or "0", local, guard_key))


def session_settings(conn: psycopg.Connection) -> dict[str, str]:
    """The settings this session has SET itself (pg_settings.source = 'session'), by name."""
    rows = conn.execute("SELECT name, setting FROM pg_settings WHERE source = 'session'"
                        ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def restore_session_settings(conn: psycopg.Connection, before: dict[str, str],
                             names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Put back the session's settings as `session_settings` saw them: whatever changed since
    (a migration's `SET x`, `set_config(x, ..., false)`), and each of `names`, goes back to
    its value then, or to its default. Also RESET ROLE. Returns the names put back."""
    from psycopg import sql

    after = session_settings(conn)
    changed = [n for n in after if before.get(n) != after[n]]
    changed += [n for n in before if n not in after]
    wanted = list(dict.fromkeys([*changed, *(n for n in names if n)]))
    parts: list[sql.Composable] = [sql.SQL("RESET ROLE")]
    for name in wanted:
        if name in before:
            parts.append(sql.SQL("SELECT set_config({}, {}, false)").format(
                sql.Literal(name), sql.Literal(before[name])))
        else:
            parts.append(sql.SQL("RESET {}").format(sql.Identifier(*name.split("."))))
    conn.execute(sql.SQL("; ").join(parts))
    return tuple(wanted)


def reset_role(conn: psycopg.Connection) -> None:
    """Act as the role the session connected as again (before writing history)."""
    conn.execute("RESET ROLE")


def execute_statement(conn: psycopg.Connection, stmt: Statement) -> int:
    """Run one statement exactly as written; the rows it affected."""
    cur = conn.execute(stmt.sql)  # type: ignore[arg-type,unused-ignore]  # the file's SQL as-is
    return max(cur.rowcount, 0)


def run_statement(conn: psycopg.Connection, stmt: Statement, res: StatementResult) -> None:
    """`execute_statement`, recording its rows and time in `res` (status "failed" until it
    returns)."""
    t0 = time.perf_counter()
    res.status = "failed"  # until it returns
    try:
        res.rows_affected = execute_statement(conn, stmt)
    finally:  # a failed statement keeps how long it ran before it failed
        res.duration_ms = (time.perf_counter() - t0) * 1000
    res.status = "ok"


#: At most this many statements, and about this many characters, go in one message.
BATCH_STATEMENTS = 500
BATCH_CHARS = 256 * 1024


def batches(statements: Sequence[Statement], alone: frozenset[int] = frozenset()
            ) -> Iterator[tuple[int, int]]:
    """(start, end) slices of `statements` to send to the server in one message each: a run
    of consecutive statements of the same shape (`Statement.shape`: the same statement with
    other constants, as a bulk load or a backfill written as many INSERTs or UPDATEs is) goes
    together, up to BATCH_STATEMENTS and about BATCH_CHARS; every other statement, and each
    of the statement indexes in `alone`, goes alone. Sending 10,000 INSERTs one round trip at
    a time cost more than running them."""
    i, n = 0, len(statements)
    while i < n:
        first = statements[i]
        end, size = i + 1, len(first.sql)
        shape = first.shape
        if shape is not None and first.index not in alone:
            while (end < n and end - i < BATCH_STATEMENTS and size < BATCH_CHARS
                   and statements[end].shape == shape and statements[end].index not in alone):
                size += len(statements[end].sql)
                end += 1
        yield i, end
        i = end


def run_batch(conn: psycopg.Connection, stmts: Sequence[Statement],
              results: Sequence[StatementResult]) -> None:
    """Run statements of one shape (see `batches`) in one simple-query message, as the file
    has them, recording each one's rows in `results` and an equal share of the time (one
    message has one duration); the one that failed is marked "failed" and its error raised,
    the ones after it stay "not_run". PostgreSQL runs the statements of such a message one
    after the other, each under statement_timeout on its own, and stops at the first error;
    its results come back one per statement, so the failing statement is known exactly.

    The statements are joined with `;`: a shape has no comment that could swallow it."""
    from psycopg import errors
    from psycopg.generators import execute
    from psycopg.pq import ExecStatus

    body = ";\n".join(s.sql for s in stmts).encode(conn.info.encoding)
    for res in results:
        res.status = "failed"  # until its result says otherwise
    t0 = time.perf_counter()
    with conn.lock:
        conn.pgconn.send_query(body)
        answers = conn.wait(execute(conn.pgconn))
    share = (time.perf_counter() - t0) * 1000 / max(len(answers), 1)
    failed = None
    for res, answer in zip(results, answers, strict=False):
        res.duration_ms = share
        if answer.status == ExecStatus.FATAL_ERROR:
            failed = answer
            break
        res.status = "ok"
        res.rows_affected = max(answer.command_tuples or 0, 0)
    for res in results[len(answers):]:
        res.status = "not_run"
    if failed is not None:
        raise errors.error_from_result(failed, encoding=conn.info.encoding)
    if len(answers) != len(results):  # cannot happen: one result per statement
        raise errors.InternalError(f"{len(answers)} results for {len(results)} statements")


def statement_failure(exc: Exception, stmt: Statement | None) -> StatementFailure:
    """What PostgreSQL said, located at the file line of the error position within `stmt`."""
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


def describe_failure(path: Path | str, total: int, f: StatementFailure,
                     stmt: Statement | None) -> str:
    """`file:line (statement i of n): message [SQLSTATE x].`"""
    which = f" (statement {stmt.index} of {total})" if stmt else ""
    return f"{path}:{f.line}{which}: {f.message} [SQLSTATE {f.sqlstate}]."


def failure_hint(f: StatementFailure, stmt: Statement | None) -> str | None:
    """PostgreSQL's own hint, else what is known about this kind of failure."""
    if f.hint:
        return f.hint
    if f.sqlstate == "57014":
        return "statement_timeout cancelled it: split the work, or allow it more time."
    if stmt and stmt.kind == "IndexStmt" and not stmt.transactional:
        return ("A failed CREATE INDEX CONCURRENTLY leaves an INVALID index: DROP INDEX "
                "CONCURRENTLY it before trying again.")
    return None
