"""dbsage's bookkeeping: the Supabase CLI's history table, dbsage's own audit log and its dry-run
log, and every query about them.

Both history rows are written inside the migration's own transaction, so a migration and its
record commit or vanish together. The `statements` dbsage writes are the Supabase CLI's own
split of the file (tools/cli_split.py), so the CLI and dbsage agree on every row either wrote.

Which rows are whose: a version whose latest record in dbsage.migration_log is an apply was
applied by dbsage and is judged by the file's sha256 (or, failing that, by the statements in
its row, which a `supabase migration repair` may have rewritten); any other row was written by
the Supabase CLI and is judged by `matches_cli_history`; a CLI row without statements (CLI
older than v1.67.0) is applied but cannot be verified.

Before anything is applied, `ensure_not_applied` also checks that the connecting role can
read and write every bookkeeping table (or create what is missing), and names the GRANT that
is missing: nothing is created or applied half-way for lack of a privilege.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dbsage.tools.cli_split import matches_cli_history, split_like_cli, statements_for_history
from dbsage.tools.errors import (
    AlreadyAppliedError,
    ConfigError,
    DbsageError,
    DriftError,
    MigrationFailedError,
    MigrationFileError,
    StatementFailure,
)
from dbsage.tools.sqlfile import split_version_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

# Exactly the Supabase CLI's DDL (apps/cli-go/pkg/migration/history.go), one statement each: a
# piece runs only when what it creates is missing (see ensure_history_tables).
CREATE_SUPABASE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS supabase_migrations"
CREATE_SUPABASE_TABLE = ("CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations "
                         "(version text NOT NULL PRIMARY KEY)")
SUPABASE_COLUMNS: tuple[tuple[str, str], ...] = (("statements", "text[]"), ("name", "text"))

CREATE_DBSAGE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS dbsage"
CREATE_MIGRATION_LOG = """
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
)"""
CREATE_MIGRATION_LOG_INDEX = ("CREATE INDEX IF NOT EXISTS migration_log_version_idx ON "
                              "dbsage.migration_log (version, id)")

_SUPABASE_HISTORY = ("supabase_migrations", "schema_migrations")
_MIGRATION_LOG = ("dbsage", "migration_log")
_DRY_RUN_LOG = ("dbsage", "dry_run_log")
#: What dbsage does with each bookkeeping table: read it and insert into it.
_NEEDED = ("SELECT", "INSERT")


@dataclass(frozen=True)
class AppliedMigration:
    """What the history says about one version."""

    version: str
    name: str | None
    statements: list[str] | None
    checksum: str | None  # from dbsage's log when its latest record of the version is an apply
    applied_at: datetime | None
    ts: str | None  # dbsage's run timestamp of that apply
    path: str | None = None  # the file dbsage applied it from


Verdict = Literal["not_applied", "applied", "unverifiable", "drift", "version_used"]
BY_CHECKSUM = "checksum recorded by dbsage"
BY_CLI_STATEMENTS = "statements recorded by the Supabase CLI"
BY_ROW_STATEMENTS = "statements recorded in supabase_migrations.schema_migrations"


@dataclass(frozen=True)
class HistoryVerdict:
    """What the history says about one migration file.

    `compared` names what the file was held against (BY_CHECKSUM, BY_CLI_STATEMENTS,
    BY_ROW_STATEMENTS), None when there was nothing to compare.
    """

    version: str
    path: str
    verdict: Verdict
    compared: str | None
    applied: AppliedMigration | None
    first_difference: int | None = None  # 1-based statement where a CLI row differs first

    def refusal(self) -> DbsageError | None:
        """The error an apply of this file meets, None when it is not applied yet."""
        a = self.applied
        if self.verdict == "not_applied" or a is None:
            return None
        when = f" on {a.applied_at:%Y-%m-%d %H:%M:%S}" if a.applied_at else ""
        v, path = self.version, self.path
        if self.verdict == "version_used":
            return MigrationFileError(
                f"{path}: version {v} is already used by {_applied_file(a)} (applied{when}), a "
                "different migration; this file was not applied.", path=path,
                hint=f"Give this migration a version of its own: rename it to "
                f"<YYYYMMDDHHMMSS>_{_file_name(path)}.sql with a timestamp newer than every "
                "applied version.")
        if self.verdict == "drift":
            return DriftError(self._drift_message(when), hint=self._repair_hint(), version=v,
                              compared=self.compared, applied_checksum=a.checksum,
                              first_difference=self.first_difference)
        if self.verdict == "unverifiable":
            return AlreadyAppliedError(
                f"Migration {v} ({a.name or path}) is already applied{when}. Its row has no "
                "statements (written by a Supabase CLI older than v1.67.0), so whether "
                f"{path} changed since cannot be verified.",
                hint="Nothing to do.", version=v, applied_ts=a.ts, verifiable=False)
        return AlreadyAppliedError(
            f"Migration {v} ({a.name or path}) is already applied{when} (the file matches the "
            f"{self.compared}).",
            hint="Nothing to do. To apply it again, roll it back first." if a.ts else
            "Nothing to do.", version=v, applied_ts=a.ts, compared=self.compared)

    def _drift_message(self, when: str) -> str:
        v, path = self.version, self.path
        if self.compared == BY_CHECKSUM:
            what = f"its sha256 is not the {BY_CHECKSUM} at apply time"
            by = " by dbsage"
        else:
            at = f" (first at statement {self.first_difference})" if self.first_difference else ""
            what = f"its statements differ from the {BY_CLI_STATEMENTS}{at}"
            by = " by the Supabase CLI"
        return (f"Migration {v} was applied{by}{when}, but {path} has changed since: {what}. "
                "The database does not hold what the file says.")

    def _repair_hint(self) -> str:
        v = self.version
        return ("Never edit an applied migration: restore the file from version control and put "
                "the change in a new migration. If the database really holds the file as it is "
                f"now (the change was made by hand), record that: `supabase migration repair "
                f"--status reverted {v}`, then `supabase migration repair --status applied {v}`.")


def _file_name(path: str) -> str:
    return split_version_name(Path(path))[1]


def _applied_file(a: AppliedMigration) -> str:
    if a.path:
        return Path(a.path).name
    return f"{a.version}_{a.name}.sql" if a.name else f"version {a.version}"


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


# --- what this role may do with the bookkeeping ----------------------------------------------

# Catalog lookups only: to_regclass() itself fails on a schema the role has no USAGE on.
_ACCESS_SQL = """
SELECT t.schema, t.name, current_user::text, current_database()::text,
       has_database_privilege(current_database(), 'CREATE'),
       n.oid IS NOT NULL, pg_get_userbyid(n.nspowner)::text,
       coalesce(has_schema_privilege(n.oid, 'USAGE'), false),
       coalesce(has_schema_privilege(n.oid, 'CREATE'), false),
       c.oid IS NOT NULL, pg_get_userbyid(c.relowner)::text,
       coalesce(pg_has_role(c.relowner, 'USAGE'), false),
       ARRAY(SELECT p FROM unnest(%(privileges)s::text[]) WITH ORDINALITY AS u(p, i)
             WHERE c.oid IS NOT NULL AND NOT has_table_privilege(c.oid, p) ORDER BY i),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       ARRAY(SELECT s.relname::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = c.oid
               AND CASE WHEN s.relkind = 'S' THEN NOT has_sequence_privilege(s.oid, 'USAGE') END),
       ARRAY(SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = c.oid)
