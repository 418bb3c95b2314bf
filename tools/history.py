"""dbsage's bookkeeping: the Supabase CLI's history table, dbsage's own audit log and its dry-run
log, and every query about them.

Both history rows are written inside the migration's own transaction, so a migration and its
record commit or vanish together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dbsage.tools.errors import AlreadyAppliedError, DriftError

if TYPE_CHECKING:
    import psycopg

# Exactly the Supabase CLI's shape, so `supabase migration list` agrees with dbsage.
SUPABASE_HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY);
ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[];
ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text;
"""

DBSAGE_LOG_DDL = """
CREATE SCHEMA IF NOT EXISTS dbsage;
CREATE TABLE IF NOT EXISTS dbsage.migration_log (
    id bigserial PRIMARY KEY,
    ts text NOT NULL,
    event text NOT NULL CHECK (event IN ('apply', 'rollback')),
    version text NOT NULL,
    name text NOT NULL,
    path text NOT NULL,
    checksum text NOT NULL,
    status text NOT NULL,
    mode text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms double precision NOT NULL,
    rows_affected bigint NOT NULL,
    statements integer NOT NULL,
    snapshot_before text,
    snapshot_after text,
    diff_patch text,
    applied_by text NOT NULL DEFAULT current_user
);
CREATE INDEX IF NOT EXISTS migration_log_version_idx ON dbsage.migration_log (version, id);
"""


@dataclass(frozen=True)
class AppliedMigration:
    """What the history says about one version."""

    version: str
    name: str | None
    statements: list[str] | None
    checksum: str | None  # from dbsage's log; None when another tool applied it
    applied_at: datetime | None
    ts: str | None  # dbsage's run timestamp of that apply


@dataclass(frozen=True)
class HistoryRecord:
    """The audit data of one apply, written with the migration."""

    ts: str
    version: str
    name: str
    path: str
    checksum: str
    mode: str
    started_at: datetime
    duration_ms: float
    rows_affected: int
    statements: list[str]
    snapshot_before: str | None
    snapshot_after: str | None
    diff_patch: str | None


@dataclass(frozen=True)
class HistoryRows:
    """How many rows each history table holds for one run (see the functions returning it)."""

    schema_migrations: int
    migration_log: int


@dataclass(frozen=True)
class ApplyRun:
    """What dbsage's log says one apply run applied."""

    version: str
    name: str
    path: str


def find_applied(conn: psycopg.Connection, version: str) -> AppliedMigration | None:
    """The history of `version`, or None when it was never applied (or no history exists)."""
    tables = conn.execute(
        "SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL, "
        "to_regclass('dbsage.migration_log') IS NOT NULL").fetchone()
    assert tables is not None
    if not tables[0]:
        return None
    row = conn.execute("SELECT version, name, statements FROM "
                       "supabase_migrations.schema_migrations WHERE version = %s",
                       (version,)).fetchone()
    if row is None:
        return None
    checksum = applied_at = ts = None
    if tables[1]:
        log = conn.execute("SELECT checksum, finished_at, ts FROM dbsage.migration_log WHERE "
                           "version = %s AND event = 'apply' ORDER BY id DESC LIMIT 1",
                           (version,)).fetchone()
        if log:
            checksum, applied_at, ts = log
    return AppliedMigration(row[0], row[1], row[2], checksum, applied_at, ts)


def ensure_not_applied(conn: psycopg.Connection, version: str, checksum: str,
                       statements: list[str], path: str) -> None:
    """Refuse a version that is applied already; call it drift when the file changed."""
    applied = find_applied(conn, version)
    if applied is None:
        return
    if applied.checksum is not None:
        changed = applied.checksum != checksum
    else:  # applied by the Supabase CLI: compare the statements it recorded
        changed = applied.statements is not None and applied.statements != statements
    when = f" on {applied.applied_at:%Y-%m-%d %H:%M:%S}" if applied.applied_at else ""
    if changed:
        raise DriftError(
            f"Migration {version} was applied{when}, but {path} has changed since "
            "(checksum differs). The database does not hold what the file says.",
            hint="Never edit an applied migration: restore the file from version control and "
            "put the change in a new migration.", version=version,
            applied_checksum=applied.checksum, file_checksum=checksum)
    raise AlreadyAppliedError(
        f"Migration {version} ({applied.name or path}) is already applied{when}.",
        hint="Nothing to do. To apply it again, roll it back first.", version=version,
        applied_ts=applied.ts)


def latest_applied_version(conn: psycopg.Connection) -> str | None:
    """The highest applied version, for the migration-order check."""
    exists = conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT "
                          "NULL").fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute("SELECT max(version) FROM supabase_migrations.schema_migrations").fetchone()
    return row[0] if row else None


# Both tables with every column and index dbsage writes: the DDL above is then a no-op.
_HISTORY_READY_SQL = """
SELECT to_regclass('dbsage.migration_log_version_idx') IS NOT NULL
   AND (SELECT count(*) FROM pg_attribute
        WHERE attrelid = to_regclass('supabase_migrations.schema_migrations')
          AND attname IN ('version', 'statements', 'name') AND attnum > 0
          AND NOT attisdropped) = 3
"""


