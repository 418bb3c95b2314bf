"""Rollback without data loss: reverse DDL from a semantic diff, and targeted data saves.

The original procedure re-ran the schema-only `--clean` snapshot, which drops and re-creates
every table empty. dbsage never does that. Instead:

- `reverse_ddl` diffs two live databases with `results` (the successor of migra) and returns
  the DDL that turns the after-schema back into the before-schema;
- `prepare_rollback` writes that script to `supabase/rollback/{TS}_rollback.sql` at apply
  time (restoring both snapshots into scratch databases), unless the user wrote one;
- `destructive_targets` + `save_data` keep exactly the data a migration destroys, and
  `restore_data` loads it back after the reverse DDL has put the columns/tables back;
- `apply_rollback` runs reverse DDL, data restore and history in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from psycopg import sql

from dbsage.tools.catalog import BOOKKEEPING_SCHEMAS
from dbsage.tools.errors import DbsageError, ExitCode, StatementFailure
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    execute_statement,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.sqlfile import DATA_DESTROYING_KINDS, MigrationFile, Statement

if TYPE_CHECKING:
    import psycopg

SCRATCH_PREFIX = "dbsage_scratch_"
AFTER_DATA_MARKER = "-- dbsage:after-data-restore"
MANIFEST = "manifest.json"
_TS = re.compile(r"^\d{14}$")
_PUBLIC_GRANTEE = re.compile(r'\b(to|from) "PUBLIC"$')
_MARKER_LINE = re.compile(rf"^{re.escape(AFTER_DATA_MARKER)}.*$", re.MULTILINE)
# Statement kinds that lose rows when a rollback script runs them (for rows_at_stake).
_LOSING_REASONS = ("drop table", "drop column", "truncate")


class RollbackError(DbsageError):
    """A rollback cannot be planned or run."""


class InvalidTimestampError(RollbackError):
    """The rollback target is not the TS of an applied migration (or looks like a path)."""

    exit_code = ExitCode.USAGE


class ScratchDatabaseError(RollbackError):
    """A scratch database could not be created, restored or dropped."""


class DataRestoreError(RollbackError):
    """Saved data cannot be written or loaded back."""


class RollbackFailedError(RollbackError):
    """A rollback statement failed; the whole rollback transaction was rolled back."""


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataTarget:
    """Data a statement destroys: a whole table (`columns is None`) or some of its columns."""

    schema: str | None  # None: unqualified, resolved through search_path
    table: str
    columns: tuple[str, ...] | None
    reason: str  # "drop table", "drop column", "alter column type", "truncate", ...
    line: int = 0

    @property
    def label(self) -> str:
        name = f"{self.schema}.{self.table}" if self.schema else self.table
        return name if self.columns is None else f"{name}({', '.join(self.columns)})"


@dataclass(frozen=True)
class SavedData:
    """One CSV file of saved data and what it holds."""

    schema: str
    table: str
    columns: tuple[str, ...]  # in the CSV's order; key columns first
    key_columns: tuple[str, ...]  # empty when the table has no primary key / usable unique key
    whole_table: bool
    rows: int
    file: Path
    reasons: tuple[str, ...] = ()

    @property
    def restored_columns(self) -> tuple[str, ...]:
        """The columns a column restore writes (everything but the key)."""
        return tuple(c for c in self.columns if c not in self.key_columns)

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "columns": list(self.columns),
                "key_columns": list(self.key_columns), "whole_table": self.whole_table,
                "rows": self.rows, "file": self.file.name, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class RestoredData:
    """How many saved rows went back into the table."""

    saved: SavedData
    rows: int


@dataclass(frozen=True)
class Loss:
    """Rows a rollback would destroy."""

    schema: str
    table: str
    column: str | None
    rows: int
    reason: str

    def describe(self) -> str:
        if self.column is None:
            verb = "truncates" if self.reason == "truncate" else "drops table"
            return f"rollback {verb} {self.schema}.{self.table} with {self.rows} rows"
        return (f"rollback drops column {self.schema}.{self.table}.{self.column} "
                f"holding {self.rows} non-null values")


@dataclass(frozen=True)
class ReverseScript:
    """Reverse DDL: `statements` run first, saved data is restored, then `deferred` run."""

    statements: tuple[Statement, ...]
    deferred: tuple[Statement, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "results"  # "results" (computed) or a file path

    @property
    def empty(self) -> bool:
        return not (self.statements or self.deferred)

    @property
    def all_statements(self) -> tuple[Statement, ...]:
        return self.statements + self.deferred

    def render(self, title: str = "") -> str:
        """The script as a file: statements, the after-data marker, deferred statements."""
        head = [f"-- dbsage rollback{(' of ' + title) if title else ''}: reverse DDL from the "
                "after-schema to the before-schema (computed with `results`).",
                "-- Edit it freely: dbsage never overwrites an existing rollback file."]
        head += [f"-- warning: {w}" for w in self.warnings]
        body = [s.sql + ";" for s in self.statements] or ["-- (no schema change to undo)"]
        text = "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"
        if self.deferred:
            text += (f"\n{AFTER_DATA_MARKER} (run after saved data is loaded back)\n\n"
                     + "\n\n".join(s.sql + ";" for s in self.deferred) + "\n")
        return text

    @property
    def checksum(self) -> str:
        text = "\n".join(s.sql for s in self.all_statements)
        return hashlib.sha256(text.encode()).hexdigest()

    def losing_targets(self) -> list[DataTarget]:
        """Tables and columns the script drops or truncates."""
        return [t for t in _targets_of_statements(self.all_statements)
                if t.reason in _LOSING_REASONS]


@dataclass(frozen=True)
class PrepareResult:
    """The rollback file of one apply run."""

    path: Path
    user_written: bool  # True: the user's own file was there and was left untouched
    script: ReverseScript | None
    duration_s: float


@dataclass(frozen=True)
class RollbackResult:
    """A committed rollback."""

    version: str
    name: str
    statements: int
    restored: list[RestoredData]
    duration_s: float
    attempts: int = 1  # more than one: a lock timeout rolled the transaction back and retried

    @property
    def rows_restored(self) -> int:
        return sum(r.rows for r in self.restored)


# ---------------------------------------------------------------------------------------------
# Reverse DDL (results)
# ---------------------------------------------------------------------------------------------


def reverse_ddl(conn_url_after: str, conn_url_before: str, *,
                exclude_schemas: Sequence[str] = BOOKKEEPING_SCHEMAS) -> ReverseScript:
    """The DDL that turns the after-database's schema into the before-database's.

    Both are live databases (a scratch database restored from a snapshot works). The diff
    comes from `results.dbdiff.Migration` with dependency-ordered output; columns that come
    back NOT NULL without a default are added nullable and set NOT NULL after the data restore.
    """
    import psycopg
    from results.dbdiff import Migration

    with psycopg.connect(conn_url_after) as after, psycopg.connect(conn_url_before) as before:
        i_after = _inspect(after, exclude_schemas)
        i_before = _inspect(before, exclude_schemas)
        migration = Migration(i_after, i_before)
        migration.set_safety(False)
        migration.add_all_changes_ordered(privileges=True)  # pg_dump snapshots hold GRANTs
        raw = [str(s) for s in migration.statements]
    main, deferred = _split_not_null(_fix_privileges(_parse("\n\n".join(raw))))
    script = ReverseScript(tuple(main), tuple(deferred))
    return ReverseScript(script.statements, script.deferred, _order_warnings(script, i_before))


def _inspect(conn: psycopg.Connection, exclude: Sequence[str]) -> Any:
    """A results inspector of `conn` without the bookkeeping schemas."""
    from results.schemainspect import PostgreSQL
    from results.schemainspect.pg.obj import PROPS

    inspector = PostgreSQL(conn.cursor())
    for prop in PROPS.split():
        kept = {k: v for k, v in getattr(inspector, prop).items()
                if getattr(v, "schema", None) not in exclude}
        setattr(inspector, prop, kept)
    return inspector


def _parse(text: str, path: str = "<reverse ddl>") -> list[Statement]:
    from pglast import parse_sql

    from dbsage.tools.sqlfile import parse_statements

    if not parse_sql(text):
        return []
    return list(parse_statements(text, path)[0])


def _fix_privileges(stmts: list[Statement]) -> list[Statement]:
    """Work around two flaws of results' table privileges.

    It writes the PUBLIC grantee as the role `"PUBLIC"` (no such role), and it revokes
    privileges on tables after dropping them.
    """
    dropped = {(t.schema or "public", t.table) for t in _targets_of_statements(stmts)
               if t.reason == "drop table"}
    out: list[str] = []
    for s in stmts:
        if s.kind == "GrantStmt" and not s.node.is_grant and s.node.objtype.name == "OBJECT_TABLE" \
                and all((rv.schemaname or "public", rv.relname) in dropped
                        for rv in s.node.objects):
            continue
        out.append(_PUBLIC_GRANTEE.sub(r"\1 PUBLIC", s.sql) if s.kind == "GrantStmt" else s.sql)
    return _reparse(out)


def _split_not_null(stmts: list[Statement]) -> tuple[list[Statement], list[Statement]]:
    """Make `ADD COLUMN c T NOT NULL` (no default) nullable; SET NOT NULL after the data."""
    from pglast.stream import RawStream

    main: list[str] = []
    deferred: list[str] = []
    for s in stmts:
        node = s.node
        if s.kind == "VariableSetStmt" and not node.is_local:
            node.is_local = True  # `set check_function_bodies = off` must not outlive the tx
            main.append(RawStream()(node))
            continue
        col = _not_null_added_column(s)
        if col is None:
            main.append(s.sql)
            continue
        coldef = node.cmds[0].def_
        coldef.constraints = tuple(c for c in coldef.constraints
                                   if c.contype.name != "CONSTR_NOTNULL") or None
        main.append(RawStream()(node))
        rel = _rangevar_sql(node.relation)
        deferred.append(f"ALTER TABLE {rel} ALTER COLUMN {_ident(col)} SET NOT NULL")
    return _reparse(main), _reparse(deferred)


def _reparse(parts: list[str]) -> list[Statement]:
    return _parse(";\n\n".join(parts) + ";") if parts else []


def _not_null_added_column(s: Statement) -> str | None:
    """The column name when `s` is a lone ADD COLUMN ... NOT NULL with no default/identity."""
    if s.kind != "AlterTableStmt" or len(s.node.cmds or ()) != 1:
        return None
    cmd = s.node.cmds[0]
    if cmd.subtype.name != "AT_AddColumn":
        return None
    kinds = {c.contype.name for c in (cmd.def_.constraints or ())}
    if "CONSTR_NOTNULL" not in kinds or kinds & {"CONSTR_DEFAULT", "CONSTR_IDENTITY",
                                                  "CONSTR_GENERATED", "CONSTR_PRIMARY"}:
        return None
    return str(cmd.def_.colname)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rangevar_sql(rv: Any) -> str:
    return (f"{_ident(rv.schemaname)}." if rv.schemaname else "") + _ident(rv.relname)


def _order_warnings(script: ReverseScript, i_before: Any) -> tuple[str, ...]:
    """Columns that come back at the end of their table although they were not last."""
    warnings = []
    for s in script.statements:
        if s.kind != "AlterTableStmt":
            continue
        rv = s.node.relation
        for cmd in s.node.cmds or ():
            if cmd.subtype.name != "AT_AddColumn":
                continue
            key = f"{_ident(rv.schemaname or 'public')}.{_ident(rv.relname)}"
            table = i_before.tables.get(key)
            names = list(table.columns) if table is not None else []
            col = str(cmd.def_.colname)
            if col in names and names[-1] != col:
                warnings.append(
                    f"column {rv.relname}.{col} comes back as the last column (it was column "
                    f"{names.index(col) + 1} of {len(names)}): PostgreSQL cannot insert a "
                    "column in the middle, so the schema differs in column order only.")
    return tuple(warnings)


def read_rollback_script(path: Path) -> ReverseScript:
    """Parse a rollback file (generated or the user's); the after-data marker is honoured."""
    text = path.read_text(encoding="utf-8")
    parts = _MARKER_LINE.split(text, maxsplit=1)
    main = _parse(parts[0], str(path))
    deferred = _parse(parts[1], str(path)) if len(parts) > 1 else []
    return ReverseScript(tuple(main), tuple(deferred), source=str(path))


# ---------------------------------------------------------------------------------------------
# Scratch databases
# ---------------------------------------------------------------------------------------------


def _with_dbname(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new empty database on the target's server, dropped on exit whatever happens."""
    import psycopg

    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                sql.Identifier(name)))
    except psycopg.Error as exc:
        raise ScratchDatabaseError(
            f"Could not create the scratch database {name}: {exc}",
            hint="The role needs CREATEDB to compute a rollback; or write "
            "supabase/rollback/{TS}_rollback.sql yourself.") from exc
    try:
        yield _with_dbname(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def restore_snapshot(url: str, snapshot: Path, server_major: int) -> None:
    """Load a schema snapshot into `url` (a scratch database) with psql, stopping on error."""
    from dbsage.tools.binaries import find_psql
    from dbsage.tools.connection import redact

    # One transaction: a scratch restore needs no per-statement commit (and fsync).
    cmd = [str(find_psql(server_major)), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", url,
           "-f", str(snapshot)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ScratchDatabaseError(
            f"Restoring {snapshot.name} into a scratch database failed: "
            f"{redact(proc.stderr.strip())}",
            hint="The snapshot must come from this server; check that its roles and "
            "extensions exist here.")


def prepare_rollback(url: str, before_snapshot: Path, after_snapshot: Path, dest: Path, *,
                     server_major: int) -> PrepareResult:
    """Write the reverse DDL of one apply to `dest`, unless a file is already there.

    Both snapshots are restored into scratch databases on the target's server and diffed
    there; the target itself is only used to create and drop them.
    """
    started = time.perf_counter()
    if dest.exists():
        return PrepareResult(dest, True, None, time.perf_counter() - started)
    with scratch_database(url) as before_url, scratch_database(url) as after_url:
        restore_snapshot(before_url, before_snapshot, server_major)
        restore_snapshot(after_url, after_snapshot, server_major)
        script = reverse_ddl(after_url, before_url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with dest.open("x", encoding="utf-8") as f:
            f.write(script.render(before_snapshot.name.removesuffix("_before.sql")))
    except FileExistsError:  # the user wrote one meanwhile: theirs wins
        return PrepareResult(dest, True, None, time.perf_counter() - started)
    return PrepareResult(dest, False, script, time.perf_counter() - started)


def plan_from_snapshot(url: str, snapshot: Path, *, server_major: int) -> ReverseScript:
    """Reverse DDL from the live target back to a `*_before.sql` snapshot.

    The snapshot is restored into a scratch database, never run on the target.
    """
    if not snapshot.name.endswith("_before.sql") or not snapshot.is_file():
        raise InvalidTimestampError(
            f"{snapshot}: not an existing *_before.sql snapshot.",
            hint="Give a 14-digit TS, `latest`, or the path of a supabase/snapshots/"
            "{TS}_before.sql file.")
    with scratch_database(url) as before_url:
        restore_snapshot(before_url, snapshot, server_major)
        script = reverse_ddl(url, before_url)
    return ReverseScript(script.statements, script.deferred, script.warnings, str(snapshot))


# ---------------------------------------------------------------------------------------------
# Which data a migration destroys
# ---------------------------------------------------------------------------------------------


def destructive_targets(migration: MigrationFile) -> list[DataTarget]:
    """Tables and columns whose data the migration's statements destroy.

    DROP TABLE, ALTER TABLE DROP COLUMN / ALTER COLUMN TYPE, TRUNCATE, any DELETE and UPDATE
    without WHERE. Not covered: DROP SCHEMA ... CASCADE, DML inside CTEs or functions.
    """
    return _targets_of_statements(migration.statements)


def _targets_of_statements(stmts: Iterable[Statement]) -> list[DataTarget]:
    out: list[DataTarget] = []
    for s in stmts:
        out.extend(_targets_of(s.node, s.line))
    return out


def _rv(rv: Any, columns: tuple[str, ...] | None, reason: str, line: int) -> DataTarget:
    return DataTarget(rv.schemaname or None, str(rv.relname), columns, reason, line)


def _targets_of(node: Any, line: int) -> list[DataTarget]:
    kind = type(node).__name__
    if kind not in DATA_DESTROYING_KINDS:
        return []
    if kind == "DropStmt" and node.removeType.name == "OBJECT_TABLE":
        names = [[str(p.sval) for p in obj] for obj in node.objects]
        return [DataTarget(n[-2] if len(n) > 1 else None, n[-1], None, "drop table", line)
                for n in names]
    if kind == "AlterTableStmt" and node.objtype.name == "OBJECT_TABLE":
        reasons = {"AT_DropColumn": "drop column", "AT_AlterColumnType": "alter column type"}
        return [_rv(node.relation, (str(c.name),), reasons[c.subtype.name], line)
                for c in node.cmds or () if c.subtype.name in reasons]
    if kind == "TruncateStmt":
        return [_rv(rv, None, "truncate", line) for rv in node.relations]
    if kind == "DeleteStmt":
        return [_rv(node.relation, None, "delete", line)]
    if kind == "UpdateStmt" and node.whereClause is None:
        cols = tuple(dict.fromkeys(str(t.name) for t in node.targetList))
        return [_rv(node.relation, cols, "update without where", line)]
    return []


# ---------------------------------------------------------------------------------------------
# Saving and restoring data
# ---------------------------------------------------------------------------------------------

_RESOLVE_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')
"""
_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
ORDER BY attnum
"""
# The primary key, else the first unique index whose columns are all NOT NULL.
_KEY_SQL = """
SELECT array_agg(a.attname ORDER BY k.ord)
FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary
HAVING bool_and(a.attnotnull)
ORDER BY i.indisprimary DESC, i.indexrelid
LIMIT 1
"""


def _regclass_text(schema: str | None, table: str) -> str:
    return (f"{_ident(schema)}." if schema else "") + _ident(table)


def _resolve(conn: psycopg.Connection, schema: str | None, table: str) -> tuple[str, str] | None:
    row = conn.execute(_RESOLVE_SQL, (_regclass_text(schema, table),)).fetchone()
    return (row[0], row[1]) if row else None


def _table_columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(_COLUMNS_SQL, (_regclass_text(schema, table),)).fetchall()
    return [r[0] for r in rows]


def _key_columns(conn: psycopg.Connection, schema: str, table: str) -> tuple[str, ...]:
    row = conn.execute(_KEY_SQL, (_regclass_text(schema, table),)).fetchone()
    return tuple(row[0]) if row and row[0] else ()


@dataclass
class _Plan:
    schema: str
    table: str
    columns: set[str] | None = field(default_factory=set)  # None: whole table
    reasons: list[str] = field(default_factory=list)


def _merge(conn: psycopg.Connection, targets: Iterable[DataTarget]) -> list[_Plan]:
    plans: dict[tuple[str, str], _Plan] = {}
    for t in targets:
        found = _resolve(conn, t.schema, t.table)
        if found is None:  # created by the migration itself, or IF EXISTS on nothing
            continue
        plan = plans.setdefault(found, _Plan(*found))
        if t.reason not in plan.reasons:
            plan.reasons.append(t.reason)
        if t.columns is None or plan.columns is None:
            plan.columns = None
        else:
            plan.columns |= set(t.columns)
    return list(plans.values())


# Statements that take ACCESS EXCLUSIVE on their table anyway: holding SHARE on it from the
# save on only starts the writers' wait a little earlier, and makes the saved rows exactly the
# rows the statement destroys. DELETE and UPDATE take no such lock; blocking every writer
# for a whole migration for them would cost more than the gap it closes.
_SHARE_LOCK_BEFORE_SAVING = frozenset({"drop table", "drop column", "alter column type",
                                       "truncate"})


def lock_for_saving(conn: psycopg.Connection, targets: Sequence[DataTarget]) -> None:
    """Inside the migration's transaction, before `save_data`: SHARE-lock (no writes until
    commit) every existing table a DROP, ALTER COLUMN TYPE or TRUNCATE will destroy data in."""
    for plan in _merge(conn, [t for t in targets if t.reason in _SHARE_LOCK_BEFORE_SAVING]):
        conn.execute(sql.SQL("LOCK TABLE {}.{} IN SHARE MODE").format(
            sql.Identifier(plan.schema), sql.Identifier(plan.table)))


def save_data(conn: psycopg.Connection, targets: Sequence[DataTarget],
              dest_dir: Path) -> list[SavedData]:
    """Save the data `targets` would destroy as CSV files plus `manifest.json` in `dest_dir`.

    A column target saves the key columns and the affected columns; a whole table (or a table
    without a usable key) saves every column. Inside a caller's transaction (the migration's
    own, after `lock_for_saving`) it reads what that transaction sees; alone it runs in one
    REPEATABLE READ transaction. Nothing is written for no targets.
    """
    import psycopg

    if not targets:
        return []
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise DataRestoreError(f"{dest_dir} exists already; dbsage never overwrites saved data.")
    saved: list[SavedData] = []
    try:
        fresh = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.transaction():
            if fresh:  # inside a caller's transaction, its snapshot already applies
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for n, plan in enumerate(_merge(conn, targets), 1):
                item = _save_one(conn, plan, dest_dir, n)
                if item is not None:
                    saved.append(item)
    except psycopg.Error as exc:
        raise DataRestoreError(f"Saving data before the migration failed: {exc}",
                               hint="Nothing was applied. Check the role may read the tables.") \
            from exc
    if saved:
        (dest_dir / MANIFEST).write_text(
            json.dumps([s.to_json() for s in saved], indent=2) + "\n", encoding="utf-8")
    return saved


def _save_one(conn: psycopg.Connection, plan: _Plan, dest_dir: Path, n: int) -> SavedData | None:
    all_cols = _table_columns(conn, plan.schema, plan.table)
    key = _key_columns(conn, plan.schema, plan.table)
    whole = plan.columns is None or not key
    if whole:
        cols = all_cols
    else:
        assert plan.columns is not None
        wanted = [c for c in all_cols if c in plan.columns and c not in key]
        if not wanted:  # the column does not exist yet (added by the migration) or generated
            return None
        cols = [*key, *wanted]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{plan.schema}.{plan.table}")
    path = dest_dir / f"{n:02d}_{safe}.csv"
    dest_dir.mkdir(parents=True, exist_ok=True)
    rows = _copy_out(conn, plan.schema, plan.table, cols, key, path)
    return SavedData(plan.schema, plan.table, tuple(cols), key, whole, rows, path,
                     tuple(plan.reasons))


def _copy_out(conn: psycopg.Connection, schema: str, table: str, cols: list[str],
              key: tuple[str, ...], path: Path) -> int:
    select = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(schema),
        sql.Identifier(table))
    if key:
        select += sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(map(sql.Identifier, key)))
    query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(select)
    with conn.cursor() as cur, cur.copy(query) as copy, path.open("wb") as f:
        for chunk in copy:
            f.write(chunk)
    with path.open(newline="", encoding="utf-8") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


def load_saved_data(dest_dir: Path) -> list[SavedData]:
    """The saved data listed in `dest_dir/manifest.json` (empty when nothing was saved)."""
    manifest = dest_dir / MANIFEST
    if not manifest.exists():
        return []
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    return [SavedData(e["schema"], e["table"], tuple(e["columns"]), tuple(e["key_columns"]),
                      bool(e["whole_table"]), int(e["rows"]), dest_dir / e["file"],
                      tuple(e.get("reasons", ()))) for e in entries]


def restore_data(conn: psycopg.Connection, saved: Sequence[SavedData]) -> list[RestoredData]:
    """Load saved data back, after the reverse DDL has re-created its columns/tables.

    Columns: UPDATE by key from a temp table. Whole tables: every saved row goes back as it
    was (upsert by key; rows added since the save stay), then identity/serial sequences move
    past the restored values. A table without a key is only restored when it is empty.
    Runs in a transaction (a savepoint inside the caller's).
    """
    out: list[RestoredData] = []
    with conn.transaction():
        # Whole tables in reverse save order: a migration drops children before parents.
        ordered = [s for s in saved if not s.whole_table] + \
            [s for s in reversed(saved) if s.whole_table]
        for n, item in enumerate(ordered):
            if not item.file.exists():
                raise DataRestoreError(f"Saved data file {item.file} is missing.")
            tmp = _load_temp(conn, item, f"dbsage_restore_{n}")
            rows = _restore_table(conn, item, tmp) if item.whole_table \
                else _restore_columns(conn, item, tmp)
            conn.execute(sql.SQL("DROP TABLE {}").format(tmp))
            out.append(RestoredData(item, rows))
    return out


def _target(item: SavedData) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(item.schema), sql.Identifier(item.table))