FROM unnest(%(schemas)s::text[], %(names)s::text[]) WITH ORDINALITY AS t(schema, name, i)
LEFT JOIN pg_namespace n ON n.nspname = t.schema
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
ORDER BY t.i
"""


@dataclass(frozen=True)
class _Table:
    """One bookkeeping table as this role sees it."""

    schema: str
    name: str
    role: str
    database: str
    can_create_schema: bool  # CREATE on the database
    schema_exists: bool
    schema_owner: str | None
    schema_usage: bool
    schema_create: bool
    exists: bool
    owner: str | None
    owned: bool  # this role has its owner's privileges (may ALTER it)
    lacking: tuple[str, ...]  # of _NEEDED
    columns: frozenset[str]
    sequences: tuple[str, ...]  # its serial sequences this role may not use
    indexes: frozenset[str]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def readable(self) -> bool:
        """The role can SELECT from it (False when it does not exist)."""
        return self.exists and self.schema_usage and "SELECT" not in self.lacking


def _access(conn: psycopg.Connection, *tables: tuple[str, str]) -> list[_Table]:
    rows = conn.execute(_ACCESS_SQL, {"schemas": [t[0] for t in tables],
                                      "names": [t[1] for t in tables],
                                      "privileges": list(_NEEDED)}).fetchall()
    return [_Table(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], bool(r[7]), bool(r[8]),
                   bool(r[9]), r[10], bool(r[11]), tuple(r[12]), frozenset(r[13]), tuple(r[14]),
                   frozenset(r[15])) for r in rows]


_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _ident(name: str) -> str:
    """`name` as it must be written in SQL (double-quoted unless it is a plain identifier)."""
    return name if _PLAIN_IDENTIFIER.match(name) else '"' + name.replace('"', '""') + '"'


def _missing_privileges(tables: list[_Table],
                        columns: dict[str, tuple[tuple[str, str], ...]] | None = None
                        ) -> list[tuple[str, str]]:
    """(privilege this role lacks, the statement that grants it) for writing `tables`: read and
    insert into each, or create it (and its schema) when it is missing."""
    out: list[tuple[str, str]] = []

    def lack(what: str, fix: str) -> None:
        if (what, fix) not in out:
            out.append((what, fix))

    absent_schemas = list(dict.fromkeys(t.schema for t in tables if not t.schema_exists))
    for t in tables:
        role, db = _ident(t.role), _ident(t.database)
        if not t.schema_exists:
            if not t.can_create_schema:
                lack(f"CREATE on database {t.database} (to create schema"
                     f"{'s' if len(absent_schemas) > 1 else ''} {' and '.join(absent_schemas)})",
                     f"GRANT CREATE ON DATABASE {db} TO {role};")
            continue
        if not t.schema_usage:
            lack(f"USAGE on schema {t.schema} (owned by {t.schema_owner})",
                 f"GRANT USAGE ON SCHEMA {t.schema} TO {role};")
        if not t.exists:
            if not t.schema_create:
                lack(f"CREATE on schema {t.schema} (owned by {t.schema_owner}; to create table "
                     f"{t.qualified})", f"GRANT CREATE ON SCHEMA {t.schema} TO {role};")
            continue
        if t.lacking:
            lack(f"{', '.join(t.lacking)} on table {t.qualified} (owned by {t.owner})",
                 f"GRANT {', '.join(t.lacking)} ON TABLE {t.qualified} TO {role};")
        for seq in t.sequences:
            lack(f"USAGE on sequence {t.schema}.{seq}",
                 f"GRANT USAGE ON SEQUENCE {t.schema}.{_ident(seq)} TO {role};")
        absent = [(c, kind) for c, kind in (columns or {}).get(t.qualified, ())
                  if c not in t.columns]
        if absent and not t.owned:
            lack(f"ownership of {t.qualified} (owned by {t.owner}), to add its missing "
                 f"column(s) {', '.join(c for c, _ in absent)}",
                 " ".join(f"ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS {c} {kind};"
                          for c, kind in absent) + f" (as {t.owner})")
    return out


def _privilege_error(tables: list[_Table], missing: list[tuple[str, str]],
                     doing: str) -> ConfigError:
    role, database = tables[0].role, tables[0].database
    return ConfigError(
        f"Role {role} cannot {doing} in database {database}: it lacks "
        f"{'; '.join(what for what, _ in missing)}. Nothing was applied or created.",
        hint="Grant it as the owner or a superuser: " + " ".join(fix for _, fix in missing)
        + " Or connect as a role that has these privileges (the database owner has them).",
        role=role, database=database, missing_privileges=[what for what, _ in missing],
        grants=[fix for _, fix in missing])


_HISTORY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "supabase_migrations.schema_migrations": SUPABASE_COLUMNS}


def ensure_history_writable(conn: psycopg.Connection) -> None:
    """ConfigError (exit 2) naming each missing privilege and its GRANT when this role could
    not record a migration: read and insert into both history tables, or create them."""
    tables = _access(conn, _SUPABASE_HISTORY, _MIGRATION_LOG)
    missing = _missing_privileges(tables, _HISTORY_COLUMNS)
    if missing:
        raise _privilege_error(tables, missing, "record migrations")


def _ensure_readable(tables: list[_Table]) -> None:
    """ConfigError naming the GRANTs when an existing history table cannot be read."""
    unreadable = [t for t in tables if t.exists and not t.readable]
    if unreadable:
        raise _privilege_error(tables, _missing_privileges(unreadable), "read the migration history")


# --- what the history says about a file -------------------------------------------------------

def _latest_event_sql(where: str) -> str:
    return ("SELECT event, checksum, finished_at, ts, path FROM dbsage.migration_log "
            f"WHERE {where} ORDER BY id DESC LIMIT 1")


def find_applied(conn: psycopg.Connection, version: str) -> AppliedMigration | None:
    """The history of `version`, or None when it was never applied (or no history exists).

    ConfigError (naming the GRANT) when a history table exists that this role cannot read.
    """
    history, log = _access(conn, _SUPABASE_HISTORY, _MIGRATION_LOG)
    if not history.exists:
        return None
    _ensure_readable([history, log])
    # A table that an old CLI made may lack `statements` or `name` (the CLI adds them later).
    kinds = dict(SUPABASE_COLUMNS)
    name, statements = (c if c in history.columns else f"NULL::{kinds[c]} AS {c}"
                        for c in ("name", "statements"))
    row = conn.execute(f"SELECT version, {name}, {statements} FROM "
                       "supabase_migrations.schema_migrations WHERE version = %s",
                       (version,)).fetchone()
    if row is None:
        return None
    checksum = applied_at = ts = path = None
    if log.exists:
        latest = conn.execute(_latest_event_sql("version = %s"), (version,)).fetchone()
        if latest and latest[0] == "apply":  # else the row is not dbsage's (e.g. rolled back)
            checksum, applied_at, ts, path = latest[1:]
    return AppliedMigration(row[0], row[1], row[2], checksum, applied_at, ts, path)


def _read_text(path: str, checksum: str) -> str | None:
    """The file's text as dbsage parsed it (CRLF kept), None when the file at `path` is gone or
    is no longer the one with `checksum`."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(raw).hexdigest() != checksum:
        return None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None


