"""analyze-hotpaths: the slowest statements (pg_stat_statements), their plans, what is wrong with
them, and the indexes that would help.

Nothing here changes data. A statement that may write (INSERT, UPDATE, DELETE, MERGE, a
data-modifying CTE, FOR UPDATE, a volatile function nobody can vouch for) is only planned,
with plain `EXPLAIN`; `EXPLAIN ANALYZE` runs only for read-only statements, and every EXPLAIN
runs in a transaction that is read-only, has `SET LOCAL statement_timeout` / `lock_timeout`, and
is always rolled back. Prepared statements and hypothetical (hypopg) indexes, which outlive a
rollback, are removed before returning. Extensions are never created unless the caller passes
`create_extension=True`.

pg_stat_statements does not record the application name, so dbsage's own statements are
recognised by what they touch (`dbsage.*`, `supabase_migrations.*`, the catalogs, nothing at
all) and by the marker `dbsage:hotpaths` that the queries sent from here carry (a leading
comment, or the column alias of the value samples, as PostgreSQL 18 drops leading comments).
EXPLAIN, PREPARE and DEALLOCATE are utility statements: never ranked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from dbsage.tools.catalog import BOOKKEEPING_SCHEMAS, SYSTEM_SCHEMAS, user_schemas_sql
from dbsage.tools.errors import DbsageError
from dbsage.tools.sqlfile import walk

Severity = Literal["high", "medium", "low"]
FindingKind = Literal[
    "seq_scan", "estimate", "shared_reads", "temp_files", "nested_loop", "fk_index",
    "unused_index", "duplicate_index", "rls_per_row",
]
HotStatus = Literal["ok", "extension_missing", "not_preloaded"]
HypopgStatus = Literal["used", "not_created", "not_installed"]

MARKER = "dbsage:hotpaths"
OWN_SCHEMAS = frozenset(BOOKKEEPING_SCHEMAS)
CATALOG_SCHEMAS = frozenset(SYSTEM_SCHEMAS)
DEFAULT_STATEMENT_TIMEOUT = "10s"
LOCK_TIMEOUT = "2s"
SAMPLE_TIMEOUT = "1s"
LIMIT_VALUE = "100"  # what a `LIMIT $n` of a normalised statement is planned with
PLAN_OUTLINE_NODES = 40
_TAG = f"/* {MARKER} */ "
_HIDDEN_TEXT = "<insufficient privilege>"
# Statements that have no plan: pre-filtered in SQL (leading comments slip through; pglast
# classifies what is left).
_UTILITY_RE = (
    r"^\s*(begin|start|commit|end|rollback|abort|savepoint|release|set|reset|show|discard|"
    r"deallocate|prepare|execute|explain|vacuum|analy[sz]e|create|alter|drop|grant|revoke|"
    r"comment|truncate|copy|lock|listen|unlisten|notify|do|call|checkpoint|cluster|reindex|"
    r"refresh|security|load|fetch|close|declare|move|import)\M"
)
_PLANNABLE = {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}
_WRITES = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE",
           "MergeStmt": "MERGE"}
# Volatile built-ins that read nothing and write nothing: safe to run under EXPLAIN ANALYZE.
_VOUCHED_VOLATILE = frozenset(
    ("pg_catalog", name) for name in (
        "random", "random_normal", "gen_random_uuid", "uuidv4", "uuidv7", "clock_timestamp",
        "timeofday", "statement_timestamp", "transaction_timestamp", "now",
    )
)
_SEQUENCE_FUNCTIONS = frozenset({"nextval", "setval", "currval"})
_AUTH_FUNCTIONS = ("uid", "jwt", "role", "email")
_UNWRAPPED_AUTH = re.compile(r"(?<!SELECT )\bauth\.(uid|jwt|role|email)\(\)")
_DETAIL_KEYS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter",
                "Filter", "Rows Removed by Filter", "Rows Removed by Join Filter",
                "Rows Removed by Index Recheck", "Sort Key", "Sort Method", "Hash Batches",
                "Group Key")


class HotpathsError(DbsageError):
    """A statement could not be analysed: it does not parse, has no plan, or cannot be planned."""


class NotPlannableError(HotpathsError):
    """A utility statement (CREATE, SET, VACUUM, ...): there is no plan to explain."""


@dataclass(frozen=True)
class Thresholds:
    """When a plan or catalog observation becomes a finding."""

    large_table_rows: int = 10_000  # a seq scan matters from this table size on
    filter_removed_share: float = 0.9  # ... when its filter throws away this share of rows
    estimate_factor: float = 10.0  # estimated vs actual rows
    estimate_min_rows: int = 100  # ignore mismatches where both sides are below this
    read_blocks: int = 1_000  # shared blocks read (8 kB each) ...
    read_share: float = 0.5  # ... and their share of all shared blocks touched
    nested_loop_iterations: int = 1_000  # inner side of a nested loop run this often


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class QueryStat:
    """One normalised statement of pg_stat_statements (entries of all roles summed)."""

    queryid: int | None
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int
    share: float  # of the execution time pg_stat_statements recorded for this database, 0..1
    shared_hit: int
    shared_read: int
    temp_written: int


@dataclass(frozen=True)
class HotQueries:
    """The top statements by total and by mean time, or why they cannot be known."""

    status: HotStatus
    message: str
    how_to_enable: tuple[str, ...] = ()
    by_total: tuple[QueryStat, ...] = ()
    by_mean: tuple[QueryStat, ...] = ()
    database_total_ms: float = 0.0
    entries: int = 0  # pg_stat_statements entries for this database
    excluded: int = 0  # catalog statements and dbsage's own, among those considered
    hidden: int = 0  # entries whose text this role may not read
    stats_since: datetime | None = None
    extension_created: bool = False

    @property
    def available(self) -> bool:
        return self.status == "ok"

    @property
    def statements(self) -> tuple[QueryStat, ...]:
        """by_total then by_mean, each statement once."""
        seen: set[tuple[int | None, str]] = set()
        out: list[QueryStat] = []
        for stat in (*self.by_total, *self.by_mean):
            key = (stat.queryid, stat.query)
            if key not in seen:
                seen.add(key)
                out.append(stat)
        return tuple(out)


@dataclass(frozen=True)
class QueryPlan:
    """The plan of one statement and how it was obtained."""

    query: str
    read_only: bool
    write_reason: str | None  # why the statement was only planned (None: read-only)
    analyzed: bool  # EXPLAIN ANALYZE ran (read-only, rolled back)
    generic: bool  # a generic plan for $n parameters (force_generic_plan / GENERIC_PLAN)
    parameters: tuple[str | None, ...]  # values $1.. were given (None: NULL)
    explain: str  # the EXPLAIN options used
    plan: Mapping[str, Any]  # the root node of EXPLAIN (FORMAT JSON)
    total_cost: float
    planning_ms: float | None
    execution_ms: float | None
    server_version: int
    notes: tuple[str, ...] = ()

    def nodes(self) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any] | None, int]]:
        """Every plan node with its parent and depth, depth first."""
        return plan_nodes(self.plan)

    def relations(self) -> list[tuple[str, str]]:
        """(schema, table) of every relation the plan scans, in plan order."""
        out: list[tuple[str, str]] = []
        for node, _, _ in self.nodes():
            rel = _node_relation(node)
            if rel and rel not in out:
                out.append(rel)
        return out


@dataclass(frozen=True)
class Finding:
    """One problem, with the evidence (plan or catalog) that shows it."""

    kind: FindingKind
    severity: Severity
    title: str
    evidence: str
    suggestion: str
    schema: str | None = None
    table: str | None = None
    columns: tuple[str, ...] = ()  # columns an index on `table` should have (when one helps)
    query: str | None = None  # the statement whose plan shows it (None: catalog finding)
    node: str | None = None  # the plan node, e.g. "Seq Scan on public.orders"

    @property
    def relation(self) -> str | None:
        return f"{self.schema}.{self.table}" if self.schema and self.table else None


@dataclass(frozen=True)
class IndexAdvice:
    """A recommended index, ready to become a migration, and whether hypopg confirmed it."""

    schema: str
    table: str
    columns: tuple[str, ...]
    sql: str  # CREATE INDEX CONCURRENTLY ...;
    reason: str
    verified: bool
    verification: str
    cost_before: float | None = None
    cost_after: float | None = None
    queries: tuple[str, ...] = ()

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def improvement(self) -> float | None:
        """Share of the plan cost the index saves (0..1), when verified with hypopg."""
        if self.cost_before is None or self.cost_after is None or self.cost_before <= 0:
            return None
        return 1.0 - self.cost_after / self.cost_before


@dataclass(frozen=True)
class IndexAdvisory:
    """Every recommended index, and whether they could be tried with hypopg."""

    hypopg: HypopgStatus
    note: str
    advice: tuple[IndexAdvice, ...] = ()
    skipped: tuple[str, ...] = ()  # candidates an existing index already covers


@dataclass(frozen=True)
class QueryAnalysis:
    """One hot statement: its statistics, its plan and the findings the plan shows."""

    number: int
    stat: QueryStat
    plan: QueryPlan | None
    findings: tuple[Finding, ...] = ()
    error: str | None = None  # why there is no plan


@dataclass(frozen=True)
class HotpathsReport:
    """Everything analyze_hotpaths found."""

    created_at: datetime
    database: str
    server_version: str
    hot: HotQueries
    queries: tuple[QueryAnalysis, ...]
    schema_findings: tuple[Finding, ...]
    indexes: IndexAdvisory
    next_steps: tuple[str, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        return (*(f for q in self.queries for f in q.findings), *self.schema_findings)


@dataclass(frozen=True)
class StatementFacts:
    """What pglast says about one statement."""

    text: str  # the statement alone, without a trailing semicolon
    kind: str  # pglast node name, e.g. "SelectStmt"
    write_reason: str | None  # None: nothing in its text writes
    params: int  # highest $n
    relations: tuple[tuple[str | None, str, str | None], ...]  # (schema, name, alias)
    functions: tuple[tuple[str | None, str], ...]
    param_targets: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- SQL helpers


def _rows(conn: psycopg.Connection[Any], query: str,
          params: Mapping[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """A catalog query in a rolled-back transaction (leaves the connection as it was)."""
    with conn.transaction(force_rollback=True):
        return conn.execute(_TAG + query, params, prepare=False).fetchall()


def _error_text(exc: psycopg.Error) -> str:
    message = (exc.diag.message_primary or str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{exc.sqlstate}: {message}" if exc.sqlstate else message


def _ident(name: str) -> str:
    """`name` as an SQL identifier (quoted only when it must be)."""
    from pglast import keywords

    reserved = set(keywords.RESERVED_KEYWORDS) | set(keywords.TYPE_FUNC_NAME_KEYWORDS) | set(
        keywords.COL_NAME_KEYWORDS)
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in reserved:
        return name
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


def _extension_schema(conn: psycopg.Connection[Any], name: str) -> str | None:
    rows = _rows(conn, "SELECT extnamespace::regnamespace::text FROM pg_extension "
                 "WHERE extname = %s", (name,))
    return str(rows[0][0]).strip('"') if rows else None


def _extension_available(conn: psycopg.Connection[Any], name: str) -> bool:
    return bool(_rows(conn, "SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)))


def _is_supabase(conn: psycopg.Connection[Any]) -> bool:
    return bool(_rows(conn, "SELECT 1 FROM pg_roles WHERE rolname = 'supabase_admin'"))


def _create_extension(conn: psycopg.Connection[Any], name: str) -> None:
    """CREATE EXTENSION, committed: only ever called when the caller asked for it."""
    schema = "extensions" if _rows(conn, "SELECT 1 FROM pg_namespace WHERE nspname = 'extensions'") else None
    stmt = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))
    if schema:
        stmt = sql.SQL("{} WITH SCHEMA {}").format(stmt, sql.Identifier(schema))
    try:
        with conn.transaction():
            conn.execute(stmt, prepare=False)
    except psycopg.Error as exc:
        raise HotpathsError(
            f"Could not create the {name} extension: {_error_text(exc)}",
            hint=f"Create it as a role allowed to: `create extension {name};`.",
        ) from None


def _settle(conn: psycopg.Connection[Any], statement_timeout: str, *, generic: bool) -> None:
    """The settings every EXPLAIN runs under (transaction-local: gone at the rollback)."""
    try:
        conn.execute("SELECT set_config('statement_timeout', %s, true), "
                     "set_config('lock_timeout', %s, true)", (statement_timeout, LOCK_TIMEOUT),
                     prepare=False)
    except psycopg.errors.InvalidParameterValue as exc:
        raise HotpathsError(f"Invalid statement timeout {statement_timeout!r}: {_error_text(exc)}",
                            hint="Give a duration such as '10s' or '500ms'.") from None
    conn.execute("SET LOCAL transaction_read_only = on", prepare=False)
    if generic:
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan", prepare=False)


# --------------------------------------------------------------------------- pg_stat_statements


def _how_to_enable(*, preloaded: bool, installed: bool, supabase: bool) -> tuple[str, ...]:
    steps: list[str] = []
    if supabase:
        steps.append("On Supabase pg_stat_statements is preloaded: enable it in this database with "
                     "`create extension if not exists pg_stat_statements with schema extensions;` "
                     "(or under Database → Extensions).")
    else:
        if not preloaded:
            steps.append("Load the library at server start: in postgresql.conf set "
                         "`shared_preload_libraries = 'pg_stat_statements'` (keep any libraries "
                         "already listed there), then restart PostgreSQL.")
        if not installed:
            steps.append("Then, in this database, as a role allowed to create extensions: "
                         "`create extension if not exists pg_stat_statements;`.")
    steps.append("Let the application run its usual workload for a while, then analyse again.")
    return tuple(steps)


def top_queries(conn: psycopg.Connection[Any], n: int = 10, *,
                create_extension: bool = False) -> HotQueries:
    """The top `n` statements of this database by total and by mean execution time.

    Utility statements (no plan), catalog statements and dbsage's own are left out. When
    pg_stat_statements is not installed in the database, or not preloaded by the server, the
    result says so and how to enable it; the extension is created only with
    `create_extension=True` (and that creation is committed).
    """
    if n < 1:
        raise HotpathsError(f"n must be at least 1 (got {n}).")
    preloaded = bool(_rows(conn, "SELECT current_setting('pg_stat_statements.max', true) "
                                 "IS NOT NULL")[0][0])
    schema = _extension_schema(conn, "pg_stat_statements")
    created = False
    if schema is None and create_extension:
        _create_extension(conn, "pg_stat_statements")
        created = True
        schema = _extension_schema(conn, "pg_stat_statements")
    if schema is None:
        return HotQueries(
            "extension_missing",
            "pg_stat_statements is not installed in this database, so there are no query "
            "statistics to rank." + ("" if preloaded else
                                     " The server does not preload its library either."),
            _how_to_enable(preloaded=preloaded, installed=False, supabase=_is_supabase(conn)))
    if not preloaded:
        return _not_preloaded(conn, created)
    try:
        stats, totals = _fetch_statements(conn, schema, max(10 * n, 200))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return _not_preloaded(conn, created)
    except psycopg.errors.UndefinedColumn as exc:
        raise HotpathsError(f"pg_stat_statements is too old here: {_error_text(exc)}",
                            hint="`alter extension pg_stat_statements update;`") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise HotpathsError(f"Cannot read pg_stat_statements: {_error_text(exc)}",
                            hint="Grant the role pg_read_all_stats.") from None
    kept, excluded = _exclude_own_and_catalog(conn, stats)
    by_total = tuple(s for s, _, _ in sorted(kept, key=lambda k: k[1])[:n])
    by_mean = tuple(s for s, _, _ in sorted(kept, key=lambda k: k[2])[:n])
    total_ms, entries, hidden = totals
    since = _stats_since(conn, schema)
    message = (f"{entries} statement(s) recorded for this database"
               + (f" since {since:%Y-%m-%d %H:%M %Z}" if since else "")
               + f"; {len(kept)} are the application's"
               + (f", {hidden} hidden from this role" if hidden else "") + "."
               + (" Grant the role pg_read_all_stats to see every role's statements."
                  if hidden and not kept else ""))
    return HotQueries("ok", message, (), by_total, by_mean, total_ms, entries, excluded, hidden,
                      since, created)


def _not_preloaded(conn: psycopg.Connection[Any], created: bool) -> HotQueries:
    return HotQueries(
        "not_preloaded",
        "The pg_stat_statements extension exists, but the server does not preload its "
        "library, so it records nothing.",
        _how_to_enable(preloaded=False, installed=True, supabase=_is_supabase(conn)),
        extension_created=created)


def _fetch_statements(conn: psycopg.Connection[Any], schema: str, k: int
                      ) -> tuple[list[tuple[QueryStat, int, int]], tuple[float, int, int]]:
    query = sql.SQL("""
        WITH s AS (
            SELECT queryid, query, calls, total_exec_time, max_exec_time, rows,
                   shared_blks_hit, shared_blks_read, temp_blks_written
            FROM {pss}
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ), t AS (
            SELECT coalesce(sum(total_exec_time), 0) AS total, count(*) AS entries,
                   count(*) FILTER (WHERE query IS NULL OR query = %(hidden)s) AS hidden
            FROM s
        ), g AS (
            SELECT queryid, min(query) AS query, sum(calls) AS calls,
                   sum(total_exec_time) AS total_ms, max(max_exec_time) AS max_ms,
                   sum(rows) AS rows, sum(shared_blks_hit) AS hit,
                   sum(shared_blks_read) AS read, sum(temp_blks_written) AS temp
            FROM s
            WHERE query IS NOT NULL AND query <> %(hidden)s AND query !~* %(utility)s
              AND strpos(query, %(marker)s) = 0
            GROUP BY queryid
        ), r AS (
            SELECT g.*, total_ms / greatest(calls, 1) AS mean_ms,
                   row_number() OVER (ORDER BY total_ms DESC, queryid) AS rank_total,
                   row_number() OVER (ORDER BY total_ms / greatest(calls, 1) DESC, queryid)
                       AS rank_mean
            FROM g
        )
        SELECT t.total, t.entries, t.hidden, r.queryid, r.query, r.calls, r.total_ms,
               r.mean_ms, r.max_ms, r.rows, r.hit, r.read, r.temp, r.rank_total, r.rank_mean
        FROM t LEFT JOIN r ON r.rank_total <= %(k)s OR r.rank_mean <= %(k)s
        ORDER BY r.rank_total""").format(pss=sql.Identifier(schema, "pg_stat_statements"))
    with conn.transaction(force_rollback=True):
        rows = conn.execute(sql.SQL(_TAG) + query,
                            {"hidden": _HIDDEN_TEXT, "utility": _UTILITY_RE, "marker": MARKER,
                             "k": k}, prepare=False).fetchall()
    total = float(rows[0][0] or 0.0)
    out: list[tuple[QueryStat, int, int]] = []
    for row in rows:
        if row[4] is None:
            continue
        share = float(row[6]) / total if total > 0 else 0.0
        out.append((QueryStat(row[3], str(row[4]), int(row[5]), float(row[6]), float(row[7]),
                              float(row[8]), int(row[9]), share, int(row[10]), int(row[11]),
                              int(row[12])), int(row[13]), int(row[14])))
    return out, (total, int(rows[0][1]), int(rows[0][2]))


def _stats_since(conn: psycopg.Connection[Any], schema: str) -> datetime | None:
    try:
        rows = _rows(conn, sql.SQL("SELECT stats_reset FROM {}").format(
            sql.Identifier(schema, "pg_stat_statements_info")).as_string(conn))
    except psycopg.Error:
        return None
    return rows[0][0] if rows else None


def _exclude_own_and_catalog(conn: psycopg.Connection[Any], stats: list[tuple[QueryStat, int, int]]
                             ) -> tuple[list[tuple[QueryStat, int, int]], int]:
    """Drop statements with no plan, on the catalogs only, or on dbsage's own schemas."""
    kept: list[tuple[tuple[QueryStat, int, int], StatementFacts | None]] = []
    excluded = 0
    for item in stats:
        try:
            facts = statement_facts(item[0].query)
        except NotPlannableError:
            excluded += 1
            continue
        except HotpathsError:
            kept.append((item, None))  # unparsable here: keep it, its analysis says why
            continue
        if _is_own_or_catalog(facts):
            excluded += 1
            continue
        kept.append((item, facts))
    # Statements that name no relation (SELECT 1, SELECT version(), set_config(...)): keep
    # them only when they call a user function (not a built-in, not an extension's) or use a
    # sequence (nextval('orders_id_seq')).
    names = sorted({name for _, f in kept if f and not f.relations for _, name in f.functions})
    user_functions = {r[0] for r in _rows(conn, """
        SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname = ANY(%s) AND n.nspname <> ALL(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')""",
        (names, sorted(CATALOG_SCHEMAS)))} if names else set()
    out: list[tuple[QueryStat, int, int]] = []
    for item, maybe in kept:
        if maybe and not maybe.relations and not any(
                (name in user_functions and schema not in CATALOG_SCHEMAS)
                or name in _SEQUENCE_FUNCTIONS for schema, name in maybe.functions):
            excluded += 1
            continue
        out.append(item)
    return out, excluded


