"""The migration advisory lock, held on the run's own session from start to finish."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dbsage.tools.errors import LockBusyError

if TYPE_CHECKING:
    import psycopg

MIGRATION_LOCK_KEY = "dbsage:migrate"

#: The target database, as pg_locks names it: advisory locks are per database, so a key held
#: in another database of the same server is another lock.
THIS_DATABASE_SQL = "(SELECT oid FROM pg_database WHERE datname = current_database())"


def held_lock_sql(key_sql: str = "%s", alias: str = "l") -> str:
    """SQL condition: the pg_locks row `alias` is the granted session advisory lock, in this
    database, on the key that `key_sql` gives (a placeholder by default, or a quoted literal).

    A one-argument advisory lock on bigint k shows in pg_locks as classid = high 32 bits,
    objid = low 32 bits, objsubid = 1; hashtext() is int4, sign-extended to bigint.
    """
    return (f"{alias}.locktype = 'advisory' AND {alias}.granted AND {alias}.objsubid = 1 "
            f"AND {alias}.database = {THIS_DATABASE_SQL} "
            f"AND (({alias}.classid::bigint << 32) | {alias}.objid::bigint) = "
            f"hashtext({key_sql})::bigint")


def holder_count_sql(key: str = MIGRATION_LOCK_KEY) -> str:
    """A parameterless SQL expression: how many sessions hold the lock on `key` in the
    connected database (for psql)."""
    literal = "'" + key.replace("'", "''") + "'"
    return f"(SELECT count(*) FROM pg_locks l WHERE {held_lock_sql(literal)})"


# What this role may see of other sessions: pg_locks and pg_stat_activity are readable by
# everyone unless revoked, but another role's pg_stat_activity row shows its start time, state
# and address only to members of that role or of pg_read_all_stats.
_VISIBILITY_SQL = """
SELECT current_user::text, has_table_privilege('pg_catalog.pg_locks', 'SELECT'),
       has_table_privilege('pg_catalog.pg_stat_activity', 'SELECT')
"""
_HOLDER_SQL = f"""
SELECT l.pid, a.application_name, a.backend_start, a.usename::text, a.client_addr::text, a.state,
       coalesce(pg_has_role(a.usesysid, 'USAGE'), false) OR pg_has_role('pg_read_all_stats', 'USAGE')
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE {held_lock_sql()}
  AND l.pid <> pg_backend_pid()
LIMIT 1
"""
_HOLDER_PID_SQL = f"""
SELECT l.pid FROM pg_locks l WHERE {held_lock_sql()} AND l.pid <> pg_backend_pid() LIMIT 1
"""
_HELD_HERE_SQL = f"""
SELECT EXISTS (SELECT FROM pg_locks l WHERE {held_lock_sql()} AND l.pid = pg_backend_pid())
"""


@dataclass(frozen=True)
class LockHolder:
    """The session that holds the migration lock, as far as this role may see it."""

    pid: int | None  # None when this role may not read pg_locks
    application_name: str | None
    since: datetime | None
    user: str | None
    client_addr: str | None
    state: str | None
    hidden: str | None = None  # what this role may not see of it, and the GRANT that shows it
    grant: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "a session this role may not see"
        since = f" since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.since else ""
        app = self.application_name or "(no application_name)"
        user = f", user {self.user}" if self.user and self.hidden else ""
        return f"pid {self.pid}, application_name {app}{user}{since}"


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
    """A peek without taking the lock: LockBusyError when another session holds it.

    A role that may not read pg_locks peeks by taking the lock and releasing it at once.
    """
    holder = find_lock_holder(conn, key)
    if holder is not None:
        raise _busy(key, holder)


def _busy(key: str, holder: LockHolder | None) -> LockBusyError:
    who = holder.describe() if holder else "a session that has just ended"
    hidden = f" {holder.hidden}" if holder and holder.hidden else ""
    fix = f" {holder.grant} shows them." if holder and holder.grant else ""
    return LockBusyError(
        f"Another migration is running (lock '{key}' held by {who}).{hidden}",
        hint="Wait for it to finish. If it is stuck, inspect it with: SELECT * FROM pg_locks "
        "WHERE locktype = 'advisory'; and end it with pg_terminate_backend(pid)." + fix,
        holder_pid=holder.pid if holder else None,
        holder_application_name=holder.application_name if holder else None,
        holder_since=holder.since.isoformat() if holder and holder.since else None,
        holder_hidden=holder.hidden if holder else None,
        grant=holder.grant if holder else None,
    )


def find_lock_holder(conn: psycopg.Connection, key: str = MIGRATION_LOCK_KEY) -> LockHolder | None:
    """Who else holds the lock in this database, from pg_locks joined to pg_stat_activity.

    What the role may not see is said in `hidden`, with the GRANT that shows it in `grant`:
    another role's start time, state and client address (pg_read_all_stats), the session
    itself when pg_stat_activity or pg_locks is not readable.
    """
    visibility = conn.execute(_VISIBILITY_SQL).fetchone()
    assert visibility is not None
    role, locks_readable, activity_readable = visibility
    if not locks_readable:
        if _free_by_trying(conn, key):
            return None
        return LockHolder(None, None, None, None, None, None,
                          f"Role {role} may not read pg_catalog.pg_locks, so who holds it is "
                          "hidden.", f"GRANT SELECT ON pg_catalog.pg_locks TO {_ident(role)};")
    if not activity_readable:
        pid = conn.execute(_HOLDER_PID_SQL, (key,)).fetchone()
        if pid is None:
            return None
        return LockHolder(pid[0], None, None, None, None, None,
                          f"Role {role} may not read pg_catalog.pg_stat_activity, so the "
                          "session's application, user and start time are hidden.",
                          f"GRANT SELECT ON pg_catalog.pg_stat_activity TO {_ident(role)};")
    row = conn.execute(_HOLDER_SQL, (key,)).fetchone()
    if row is None:
        return None
    pid, app, since, user, addr, state, visible = row
    if visible:
        return LockHolder(pid, app, since, user, addr, state)
    return LockHolder(pid, app, since, user, addr, state,
                      f"Its start time, state and client address are hidden from role {role}, "
                      f"which is not a member of pg_read_all_stats (nor of role {user}).",
                      f"GRANT pg_read_all_stats TO {_ident(role)};")


def _free_by_trying(conn: psycopg.Connection, key: str) -> bool:
    """Is the lock free for this session? Asked by taking it, then releasing it at once (a
    lock this session held already stays held: advisory locks count)."""
    taken = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
    if taken == (True,):
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        return True
    return False


def _ident(name: str) -> str:
    """A role name as GRANT needs it written (double-quoted unless it is a plain identifier)."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


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