def ensure_history_tables(conn: psycopg.Connection) -> None:
    """Create or complete both history tables, only when something is missing.

    `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` takes ACCESS EXCLUSIVE even when the column
    exists; run inside a migration's transaction it would block every reader of the Supabase
    history (Studio, `supabase migration list`) until the migration commits.
    """
    if conn.execute(_HISTORY_READY_SQL).fetchone() == (True,):
        return
    conn.execute(SUPABASE_HISTORY_DDL)
    conn.execute(DBSAGE_LOG_DDL)


_LOG_SQL = """
INSERT INTO dbsage.migration_log (ts, event, version, name, path, checksum, status, mode,
    started_at, duration_ms, rows_affected, statements, snapshot_before, snapshot_after,
    diff_patch)
VALUES (%(ts)s, %(event)s, %(version)s, %(name)s, %(path)s, %(checksum)s, %(status)s, %(mode)s,
    %(started_at)s, %(duration_ms)s, %(rows_affected)s, %(statement_count)s,
    %(snapshot_before)s, %(snapshot_after)s, %(diff_patch)s)
"""


def _log(conn: psycopg.Connection, rec: HistoryRecord, event: str, status: str) -> None:
    """The one INSERT into dbsage.migration_log: an apply or a rollback."""
    params: dict[str, Any] = {**rec.__dict__, "event": event, "status": status,
                              "statement_count": len(rec.statements)}
    conn.execute(_LOG_SQL, params)


def record_applied(conn: psycopg.Connection, rec: HistoryRecord) -> None:
    """Insert both history rows; call inside the migration's transaction."""
    ensure_history_tables(conn)
    conn.execute("INSERT INTO supabase_migrations.schema_migrations (version, statements, name) "
                 "VALUES (%s, %s, %s)", (rec.version, rec.statements, rec.name))
    _log(conn, rec, "apply", "applied")


def record_rolled_back(conn: psycopg.Connection, rec: HistoryRecord) -> None:
    """Take the version out of the Supabase history (as `supabase migration repair --status
    reverted` does) and log the rollback run `rec.ts`; call inside the rollback's transaction.

    `rec.checksum` is the reverse script's, `rec.statements` its statements and
    `rec.rows_affected` the rows its saved data put back.
    """
    conn.execute("DELETE FROM supabase_migrations.schema_migrations WHERE version = %s",
                 (rec.version,))
    ensure_history_tables(conn)
    _log(conn, rec, "rollback", "rolled_back")


def recorded_in_new_session(url: str, version: str) -> int:
    """Rows of `version` in the Supabase history as a new session sees them: only what committed.

    Opens (and closes) a session of its own on `url`.
    """
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True) as other:
        row = other.execute("SELECT count(*) FROM supabase_migrations.schema_migrations "
                            "WHERE version = %s", (version,)).fetchone()
    return int(row[0]) if row else 0


def applied_rows(conn: psycopg.Connection, version: str, ts: str, checksum: str) -> HistoryRows:
    """The Supabase history rows of `version`, and dbsage's 'apply' rows of run `ts` with `checksum`."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version = %s),"
        " (SELECT count(*) FROM dbsage.migration_log WHERE version = %s AND ts = %s AND "
        "checksum = %s AND event = 'apply')",
        (version, version, ts, checksum)).fetchone()
    assert row is not None
    return HistoryRows(int(row[0]), int(row[1]))


def rollback_rows(conn: psycopg.Connection, version: str, ts: str) -> HistoryRows:
    """The Supabase history rows of `version` (0 once reverted), and dbsage's 'rollback' rows of
    run `ts`."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version = %s),"
        " (SELECT count(*) FROM dbsage.migration_log WHERE ts = %s AND event = 'rollback')",
        (version, ts)).fetchone()
    assert row is not None
    return HistoryRows(int(row[0]), int(row[1]))


def find_apply_run(conn: psycopg.Connection, ts: str) -> ApplyRun | None:
    """The version, name and file path apply run `ts` recorded, or None when there is no such run."""
    row = conn.execute("SELECT version, name, path FROM dbsage.migration_log WHERE ts = %s AND "
                       "event = 'apply' ORDER BY id DESC LIMIT 1", (ts,)).fetchone()
    return ApplyRun(row[0], row[1], row[2]) if row else None


# --- the run to undo, and its name -------------------------------------------------------------

