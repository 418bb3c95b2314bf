"""Catalog questions about the target: does a relation exist, is RLS on, are rows orphaned under
a foreign key, and a fingerprint of the user schemas. Read-only; nothing here prints."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

#: The roles PostgREST switches to for API requests (Supabase's anon and authenticated keys).
API_ROLES: tuple[str, ...] = ("anon", "authenticated")


def api_roles(conn: psycopg.Connection) -> tuple[str, ...]:
    """The API roles (`API_ROLES`) this database has: none on plain PostgreSQL, where no Data
    API serves the exposed schemas (the lints then treat everything in them as exposed)."""
    rows = conn.execute("SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s::text[]) "
                        "ORDER BY 1", (list(API_ROLES),)).fetchall()
    return tuple(r[0] for r in rows)


# --- the one definition of "user schemas" -----------------------------------------------------
#
# A user schema is any schema that is neither PostgreSQL's own nor dbsage's or the Supabase CLI's
# bookkeeping. PostgreSQL owns information_schema and every schema named pg_* (pg_catalog,
# pg_toast, each session's pg_temp_N and pg_toast_temp_N; no one else may create a pg_* schema).
# Supabase's platform schemas are user schemas in that sense (a migration may well add a trigger
# on auth.users, and a dry-run must show its lock), but their health is not the user's to fix:
# the smoke checks leave them out (`platform=False`).

#: PostgreSQL's schemas by name (the rule covers every other pg_* schema too).
SYSTEM_SCHEMAS: tuple[str, ...] = ("pg_catalog", "information_schema", "pg_toast")
#: dbsage's log and the Supabase CLI's history: kept out of snapshots, diffs and fingerprints.
BOOKKEEPING_SCHEMAS: tuple[str, ...] = ("dbsage", "supabase_migrations")


def names_bookkeeping(sql: str) -> bool:
    """Whether `sql` spells a bookkeeping schema's name anywhere (any case). When it does not,
    no statement in it can write to the history, even through `SET search_path`
    (tools/analyze.bookkeeping_writes's first test, and why a file that passes it needs no
    further analysis before it runs)."""
    low = sql.lower()
    return any(s in low for s in BOOKKEEPING_SCHEMAS)

#: Schemas Supabase creates and manages for its services.
PLATFORM_SCHEMAS: tuple[str, ...] = (
    "auth", "storage", "realtime", "extensions", "graphql", "graphql_public", "vault",
    "pgsodium", "pgsodium_masks", "supabase_functions", "net", "cron", "pgbouncer",
    "_realtime", "_analytics",
)
#: What pg_dump leaves out of a snapshot: the Supabase CLI's `InternalSchemas` (the schemas
#: `supabase db dump` excludes: apps/cli-go/pkg/migration/dump.go; pg_dump patterns, `*` a
#: wildcard), and dbsage's own. They are the platform's and the extensions' (a role such as
#: Supabase's postgres may not even read all of them, e.g. vault.secrets), not the user's.
SNAPSHOT_EXCLUDED_SCHEMAS: tuple[str, ...] = (
    "information_schema", "pg_*",
    "_analytics", "_realtime", "_supavisor", "auth", "etl", "extensions", "pgbouncer",
    "realtime", "storage", "supabase_functions", "supabase_migrations",
    "cron", "dbdev", "graphql", "graphql_public", "net", "pgmq", "pgsodium", "pgsodium_masks",
    "pgtle", "repack", "tiger", "tiger_data", "timescaledb_*", "_timescaledb_*", "topology",
    "vault",
    "dbsage",
)


def in_snapshot_excluded_schema(name: str) -> bool:
    """`name` is a schema SNAPSHOT_EXCLUDED_SCHEMAS leaves out of snapshots."""
    return bool(_SNAPSHOT_EXCLUDED_RE.match(name))


def snapshot_excluded_regex() -> str:
    """SNAPSHOT_EXCLUDED_SCHEMAS as one anchored regular expression (Python's and
    PostgreSQL's: the names hold only letters, digits, `_` and the `*` wildcard)."""
    return "^(" + "|".join(p.replace("*", ".*") for p in SNAPSHOT_EXCLUDED_SCHEMAS) + ")$"


_SNAPSHOT_EXCLUDED_RE = re.compile(snapshot_excluded_regex())

#: Every schema excluded by name from the user schemas (besides the pg_* rule).
EXCLUDED_SCHEMAS: tuple[str, ...] = SYSTEM_SCHEMAS + BOOKKEEPING_SCHEMAS


def excluded_schemas(*, platform: bool = True) -> tuple[str, ...]:
    """The schemas excluded by name; without `platform`, Supabase's platform schemas too."""
    return EXCLUDED_SCHEMAS if platform else EXCLUDED_SCHEMAS + PLATFORM_SCHEMAS


def is_user_schema(name: str, *, platform: bool = True) -> bool:
    """`name` is a user schema (see above); the same rule as `user_schemas_sql`."""
    return not name.startswith("pg_") and name not in excluded_schemas(platform=platform)


def user_schemas_sql(column: str = "n.nspname", *, platform: bool = True) -> str:
    """A SQL condition: the schema name in `column` is a user schema (see above).

    It holds no placeholder and no `%`, so it composes into queries with or without parameters.
    """
    names = ", ".join(f"'{s}'" for s in excluded_schemas(platform=platform))
    return f"{column} !~ '^pg_' AND {column} NOT IN ({names})"


USER_SCHEMA_FILTER = user_schemas_sql()


@dataclass(frozen=True)
class OrphanedRows:
    """Rows of `child` whose foreign key `constraint` points at no row of `parent`."""

    constraint: str
    child: str
    parent: str
    rows: int
    validated: bool = True  # False: a NOT VALID key, whose existing rows are not checked yet


@dataclass(frozen=True)
class ForeignKeyOrphans:
    """The foreign keys on or to some tables, and those with orphaned rows."""

    checked: int  # foreign keys looked at
    orphans: tuple[OrphanedRows, ...]


def answers(conn: psycopg.Connection) -> bool:
    """The server answers `SELECT 1` on this session."""
    row = conn.execute("SELECT 1").fetchone()
    return row == (1,)


def relation_exists(conn: psycopg.Connection, name: str) -> bool:
    """`name` (as `to_regclass` reads it) names an existing relation."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def is_table(conn: psycopg.Connection, name: str) -> bool:
    """`name` is an ordinary or partitioned table (not an index, view, sequence, ...)."""
    row = conn.execute("SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass(%s)",
                       (name,)).fetchone()
    return bool(row and row[0])


def non_tables(conn: psycopg.Connection, names: Sequence[str]) -> list[str]:
    """Those of `names` that exist and are not ordinary or partitioned tables (views,
    materialized views, sequences, foreign tables, ...): their lock needs are not a table's
    (ALTER ... SET on a view takes ACCESS EXCLUSIVE), so analysis's table rules may not
    apply to them."""
    import psycopg

    if not names:
        return []
    try:
        rows = conn.execute(
            "SELECT t FROM unnest(%s::text[]) AS t JOIN pg_class c ON c.oid = to_regclass(t) "
            "WHERE c.relkind NOT IN ('r', 'p')", (list(names),)).fetchall()
    except psycopg.Error:  # a name to_regclass cannot read: say all, the careful answer
        return list(names)
    return [r[0] for r in rows]


def rls_enabled(conn: psycopg.Connection, table: str) -> bool:
    """Row level security is enabled on `table`."""
    row = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)",
                       (table,)).fetchone()
    return bool(row and row[0])


def foreign_key_orphans(conn: psycopg.Connection, tables: Sequence[str]) -> ForeignKeyOrphans:
    """Count the orphaned rows under every foreign key on or to the existing `tables`."""
    from psycopg import sql

    fks = conn.execute(
        "SELECT co.conname, co.conrelid::regclass::text, co.confrelid::regclass::text, "
        "array(SELECT attname FROM unnest(co.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "ON a.attrelid = co.conrelid AND a.attnum = k.n ORDER BY k.o), "
        "array(SELECT attname FROM unnest(co.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "ON a.attrelid = co.confrelid AND a.attnum = k.n ORDER BY k.o), co.convalidated "
        "FROM pg_constraint co WHERE co.contype = 'f' AND (co.conrelid = ANY(%(t)s::regclass[]) "
        "OR co.confrelid = ANY(%(t)s::regclass[]))",
        {"t": [t for t in tables if relation_exists(conn, t)]}).fetchall()
    orphans = []
    for name, child, parent, ccols, pcols, validated in fks:
        query = sql.SQL("SELECT count(*) FROM {child} c WHERE {notnull} AND NOT EXISTS "
                        "(SELECT 1 FROM {parent} p WHERE {match})").format(
            child=sql.SQL(child), parent=sql.SQL(parent),
            notnull=sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c))
                                          for c in ccols),
            match=sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c))
                for p, c in zip(pcols, ccols, strict=True)))
        row = conn.execute(query).fetchone()
        if row and row[0]:
            orphans.append(OrphanedRows(name, child, parent, int(row[0]), bool(validated)))
    return ForeignKeyOrphans(len(fks), tuple(orphans))


def schema_fingerprint(conn: psycopg.Connection) -> str:
    """md5 over the user schemas' relations, columns, constraints, indexes, policies, functions."""
    row = conn.execute(f"""
        SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
          SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' ||
                 c.relrowsecurity::text || ':' || coalesce((SELECT string_agg(a.attname || ' ' ||
                 format_type(a.atttypid, a.atttypmod) || a.attnotnull::text, ',' ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT
                 a.attisdropped), '') AS x
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT co.conname || pg_get_constraintdef(co.oid) FROM pg_constraint co
            JOIN pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT pol.polname || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
            FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON
            n.oid = c.relnamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT p.proname || md5(coalesce(p.prosrc, '')) FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMA_FILTER}
        ) s""").fetchone()
    return str(row[0]) if row else ""


def deadlock_timeout_ms(conn: psycopg.Connection) -> int:
    """The server's deadlock_timeout in milliseconds."""
    row = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'"
                       ).fetchone()
    return int(row[0]) if row else 1000