def _is_own_or_catalog(facts: StatementFacts) -> bool:
    if MARKER in facts.text:
        return True
    if any(schema in OWN_SCHEMAS for schema, _, _ in facts.relations):
        return True

    def catalog(schema: str | None, name: str) -> bool:
        return (schema in CATALOG_SCHEMAS or name.startswith("pg_stat_statements")
                or name.startswith("hypopg") or (schema is None and name.startswith("pg_")))

    return bool(facts.relations) and all(catalog(s, n) for s, n, _ in facts.relations)


# --------------------------------------------------------------------------- parsing




def _names(items: Sequence[Any] | None) -> list[str]:
    return [str(getattr(i, "sval", i)) for i in items or ()]


def statement_facts(query: str) -> StatementFacts:
    """Parse one statement: its kind, what in its text writes, its relations, functions, $n.

    Raises HotpathsError for text that does not parse, several statements, or a statement
    that has no plan (utility statements).
    """
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        stmts = parse_sql(query)
    except ParseError as exc:
        raise HotpathsError(f"The statement does not parse: {exc}") from None
    if len(stmts) != 1:
        raise HotpathsError(f"Expected one statement, got {len(stmts)}.",
                            hint="Analyse the statements one at a time.")
    raw = stmts[0]
    start = raw.stmt_location or 0
    text = (query[start:start + raw.stmt_len] if raw.stmt_len else query[start:]).strip()
    text = text.rstrip(";").strip()
    kind = type(raw.stmt).__name__
    if kind not in _PLANNABLE:
        raise NotPlannableError(f"A {kind.removesuffix('Stmt')} statement has no plan to explain.",
                            hint="Only SELECT, INSERT, UPDATE, DELETE and MERGE can be explained.")
    reason: str | None = _WRITES.get(kind) and f"{_WRITES[kind]} writes rows"
    ctes: set[str] = set()
    relations: list[tuple[str | None, str, str | None]] = []
    functions: list[tuple[str | None, str]] = []
    params = 0
    for node in walk(raw.stmt):
        if isinstance(node, ast.CommonTableExpr):
            ctes.add(str(node.ctename))
            inner = type(node.ctequery).__name__
            if reason is None and inner in _WRITES:
                reason = f"a data-modifying CTE ({node.ctename}: {_WRITES[inner]})"
        elif isinstance(node, ast.LockingClause) and reason is None:
            reason = "FOR UPDATE/SHARE locks the rows it reads"
        elif isinstance(node, ast.IntoClause) and reason is None:
            reason = "SELECT INTO creates a table"
        elif isinstance(node, ast.RangeVar):
            alias = node.alias.aliasname if node.alias else None
            relations.append((node.schemaname or None, str(node.relname), alias))
        elif isinstance(node, ast.FuncCall):
            parts = _names(node.funcname)
            functions.append((parts[-2] if len(parts) > 1 else None, parts[-1]))
        elif isinstance(node, ast.ParamRef):
            params = max(params, int(node.number or 0))
    rels = tuple(r for r in relations if not (r[0] is None and r[1] in ctes))
    return StatementFacts(text, kind, reason, params, rels, tuple(dict.fromkeys(functions)),
                          _param_targets(raw.stmt))