# --------------------------------------------------------------------------- lock waits
# What a session of this run waits for and who holds it up: read from a second, short-lived
# connection while the migration's own session waits (agent/progress.py shows it live).

_LOCK_WAIT_SQL = """
SELECT w.locktype, w.mode,
       (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = w.relation),
       extract(epoch FROM clock_timestamp() - w.waitstart)::float8,
       b.pid, a.state, extract(epoch FROM clock_timestamp() - a.state_change)::float8,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8, a.application_name,
       a.query
  FROM pg_locks w
  LEFT JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid) ON true
  LEFT JOIN pg_stat_activity a ON a.pid = b.pid
 WHERE w.pid = %s AND NOT w.granted
 ORDER BY b.pid
"""


@dataclass(frozen=True)
class Blocker:
    """A session that holds up a lock request (pg_blocking_pids), as this role may see it."""

    pid: int
    state: str | None  # "idle in transaction", "active", ...; None when hidden from this role
    state_seconds: float | None  # how long it has been in that state
    transaction_seconds: float | None  # how long its transaction has been open
    application_name: str | None
    query: str | None  # its current (or last) statement


@dataclass(frozen=True)
class LockWait:
    """A lock a session waits for: the mode, on what, since when, and who holds it up."""

    pid: int
    mode: str  # as in LOCK TABLE: "ACCESS EXCLUSIVE"
    locktype: str  # "relation", "transactionid", ...
    relation: str | None  # schema.table, for a relation lock
    waited_seconds: float | None
    blockers: tuple[Blocker, ...]


def lock_mode_name(mode: str) -> str:
    """pg_locks' `AccessExclusiveLock` as LOCK TABLE says it: `ACCESS EXCLUSIVE`."""
    words = re.findall(r"[A-Z][a-z]*", mode.removesuffix("Lock"))
    return " ".join(words).upper() or mode


def lock_wait(conn: psycopg.Connection, pid: int) -> LockWait | None:
    """The lock session `pid` waits for right now and who blocks it; None when it waits for
    none. A blocker's state and query are None where this role may not see them."""
    rows = conn.execute(_LOCK_WAIT_SQL, (pid,)).fetchall()
    if not rows:
        return None
    first = rows[0]
    blockers = tuple(
        Blocker(int(r[4]), r[5], r[6], r[7], r[8] or None,
                None if r[9] is None or r[9].startswith("<insufficient") else str(r[9]))
        for r in rows if r[4] is not None)
    return LockWait(pid, lock_mode_name(str(first[1])), str(first[0]), first[2], first[3],
                    blockers)