def _cols(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _load_temp(conn: psycopg.Connection, item: SavedData, name: str) -> sql.Identifier:
    """A temp table shaped like the saved columns of the (restored) target, filled from CSV."""
    tmp = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                 .format(tmp, _cols(item.columns), _target(item)))
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER)").format(
        tmp, _cols(item.columns))
    with conn.cursor() as cur, cur.copy(query) as copy, item.file.open("rb") as f:
        while chunk := f.read(1 << 16):
            copy.write(chunk)
    return tmp


def _restore_columns(conn: psycopg.Connection, item: SavedData, tmp: sql.Identifier) -> int:
    if not item.key_columns:
        raise DataRestoreError(
            f"{item.schema}.{item.table} has no primary key, so the saved values of "
            f"{', '.join(item.restored_columns)} cannot be matched to rows.",
            hint=f"Load them by hand from {item.file}.")
    sets = sql.SQL(", ").join(sql.SQL("{} = s.{}").format(sql.Identifier(c), sql.Identifier(c))
                              for c in item.restored_columns)
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{} = s.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in item.key_columns)
    cur = conn.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
        _target(item), sets, tmp, match))
    return max(cur.rowcount, 0)


def _restore_table(conn: psycopg.Connection, item: SavedData, tmp: sql.Identifier) -> int:
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(_target(item))).fetchone()
    if row and row[0] and not item.key_columns:
        raise DataRestoreError(
            f"{item.schema}.{item.table} has rows and no primary key: dbsage cannot tell "
            "which saved rows are missing.", hint=f"Load them by hand from {item.file}.")
    conflict: sql.Composable = sql.SQL("")
    if item.key_columns:
        sets = sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c),
                                                                     sql.Identifier(c))
                                  for c in item.restored_columns)
        action = sql.SQL("DO UPDATE SET {}").format(sets) if item.restored_columns \
            else sql.SQL("DO NOTHING")
        conflict = sql.SQL(" ON CONFLICT ({}) {}").format(_cols(item.key_columns), action)
    cur = conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}{}")
                       .format(_target(item), _cols(item.columns), _cols(item.columns), tmp,
                               conflict))
    _advance_sequences(conn, item)
    return max(cur.rowcount, 0)