def _param_targets(stmt: Any) -> dict[int, tuple[str, ...]]:
    """What each $n is compared with: ("column", qualifier-or-"", column) for `col = $n` and
    `col IN ($n, ...)`, ("limit",) / ("offset",) for LIMIT $n / OFFSET $n."""
    from pglast import ast, enums

    out: dict[int, tuple[str, ...]] = {}
    for node in walk(stmt):
        if isinstance(node, ast.SelectStmt):
            for attr, what in (("limitCount", "limit"), ("limitOffset", "offset")):
                value = getattr(node, attr, None)
                if isinstance(value, ast.ParamRef):
                    out[int(value.number or 0)] = (what,)
        if not isinstance(node, ast.A_Expr):
            continue
        sides = [(node.lexpr, node.rexpr), (node.rexpr, node.lexpr)]
        for col_side, other in sides:
            col = _unwrap(col_side)
            if not isinstance(col, ast.ColumnRef) or not all(
                    isinstance(f, ast.String) for f in col.fields or ()):
                continue
            fields = _names(col.fields)
            target = ("column", ".".join(fields[:-1]), fields[-1])
            if node.kind == enums.A_Expr_Kind.AEXPR_OP and _names(node.name)[-1] == "=":
                param = _unwrap(other)
                if isinstance(param, ast.ParamRef):
                    out.setdefault(int(param.number or 0), target)
            elif node.kind == enums.A_Expr_Kind.AEXPR_IN and isinstance(other, list | tuple):
                for item in other:
                    param = _unwrap(item)
                    if isinstance(param, ast.ParamRef):
                        out.setdefault(int(param.number or 0), target)
    return out


def _unwrap(node: Any) -> Any:
    from pglast import ast

    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def read_only_reason(conn: psycopg.Connection[Any], facts: StatementFacts) -> str | None:
    """Why the statement may write (None: it is read-only and may run under EXPLAIN ANALYZE).

    Beyond the text (facts.write_reason), every function it calls must be found in the catalog
    and be immutable or stable, or be one of a few volatile built-ins that touch no data.
    """
    if facts.write_reason:
        return facts.write_reason
    if not facts.functions:
        return None
    names = sorted({name for _, name in facts.functions})
    rows = _rows(conn, """
        SELECT p.proname, n.nspname, p.provolatile::text,
               n.nspname = ANY(current_schemas(true)) AS visible
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname = ANY(%s)""", (names,))
    for schema, name in facts.functions:
        found = [(nsp, vol) for proname, nsp, vol, visible in rows
                 if proname == name and (nsp == schema if schema else visible)]
        shown = f"{schema}.{name}()" if schema else f"{name}()"
        if not found:
            return f"it calls {shown}, which this role cannot see in the catalog"
        if any(vol == "v" and (nsp, name) not in _VOUCHED_VOLATILE for nsp, vol in found):
            return f"it calls the volatile function {shown}, which may write"
    return None


# --------------------------------------------------------------------------- EXPLAIN


def _explain_doc(conn: psycopg.Connection[Any], facts: StatementFacts, options: Sequence[str],
                 values: Sequence[str | None] | None) -> Mapping[str, Any]:
    """One EXPLAIN inside the caller's open transaction; the first element of its JSON."""
    opts = ", ".join(options)
    if facts.params == 0:
        return _explain_row(conn, f"EXPLAIN ({opts}) {facts.text}")
    if values is None and conn.info.server_version >= 160000 and "ANALYZE" not in options:
        return _explain_row(conn, f"EXPLAIN (GENERIC_PLAN, {opts}) {facts.text}")
    name = f"dbsage_hotpaths_{uuid.uuid4().hex[:16]}"
    with conn.transaction():
        conn.execute(f"PREPARE {name} AS {facts.text}", prepare=False)
    try:
        args = ", ".join("NULL" if v is None else sql.Literal(v).as_string(conn)
                         for v in (values or [None] * facts.params))
        with conn.transaction():
            return _explain_row(conn, f"EXPLAIN ({opts}) EXECUTE {name}({args})")
    finally:
        with conn.transaction():
            conn.execute(f"DEALLOCATE {name}", prepare=False)


def _explain_row(conn: psycopg.Connection[Any], text: str) -> Mapping[str, Any]:
    row = conn.execute(text, prepare=False).fetchone()
    if row is None:  # pragma: no cover - EXPLAIN always returns a row
        raise HotpathsError("EXPLAIN returned nothing.")
    doc = row[0]
    if isinstance(doc, str):  # pragma: no cover - json is loaded by psycopg
        import json

        doc = json.loads(doc)
    return dict(doc[0])