def _first_difference(recorded: list[str], text: str) -> int | None:
    mine = split_like_cli(text)
    for i, (a, b) in enumerate(zip(recorded, mine, strict=False), 1):
        if a != b:
            return i
    return min(len(recorded), len(mine)) + 1 if len(recorded) != len(mine) else None


def judge(applied: AppliedMigration | None, version: str, path: str, checksum: str,
          text: str | None) -> HistoryVerdict:
    """Hold a file (its `checksum` and `text`, None when unreadable) against its history row."""
    if applied is None:
        return HistoryVerdict(version, path, "not_applied", None, None)
    recorded = applied.statements
    same_statements = text is not None and matches_cli_history(text, recorded)
    if applied.checksum is not None:  # dbsage applied it
        if applied.checksum == checksum:
            return HistoryVerdict(version, path, "applied", BY_CHECKSUM, applied)
        if same_statements and recorded is not None:  # e.g. rewritten by `migration repair`
            return HistoryVerdict(version, path, "applied", BY_ROW_STATEMENTS, applied)
        compared = BY_CHECKSUM
    else:  # the Supabase CLI (or another tool) wrote the row
        if same_statements:
            return HistoryVerdict(version, path, "applied", BY_CLI_STATEMENTS, applied)
        if recorded is None:
            if applied.name and applied.name != _file_name(path):
                return HistoryVerdict(version, path, "version_used", None, applied)
            return HistoryVerdict(version, path, "unverifiable", None, applied)
        compared = BY_CLI_STATEMENTS
    if applied.name and applied.name != _file_name(path):
        return HistoryVerdict(version, path, "version_used", compared, applied)
    diff = _first_difference(list(recorded), text) if (
        recorded is not None and text is not None and compared == BY_CLI_STATEMENTS) else None
    return HistoryVerdict(version, path, "drift", compared, applied, diff)


def judge_file(conn: psycopg.Connection, version: str, path: str,
               checksum: str) -> HistoryVerdict:
    """What the history says about the migration file at `path` (sha256 `checksum`)."""
    applied = find_applied(conn, version)
    text = _read_text(path, checksum) if applied is not None else None
    return judge(applied, version, path, checksum, text)