def _advance_sequences(conn: psycopg.Connection, item: SavedData) -> None:
    """Move serial/identity sequences past the restored values."""
    table = _regclass_text(item.schema, item.table)
    for col in item.columns:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, col)).fetchone()
        if not row or not row[0]:
            continue
        conn.execute(sql.SQL("SELECT setval(%s, m) FROM (SELECT max({}) AS m FROM {}) x "
                             "WHERE m IS NOT NULL").format(sql.Identifier(col), _target(item)),
                     (row[0],))


# ---------------------------------------------------------------------------------------------
# What a rollback loses; which run it undoes
# ---------------------------------------------------------------------------------------------


def rows_at_stake(conn: psycopg.Connection, script: ReverseScript) -> list[Loss]:
    """Row counts of the tables (rows) and columns (non-null values) the script destroys."""
    losses: list[Loss] = []
    for t in script.losing_targets():
        found = _resolve(conn, t.schema, t.table)
        if found is None:
            continue
        target = sql.SQL("{}.{}").format(sql.Identifier(found[0]), sql.Identifier(found[1]))
        for col in t.columns or (None,):
            counted = sql.SQL("count(*)") if col is None \
                else sql.SQL("count({})").format(sql.Identifier(col))
            if col is not None and col not in _table_columns(conn, *found):
                continue
            row = conn.execute(sql.SQL("SELECT {} FROM {}").format(counted, target)).fetchone()
            rows = int(row[0]) if row else 0
            if rows:
                losses.append(Loss(found[0], found[1], col, rows, t.reason))
    return losses