def explain_query(conn: psycopg.Connection[Any], query: str, *,
                  params: Sequence[str | None] | None = None, analyze: bool = True,
                  statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT) -> QueryPlan:
    """The plan of one statement, obtained without changing anything.

    A read-only statement runs under `EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)` (unless
    `analyze` is False); anything that may write is only planned (`EXPLAIN (VERBOSE, FORMAT
    JSON)`). Both run in a read-only transaction with `SET LOCAL statement_timeout` that is
    rolled back. Statements with `$n` parameters (as pg_stat_statements records them) get a
    generic plan (`PREPARE` + `EXPLAIN EXECUTE` under `plan_cache_mode = force_generic_plan`,
    or `EXPLAIN (GENERIC_PLAN)` on PostgreSQL 16+); `params` gives their values as text
    (None: NULL). Without `params`, a read-only statement is analysed with representative
    values: a value read from the column a parameter is compared with, 100 for LIMIT, 0 for
    OFFSET; when a parameter has none, the plan is the planner's estimate only.
    """
    facts = statement_facts(query)
    if params is not None and len(params) != facts.params:
        raise HotpathsError(f"The statement has {facts.params} parameter(s); {len(params)} "
                            "value(s) were given.")
    reason = read_only_reason(conn, facts)
    read_only = reason is None
    notes: list[str] = []
    generic = facts.params > 0
    values: list[str | None] | None = list(params) if params is not None else None
    doc: Mapping[str, Any] | None = None
    analyzed = False
    options: list[str] = ["VERBOSE", "FORMAT JSON"]
    with conn.transaction(force_rollback=True):
        if values is None and generic and read_only and analyze:
            _settle(conn, SAMPLE_TIMEOUT, generic=True)
            values, sampled = _representative_values(conn, facts)
            notes.extend(sampled)
        _settle(conn, statement_timeout, generic=generic)
        complete = values is not None and all(v is not None for v in values)
        if read_only and analyze and (not generic or complete):
            analyze_options = ["ANALYZE", "BUFFERS", *options]
            try:
                with conn.transaction():
                    doc = _explain_doc(conn, facts, analyze_options, values)
                analyzed, options = True, analyze_options
            except psycopg.errors.QueryCanceled:
                notes.append(f"EXPLAIN ANALYZE did not finish within {statement_timeout}: the "
                             "plan below is the planner's estimate.")
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                read_only = False
                reason = f"it tried to write when run ({_error_text(exc)}; rolled back)"
            except psycopg.Error as exc:
                notes.append(f"EXPLAIN ANALYZE failed ({_error_text(exc)}): the plan below is "
                             "the planner's estimate.")
        elif read_only and analyze and generic:
            notes.append("Not every parameter could be given a representative value: generic "
                         "plan, estimates only.")
        if not read_only:
            notes.append(f"Planned only, never run: {reason}.")
        if doc is None:
            try:
                with conn.transaction():
                    doc = _explain_doc(conn, facts, options, values)
            except psycopg.errors.LockNotAvailable as exc:
                raise HotpathsError(
                    f"A table of the statement is locked by another session: {_error_text(exc)}",
                    hint="Try again when the migration or maintenance holding it is done.",
                ) from None
            except psycopg.Error as exc:
                hint = "Check it runs as this role on this database."
                if generic and exc.sqlstate in ("42725", "42P18", "42883", "42804"):
                    hint = ("pg_stat_statements replaced its constants with $n, whose types cannot "
                            "be inferred here: explain it with real values instead.")
                raise HotpathsError(f"The statement cannot be planned: {_error_text(exc)}",
                                    hint=hint) from None
    plan = dict(doc["Plan"])
    explain = "EXPLAIN (" + ", ".join(
        (["GENERIC_PLAN"] if generic and not analyzed and values is None
         and conn.info.server_version >= 160000 else []) + options) + ")"
    if generic and (analyzed or values is not None or conn.info.server_version < 160000):
        explain += " of a prepared statement (force_generic_plan)"
    return QueryPlan(
        query=facts.text, read_only=read_only, write_reason=reason, analyzed=analyzed,
        generic=generic, parameters=tuple(values or ()), explain=explain, plan=plan,
        total_cost=float(plan.get("Total Cost", 0.0)), planning_ms=doc.get("Planning Time"),
        execution_ms=doc.get("Execution Time"), server_version=conn.info.server_version,
        notes=tuple(notes))


def _representative_values(conn: psycopg.Connection[Any], facts: StatementFacts
                           ) -> tuple[list[str | None], list[str]]:
    """A value for each $n read from the column it is compared with (inside the caller's
    read-only, rolled-back transaction)."""
    values: list[str | None] = [None] * facts.params
    used: list[str] = []
    for number, target in sorted(facts.param_targets.items()):
        if number > facts.params:
            continue
        if target[0] == "limit":
            values[number - 1] = LIMIT_VALUE
            used.append(f"${number} = {LIMIT_VALUE} (LIMIT)")
            continue
        if target[0] == "offset":
            values[number - 1] = "0"
            used.append(f"${number} = 0 (OFFSET)")
            continue
        qualifier, column = target[1], target[2]
        relation = _resolve_column(conn, facts, qualifier, column)
        if relation is None:
            continue
        schema, name = relation
        rel = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        query = sql.SQL("SELECT {col}::text AS {marker} FROM {rel} WHERE {col} IS NOT NULL "
                        "LIMIT 1").format(col=sql.Identifier(column), marker=sql.Identifier(MARKER),
                                          rel=rel)
        try:
            with conn.transaction():
                row = conn.execute(query, prepare=False).fetchone()
        except psycopg.Error:
            continue
        if row is not None:
            values[number - 1] = row[0]
            used.append(f"${number} = {row[0]!r} (a value of {column})")
    return values, ([f"Parameters: {', '.join(used)}."] if used else [])


def _resolve_column(conn: psycopg.Connection[Any], facts: StatementFacts, qualifier: str,
                    column: str) -> tuple[str | None, str] | None:
    candidates = [(s, n) for s, n, alias in facts.relations
                  if not qualifier or qualifier in (alias or n, f"{s}.{n}" if s else n)]
    if len(candidates) == 1 and qualifier:
        return candidates[0]
    having = [c for c in dict.fromkeys(candidates) if _rows(conn, """
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass(%s) AND attname = %s AND attnum > 0 AND NOT attisdropped""",
        (sql.Identifier(*[p for p in c if p]).as_string(conn), column))]
    return having[0] if len(having) == 1 else None


# --------------------------------------------------------------------------- plan helpers


def plan_nodes(plan: Mapping[str, Any], parent: Mapping[str, Any] | None = None, depth: int = 0
               ) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any] | None, int]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan with its parent and depth, depth first."""
    yield plan, parent, depth
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child, plan, depth + 1)


def _node_relation(node: Mapping[str, Any]) -> tuple[str, str] | None:
    if "Relation Name" not in node:
        return None
    return str(node.get("Schema") or "public"), str(node["Relation Name"])


def _label(node: Mapping[str, Any]) -> str:
    label = str(node.get("Node Type", "?"))
    if node.get("Strategy") and label in ("Aggregate", "SetOp"):
        label = f"{node['Strategy'].title()} {label}" if node["Strategy"] != "Plain" else label
    if (node.get("Join Type") and "Join" in label) or label == "Nested Loop":
        label = f"{label} ({node.get('Join Type', 'Inner')})"
    if "Index Name" in node:
        label += f" using {node['Index Name']}"
    if "Function Name" in node:
        label += f" on {node.get('Schema', 'pg_catalog')}.{node['Function Name']}()"
    rel = _node_relation(node)
    if rel:
        label += f" on {rel[0]}.{rel[1]}"
        if node.get("Alias") and node["Alias"] != rel[1]:
            label += f" {node['Alias']}"
    return label


def _num(value: Any) -> str:
    number = float(value or 0)
    return f"{int(number):,}" if number == int(number) else f"{number:,.2f}"


def _blocks(blocks: float) -> str:
    size = blocks * 8192
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"  # pragma: no cover


def _exclusive(node: Mapping[str, Any], key: str) -> float:
    """A buffer counter of the node minus its children's (EXPLAIN reports them inclusive)."""
    own = float(node.get(key, 0) or 0)
    return max(own - sum(float(c.get(key, 0) or 0) for c in node.get("Plans", ())), 0.0)


def plan_outline(plan: QueryPlan, max_nodes: int = PLAN_OUTLINE_NODES) -> list[str]:
    """The plan as indented text lines: one per node, with its conditions below it."""
    lines: list[str] = []
    for count, (node, _, depth) in enumerate(plan.nodes()):
        if count == max_nodes:
            lines.append(f"... ({sum(1 for _ in plan.nodes()) - max_nodes} more nodes)")
            break
        pad = "  " * depth + ("-> " if depth else "")
        figures = [f"cost {float(node.get('Total Cost', 0)):,.2f}",
                   f"est. {_num(node.get('Plan Rows'))} rows"]
        if "Actual Loops" in node:
            if not node["Actual Loops"]:
                figures.append("never executed")
            else:
                figures.append(f"actual {_num(node.get('Actual Rows'))} rows")
                if node["Actual Loops"] > 1:
                    figures.append(f"× {_num(node['Actual Loops'])} loops")
                figures.append(f"{float(node.get('Actual Total Time', 0)):,.3f} ms")
        lines.append(f"{pad}{_label(node)}  ({', '.join(figures)})")
        detail_pad = "  " * depth + ("   " if depth else "") + "  "
        for key in _DETAIL_KEYS:
            if key in node:
                value = node[key]
                if isinstance(value, list):
                    value = ", ".join(str(v) for v in value)
                elif isinstance(value, float):
                    value = _num(value)
                lines.append(f"{detail_pad}{key}: {value}")
        if node.get("Temp Written Blocks"):
            lines.append(f"{detail_pad}Temp written: {_blocks(float(node['Temp Written Blocks']))}")
    return lines


def _filter_columns(expr: str, qualifiers: set[str], *, join: bool = False
                    ) -> tuple[list[str], list[str]]:
    """Columns of the relation known by `qualifiers` that an AND-ed condition compares with a
    constant or parameter (or, with `join`, with another relation's column): (equality, range).
    """
    from pglast import ast, enums, parse_sql
    from pglast.parser import ParseError

    try:
        stmt: Any = parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt
        where: Any = stmt.whereClause
    except (ParseError, IndexError, AttributeError):
        return [], []
    conjuncts = (list(where.args or ()) if isinstance(where, ast.BoolExpr)
                 and where.boolop == enums.BoolExprType.AND_EXPR else [where])
    eq: list[str] = []
    rng: list[str] = []
    for c in conjuncts:
        if not isinstance(c, ast.A_Expr):
            continue
        for mine, other in ((c.lexpr, c.rexpr), (c.rexpr, c.lexpr)):
            column = _own_column(mine, qualifiers)
            if column is None:
                continue
            other_columns = [n for n in walk(other) if isinstance(n, ast.ColumnRef)]
            if join != bool(other_columns) or any(
                    _own_column(o, qualifiers) for o in other_columns):
                continue
            op = _names(c.name)[-1] if c.name else ""
            if c.kind in (enums.A_Expr_Kind.AEXPR_IN, enums.A_Expr_Kind.AEXPR_OP_ANY) or (
                    c.kind == enums.A_Expr_Kind.AEXPR_OP and op == "="):
                if op == "=" and column not in eq:
                    eq.append(column)
            elif not join and column not in rng and (
                    c.kind == enums.A_Expr_Kind.AEXPR_BETWEEN or (
                        c.kind == enums.A_Expr_Kind.AEXPR_OP and op in ("<", ">", "<=", ">="))):
                rng.append(column)
            break
    return eq, [r for r in rng if r not in eq]