def ensure_not_applied(conn: psycopg.Connection, version: str, checksum: str,
                       statements: list[str], path: str) -> None:
    """Refuse a version that is applied already (AlreadyAppliedError), a file that changed
    since (DriftError) or another file that uses an applied version (MigrationFileError); then
    make sure this role may record the migration (ConfigError naming the GRANT).

    `statements` (dbsage's own split) is not compared: a row is judged on what was recorded,
    the file's checksum for dbsage's rows and the CLI's split of its text for the CLI's.
    """
    del statements
    refusal = judge_file(conn, version, path, checksum).refusal()
    if refusal is not None:
        raise refusal
    ensure_history_writable(conn)
    text = _read_text(path, checksum)
    if text is not None:  # split now, so that record_applied does not while holding locks
        _cli_split(text)


def latest_applied_version(conn: psycopg.Connection) -> str | None:
    """The highest applied version, for the migration-order check (None when there is no
    history this role can read: `ensure_not_applied` names the missing GRANT)."""
    (history,) = _access(conn, _SUPABASE_HISTORY)
    if not history.readable:
        return None
    row = conn.execute("SELECT max(version) FROM supabase_migrations.schema_migrations").fetchone()
    return row[0] if row else None


def ensure_history_tables(conn: psycopg.Connection) -> None:
    """Create or complete both history tables, only what is missing, as the Supabase CLI does.

    `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` takes ACCESS EXCLUSIVE even when the column
    exists, and `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema
    exists: each piece runs only when what it makes is absent, so a migration's transaction
    never blocks the readers of the Supabase history (Studio, `supabase migration list`), and a
    role that may only write the tables can. A missing privilege is a ConfigError naming it.
    """
    tables = _access(conn, _SUPABASE_HISTORY, _MIGRATION_LOG)
    missing = _missing_privileges(tables, _HISTORY_COLUMNS)
    if missing:
        raise _privilege_error(tables, missing, "record migrations")
    history, log = tables
    ddl: list[str] = []
    if not history.schema_exists:
        ddl.append(CREATE_SUPABASE_SCHEMA)
    if not history.exists:
        ddl.append(CREATE_SUPABASE_TABLE)
    ddl += [f"ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS "
            f"{column} {kind}" for column, kind in SUPABASE_COLUMNS if column not in history.columns]
    if not log.schema_exists:
        ddl.append(CREATE_DBSAGE_SCHEMA)
    if not log.exists:
        ddl.append(CREATE_MIGRATION_LOG)
    if "migration_log_version_idx" not in log.indexes and (log.owned or not log.exists):
        ddl.append(CREATE_MIGRATION_LOG_INDEX)
    for statement in ddl:
        conn.execute(statement)


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


@dataclass(frozen=True)
class CliSplit:
    """The Supabase CLI's split of a file's text (what `cli_statements` records), made ahead
    of the migration's transaction: `up` splits every pending file before the lock."""

    checksum: str  # sha256 of the file's bytes the text was decoded from
    statements: tuple[str, ...] | None


def cli_split_of(text: str, checksum: str) -> CliSplit:
    """The CLI's split of `text` (a file's decoded text, sha256 `checksum`), for
    `cli_statements(..., split=)`; not kept in the small cache single applies use."""
    statements = statements_for_history(text)
    return CliSplit(checksum, tuple(statements) if statements is not None else None)


def cli_statements(rec: HistoryRecord, split: CliSplit | None = None) -> list[str] | None:
    """What `supabase db push` would store in `statements` for the file `rec` applied: the
    CLI's split of its text (comments, BEGIN/COMMIT and a trailing comment kept; CRLF kept).

    The text is read again from `rec.path` and used only when it still has `rec.checksum`;
    otherwise (the file is gone or was edited meanwhile) `rec.statements`, what ran, is kept.
    `split`, made earlier from the same bytes (same checksum), saves splitting it again here.
    """
    text = _read_text(rec.path, rec.checksum)
    if text is None:
        return rec.statements
    found = (split.statements if split is not None and split.checksum == rec.checksum
             else _cli_split(text))
    return list(found) if found is not None else None


@functools.lru_cache(maxsize=4)
def _cli_split(text: str) -> tuple[str, ...] | None:
    """statements_for_history, kept: splitting 10,000 statements takes ~0.4 s, which
    ensure_not_applied spends before the migration's transaction instead of inside it."""
    statements = statements_for_history(text)
    return tuple(statements) if statements is not None else None


# --- the bookkeeping is not a migration's to write -------------------------------------------
#
# tools/analyze.py refuses a file that writes to the history in its own statements. What it
# cannot see (a function the migration calls, SQL a DO block builds with EXECUTE) is caught
# here, inside the migration's transaction, just before dbsage writes its own rows, in ONE
# query and without a trigger on anyone's table: every write, TRUNCATE, ALTER, COPY FROM,
# CREATE INDEX/TRIGGER on a table takes a relation lock stronger than ROW SHARE that is held
# to the end of the transaction (also when taken in a function or a released savepoint), and
# pg_stat_xact_user_tables counts the rows this transaction inserted, updated and deleted.
# SHARE UPDATE EXCLUSIVE is let through (a database-wide ANALYZE takes it on every table).
# A DROP of the CLI's table shows as its schema without it while this transaction holds the
# lock of a relation that no longer exists.