def validate_ts(value: str, conn: psycopg.Connection) -> str:
    """The 14-digit TS of an applied (not yet rolled back) migration run, or the latest one.

    Anything that looks like a path is refused here; a `*_before.sql` snapshot path goes to
    `plan_from_snapshot` instead.
    """
    v = value.strip()
    if "/" in v or "\\" in v or ".." in v or v.lower().endswith(".sql"):
        raise InvalidTimestampError(
            f"{value!r} looks like a path; rollback takes the TS of an applied migration.",
            hint="Give the 14-digit TS from the apply report (or `latest`). To roll back to a "
            "*_before.sql snapshot, pass that snapshot as a snapshot, not as a TS.", value=value)
    if v != "latest" and not _TS.match(v):
        raise InvalidTimestampError(
            f"{value!r} is not a run timestamp: expected 14 digits (YYYYMMDDHHMMSS) or `latest`.",
            hint="The TS is in the apply report and in supabase/snapshots/{TS}_before.sql.",
            value=value)
    from dbsage.tools.history import find_run_to_undo, history_exists

    if not history_exists(conn):
        raise InvalidTimestampError("No migration has been applied with dbsage here.",
                                    hint="There is nothing to roll back.", value=value)
    row = find_run_to_undo(conn, v)
    if row is None:
        what = "No applied migration is left" if v == "latest" else f"No migration run {v}"
        raise InvalidTimestampError(f"{what} in dbsage's history.",
                                    hint="List runs with: SELECT ts, version, event FROM "
                                    "dbsage.migration_log ORDER BY id;", value=value)
    if not row[1]:
        raise InvalidTimestampError(f"Run {row[0]} was rolled back already.", value=value)
    return str(row[0])