# Scratch databases: dbsage before a9ec98f restored snapshots into `dbsage_scratch_<12 hex>`
# databases for every rollback, and a killed run left them on the server. No dbsage makes them
# any more; these name the ones left, and the next rollback drops those nobody uses.
_SCRATCH_SQL = r"""
SELECT d.datname,
       EXISTS (SELECT FROM pg_stat_activity a WHERE a.datid = d.oid),
       pg_has_role(d.datdba, 'USAGE')
FROM pg_database d WHERE d.datname ~ '^dbsage_scratch_[0-9a-f]{12}$' ORDER BY 1
"""


@dataclass(frozen=True)
class ScratchDatabase:
    """A `dbsage_scratch_*` database an older dbsage's killed rollback left."""

    name: str
    in_use: bool  # a session is connected to it: never dropped
    owned: bool  # the role may drop it


def scratch_databases(conn: psycopg.Connection) -> list[ScratchDatabase]:
    return [ScratchDatabase(str(r[0]), bool(r[1]), bool(r[2]))
            for r in conn.execute(_SCRATCH_SQL).fetchall()]


def drop_stale_scratch_databases(conn: psycopg.Connection) -> list[str]:
    """Drop the scratch databases nobody is connected to that the role owns (autocommit
    session; without FORCE, so one a session has just connected to is left); the dropped."""
    import psycopg
    from psycopg import sql

    dropped = []
    for d in scratch_databases(conn):
        if d.in_use or not d.owned:
            continue
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(d.name)))
        except psycopg.Error:
            continue  # in use after all, or not ours: left for a later run
        dropped.append(d.name)
    return dropped