# pg_lock_status() and the pg_stat_get_xact_* functions, not the pg_locks and
# pg_stat_xact_user_tables views: a database may revoke the views from PUBLIC. The DROP
# branch reads the locks again only when the CLI's table is missing (the CASE: as a plain
# AND the EXISTS became an InitPlan run first, every time: ~0.2 ms of each file's record).
# The locks are first cut down to the bookkeeping relations' oids (one array, computed once
# per query): joined to pg_class lock by lock, an atomic batch paid an index lookup for
# every lock its earlier files took, twice a file (1,000 files: 23 ms a query at the end,
# ~28 s in all; now ~7 ms, most of it pg_lock_status() itself).
_TOUCHED_SQL = """
SELECT n.nspname::text, c.relname::text, l.mode, c.relkind::text,
       pg_stat_get_xact_tuples_inserted(c.oid),
       pg_stat_get_xact_tuples_updated(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid)
FROM pg_lock_status() l JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.relation = ANY (ARRAY(
        SELECT b.oid FROM pg_class b JOIN pg_namespace bn ON bn.oid = b.relnamespace
        WHERE bn.nspname = 'dbsage' OR (bn.nspname = 'supabase_migrations'
                                        AND b.relname IN ('schema_migrations', 'seed_files'))))
  AND l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'ShareUpdateExclusiveLock')
UNION ALL
SELECT 'supabase_migrations', 'schema_migrations', 'dropped', 'r', 0, 0
WHERE CASE WHEN to_regnamespace('supabase_migrations') IS NOT NULL
             AND to_regclass('supabase_migrations.schema_migrations') IS NULL
  THEN EXISTS (SELECT 1 FROM pg_lock_status() l WHERE l.pid = pg_backend_pid()
               AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = l.relation))
  ELSE false END
"""
_LOCK_MEANS = {"RowExclusiveLock": "INSERT, UPDATE, DELETE, MERGE or COPY FROM",
               "AccessExclusiveLock": "TRUNCATE, ALTER TABLE, DROP or a rewrite",
               "ShareLock": "CREATE INDEX", "ShareRowExclusiveLock": "CREATE TRIGGER",
               "ExclusiveLock": "REFRESH MATERIALIZED VIEW CONCURRENTLY or LOCK TABLE",
               "dropped": "DROP"}


@dataclass(frozen=True)
class BookkeepingMark:
    """What this transaction has done to the bookkeeping so far, as _TOUCHED_SQL sees it:
    taken after dbsage recorded a file of an atomic batch, so that its own writes (and the
    tables it created) are not taken for the next file's."""

    rows: frozenset[tuple[Any, ...]]


def bookkeeping_mark(conn: psycopg.Connection) -> BookkeepingMark:
    """The bookkeeping as this transaction left it until now (one query)."""
    return BookkeepingMark(frozenset(tuple(r) for r in conn.execute(_TOUCHED_SQL).fetchall()))


def ensure_bookkeeping_untouched(conn: psycopg.Connection, path: str,
                                 since: BookkeepingMark | None = None) -> None:
    """Inside the migration's transaction, before dbsage records it: MigrationFailedError
    (the transaction then rolls back) when the migration wrote to or changed dbsage's or the
    Supabase CLI's history in a way analysis could not see (one query). `since`: what the
    transaction had done to it before this migration's statements (dbsage's own rows of the
    earlier files of an atomic batch); None: nothing."""
    seen = since.rows if since is not None else frozenset()
    rows = conn.execute(_TOUCHED_SQL).fetchall()
    wrong: dict[str, str] = {}
    for row in rows:
        if tuple(row) not in seen:
            schema, name, mode = row[0], row[1], str(row[2])
            wrong.setdefault(f"{schema}.{name}", _LOCK_MEANS.get(mode, mode))
    if not wrong:
        return
    what = "; ".join(f"{t} ({how})" for t, how in wrong.items())
    message = (f"{path}: the migration changed the migration history: {what}, in a statement "
               "dbsage could not read it from (a function it calls, or SQL built at run time "
               "with EXECUTE). Everything was rolled back; nothing was applied.")
    failure = StatementFailure(line=0, sqlstate=None, message=message)
    raise MigrationFailedError(message, failure=failure, path=path, hint=(
        "A migration must not write dbsage's log (schema dbsage) or the Supabase CLI's history "
        "(supabase_migrations.schema_migrations, seed_files): remove that write from the "
        "function or DO block. To mark versions applied or reverted use `dbsage repair`; to "
        "undo a run, `dbsage rollback`."))


def record_applied(conn: psycopg.Connection, rec: HistoryRecord,
                   split: CliSplit | None = None) -> None:
    """Insert both history rows, `statements` exactly as the Supabase CLI would write them
    (`split`: the CLI's split made earlier, see cli_statements); call inside the migration's
    transaction. Refuses (and so rolls back) a migration that wrote to the history itself
    (`ensure_bookkeeping_untouched`)."""
    ensure_bookkeeping_untouched(conn, rec.path)
    statements = cli_statements(rec, split)
    ensure_history_tables(conn)
    # %b: text[] in binary, a quarter of the text format's cost at 10,000 statements
    conn.execute("INSERT INTO supabase_migrations.schema_migrations (version, name, statements) "
                 "VALUES (%s, %s, %b)", (rec.version, rec.name, statements))
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
        history, log = _access(conn, _SUPABASE_HISTORY, _MIGRATION_LOG)
        if not history.exists:
            return {}
        _ensure_readable([history, log])
        if log.exists:
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