# ---------------------------------------------------------------------------------------------
# Running the rollback
# ---------------------------------------------------------------------------------------------


def apply_rollback(conn: psycopg.Connection, script: ReverseScript, saved: Sequence[SavedData],
                   version: str, *, ts: str, mode: str = "yolo", path: str = "",
                   snapshot_before: str | None = None, snapshot_after: str | None = None,
                   diff_patch: str | None = None, lock_timeout: str = "5s",
                   statement_timeout: str | None = None,
                   retry: LockRetryPolicy | None = None) -> RollbackResult:
    """Reverse DDL, data restore, deferred DDL and history in ONE transaction.

    `conn` is an autocommit connection holding the migration advisory lock. The version row
    leaves `supabase_migrations.schema_migrations` (like `supabase migration repair --status
    reverted`) and `dbsage.migration_log` gets a 'rollback' event with `ts` (this run's TS).
    A lock timeout rolls the transaction back and runs it again, as apply does (`retry`).
    """
    from dbsage.tools.lock import holds_lock

    if not conn.autocommit or not holds_lock(conn):
        raise RollbackError("apply_rollback needs an autocommit connection that holds the "
                            "migration lock.", hint="Acquire it with tools.lock.acquire_lock.")
    policy = retry or LockRetryPolicy()
    run = _RollbackRun(script, saved, version, ts, mode, path, snapshot_before, snapshot_after,
                       diff_patch, datetime.now(UTC), time.perf_counter())
    try:
        (name, restored), attempts = with_lock_retry(
            lambda: run.transaction(conn, lock_timeout, statement_timeout, policy), policy)
    except LockRetry as last:
        stmt = cast("Statement | None", last.outcome)
        raise RollbackFailedError(
            f"{_where(script, last.failure, stmt)}could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times. The rollback transaction was "
            "rolled back each time; the database is unchanged.",
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start) and let it finish; or allow a longer lock_timeout.",
            statement=stmt.sql if stmt else None, sqlstate=last.failure.sqlstate,
            lock_timeout=lock_timeout, attempts=policy.attempts) from None
    return RollbackResult(version, name, len(script.all_statements), restored,
                          time.perf_counter() - run.t0, attempts)


