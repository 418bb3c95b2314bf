"""The migration advisory lock, held on the run's own session from start to finish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dbsage.tools.errors import LockBusyError

if TYPE_CHECKING:
    import psycopg

MIGRATION_LOCK_KEY = "dbsage:migrate"



def held_lock_sql(key_sql: str = "%s", alias: str = "l") -> str:
    """SQL condition: the pg_locks row `alias` is the granted session advisory lock on the key
    that `key_sql` gives (a placeholder by default, or a quoted literal).

    A one-argument advisory lock on bigint k shows in pg_locks as classid = high 32 bits,
    objid = low 32 bits, objsubid = 1; hashtext() is int4, sign-extended to bigint.
    """
    return (f"{alias}.locktype = 'advisory' AND {alias}.granted AND {alias}.objsubid = 1 "
            f"AND (({alias}.classid::bigint << 32) | {alias}.objid::bigint) = "
            f"hashtext({key_sql})::bigint")


def holder_count_sql(key: str = MIGRATION_LOCK_KEY) -> str:
    """A parameterless SQL expression: how many sessions hold the lock on `key` (for psql)."""
    literal = "'" + key.replace("'", "''") + "'"
    return f"(SELECT count(*) FROM pg_locks l WHERE {held_lock_sql(literal)})"


_HOLDER_SQL = f"""
SELECT l.pid, a.application_name, a.backend_start, a.usename, a.client_addr::text, a.state
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE {held_lock_sql()}
  AND l.pid <> pg_backend_pid()
LIMIT 1
"""
_HELD_HERE_SQL = f"""
SELECT EXISTS (SELECT FROM pg_locks l WHERE {held_lock_sql()} AND l.pid = pg_backend_pid())
"""


@dataclass(frozen=True)
class LockHolder:
    """The session that holds the migration lock."""

    pid: int
    application_name: str
    since: datetime | None
    user: str | None
    client_addr: str | None
    state: str | None

    def describe(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.since else ""
        app = self.application_name or "(no application_name)"
        return f"pid {self.pid}, application_name {app}{since}"


@dataclass(frozen=True)
class LockResult:
    """The lock this session now holds."""

    key: str
    backend_pid: int


def acquire_lock(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> LockResult:
    """Take the session-level advisory lock without waiting; LockBusyError if another holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s)), pg_backend_pid()",
                       (key,)).fetchone()
    assert row is not None
    if row[0] is True:
        return LockResult(key, row[1])
    raise _busy(key, find_lock_holder(conn, key))


def ensure_lock_free(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> None:
    """A peek without taking the lock: LockBusyError when another session holds it."""
    holder = find_lock_holder(conn, key)
    if holder is not None:
        raise _busy(key, holder)


def _busy(key: str, holder: LockHolder | None) -> LockBusyError:
    who = holder.describe() if holder else "a session that has just ended"
    return LockBusyError(
        f"Another migration is running (lock '{key}' held by {who}).",
        hint="Wait for it to finish. If it is stuck, inspect it with: SELECT * FROM pg_locks "
        "WHERE locktype = 'advisory'; and end it with pg_terminate_backend(pid).",
        holder_pid=holder.pid if holder else None,
        holder_application_name=holder.application_name if holder else None,
        holder_since=holder.since.isoformat() if holder and holder.since else None,
    )


def find_lock_holder(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> LockHolder | None:
    """Who holds the lock, from pg_locks joined to pg_stat_activity."""
    row = conn.execute(_HOLDER_SQL, (key,)).fetchone()
    return LockHolder(*row) if row else None


def holds_lock(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> bool:
    """This session holds the lock on `key`."""
    row = conn.execute(_HELD_HERE_SQL, (key,)).fetchone()
    return bool(row and row[0])


def release_lock(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> bool:
    """Release the lock; False when this session did not hold it (or the session is gone)."""
    if conn.closed or conn.broken:
        return False  # a closed session has released all its locks already
    if conn.info.transaction_status != 0:  # not idle: leave the failed transaction first
        conn.rollback()
    row = conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,)).fetchone()
    return bool(row and row[0])