CREATE_DRY_RUN_LOG = """
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
)"""
CREATE_DRY_RUN_LOG_INDEX = ("CREATE INDEX IF NOT EXISTS dry_run_log_checksum_idx ON "
                            "dbsage.dry_run_log (checksum, id)")


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
    (log,) = _access(conn, _DRY_RUN_LOG)
    if not log.readable:  # none yet, or this role may not read it: no record of a dry run
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
        _ensure_dry_run_log(conn)
        row = conn.execute(
            "INSERT INTO dbsage.dry_run_log (version, path, checksum, passed, statements, "
            "failure, duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (version, path, checksum, passed, statements, failure, duration_ms)).fetchone()
    assert row is not None
    return int(row[0])


def _ensure_dry_run_log(conn: psycopg.Connection) -> None:
    """Create what is missing of dbsage.dry_run_log (nothing when it exists); a ConfigError
    naming the GRANT when this role can neither write it nor create it."""
    (log,) = _access(conn, _DRY_RUN_LOG)
    missing = _missing_privileges([log])
    if missing:
        raise _privilege_error([log], missing, "record the dry run")
    if not log.schema_exists:
        conn.execute(CREATE_DBSAGE_SCHEMA)
    if not log.exists:
        conn.execute(CREATE_DRY_RUN_LOG)
    if "dry_run_log_checksum_idx" not in log.indexes and (log.owned or not log.exists):
        conn.execute(CREATE_DRY_RUN_LOG_INDEX)


# --- a project's whole history: status, batches, repair (issue 12) ------------------------------

@dataclass(frozen=True)
class HistoryEntry:
    """One applied version as `dbsage status` shows it: the Supabase history row and, when
    dbsage applied it, its latest apply in dbsage.migration_log."""

    version: str
    name: str | None
    statements: int | None  # how many the row records (None: the CLI stored none)
    ts: str | None = None  # dbsage's run TS
    applied_at: datetime | None = None
    applied_by: str | None = None
    mode: str | None = None
    duration_ms: float | None = None
    checksum: str | None = None
    path: str | None = None
    by_dbsage: bool = False  # False: the Supabase CLI (or another tool) wrote the row


_ENTRIES_SQL = """
SELECT h.version, h.name, cardinality(h.statements), l.ts, l.finished_at, l.applied_by, l.mode,
       l.duration_ms, l.checksum, l.path
FROM supabase_migrations.schema_migrations h
LEFT JOIN LATERAL (SELECT m.event, m.ts, m.finished_at, m.applied_by, m.mode, m.duration_ms,
                          m.checksum, m.path
                   FROM dbsage.migration_log m WHERE m.version = h.version
                   ORDER BY m.id DESC LIMIT 1) l ON l.event = 'apply'
ORDER BY h.version
"""
_ENTRIES_NO_LOG_SQL = ("SELECT version, name, cardinality(statements), NULL, NULL, NULL, NULL, "
                       "NULL, NULL, NULL FROM supabase_migrations.schema_migrations ORDER BY "
                       "version")


def history_entries(conn: psycopg.Connection) -> list[HistoryEntry]:
    """Every applied version, oldest first (empty when there is no history yet); ConfigError
    naming the GRANT when a history table exists that this role cannot read. Read in a
    transaction that is rolled back."""
    with conn.transaction(force_rollback=True):
        history, log = _access(conn, _SUPABASE_HISTORY, _MIGRATION_LOG)
        if not history.exists:
            return []
        _ensure_readable([history, log])
        if "statements" not in history.columns or "name" not in history.columns:
            rows = conn.execute("SELECT version, NULL::text, NULL::int, NULL, NULL, NULL, NULL, "
                                "NULL, NULL, NULL FROM supabase_migrations.schema_migrations "
                                "ORDER BY version").fetchall()
        else:
            rows = conn.execute(_ENTRIES_SQL if log.exists else _ENTRIES_NO_LOG_SQL).fetchall()
    return [HistoryEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                         by_dbsage=r[3] is not None) for r in rows]