@dataclass(frozen=True)
class _RollbackRun:
    """What one rollback transaction needs; `transaction` may run more than once."""

    script: ReverseScript
    saved: Sequence[SavedData]
    version: str
    ts: str
    mode: str
    path: str
    snapshot_before: str | None
    snapshot_after: str | None
    diff_patch: str | None
    started_at: datetime
    t0: float

    def transaction(self, conn: psycopg.Connection, lock_timeout: str,
                    statement_timeout: str | None,
                    policy: LockRetryPolicy) -> tuple[str, list[RestoredData]]:
        import psycopg

        from dbsage.tools.history import HistoryRecord, record_rolled_back

        script = self.script
        current: Statement | None = None
        try:
            with conn.transaction():
                set_timeouts(conn, lock_timeout, statement_timeout, local=True)
                name = _version_name(conn, self.version)
                for current in script.statements:
                    execute_statement(conn, current)
                current = None
                restored = restore_data(conn, self.saved)
                for current in script.deferred:
                    execute_statement(conn, current)
                current = None
                record_rolled_back(conn, HistoryRecord(
                    ts=self.ts, version=self.version, name=name, path=self.path,
                    checksum=script.checksum, mode=self.mode, started_at=self.started_at,
                    duration_ms=(time.perf_counter() - self.t0) * 1000,
                    rows_affected=sum(r.rows for r in restored),
                    statements=[s.sql for s in script.all_statements],
                    snapshot_before=self.snapshot_before, snapshot_after=self.snapshot_after,
                    diff_patch=self.diff_patch))
        except psycopg.Error as exc:
            failure = statement_failure(exc, current)
            if policy.retries(failure.sqlstate):
                raise LockRetry(failure, current) from None
            raise _failed(failure, current, script) from None
        return name, restored


def _version_name(conn: psycopg.Connection, version: str) -> str:
    from dbsage.tools.history import applied_name_for_update

    name = applied_name_for_update(conn, version)
    if name is None:
        raise RollbackError(f"Migration {version} is not applied; there is nothing to roll back.",
                            version=version)
    return name


def _where(script: ReverseScript, failure: StatementFailure, stmt: Statement | None) -> str:
    return f"{script.source}:{failure.line}: " if stmt else ""


def _failed(failure: StatementFailure, stmt: Statement | None,
            script: ReverseScript) -> RollbackFailedError:
    return RollbackFailedError(
        f"{_where(script, failure, stmt)}{failure.message} [SQLSTATE {failure.sqlstate}]. The "
        "rollback transaction was rolled back; the database is unchanged.",
        hint=failure.hint or "Fix the rollback script and run again.",
        statement=stmt.sql if stmt else None, sqlstate=failure.sqlstate)
