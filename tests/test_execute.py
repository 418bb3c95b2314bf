"""tools/execute.py: the one statement executor and lock-timeout retry, which apply, dry-run and
(since it had none) rollback all use."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Db

from dbsage.tools.apply import LockRetryPolicy as ApplyLockRetryPolicy
from dbsage.tools.errors import StatementFailure
from dbsage.tools.execute import LockRetry, LockRetryPolicy, with_lock_retry, with_retry
from dbsage.tools.history import ensure_history_tables
from dbsage.tools.lock import acquire_lock, release_lock
from dbsage.tools.rollback import ReverseScript, RollbackFailedError, apply_rollback
from dbsage.tools.sqlfile import parse_statements

VERSION = "20250101000000"


def test_the_policy_names_error_kinds_and_apply_re_exports_it() -> None:
    assert ApplyLockRetryPolicy is LockRetryPolicy
    policy = LockRetryPolicy()
    assert (policy.multiplier, policy.retry_on) == (2.0, ("lock_timeout",))
    assert policy.retries("55P03") and policy.retries("40P01")  # lock_timeout, deadlock
    assert not policy.retries("42P01") and not policy.retries(None)
    assert not LockRetryPolicy(retry_on=()).retries("55P03")


def _flaky(failures: int) -> tuple[list[float], object]:
    calls: list[float] = []

    def attempt() -> str:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise LockRetry(StatementFailure(1, "55P03", "lock timeout"), outcome=len(calls))
        return "done"

    return calls, attempt


def test_with_lock_retry_backs_off_by_the_multiplier_then_gives_up() -> None:
    calls, attempt = _flaky(2)
    assert with_lock_retry(attempt, LockRetryPolicy(5, 0.05, 1.0, multiplier=4)) == ("done", 3)  # type: ignore[arg-type]
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.2  # 0.05, then 0.05 * 4
    calls, attempt = _flaky(10)
    with pytest.raises(LockRetry) as last:
        with_lock_retry(attempt, LockRetryPolicy(3, 0.01, 0.01))  # type: ignore[arg-type]
    assert len(calls) == 3 and last.value.outcome == 3


def test_the_retry_helper_tells_each_retry_and_lets_other_errors_through() -> None:
    told: list[tuple[int, int]] = []
    calls, attempt = _flaky(3)
    policy = LockRetryPolicy(6, 0.01, 0.05, on_retry=lambda n, of: told.append((n, of)))
    assert with_lock_retry(attempt, policy) == ("done", 4)  # type: ignore[arg-type]
    assert told == [(2, 6), (3, 6), (4, 6)]  # before each wait: the attempt that comes next
    assert calls[3] - calls[2] >= 0.04  # 0.01 * 2 ** 2
    tries: list[int] = []

    def broken() -> None:
        tries.append(1)
        raise ValueError("not a retryable error")

    with pytest.raises(ValueError):
        with_retry(broken, attempts=5, first_wait_s=0.01, max_wait_s=0.01,
                   retry_if=lambda exc: isinstance(exc, LockRetry))
    assert tries == [1]


def test_a_first_attempt_that_succeeds_never_loads_tenacity() -> None:
    import subprocess
    import sys

    code = ("import sys; from dbsage.tools.execute import with_retry; "
            "print(with_retry(lambda: 7, attempts=3, first_wait_s=0.01, max_wait_s=0.1, "
            "retry_if=lambda e: True), 'tenacity' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["(7,", "1)", "False"]


@pytest.fixture
def applied(db18: Db) -> Iterator[Db]:
    """A table and the history of the migration that (supposedly) made it."""
    with db18.connect() as conn:
        ensure_history_tables(conn)
        conn.execute("create table public.accounts (id int primary key)")
        conn.execute("insert into supabase_migrations.schema_migrations (version, name) "
                     "values (%s, 'a')", (VERSION,))
    yield db18


def _rollback(db: Db, **kw: object) -> object:
    script = ReverseScript(parse_statements("alter table public.accounts add column note text;")[0])
    with db.connect() as conn:
        acquire_lock(conn)
        try:
            return apply_rollback(conn, script, [], VERSION, ts="20990101000000",
                                  lock_timeout="100ms", **kw)  # type: ignore[arg-type]
        finally:
            release_lock(conn)


def _blocked(db: Db) -> psycopg.Connection:
    blocker = db.connect(autocommit=False)
    blocker.execute("select * from public.accounts")  # ACCESS SHARE until it ends
    return blocker


def _rollback_rows(db: Db) -> tuple[int, int]:
    return (db.scalar("select count(*) from supabase_migrations.schema_migrations"),
            db.scalar("select count(*) from dbsage.migration_log where event = 'rollback'"))


def test_a_rollback_retries_a_lock_timeout_like_apply(applied: Db) -> None:
    blocker = _blocked(applied)
    release = threading.Timer(1.0, blocker.commit)
    release.start()
    try:
        result = _rollback(applied, retry=LockRetryPolicy(20, 0.05, 0.4))
    finally:
        release.join()
        blocker.close()
    assert result.attempts > 1  # type: ignore[attr-defined]
    assert applied.scalar("select count(*) from information_schema.columns where "
                          "table_name = 'accounts' and column_name = 'note'") == 1
    assert _rollback_rows(applied) == (0, 1)


def test_a_rollback_that_never_gets_its_lock_changes_nothing(applied: Db) -> None:
    with _blocked(applied):
        with pytest.raises(RollbackFailedError, match="within lock_timeout 100ms, 2 times") as e:
            _rollback(applied, retry=LockRetryPolicy(2, 0.01, 0.01))
        assert e.value.data["sqlstate"] == "55P03"
        with pytest.raises(RollbackFailedError, match="55P03") as once:  # not retried
            _rollback(applied, retry=LockRetryPolicy(retry_on=()))
        assert "times" not in once.value.message
    assert _rollback_rows(applied) == (1, 0)