def batch_rows(conn: psycopg.Connection, ts: str, versions: list[str]) -> HistoryRows:
    """How many of `versions` the Supabase history holds, and how many 'apply' rows of run
    `ts` dbsage's log holds for them."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version = "
        "ANY(%(v)s)), (SELECT count(DISTINCT version) FROM dbsage.migration_log WHERE ts = %(ts)s"
        " AND event = 'apply' AND version = ANY(%(v)s))", {"v": versions, "ts": ts}).fetchone()
    assert row is not None
    return HistoryRows(int(row[0]), int(row[1]))


def recorded_in_new_session_many(url: str, versions: list[str]) -> int:
    """How many of `versions` a new session sees in the Supabase history (only what committed).

    Opens (and closes) a session of its own on `url`.
    """
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True) as other:
        row = other.execute("SELECT count(*) FROM supabase_migrations.schema_migrations "
                            "WHERE version = ANY(%s)", (versions,)).fetchone()
    return int(row[0]) if row else 0


def apply_run_versions(conn: psycopg.Connection, ts: str) -> list[str]:
    """The versions apply run `ts` recorded, in the order it applied them (a batch has more
    than one)."""
    if not history_exists(conn):
        return []
    rows = conn.execute("SELECT version FROM dbsage.migration_log WHERE ts = %s AND event = "
                        "'apply' GROUP BY version ORDER BY min(id)", (ts,)).fetchall()
    return [r[0] for r in rows]


def record_batch_file(conn: psycopg.Connection, rec: HistoryRecord, *,
                      check_tables: bool, since: BookkeepingMark | None = None,
                      mark: bool = False, split: CliSplit | None = None
                      ) -> BookkeepingMark | None:
    """`record_applied` for one file of a batch: the bookkeeping tables are checked (and
    completed) for the batch's first file only (`check_tables`), since every later file runs
    on the same session, after them, under the same lock. In an atomic batch, `since` is the
    mark returned for the file before (`mark`: return one after writing this file's rows).
    `split`: the CLI's split of the file, made before the batch (cli_split_of)."""
    if check_tables:
        record_applied(conn, rec, split)
        return bookkeeping_mark(conn) if mark else None
    ensure_bookkeeping_untouched(conn, rec.path, since)
    # Both rows in one statement (one round trip): the Supabase row in a data-modifying CTE.
    params: dict[str, Any] = {**rec.__dict__, "event": "apply", "status": "applied",
                              "statement_count": len(rec.statements),
                              "cli_statements": cli_statements(rec, split)}
    conn.execute("WITH sm AS (INSERT INTO supabase_migrations.schema_migrations (version, name, "
                 "statements) VALUES (%(version)s, %(name)s, %(cli_statements)b)) " + _LOG_SQL,
                 params)
    return bookkeeping_mark(conn) if mark else None


UPSERT_VERSION = ("INSERT INTO supabase_migrations.schema_migrations (version, name, statements) "
                  "VALUES (%s, %s, %s) ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, "
                  "statements = EXCLUDED.statements")


def mark_applied(conn: psycopg.Connection, rows: list[tuple[str, str, list[str]]]) -> None:
    """`supabase migration repair --status applied`: upsert (version, name, statements) rows,
    statements split as the CLI splits the file; call inside a transaction. The history tables
    are made first when missing (as the CLI's CreateMigrationTable does)."""
    ensure_history_tables(conn)
    for version, name, statements in rows:
        conn.execute(UPSERT_VERSION, (version, name, statements))


def mark_reverted(conn: psycopg.Connection, versions: list[str]) -> int:
    """`supabase migration repair --status reverted`: delete the versions' rows; how many
    there were. Call inside a transaction."""
    ensure_history_tables(conn)
    cur = conn.execute("DELETE FROM supabase_migrations.schema_migrations WHERE version = "
                       "ANY(%s)", (versions,))
    return max(cur.rowcount, 0)


def log_event(conn: psycopg.Connection, rec: HistoryRecord, status: str) -> None:
    """dbsage's log row alone, an 'apply' whose `status` says how the version got there
    ("baseline": recorded as already present, nothing run); call inside a transaction."""
    ensure_history_tables(conn)
    _log(conn, rec, "apply", status)


# --- rollback plans: what undoing an apply run needs, kept with the run (tools/rollback.py) ----
#
# Written in the migration's own transaction, so a rollback works from any checkout that can
# reach the database. `plan` is the JSON of tools/rollback.py's StoredPlan; `rollback_rows`
# holds the rows it restores (one jsonb per row, `set_no` naming its data set).

CREATE_ROLLBACK_PLAN = """
CREATE TABLE IF NOT EXISTS dbsage.rollback_plan (
    ts text NOT NULL,
    version text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    format integer NOT NULL,
    plan jsonb NOT NULL,
    rolled_back_by text,
    accepted_differences jsonb,
    PRIMARY KEY (ts, version)
)"""
CREATE_ROLLBACK_ROWS = """
CREATE TABLE IF NOT EXISTS dbsage.rollback_rows (
    ts text NOT NULL,
    version text NOT NULL,
    set_no integer NOT NULL,
    row jsonb NOT NULL
)"""
CREATE_ROLLBACK_ROWS_INDEX = ("CREATE INDEX IF NOT EXISTS rollback_rows_ts_idx ON "
                              "dbsage.rollback_rows (ts, version, set_no)")

_ROLLBACK_STORE_SQL = """
SELECT n.oid IS NOT NULL, coalesce(has_schema_privilege(n.oid, 'USAGE'), false),
       coalesce(has_schema_privilege(n.oid, 'CREATE'), false),
       has_database_privilege(current_database(), 'CREATE'),
       to_regclass('dbsage.rollback_plan') IS NOT NULL,
       to_regclass('dbsage.rollback_rows') IS NOT NULL,
       coalesce(has_table_privilege(to_regclass('dbsage.rollback_plan'), 'SELECT, INSERT, UPDATE'),
                false)
         AND coalesce(has_table_privilege(to_regclass('dbsage.rollback_rows'), 'SELECT, INSERT'),
                      false),
       current_user::text
FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = 'dbsage'
"""


def rollback_store_problem(conn: psycopg.Connection) -> str | None:
    """Why this role could not keep a rollback plan in dbsage's schema (None: it can)."""
    row = conn.execute(_ROLLBACK_STORE_SQL).fetchone()
    assert row is not None
    schema, usage, create, create_db, plan_t, rows_t, writable, role = row
    if not schema:
        return None if create_db else (f"role {role} lacks CREATE on the database (to create "
                                       "schema dbsage)")
    if not usage:
        return f"role {role} lacks USAGE on schema dbsage"
    if not (plan_t and rows_t):
        return None if create else f"role {role} lacks CREATE on schema dbsage"
    return None if writable else (f"role {role} lacks SELECT, INSERT, UPDATE on "
                                  "dbsage.rollback_plan / dbsage.rollback_rows")


def ensure_rollback_tables(conn: psycopg.Connection) -> None:
    """Create what is missing of dbsage.rollback_plan and dbsage.rollback_rows (nothing when
    they exist: no lock is taken on them then)."""
    row = conn.execute("SELECT to_regnamespace('dbsage') IS NOT NULL, "
                       "to_regclass('dbsage.rollback_plan') IS NOT NULL, "
                       "to_regclass('dbsage.rollback_rows') IS NOT NULL").fetchone()
    assert row is not None
    if not row[0]:
        conn.execute("CREATE SCHEMA IF NOT EXISTS dbsage")
    if not row[1]:
        conn.execute(CREATE_ROLLBACK_PLAN)
    if not row[2]:
        conn.execute(CREATE_ROLLBACK_ROWS)
        conn.execute(CREATE_ROLLBACK_ROWS_INDEX)


def record_rollback_plan(conn: psycopg.Connection, ts: str, version: str, plan: Any,
                         rows_from: str | None = None, *, plan_format: int = 1) -> None:
    """Keep the rollback plan of apply run `ts` (JSON-able `plan`), and move the rows of the
    temporary table `rows_from` (set_no, row) into dbsage.rollback_rows; call inside the
    migration's transaction."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    ensure_rollback_tables(conn)
    conn.execute("INSERT INTO dbsage.rollback_plan (ts, version, format, plan) "
                 "VALUES (%s, %s, %s, %s)", (ts, version, plan_format, Jsonb(plan)))
    if rows_from:
        conn.execute(sql.SQL("INSERT INTO dbsage.rollback_rows (ts, version, set_no, row) "
                             "SELECT %s, %s, set_no, row FROM {} ORDER BY set_no").format(
                                 sql.Identifier(rows_from)), (ts, version))


def load_rollback_plan(conn: psycopg.Connection, ts: str, version: str) -> Any | None:
    """The plan kept for `version` of apply run `ts` (None: none kept, e.g. applied before
    plans were)."""
    row = conn.execute("SELECT to_regclass('dbsage.rollback_plan') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT plan FROM dbsage.rollback_plan WHERE ts = %s AND version = %s",
                         (ts, version)).fetchone()
    return found[0] if found else None


def saved_rows_select(ts: str, version: str, set_no: int, record_type: Any, columns: Any) -> Any:
    """A query (psycopg Composed) of data set `set_no` of (`ts`, `version`) as rows of
    `record_type` (a table's row type), with `columns` (Composable) selected."""
    from psycopg import sql

    return sql.SQL("SELECT {cols} FROM dbsage.rollback_rows r, "
                   "LATERAL jsonb_populate_record(NULL::{rt}, r.row) x "
                   "WHERE r.ts = {ts} AND r.version = {v} AND r.set_no = {n}").format(
        cols=columns, rt=record_type, ts=sql.Literal(ts), v=sql.Literal(version),
        n=sql.Literal(set_no))


def export_saved_rows(conn: psycopg.Connection, ts: str, version: str) -> list[tuple[int, Any]]:
    """Every saved row of (`ts`, `version`) as (set_no, row), in order (the copy on disk)."""
    row = conn.execute("SELECT to_regclass('dbsage.rollback_rows') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return []
    return [(int(r[0]), r[1]) for r in conn.execute(
        "SELECT set_no, row FROM dbsage.rollback_rows WHERE ts = %s AND version = %s "
        "ORDER BY set_no, ctid", (ts, version)).fetchall()]


def mark_rolled_back(conn: psycopg.Connection, ts: str, version: str, rollback_ts: str,
                     accepted_differences: list[str] | None) -> None:
    """Note on the plan of (`ts`, `version`) that rollback run `rollback_ts` undid it (and which
    differences were accepted); call inside the rollback's transaction."""
    from psycopg.types.json import Jsonb

    row = conn.execute("SELECT to_regclass('dbsage.rollback_plan') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return
    conn.execute("UPDATE dbsage.rollback_plan SET rolled_back_by = %s, accepted_differences = %s "
                 "WHERE ts = %s AND version = %s",
                 (rollback_ts, Jsonb(accepted_differences) if accepted_differences else None,
                  ts, version))


@dataclass(frozen=True)
class RunRecord:
    """One apply run of dbsage's log, and whether its version is still as that run left it."""

    id: int
    ts: str
    version: str
    name: str
    path: str
    active: bool  # its version is applied and no later run touched it


def dbsage_runs(conn: psycopg.Connection) -> list[RunRecord]:
    """Every apply run dbsage logged, oldest first (empty when dbsage never applied here)."""
    row = conn.execute(
        "SELECT to_regclass('dbsage.migration_log') IS NOT NULL AND "
        "to_regclass('supabase_migrations.schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return []
    rows = conn.execute("""
        SELECT l.id, l.ts, l.version, l.name, l.path,
               s.version IS NOT NULL AND NOT EXISTS (
                   SELECT FROM dbsage.migration_log o WHERE o.version = l.version AND o.id > l.id)
        FROM dbsage.migration_log l
        LEFT JOIN supabase_migrations.schema_migrations s ON s.version = l.version
        WHERE l.event = 'apply' ORDER BY l.id""").fetchall()
    return [RunRecord(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bool(r[5]))
            for r in rows]


@dataclass(frozen=True)
class RunOutcome:
    """What run `ts` committed, from dbsage's log: the versions it applied (and of those, the
    ones with a rollback plan not used yet) and the versions it rolled back."""

    ts: str
    applied: tuple[str, ...] = ()
    rollback_available: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()


def run_outcomes(conn: psycopg.Connection, ts: Sequence[str]) -> dict[str, RunOutcome]:
    """The outcome of every run in `ts` (a run that committed nothing has empty tuples)."""
    out = {t: RunOutcome(t) for t in ts}
    if not ts or not history_exists(conn):
        return out
    plans = conn.execute("SELECT to_regclass('dbsage.rollback_plan') IS NOT NULL").fetchone()
    rows = conn.execute(
        "SELECT l.ts, l.event, l.version, " + (
            "EXISTS (SELECT FROM dbsage.rollback_plan p WHERE p.ts = l.ts AND "
            "p.version = l.version AND p.rolled_back_by IS NULL)" if plans and plans[0]
            else "false") +
        " FROM dbsage.migration_log l WHERE l.ts = ANY(%s) ORDER BY l.id", (list(ts),)).fetchall()
    for t, event, version, plan in rows:
        o = out[t]
        if event == "apply":
            o = RunOutcome(t, (*o.applied, version),
                           (*o.rollback_available, version) if plan else o.rollback_available,
                           o.rolled_back)
        elif event == "rollback":
            o = RunOutcome(t, o.applied, o.rollback_available, (*o.rolled_back, version))
        out[t] = o
    return out


def outcomes_if_idle(conn: psycopg.Connection, ts: Sequence[str]) -> dict[str, RunOutcome]:
    """run_outcomes, or {} when the session is inside a transaction (a query must not join
    it) or the log cannot be read: the caller then just knows less."""
    import psycopg
    from psycopg import pq

    if not ts or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return {}
    try:
        return run_outcomes(conn, ts)
    except psycopg.Error:
        return {}