def _own_column(node: Any, qualifiers: set[str]) -> str | None:
    from pglast import ast

    node = _unwrap(node)
    if not isinstance(node, ast.ColumnRef) or not all(
            isinstance(f, ast.String) for f in node.fields or ()):
        return None
    fields = _names(node.fields)
    if len(fields) > 1 and fields[-2] not in qualifiers:
        return None
    return fields[-1]


def _index_columns(eq: list[str], rng: list[str]) -> tuple[str, ...]:
    return tuple(eq[:3] + rng[:1])


def _qualifiers(node: Mapping[str, Any]) -> set[str]:
    rel = _node_relation(node)
    return {q for q in (node.get("Alias"), rel[1] if rel else None) if q}


# --------------------------------------------------------------------------- findings


def find_issues(plan: QueryPlan, conn: psycopg.Connection[Any], *, catalog: bool = True,
                thresholds: Thresholds | None = None) -> list[Finding]:
    """What is wrong with a plan, each finding with its evidence from the plan.

    Plan findings: a seq scan on a large table whose filter removes most rows, estimates off by
    more than `estimate_factor`, many shared blocks read rather than found in shared_buffers,
    temp files, nested loops whose inner side runs many times. With `catalog`, also the
    catalog findings for the tables of the plan: foreign keys without an index, unused and
    duplicate indexes, RLS policies that call auth.uid() once per row.
    """
    t = thresholds or Thresholds()
    sizes = _table_rows(conn, plan.relations())
    findings: list[Finding] = []
    findings += _seq_scans(plan, sizes, t)
    findings += _nested_loops(plan, t)
    if plan.analyzed:
        findings += _estimates(plan, t)
        findings += _reads(plan, t)
        findings += _temp_files(plan)
    if catalog:
        tables = plan.relations()
        findings += missing_fk_indexes(conn, tables)
        findings += unused_indexes(conn, tables)
        findings += duplicate_indexes(conn, tables)
        findings += rls_per_row_calls(conn, tables)
    return findings


def _table_rows(conn: psycopg.Connection[Any], tables: Sequence[tuple[str, str]]
                ) -> dict[tuple[str, str], float]:
    if not tables:
        return {}
    rows = _rows(conn, """
        SELECT n.nspname, c.relname, c.reltuples
        FROM unnest(%s::text[], %s::text[]) AS t(schema, name)
        JOIN pg_namespace n ON n.nspname = t.schema
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name""",
        ([s for s, _ in tables], [n for _, n in tables]))
    return {(s, n): float(r) for s, n, r in rows if r is not None and r >= 0}


def _seq_scans(plan: QueryPlan, sizes: Mapping[tuple[str, str], float], t: Thresholds
               ) -> list[Finding]:
    out: list[Finding] = []
    for node, parent, _ in plan.nodes():
        if node.get("Node Type") not in ("Seq Scan", "Parallel Seq Scan") or "Filter" not in node:
            continue
        rel = _node_relation(node)
        if rel is None:
            continue
        table_rows = sizes.get(rel)
        if plan.analyzed and not node.get("Actual Loops"):
            continue  # never executed
        if plan.analyzed:
            kept = float(node.get("Actual Rows", 0))
            removed = float(node.get("Rows Removed by Filter", 0))
            scanned = kept + removed
            if scanned <= 0:
                continue
            share = removed / scanned
            size = table_rows if table_rows is not None else scanned * float(node["Actual Loops"])
            loops = float(node["Actual Loops"])
            per = " per loop" if loops > 1 else ""
            evidence = (f"{_label(node)}: Filter {node['Filter']} removed {_num(removed)} of "
                        f"{_num(scanned)} rows{per} ({share:.1%}), keeping {_num(kept)}")
        elif table_rows:
            estimated = float(node.get("Plan Rows", 0))
            if node.get("Node Type") == "Parallel Seq Scan" and parent is not None:
                estimated = float(parent.get("Plan Rows", estimated))
            share = max(0.0, 1.0 - estimated / table_rows)
            size = table_rows
            evidence = (f"{_label(node)}: Filter {node['Filter']} is estimated to keep "
                        f"{_num(estimated)} of ≈{_num(table_rows)} rows ({share:.1%} removed)")
        else:
            continue
        if size < t.large_table_rows or share < t.filter_removed_share:
            continue
        evidence += f"; the table has ≈{_num(size)} rows."
        eq, rng = _filter_columns(str(node["Filter"]), _qualifiers(node))
        columns = _index_columns(eq, rng)
        suggestion = (f"An index on {rel[0]}.{rel[1]} ({', '.join(columns)}) lets PostgreSQL read "
                      "only the matching rows." if columns else
                      "Rewrite the condition so an index can serve it (compare plain columns "
                      "with constants), then index those columns.")
        out.append(Finding("seq_scan", "high", f"Sequential scan of {rel[0]}.{rel[1]} keeps "
                           f"{1 - share:.1%} of the rows it reads", evidence, suggestion,
                           rel[0], rel[1], columns, plan.query, _label(node)))
    return out


def _estimates(plan: QueryPlan, t: Thresholds) -> list[Finding]:
    def off(node: Mapping[str, Any]) -> float | None:
        if not node.get("Actual Loops"):
            return None
        est, act = float(node.get("Plan Rows", 0)), float(node.get("Actual Rows", 0))
        if max(est, act) < t.estimate_min_rows:
            return None
        ratio = max(est, act) / max(min(est, act), 1.0)
        return ratio if ratio > t.estimate_factor else None

    out: list[Finding] = []
    for node, _, _ in plan.nodes():
        ratio = off(node)
        if ratio is None or any(off(c) for c in node.get("Plans", ())):
            continue  # only where the misestimate starts, not every node above it
        est, act = float(node.get("Plan Rows", 0)), float(node.get("Actual Rows", 0))
        rel = _node_relation(node)
        direction = "under" if act > est else "over"
        cond = node.get("Filter") or node.get("Index Cond") or node.get("Hash Cond")
        cols = _filter_columns(str(cond), _qualifiers(node))[0] if cond and rel else []
        if rel and len(cols) > 1:
            suggestion = (f"`ANALYZE {_qualified(*rel)};` and, as the columns are probably "
                          f"correlated, extended statistics: `CREATE STATISTICS ON "
                          f"{', '.join(_ident(c) for c in cols)} FROM {_qualified(*rel)};` then "
                          "ANALYZE again.")
        elif rel:
            suggestion = (f"`ANALYZE {_qualified(*rel)};` and check autovacuum keeps its "
                          "statistics current; raise the column's statistics target if skewed.")
        else:
            suggestion = ("Check the statistics of the tables below this node (ANALYZE); the "
                          "planner chose the join and scan methods from this estimate.")
        out.append(Finding(
            "estimate", "medium", f"Row estimate off by {ratio:,.0f}× ({direction}estimated)",
            f"{_label(node)}: estimated {_num(est)} rows, actual {_num(act)}"
            + (f" (condition {cond})" if cond else "") + ".",
            suggestion, rel[0] if rel else None, rel[1] if rel else None, (), plan.query,
            _label(node)))
    return out


def _reads(plan: QueryPlan, t: Thresholds) -> list[Finding]:
    root = plan.plan
    hit = float(root.get("Shared Hit Blocks", 0) or 0)
    read = float(root.get("Shared Read Blocks", 0) or 0)
    if read < t.read_blocks or read / max(hit + read, 1.0) < t.read_share:
        return []
    worst = max((n for n, _, _ in plan.nodes()), key=lambda n: _exclusive(n, "Shared Read Blocks"))
    rel = _node_relation(worst)
    return [Finding(
        "shared_reads", "medium",
        f"{read / (hit + read):.0%} of the pages came from outside shared_buffers",
        f"Shared blocks: {_num(read)} read ({_blocks(read)}) vs {_num(hit)} hit; most are read by "
        f"{_label(worst)} ({_num(_exclusive(worst, 'Shared Read Blocks'))} blocks).",
        "Read fewer pages: an index that narrows the scan (see the other findings), or a "
        "covering index; if the working set is simply larger than shared_buffers, consider "
        "more memory for it.",
        rel[0] if rel else None, rel[1] if rel else None, (), plan.query, _label(worst))]


def _temp_files(plan: QueryPlan) -> list[Finding]:
    out: list[Finding] = []
    for node, _, _ in plan.nodes():
        written = _exclusive(node, "Temp Written Blocks")
        if written <= 0:
            continue
        how = []
        if node.get("Sort Method"):
            how.append(f"Sort Method: {node['Sort Method']}"
                       + (f", {node.get('Sort Space Type')}: {_num(node.get('Sort Space Used'))} kB"
                          if node.get("Sort Space Used") else ""))
        if node.get("Hash Batches", 1) and int(node.get("Hash Batches", 1)) > 1:
            how.append(f"Hash Batches: {node['Hash Batches']} (planned "
                       f"{node.get('Original Hash Batches', '?')})")
        key = node.get("Sort Key")
        rel = _sorted_relation(node)
        out.append(Finding(
            "temp_files", "medium", f"{_label(node)} spilled {_blocks(written)} to temp files",
            f"{_label(node)} wrote {_num(written)} temp blocks ({_blocks(written)})"
            + (f"; {'; '.join(how)}" if how else "") + ".",
            "Give the query more work_mem (per role or per transaction: `SET LOCAL work_mem = "
            "'64MB'`) or, for a sort, an index that returns the rows already in order"
            + (f" ({', '.join(key)})" if key else "") + ".",
            rel[0] if rel else None, rel[1] if rel else None, (), plan.query, _label(node)))
    return out