def history_exists(conn: psycopg.Connection) -> bool:
    """Both history tables exist (dbsage has applied something here)."""
    row = conn.execute(
        "SELECT to_regclass('dbsage.migration_log') IS NOT NULL AND "
        "to_regclass('supabase_migrations.schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def find_run_to_undo(conn: psycopg.Connection, ts: str) -> tuple[str, bool] | None:
    """The apply run `ts` (or, for `latest`, the newest whose version is still applied) and
    whether its version is still applied; None when there is no such run."""
    row = conn.execute(
        "SELECT l.ts, (s.version IS NOT NULL) FROM dbsage.migration_log l LEFT JOIN "
        "supabase_migrations.schema_migrations s ON s.version = l.version "
        "WHERE l.event = 'apply' AND (l.ts = %s OR %s = 'latest') "
        "AND (s.version IS NOT NULL OR %s <> 'latest') ORDER BY l.id DESC LIMIT 1",
        (ts, ts, ts)).fetchone()
    return (str(row[0]), bool(row[1])) if row else None


def applied_name_for_update(conn: psycopg.Connection, version: str) -> str | None:
    """The recorded name (else the version) of applied `version`, its history row locked FOR
    UPDATE until the transaction ends; None when it is not applied."""
    # Two queries: a CASE around a missing table still fails when the query is analysed.
    exists = conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations') "
                          "IS NOT NULL").fetchone()
    row = None
    if exists and exists[0]:
        row = conn.execute("SELECT coalesce(name, version) FROM "
                           "supabase_migrations.schema_migrations WHERE version = %s FOR UPDATE",
                           (version,)).fetchone()
    return str(row[0]) if row else None


# --- the history as smoke checks and the early snapshot compare it ----------------------------

def applied_checksums(conn: psycopg.Connection) -> dict[str, str | None]:
    """Applied version → checksum of its latest 'apply' in dbsage's log (None if unlogged)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL, "
            "to_regclass('dbsage.migration_log') IS NOT NULL").fetchone()
        assert row is not None
        has_history, has_log = row
        if not has_history:
            return {}
        if has_log:
            rows = conn.execute("""
                SELECT h.version, l.checksum FROM supabase_migrations.schema_migrations h
                LEFT JOIN LATERAL (SELECT checksum FROM dbsage.migration_log m
                                   WHERE m.version = h.version AND m.event = 'apply'
                                   ORDER BY m.id DESC LIMIT 1) l ON true""").fetchall()
        else:
            rows = conn.execute(
                "SELECT version, NULL::text FROM supabase_migrations.schema_migrations").fetchall()
    return {version: checksum for version, checksum in rows}


# The early snapshot's test that no migration committed in between (tools/snapshot.py).
_HISTORY_TABLES = {
    "dbsage.migration_log": "SELECT count(*)::text || ':' || coalesce(max(id)::text, '') "
                            "FROM dbsage.migration_log",
    "supabase_migrations.schema_migrations": (
        "SELECT count(*)::text || ':' || md5(coalesce(string_agg(version, ',' ORDER BY version),"
        " '')) FROM supabase_migrations.schema_migrations"),
}


def history_state(conn: psycopg.Connection) -> tuple[str, ...]:
    """Row counts and keys of both history tables, as this transaction's snapshot sees them."""
    present = [name for name in _HISTORY_TABLES
               if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)]
    state: list[str] = []
    for name in present:
        row = conn.execute(_HISTORY_TABLES[name]).fetchone()
        state.append(f"{name}={row[0] if row else ''}")
    return tuple(state)


# --- the dry-run log -------------------------------------------------------------------------

DRY_RUN_LOG_DDL = """
CREATE SCHEMA IF NOT EXISTS dbsage;
CREATE TABLE IF NOT EXISTS dbsage.dry_run_log (
    id bigserial PRIMARY KEY,
    version text,
    path text NOT NULL,
    checksum text NOT NULL,
    passed boolean NOT NULL,
    statements integer NOT NULL,
    failure text,
    ran_at timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS dry_run_log_checksum_idx ON dbsage.dry_run_log (checksum, id);
"""


@dataclass(frozen=True)
class DryRunRecord:
    """One row of dbsage.dry_run_log."""

    id: int
    version: str | None
    path: str
    checksum: str
    passed: bool
    statements: int
    failure: str | None
    ran_at: datetime
    duration_ms: float


def find_passing_dry_run(conn: psycopg.Connection, checksum: str) -> DryRunRecord | None:
    """The latest passing dry run of exactly this file content (sha256 checksum), if any."""
    row = conn.execute("SELECT to_regclass('dbsage.dry_run_log') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute(
        "SELECT id, version, path, checksum, passed, statements, failure, ran_at, duration_ms "
        "FROM dbsage.dry_run_log WHERE checksum = %s AND passed ORDER BY id DESC LIMIT 1",
        (checksum,)).fetchone()
    return DryRunRecord(*found) if found else None


def record_dry_run(conn: psycopg.Connection, version: str | None, path: str, checksum: str,
                   passed: bool, statements: int, failure: str | None,
                   duration_ms: float) -> int:
    """Insert the dry_run_log row in its own short transaction; its id."""
    with conn.transaction():
        conn.execute(DRY_RUN_LOG_DDL)
        row = conn.execute(
            "INSERT INTO dbsage.dry_run_log (version, path, checksum, passed, statements, "
            "failure, duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (version, path, checksum, passed, statements, failure, duration_ms)).fetchone()
    assert row is not None
    return int(row[0])