def _sorted_relation(node: Mapping[str, Any]) -> tuple[str, str] | None:
    for child, _, _ in plan_nodes(node):
        rel = _node_relation(child)
        if rel:
            return rel
    return None


def _inner_scan(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    children = node.get("Plans", ())
    inner = next((c for c in children if c.get("Parent Relationship") == "Inner"), None)
    while inner is not None and inner.get("Node Type") in ("Materialize", "Memoize") and inner.get("Plans"):
        inner = inner["Plans"][0]
    return inner


def _nested_loops(plan: QueryPlan, t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    for node, _, _ in plan.nodes():
        if node.get("Node Type") != "Nested Loop":
            continue
        inner = _inner_scan(node)
        direct = next((c for c in node.get("Plans", ()) if c.get("Parent Relationship") == "Inner"),
                      None)
        outer = next((c for c in node.get("Plans", ()) if c.get("Parent Relationship") == "Outer"),
                     None)
        if inner is None or direct is None or outer is None:
            continue
        if plan.analyzed:
            if not node.get("Actual Loops"):
                continue
            loops = float(direct.get("Actual Loops", 0))
            what = f"ran {_num(loops)} times"
        else:
            loops = float(outer.get("Plan Rows", 0))
            what = f"is estimated to run {_num(loops)} times"
        if loops < t.nested_loop_iterations:
            continue
        rel = _node_relation(inner)
        seq = inner.get("Node Type") in ("Seq Scan", "Parallel Seq Scan")
        columns: tuple[str, ...] = ()
        if seq and rel:
            cond = " AND ".join(str(c) for c in (node.get("Join Filter"), inner.get("Filter")) if c)
            eq, _ = _filter_columns(cond, _qualifiers(inner), join=True)
            eq2, rng = _filter_columns(str(inner.get("Filter", "")), _qualifiers(inner))
            columns = _index_columns([*eq, *(c for c in eq2 if c not in eq)], rng)
        suggestion = (f"Index the join column(s) of {rel[0]}.{rel[1]} ({', '.join(columns)}) so "
                      "each iteration is an index lookup." if columns and rel else
                      "Check the outer side's row estimate: with a good estimate the planner "
                      "would pick a hash or merge join for this many rows.")
        out.append(Finding(
            "nested_loop", "high" if seq else "medium",
            f"Nested loop runs its inner side {_num(loops)} times",
            f"{_label(node)}: inner {_label(inner)} {what} (outer side {_label(outer)}, "
            f"est. {_num(outer.get('Plan Rows'))} rows"
            + (f", actual {_num(outer.get('Actual Rows'))}" if "Actual Rows" in outer else "")
            + ")" + (f"; Join Filter {node['Join Filter']}" if node.get("Join Filter") else "")
            + ".", suggestion, rel[0] if rel else None, rel[1] if rel else None, columns,
            plan.query, _label(node)))
    return out


# --------------------------------------------------------------------------- catalog findings


def _in_tables(alias: str) -> str:
    """`alias` (a pg_class row) is one of the %(schemas)s/%(names)s pairs."""
    return (f"{alias}.oid IN (SELECT to_regclass(format('%%I.%%I', t.s, t.n)) "
            "FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS t(s, n))")


def _table_filter(tables: Sequence[tuple[str, str]] | None, *aliases: str,
                  platform: bool = False) -> tuple[str, dict[str, Any]]:
    """An SQL condition: `n` is a user schema (with `platform`, Supabase's platform schemas
    count as user schemas too) and, when `tables` is given, one of `aliases` is among them."""
    params: dict[str, Any] = {}
    cond = user_schemas_sql("n.nspname", platform=platform)
    if tables is not None:
        params |= {"schemas": [s for s, _ in tables], "names": [n for _, n in tables]}
        cond += " AND (" + " OR ".join(_in_tables(a) for a in aliases or ("c",)) + ")"
    return cond, params


def missing_fk_indexes(conn: psycopg.Connection[Any],
                       tables: Sequence[tuple[str, str]] | None = None) -> list[Finding]:
    """Foreign keys (on `tables`, or referencing them) whose columns lead no valid index."""
    cond, params = _table_filter(tables, "c", "r")
    rows = _rows(conn, f"""
        SELECT n.nspname, c.relname, k.conname,
               (SELECT format('%%I.%%I', rn.nspname, r.relname) FROM pg_namespace rn
                WHERE rn.oid = r.relnamespace),
               array(SELECT a.attname::text
                     FROM unnest(k.conkey) WITH ORDINALITY u(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                     ORDER BY u.ord),
               c.reltuples
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class r ON r.oid = k.confrelid
        WHERE k.contype = 'f' AND k.conparentid = 0 AND {cond}
          AND NOT EXISTS (
              SELECT 1 FROM pg_index i
              WHERE i.indrelid = k.conrelid AND i.indisvalid AND i.indpred IS NULL
                AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)]
                    @> k.conkey)
        ORDER BY 1, 2, 3""", params)
    return [Finding(
        "fk_index", "medium", f"Foreign key {schema}.{table}.{name} has no index",
        f"{schema}.{table} ({', '.join(cols)}) references {ref}; no valid index starts with "
        "these columns (" + (f"the table has ≈{_num(size)} rows)." if size is not None and size >= 0
                             else "the table was never analysed)."),
        f"Index {schema}.{table} ({', '.join(cols)}): joins on the key and every DELETE or key "
        f"UPDATE on {ref} otherwise scan {schema}.{table}.",
        schema, table, tuple(cols)) for schema, table, name, ref, cols, size in rows]


def _stats_reset(conn: psycopg.Connection[Any]) -> datetime | None:
    rows = _rows(conn, "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
    return rows[0][0] if rows else None


def unused_indexes(conn: psycopg.Connection[Any],
                   tables: Sequence[tuple[str, str]] | None = None) -> list[Finding]:
    """Indexes never scanned since the statistics were reset (not unique, not a constraint's,
    not the one supporting a foreign key)."""
    cond, params = _table_filter(tables)
    rows = _rows(conn, f"""
        SELECT n.nspname, c.relname, ic.relname, pg_relation_size(i.indexrelid),
               pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
        WHERE s.idx_scan = 0 AND i.indisvalid AND NOT i.indisunique AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
          AND NOT EXISTS (
              SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = i.indrelid
                AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)]
                    @> k.conkey)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = i.indexrelid AND d.deptype = 'e')
          AND {cond}
        ORDER BY 4 DESC, 1, 3""", params)
    since = _stats_reset(conn)
    when = f"since {since:%Y-%m-%d %H:%M %Z}" if since else "since the statistics were last reset"
    return [Finding(
        "unused_index", "low", f"Index {schema}.{index} is never used",
        f"{schema}.{index} on {schema}.{table} has 0 scans {when} ({_blocks(size / 8192)}): "
        f"{definition}.",
        f"Every write to {schema}.{table} maintains it. If no replica uses it either: "
        f"`DROP INDEX CONCURRENTLY {_qualified(schema, index)};`.",
        schema, table) for schema, table, index, size, definition in rows]


def duplicate_indexes(conn: psycopg.Connection[Any],
                      tables: Sequence[tuple[str, str]] | None = None) -> list[Finding]:
    """Indexes another index makes redundant: the same definition, or (btree, not unique) a
    leading prefix of another's columns."""
    cond, params = _table_filter(tables)
    rows = _rows(conn, f"""
        WITH x AS (
            SELECT i.indexrelid, i.indrelid, i.indisunique, i.indnkeyatts, i.indnatts,
                   string_to_array(i.indkey::text, ' ')::int2[] AS keys,
                   string_to_array(i.indclass::text, ' ')::oid[] AS classes,
                   string_to_array(i.indcollation::text, ' ')::oid[] AS colls,
                   string_to_array(i.indoption::text, ' ')::int2[] AS opts,
                   ic.relam, ic.relname AS index_name,
                   EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS con
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND {cond}
        )
        SELECT n.nspname, c.relname, a.index_name, b.index_name,
               a.keys = b.keys AND a.indnatts = b.indnatts AS same,
               pg_get_indexdef(a.indexrelid), pg_get_indexdef(b.indexrelid),
               pg_relation_size(a.indexrelid)
        FROM x a JOIN x b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid
             AND a.relam = b.relam
        JOIN pg_class c ON c.oid = a.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT a.con AND (
            (a.keys = b.keys AND a.classes = b.classes AND a.colls = b.colls AND a.opts = b.opts
             AND a.indnatts = b.indnatts
             AND (b.con OR (b.indisunique AND NOT a.indisunique)
                  OR (a.indisunique = b.indisunique AND a.indexrelid > b.indexrelid)))
            OR (a.relam = (SELECT oid FROM pg_am WHERE amname = 'btree') AND NOT a.indisunique
                AND a.indnatts = a.indnkeyatts AND a.indnkeyatts < b.indnkeyatts
                AND a.keys = b.keys[1:a.indnkeyatts] AND a.classes = b.classes[1:a.indnkeyatts]
                AND a.colls = b.colls[1:a.indnkeyatts] AND a.opts = b.opts[1:a.indnkeyatts]))
        ORDER BY 1, 2, 3, 4""", params)
    out: list[Finding] = []
    seen: set[str] = set()
    for schema, table, index, other, same, definition, other_def, size in rows:
        if index in seen:
            continue
        seen.add(index)
        how = "duplicates" if same else "is a leading prefix of"
        out.append(Finding(
            "duplicate_index", "low", f"Index {schema}.{index} {how} {schema}.{other}",
            f"{definition} {how} {other_def} ({_blocks(size / 8192)} that every write maintains).",
            f"{schema}.{other} serves the same lookups: "
            f"`DROP INDEX CONCURRENTLY {_qualified(schema, index)};`.",
            schema, table))
    return out


def rls_per_row_calls(conn: psycopg.Connection[Any],
                      tables: Sequence[tuple[str, str]] | None = None) -> list[Finding]:
    """RLS policies that call auth.uid() (or auth.jwt(), auth.role(), auth.email()) directly:
    evaluated for every row, where `(select auth.uid())` is evaluated once per statement."""
    cond, params = _table_filter(tables, platform=True)  # storage.objects has user policies
    with conn.transaction(force_rollback=True):
        # With only pg_catalog on the search path, pg_get_expr qualifies every function.
        conn.execute("SET LOCAL search_path = pg_catalog", prepare=False)
        rows = conn.execute(_TAG + f"""
            SELECT n.nspname, c.relname, p.polname, p.polcmd::text,
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {cond} AND (pg_get_expr(p.polqual, p.polrelid) ~ 'auth\\.'
                              OR pg_get_expr(p.polwithcheck, p.polrelid) ~ 'auth\\.')
            ORDER BY 1, 2, 3""", params, prepare=False).fetchall()
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    out: list[Finding] = []
    for schema, table, policy, cmd, using, check in rows:
        calls = sorted({*_per_row_auth_calls(using), *_per_row_auth_calls(check)})
        if not calls:
            continue
        parts = []
        if using and _per_row_auth_calls(using):
            parts.append(f"USING ({_wrap_auth(using)})")
        if check and _per_row_auth_calls(check):
            parts.append(f"WITH CHECK ({_wrap_auth(check)})")
        shown = " / ".join(f"{label} {expr}" for label, expr in (("USING", using), ("WITH CHECK", check))
                           if expr)
        names = ", ".join(f"auth.{c}()" for c in calls)
        out.append(Finding(
            "rls_per_row", "medium", f"Policy {policy} on {schema}.{table} calls {names} per row",
            f"{commands.get(cmd, cmd)} policy {policy} on {schema}.{table}: {shown}; {names} is "
            "not wrapped in a sub-select, so it is evaluated for every row the policy checks.",
            f"`ALTER POLICY {_ident(policy)} ON {_qualified(schema, table)} {' '.join(parts)};` "
            f"— `(select auth.uid())` is evaluated once per statement (an InitPlan).",
            schema, table))
    return out


def _per_row_auth_calls(expr: str | None) -> list[str]:
    """auth.* functions called outside any sub-select in a policy expression."""
    if not expr:
        return []
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        stmt: Any = parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt
        where: Any = stmt.whereClause
    except ParseError:
        return [m.group(1) for m in _UNWRAPPED_AUTH.finditer(expr)]
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, ast.SubLink):
            return
        if isinstance(node, ast.FuncCall):
            parts = _names(node.funcname)
            if len(parts) == 2 and parts[0] == "auth" and parts[1] in _AUTH_FUNCTIONS:
                found.append(parts[1])
        if isinstance(node, ast.Node):
            for attr in type(node).__slots__:  # type: ignore[attr-defined]
                visit(getattr(node, attr, None))
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)

    visit(where)
    return found


def _wrap_auth(expr: str) -> str:
    return _UNWRAPPED_AUTH.sub(lambda m: f"(SELECT auth.{m.group(1)}())", expr)


def schema_issues(conn: psycopg.Connection[Any]) -> list[Finding]:
    """The catalog findings for the whole database (user schemas)."""
    return [*missing_fk_indexes(conn), *unused_indexes(conn), *duplicate_indexes(conn),
            *rls_per_row_calls(conn)]


# --------------------------------------------------------------------------- index advice


def index_sql(schema: str, table: str, columns: Sequence[str]) -> str:
    """`CREATE INDEX CONCURRENTLY <table>_<cols>_idx ON schema.table (cols);`"""
    name = "_".join([table, *columns, "idx"])
    if len(name.encode()) > 63:
        name = name.encode()[:55].decode(errors="ignore").rstrip("_") + "_" + uuid.uuid5(
            uuid.NAMESPACE_OID, name).hex[:6] + "_idx"
    return (f"CREATE INDEX CONCURRENTLY {_ident(name)} ON {_qualified(schema, table)} "
            f"({', '.join(_ident(c) for c in columns)});")


def _covering_index(conn: psycopg.Connection[Any], schema: str, table: str,
                    columns: Sequence[str]) -> str | None:
    rows = _rows(conn, """
        SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(%(rel)s) AND i.indisvalid AND i.indpred IS NULL
          AND (string_to_array(i.indkey::text, ' ')::int2[])[1:%(k)s] = ARRAY(
              SELECT a.attnum FROM unnest(%(cols)s::text[]) WITH ORDINALITY u(col, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = u.col
              ORDER BY u.ord)::int2[]
        LIMIT 1""", {"rel": _qualified(schema, table), "k": len(columns), "cols": list(columns)})
    return str(rows[0][0]) if rows else None


def _hypopg_status(conn: psycopg.Connection[Any], create_extension: bool
                   ) -> tuple[HypopgStatus, str | None, str]:
    schema = _extension_schema(conn, "hypopg")
    failure = ""
    if schema is None and create_extension and _extension_available(conn, "hypopg"):
        try:
            _create_extension(conn, "hypopg")
        except HotpathsError as exc:
            failure = f" ({exc.message})"
        schema = _extension_schema(conn, "hypopg")
    if schema is not None:
        return "used", schema, "Verified with hypopg: hypothetical indexes, plain EXPLAIN, no index built."
    if _extension_available(conn, "hypopg"):
        return ("not_created", None, "hypopg is available on this server but not created in this "
                f"database{failure}, so the recommendations are unverified rules: `create "
                "extension hypopg;` (as a role allowed to) lets the next analysis try each one.")
    major = conn.info.server_version // 10000
    return ("not_installed", None, "hypopg is not installed on this server, so the "
            "recommendations are unverified rules (install it: Debian/Ubuntu package "
            f"postgresql-{major}-hypopg; on Supabase `create extension hypopg;`).")


def advise_indexes(conn: psycopg.Connection[Any], findings: Iterable[Finding], *,
                   create_extension: bool = False,
                   statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT) -> IndexAdvisory:
    """Indexes for the findings that name columns, each as `CREATE INDEX CONCURRENTLY ...`.

    With hypopg in the database (or `create_extension=True` and hypopg on the server), each
    candidate of a query is created as a hypothetical index and the query planned again (plain
    EXPLAIN, generic plan for $n): verified when the plan uses it and costs less. Hypothetical
    indexes are dropped again. Without hypopg the candidates are rule-based and unverified.
    """
    groups: dict[tuple[str, str, tuple[str, ...]], list[Finding]] = {}
    for f in findings:
        if f.columns and f.schema and f.table:
            groups.setdefault((f.schema, f.table, f.columns), []).append(f)
    status, hypo_schema, note = _hypopg_status(conn, create_extension and bool(groups))
    advice: list[IndexAdvice] = []
    skipped: list[str] = []
    before_costs: dict[str, float | None] = {}
    for (schema, table, columns), group in groups.items():
        existing = _covering_index(conn, schema, table, columns)
        if existing:
            skipped.append(f"{schema}.{table} ({', '.join(columns)}): {existing} already starts "
                           "with these columns.")
            continue
        queries = tuple(dict.fromkeys(f.query for f in group if f.query))
        reason = "; ".join(dict.fromkeys(f.title for f in group))
        verified, verification, before, after = False, "unverified: " + (
            "rule-based (foreign key)" if not queries else "rule-based (no hypopg)"), None, None
        if hypo_schema and queries:
            verified, verification, before, after = _verify(
                conn, hypo_schema, schema, table, columns, queries, before_costs, statement_timeout)
        advice.append(IndexAdvice(schema, table, columns, index_sql(schema, table, columns), reason,
                                  verified, verification, before, after, queries))
    advice.sort(key=lambda a: (not a.verified, -(a.improvement or 0.0)))
    return IndexAdvisory(status, note, tuple(advice), tuple(skipped))


def _plain_cost(conn: psycopg.Connection[Any], query: str) -> tuple[float, Mapping[str, Any]]:
    facts = statement_facts(query)
    with conn.transaction():
        doc = _explain_doc(conn, facts, ["FORMAT JSON"], None)
    return float(doc["Plan"]["Total Cost"]), doc["Plan"]


def _verify(conn: psycopg.Connection[Any], hypo_schema: str, schema: str, table: str,
            columns: Sequence[str], queries: Sequence[str], before_costs: dict[str, float | None],
            statement_timeout: str) -> tuple[bool, str, float | None, float | None]:
    """Try one candidate with a hypothetical index on each of its queries; keep the best gain."""
    create = f"CREATE INDEX ON {_qualified(schema, table)} ({', '.join(_ident(c) for c in columns)})"
    best: tuple[float, float] | None = None
    unused: tuple[float, float] | None = None
    failure = None
    with conn.transaction(force_rollback=True):
        _settle(conn, statement_timeout, generic=True)
        for query in queries:
            if query not in before_costs:
                try:
                    before_costs[query] = _plain_cost(conn, query)[0]
                except (psycopg.Error, HotpathsError) as exc:
                    before_costs[query] = None
                    failure = exc.message if isinstance(exc, HotpathsError) else _error_text(exc)
            before = before_costs[query]
            if before is None:
                continue
            oid = None
            try:
                with conn.transaction():
                    row = conn.execute(sql.SQL("SELECT indexrelid, indexname FROM {}(%s)").format(
                        sql.Identifier(hypo_schema, "hypopg_create_index")), (create,),
                        prepare=False).fetchone()
                assert row is not None
                oid, index_name = int(row[0]), str(row[1])
                after, plan = _plain_cost(conn, query)
            except (psycopg.Error, HotpathsError) as exc:
                failure = exc.message if isinstance(exc, HotpathsError) else _error_text(exc)
                continue
            finally:
                if oid is not None:
                    with conn.transaction():
                        conn.execute(sql.SQL("SELECT {}(%s)").format(
                            sql.Identifier(hypo_schema, "hypopg_drop_index")), (oid,),
                            prepare=False)
            uses = any(n.get("Index Name") == index_name for n, _, _ in plan_nodes(plan))
            if uses and after < before and (best is None or after / before < best[1] / best[0]):
                best = (before, after)
            elif unused is None:
                unused = (before, after)
    if best:
        before, after = best
        return (True, f"verified with hypopg: plan cost {before:,.2f} → {after:,.2f} "
                f"({1 - after / before:.1%} less)", before, after)
    if unused:
        return (False, f"not confirmed by hypopg: the planner does not use it (cost {unused[0]:,.2f} "
                f"→ {unused[1]:,.2f})", unused[0], unused[1])
    return False, f"unverified: hypopg could not plan it ({failure or 'no query'})", None, None


# --------------------------------------------------------------------------- the whole analysis


def analyze_hotpaths(conn: psycopg.Connection[Any], n: int = 10, *, create_extension: bool = False,
                     analyze: bool = True, statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
                     thresholds: Thresholds | None = None) -> HotpathsReport:
    """Top statements, their plans and findings, catalog findings, and recommended indexes."""
    hot = top_queries(conn, n, create_extension=create_extension)
    analyses: list[QueryAnalysis] = []
    for number, stat in enumerate(hot.statements, start=1):
        try:
            plan = explain_query(conn, stat.query, analyze=analyze,
                                 statement_timeout=statement_timeout)
        except HotpathsError as exc:
            why = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            analyses.append(QueryAnalysis(number, stat, None, (), why))
            continue
        findings = find_issues(plan, conn, catalog=False, thresholds=thresholds)
        analyses.append(QueryAnalysis(number, stat, plan, tuple(findings)))
    schema = tuple(schema_issues(conn))
    indexes = advise_indexes(conn, [*(f for a in analyses for f in a.findings), *schema],
                             create_extension=create_extension,
                             statement_timeout=statement_timeout)
    row = _rows(conn, "SELECT current_database(), current_setting('server_version')")[0]
    report = HotpathsReport(datetime.now(UTC), str(row[0]), str(row[1]), hot, tuple(analyses),
                            schema, indexes, ())
    return HotpathsReport(report.created_at, report.database, report.server_version, hot,
                          report.queries, schema, indexes, _next_steps(report))


def _next_steps(report: HotpathsReport) -> tuple[str, ...]:
    steps: list[str] = []
    if not report.hot.available:
        steps.extend(report.hot.how_to_enable)
    kinds = {f.kind for f in report.findings}
    if report.indexes.advice:
        steps.append("Put each recommended index in a migration file of its own: CREATE INDEX "
                     "CONCURRENTLY does not block writes but cannot run inside a transaction, so "
                     "it must be the only statement of its file. Dry-run it, then apply it.")
        if not any(a.verified for a in report.indexes.advice) and report.indexes.hypopg != "used":
            steps.append(report.indexes.note)
    if "estimate" in kinds:
        steps.append("Refresh the statistics of the tables with misestimates (ANALYZE), and "
                     "add extended statistics where filtered columns are correlated.")
    if "temp_files" in kinds:
        steps.append("Raise work_mem for the statements that spill to temp files, for their role "
                     "or per transaction, rather than globally.")
    if "rls_per_row" in kinds:
        steps.append("Rewrite the listed RLS policies with `(select auth.uid())` (a migration of "
                     "ALTER POLICY statements).")
    if kinds & {"unused_index", "duplicate_index"}:
        steps.append("Before dropping an unused or duplicate index, check that no replica uses "
                     "it and that the statistics cover a full business cycle.")
    if report.hot.available:
        steps.append("Once the changes are live and the workload has run again, reset the "
                     "statistics (`select pg_stat_statements_reset();`) and analyse again to "
                     "measure the gain.")
    return tuple(steps)


# --------------------------------------------------------------------------- the report file


def _cell(text: str, limit: int = 90) -> str:
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|").replace("`", "'")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.2f} ms"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _fence(text: str, lang: str = "") -> list[str]:
    ticks = "````" if "```" in text else "```"
    return [f"{ticks}{lang}", text, ticks]


def render_report(report: HotpathsReport) -> str:
    """The report as a Markdown document."""
    hot = report.hot
    out: list[str] = [
        f"# Performance analysis: {report.database}", "",
        f"Generated {report.created_at:%Y-%m-%d %H:%M:%S %Z} on PostgreSQL "
        f"{report.server_version}.", "", "## Summary", ""]
    findings = report.findings
    by_severity = {s: sum(1 for f in findings if f.severity == s) for s in ("high", "medium", "low")}
    verified = sum(1 for a in report.indexes.advice if a.verified)
    if hot.available:
        analysed = sum(1 for q in report.queries if q.plan)
        share = sum(q.stat.share for q in report.queries)
        out.append(f"- {hot.message}")
        out.append(f"- {len(report.queries)} hot statement(s) examined ({analysed} planned), "
                   f"{share:.1%} of the execution time recorded for this database.")
    else:
        out.append(f"- Query statistics are not available: {hot.message}")
    out.append(f"- Findings: {by_severity['high']} high, {by_severity['medium']} medium, "
               f"{by_severity['low']} low.")
    out.append(f"- Recommended indexes: {len(report.indexes.advice)} ({verified} verified with "
               "hypopg).")
    out.append("- No data was changed: statements that may write were only planned (EXPLAIN); "
               "read-only ones ran under EXPLAIN ANALYZE in read-only transactions that were "
               "rolled back.")
    out.append("")
    if not hot.available:
        out += ["## How to enable pg_stat_statements", ""]
        out += [f"{i}. {step}" for i, step in enumerate(hot.how_to_enable, start=1)]
        out.append("")
    else:
        for title, stats in (("Top statements by total time", hot.by_total),
                             ("Top statements by mean time", hot.by_mean)):
            out += [f"## {title}", ""]
            if not stats:
                out += ["No application statements recorded yet.", ""]
                continue
            number = {(q.stat.queryid, q.stat.query): q.number for q in report.queries}
            out += ["| # | calls | total | mean | max | share | statement |",
                    "|---|---:|---:|---:|---:|---:|---|"]
            for s in stats:
                out.append(f"| {number.get((s.queryid, s.query), '')} | {s.calls:,} | "
                           f"{_ms(s.total_ms)} | {_ms(s.mean_ms)} | {_ms(s.max_ms)} | "
                           f"{s.share:.1%} | `{_cell(s.query)}` |")
            out.append("")
    for q in report.queries:
        out += _render_query(q)
    if report.schema_findings:
        out += ["## Schema findings", ""]
        out += _render_findings(report.schema_findings)
    out += ["## Recommended indexes", ""]
    if report.indexes.advice:
        out += [report.indexes.note, ""]
        for i, a in enumerate(report.indexes.advice, start=1):
            out += [f"### {i}. {a.relation} ({', '.join(a.columns)})", ""]
            out += _fence(a.sql, "sql")
            out += ["", f"- Why: {a.reason}.", f"- Check: {a.verification}."]
            helps = [q.number for q in report.queries if q.plan and q.plan.query in a.queries]
            if helps:
                out.append(f"- Helps statement(s): {', '.join(f'#{n}' for n in helps)}.")
            out.append("")
    else:
        out += ["None: no finding calls for a new index.", ""]
    if report.indexes.skipped:
        out += ["Candidates already covered by an existing index:", ""]
        out += [f"- {s}" for s in report.indexes.skipped]
        out.append("")
    out += ["## Next steps", ""]
    out += [f"{i}. {step}" for i, step in enumerate(report.next_steps, start=1)] or ["Nothing to do."]
    out.append("")
    return "\n".join(out)


def _render_query(q: QueryAnalysis) -> list[str]:
    s = q.stat
    out = [f"## Statement #{q.number}", ""]
    out += _fence(s.query, "sql")
    out += ["", f"- {_plural(s.calls, 'call')}, total {_ms(s.total_ms)}, mean {_ms(s.mean_ms)}, max "
            f"{_ms(s.max_ms)}, {s.share:.1%} of the recorded time; {_plural(s.rows, 'row')}; shared "
            f"blocks {s.shared_hit:,} hit / {s.shared_read:,} read; temp blocks written "
            f"{s.temp_written:,}."]
    if q.plan is None:
        out += [f"- No plan: {q.error}", ""]
        return out
    p = q.plan
    how = ("EXPLAIN ANALYZE, rolled back" if p.analyzed else "EXPLAIN only (estimates)")
    out.append(f"- Plan: {how}; {p.explain}.")
    timing = [f"cost {p.total_cost:,.2f}"]
    if p.planning_ms is not None:
        timing.append(f"planning {_ms(p.planning_ms)}")
    if p.execution_ms is not None:
        timing.append(f"execution {_ms(p.execution_ms)}")
    out.append(f"- {', '.join(timing)}.")
    out += [f"- {note}" for note in p.notes]
    out += ["", "Plan:", ""]
    out += _fence("\n".join(plan_outline(p)))
    out.append("")
    if q.findings:
        out += ["Findings:", ""]
        out += _render_findings(q.findings)
    else:
        out += ["Findings: none.", ""]
    return out


def _render_findings(findings: Sequence[Finding]) -> list[str]:
    out: list[str] = []
    for f in findings:
        out.append(f"- **{f.severity.upper()}: {f.title}**")
        out.append(f"  - Evidence: {f.evidence}")
        out.append(f"  - Suggestion: {f.suggestion}")
    out.append("")
    return out


def write_report(report: HotpathsReport, dest_dir: Path) -> Path:
    """Write `performance-analysis-{TS}.md` (TS: the report's UTC time, YYYYMMDDHHMMSS) into
    `dest_dir`, creating the folder; an existing file is never overwritten (-2, -3, ...)."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HotpathsError(f"Cannot create {dest_dir}: {exc.strerror or exc}") from None
    stamp = report.created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    text = render_report(report)
    for attempt in range(1, 100):
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = dest_dir / f"performance-analysis-{stamp}{suffix}.md"
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise HotpathsError(f"Cannot write {path}: {exc.strerror or exc}") from None
    raise HotpathsError(f"Too many reports with timestamp {stamp} in {dest_dir}.")
