"""Rollback without data loss, as the role that applied: a plan captured at apply time, kept in
the database, run in one verified transaction.

At apply time, inside the migration's own transaction (tools/apply.py's hooks):

- `capture_before` (before the first statement) reads the catalog state of everything the
  statements name (tools/rollback_state.py), saves the data the migration destroys (DROP
  TABLE/COLUMN, ALTER COLUMN TYPE, TRUNCATE: CSV files for people and jsonb rows in a temporary
  table) and copies the tables its UPDATE/DELETE/upsert statements target;
- `capture_after` (after the last statement) reads the same objects again plus every catalog
  row the transaction wrote, derives the reverse script (tools/rollback_reverse.py), finds the
  rows the transaction inserted, updated or deleted in tables that existed before (xmin and
  pg_stat_xact_user_tables), and keeps it all in dbsage.rollback_plan / rollback_rows
  (tools/history.py), committed with the migration.

`dbsage rollback` resolves the run to undo (`resolve_runs`: VERSION, TS or latest; only the
newest run, or every run after a version with --to), and `apply_rollbacks` runs reverse DDL,
data restore, deferred DDL and history in ONE transaction that, before committing, compares
the catalog state of the touched objects with the state captured before the migration; any
difference rolls it all back unless accepted.

Nothing here restores a snapshot anywhere: the schema-only snapshots are for people to read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from psycopg import sql

from dbsage.tools.errors import DbsageError, ExitCode, StatementFailure
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    execute_statement,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.rollback_reverse import Guard
from dbsage.tools.rollback_state import CatalogState
from dbsage.tools.sqlfile import DATA_DESTROYING_KINDS, MigrationFile, Statement

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.history import RunRecord

AFTER_DATA_MARKER = "-- dbsage:after-data-restore"
MANIFEST = "manifest.json"
PLAN_FORMAT = 1
_TS = re.compile(r"^\d{14}$")
_VERSION = re.compile(r"^\d+$")
_MARKER_LINE = re.compile(rf"^{re.escape(AFTER_DATA_MARKER)}.*$", re.MULTILINE)
# Statement kinds that lose rows when a rollback script runs them (for rows_at_stake).
_LOSING_REASONS = ("drop table", "drop column", "truncate")
# The data a migration destroys by DDL (saved before it runs); DML is captured row by row.
_DESTROYING_REASONS = ("drop table", "drop column", "alter column type", "truncate")
_ROWS = "dbsage_rb_rows"  # temporary table of the saved rows, moved into rollback_rows


class RollbackError(DbsageError):
    """A rollback cannot be planned or run."""


class InvalidTimestampError(RollbackError):
    """The rollback target is not a version, TS or `latest` of an applied run."""

    exit_code = ExitCode.USAGE


class RollbackRefusedError(RollbackError):
    """The run cannot be undone (what it did cannot be reversed), or not now (order)."""

    exit_code = ExitCode.REFUSED


class DataRestoreError(RollbackError):
    """Saved data cannot be written or loaded back."""


class RollbackFailedError(RollbackError):
    """A rollback statement failed; the whole rollback transaction was rolled back."""


class RollbackVerificationError(RollbackFailedError):
    """After the rollback the touched objects differ from their state before the migration;
    the rollback transaction was rolled back."""


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

    saved: SavedData | DataSet
    rows: int


@dataclass(frozen=True)
class DataSet:
    """Rows kept in dbsage.rollback_rows for a rollback, as one set of one table.

    kind: "inserted" (keys of rows the migration added: deleted again), "updated" (whole rows
    as they were: written back), "deleted" (whole rows: inserted again), "table" (every row of
    a table the migration dropped or truncated), "columns" (key + values of columns it dropped
    or retyped).
    """

    number: int
    kind: str
    schema: str
    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    rows: int
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def describe(self) -> str:
        verb = {"inserted": "delete {n} row(s) the migration inserted into",
                "updated": "write back {n} row(s) the migration updated in",
                "deleted": "insert again {n} row(s) the migration deleted from",
                "table": "load {n} saved row(s) into",
                "columns": "restore {cols} of {n} row(s) of"}[self.kind]
        cols = ", ".join(c for c in self.columns if c not in self.key_columns)
        return f"{verb.format(n=self.rows, cols=cols)} {self.label}"


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
    """How to undo one apply run: `statements` run first, saved data is restored, then
    `deferred` run; `before` is the catalog state the result must match.

    A plan captured at apply time also carries what cannot be undone (`refusals`), checks to
    make before running (`guards`), the data sets kept in the database (`data`), the names the
    migration created (`absent`) and its transaction id (`xid`).
    """

    statements: tuple[Statement, ...]
    deferred: tuple[Statement, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "plan"  # "plan" (captured at apply time) or a file path
    refusals: tuple[str, ...] = ()
    guards: tuple[Guard, ...] = ()
    data: tuple[DataSet, ...] = ()
    before: CatalogState | None = None
    after: CatalogState | None = None
    absent: tuple[tuple[str, ...], ...] = ()
    ts: str = ""
    version: str = ""
    xid: int = 0
    stored: bool = False  # kept in dbsage.rollback_plan (else on disk only)
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.statements or self.deferred or self.data)

    @property
    def all_statements(self) -> tuple[Statement, ...]:
        return self.statements + self.deferred

    def render(self, title: str = "") -> str:
        """The script as a file: statements, the after-data marker, deferred statements."""
        head = [f"-- dbsage rollback{(' of ' + title) if title else ''}: from the catalog state "
                "after the migration back to the state before it (captured in its transaction).",
                "-- Edit it freely: dbsage never overwrites this file, and runs it instead of the "
                "plan kept in the database once it differs."]
        head += [f"-- cannot be undone: {r}" for r in self.refusals]
        head += [f"-- warning: {w}" for w in self.warnings]
        body = [s.sql + ";" for s in self.statements] or ["-- (no schema change to undo)"]
        text = "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"
        if self.deferred or self.data:
            text += f"\n{AFTER_DATA_MARKER} (run after saved data is loaded back)\n"
            text += "".join(f"-- data: {d.describe()}\n" for d in self.data)
            if self.deferred:
                text += "\n" + "\n\n".join(s.sql + ";" for s in self.deferred) + "\n"
        return text

    @property
    def checksum(self) -> str:
        text = "\n".join(s.sql for s in self.all_statements)
        return hashlib.sha256(text.encode()).hexdigest()

    def losing_targets(self) -> list[DataTarget]:
        """Tables and columns the script drops or truncates."""
        return [t for t in _targets_of_statements(self.all_statements)
                if t.reason in _LOSING_REASONS]

    def same_statements(self, other: ReverseScript) -> bool:
        return [s.sql for s in self.all_statements] == [s.sql for s in other.all_statements]


@dataclass(frozen=True)
class RollbackResult:
    """A committed rollback (of one or more runs, newest first)."""

    version: str
    name: str
    statements: int
    restored: list[RestoredData]
    duration_s: float
    attempts: int = 1  # more than one: a lock timeout rolled the transaction back and retried
    undone: tuple[tuple[str, str], ...] = ()  # (ts, version) of every run undone
    accepted_differences: tuple[str, ...] = ()

    @property
    def rows_restored(self) -> int:
        return sum(r.rows for r in self.restored)


# ---------------------------------------------------------------------------------------------
# The plan as JSON, as a file, and back
# ---------------------------------------------------------------------------------------------


def plan_to_json(script: ReverseScript) -> dict[str, Any]:
    from dbsage.tools.rollback_state import to_json

    return {"format": PLAN_FORMAT, "ts": script.ts, "version": script.version,
            "xid": script.xid, "statements": [s.sql for s in script.statements],
            "deferred": [s.sql for s in script.deferred], "warnings": list(script.warnings),
            "refusals": list(script.refusals), "notes": list(script.notes),
            "guards": [{"sql": g.sql, "message": g.message} for g in script.guards],
            "data": [d.__dict__ | {"columns": list(d.columns),
                                   "key_columns": list(d.key_columns),
                                   "reasons": list(d.reasons)} for d in script.data],
            "absent": [list(a) for a in script.absent],
            "before": to_json(script.before) if script.before else None,
            "after": to_json(script.after) if script.after else None}


def plan_from_json(data: dict[str, Any], *, source: str = "plan",
                   stored: bool = True) -> ReverseScript:
    from dbsage.tools.rollback_state import from_json

    def stmts(items: list[str]) -> tuple[Statement, ...]:
        return tuple(_reparse(items)) if items else ()

    sets = tuple(DataSet(int(d["number"]), d["kind"], d["schema"], d["table"],
                         tuple(d["columns"]), tuple(d["key_columns"]), int(d["rows"]),
                         tuple(d.get("reasons", ()))) for d in data.get("data", []))
    return ReverseScript(
        stmts(data.get("statements", [])), stmts(data.get("deferred", [])),
        tuple(data.get("warnings", [])), source, tuple(data.get("refusals", [])),
        tuple(Guard(g["sql"], g["message"]) for g in data.get("guards", [])), sets,
        from_json(data["before"]) if data.get("before") else None,
        from_json(data["after"]) if data.get("after") else None,
        tuple(tuple(a) for a in data.get("absent", [])), str(data.get("ts", "")),
        str(data.get("version", "")), int(data.get("xid", 0)), stored,
        tuple(data.get("notes", [])))


def write_plan_files(script: ReverseScript, sql_path: Path, json_path: Path,
                     rows: Sequence[tuple[int, Any]] = ()) -> bool:
    """The plan on disk, for people and for a rollback without the database's copy:
    `sql_path` (the script; never overwritten: False when a file was there) and `json_path`
    (the whole plan, with `rows`)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    doc = plan_to_json(script) | {"rows": [[n, r] for n, r in rows]}
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    sql_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sql_path.open("x", encoding="utf-8") as f:
            f.write(script.render(f"{script.version} (run {script.ts})"))
    except FileExistsError:  # the user wrote one: theirs wins
        return False
    return True


def read_plan_file(json_path: Path) -> tuple[ReverseScript, list[tuple[int, Any]]] | None:
    """A plan written by `write_plan_files`, with its rows (None: no such file)."""
    if not json_path.is_file():
        return None
    data = json.loads(json_path.read_text(encoding="utf-8"))
    rows = [(int(n), r) for n, r in data.get("rows", [])]
    return plan_from_json(data, source=str(json_path), stored=False), rows


def read_rollback_script(path: Path) -> ReverseScript:
    """Parse a rollback file (generated or the user's); the after-data marker is honoured."""
    text = path.read_text(encoding="utf-8")
    parts = _MARKER_LINE.split(text, maxsplit=1)
    main = _parse(parts[0], str(path))
    deferred = _parse(parts[1], str(path)) if len(parts) > 1 else []
    return ReverseScript(tuple(main), tuple(deferred), source=str(path))


def _parse(text: str, path: str = "<reverse ddl>") -> list[Statement]:
    from pglast import parse_sql

    from dbsage.tools.sqlfile import parse_statements

    if not parse_sql(text):
        return []
    return list(parse_statements(text, path)[0])


def _reparse(parts: Sequence[str]) -> list[Statement]:
    return _parse(";\n\n".join(parts) + ";") if parts else []


# ---------------------------------------------------------------------------------------------
# Capture, at apply time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copy:
    """A table a DML statement targets, copied before the first statement."""

    oid: int
    schema: str
    table: str
    key: tuple[str, ...]
    copy: str | None  # the temporary table holding its rows (None: inserts only)


@dataclass(frozen=True)
class Capture:
    """What `capture_before` saw, for `capture_after`."""

    before: CatalogState | None
    scope_note: str
    copies: tuple[_Copy, ...] = ()
    sets: tuple[DataSet, ...] = ()
    saved: tuple[SavedData, ...] = ()
    refusals: tuple[str, ...] = ()
    irreversible: tuple[str, ...] = ()
    next_set: int = 1
    opaque: bool = False  # a DO block or a function call: look at every catalog afterwards


def capture_before(conn: psycopg.Connection, migration: MigrationFile,
                   targets: Sequence[DataTarget], data_dir: Path) -> Capture:
    """Inside the migration's transaction, before its first statement: the catalog state of
    what it names, the data it destroys (CSV in `data_dir` and rows for the database) and copies
    of the tables its UPDATE/DELETE/upsert statements change. A failure to read the catalog is
    no reason to stop the migration (its plan then refuses a rollback); a failure to save data
    it destroys is (DataRestoreError: nothing was applied)."""
    import psycopg

    from dbsage.tools import rollback_state as rs

    refs = rs.references(migration)
    irreversible = tuple(f"line {line}: {why}" for line, why in refs.irreversible)
    before: CatalogState | None = None
    refusals: list[str] = []
    try:
        with conn.transaction():  # a savepoint: a failure here leaves the migration alone
            scope = rs.before_scope(conn, refs)
            _add_owned_sequences(conn, scope)
            before = rs.capture(conn, scope, mark=True)
    except psycopg.Error as exc:
        refusals.append(f"dbsage could not read the catalog before the migration: {exc}")
    destroying = [t for t in targets if t.reason in _DESTROYING_REASONS]
    sets: list[DataSet] = []
    saved: list[SavedData] = []
    n = 1
    if destroying:
        lock_for_saving(conn, destroying)
        saved = save_data(conn, destroying, data_dir)
        sets, n = _save_sets(conn, destroying, n)
    copies, more = _copy_dml_targets(conn, refs.dml, n)
    refusals += more
    note = (f"{len(before.relations) if before else 0} relation(s), "
            f"{len(before.functions) if before else 0} function(s), "
            f"{len(before.types) if before else 0} type(s) captured")
    return Capture(before, note, tuple(copies), tuple(sets), tuple(saved), tuple(refusals),
                   irreversible, n + len(copies) * 3, refs.widened())


_OWNED_SEQUENCES_SQL = """
SELECT d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY (%s::oid[]) AND d.deptype IN ('a', 'i')
"""


def _add_owned_sequences(conn: psycopg.Connection, scope: Any) -> None:
    if scope.relations:
        for (oid,) in conn.execute(_OWNED_SEQUENCES_SQL, (sorted(scope.relations),)).fetchall():
            scope.relations.add(int(oid))


def _split_name(qualified: str) -> tuple[str | None, str]:
    """`schema.table` as format('%I.%I') wrote it, back into its two names."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', qualified)
    names = [a.replace('""', '"') if a else b for a, b in parts]
    return (names[0], names[1]) if len(names) == 2 else (None, names[-1])


def _ensure_rows_table(conn: psycopg.Connection) -> None:
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_ROWS} (set_no integer NOT NULL, "
                 "row jsonb NOT NULL) ON COMMIT DROP")


def _save_sets(conn: psycopg.Connection, targets: Sequence[DataTarget],
               n: int) -> tuple[list[DataSet], int]:
    """The destroyed data again, as jsonb rows in the temporary table (for the database's
    copy of the plan)."""
    import psycopg

    sets: list[DataSet] = []
    try:
        for plan in _merge(conn, targets):
            all_cols = _table_columns(conn, plan.schema, plan.table)
            key = _key_columns(conn, plan.schema, plan.table)
            whole = plan.columns is None or not key
            if whole:
                cols = all_cols
            else:
                assert plan.columns is not None
                wanted = [c for c in all_cols if c in plan.columns and c not in key]
                if not wanted:
                    continue
                cols = [*key, *wanted]
            _ensure_rows_table(conn)
            cur = conn.execute(sql.SQL("INSERT INTO {} (set_no, row) SELECT %s, to_jsonb(x) "
                                       "FROM (SELECT {} FROM {}.{}) x").format(
                sql.Identifier(_ROWS), _cols(cols), sql.Identifier(plan.schema),
                sql.Identifier(plan.table)), (n,))
            sets.append(DataSet(n, "table" if whole else "columns", plan.schema, plan.table,
                                tuple(cols), key, max(cur.rowcount, 0), tuple(plan.reasons)))
            n += 1
    except psycopg.Error as exc:
        raise DataRestoreError(f"Saving data before the migration failed: {exc}",
                               hint="Nothing was applied. Check the role may read the tables.") \
            from exc
    return sets, n


_DML_TARGET_SQL = """
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')
"""


# Tables whose rows a DELETE or UPDATE of these tables changes too: their foreign keys
# cascade, set null or set a default (transitively).
_CASCADED_SQL = """
WITH RECURSIVE t(oid) AS (
    SELECT unnest(%s::oid[])
    UNION
    SELECT f.conrelid FROM pg_constraint f JOIN t ON f.confrelid = t.oid
    WHERE f.contype = 'f' AND (f.confdeltype IN ('c', 'n', 'd') OR f.confupdtype IN ('c', 'n', 'd'))
)
SELECT format('%%I.%%I', n.nspname, c.relname) FROM t JOIN pg_class c ON c.oid = t.oid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT (t.oid = ANY (%s::oid[]))
"""


def _copy_dml_targets(conn: psycopg.Connection, dml: dict[tuple[str | None, str], set[str]],
                      n: int) -> tuple[list[_Copy], list[str]]:
    """Copy (into temporary tables) the tables an UPDATE, DELETE or upsert changes, and those
    their foreign keys cascade to, so their old rows can be kept; note the tables only
    inserted into."""
    from dbsage.tools.catalog import is_user_schema

    copies: list[_Copy] = []
    refusals: list[str] = []
    seen: set[int] = set()
    dml = dict(dml)
    changing = [r for r in (conn.execute(_DML_TARGET_SQL, (_regclass_text(s, t),)).fetchone()
                            for (s, t), kinds in dml.items() if kinds & {"update", "delete",
                                                                         "upsert"}) if r]
    if changing:
        oids = [int(r[0]) for r in changing]
        for (name,) in conn.execute(_CASCADED_SQL, (oids, oids)).fetchall():
            dml.setdefault(_split_name(str(name)), set()).update({"update", "delete"})
    for (schema, table), kinds in sorted(dml.items(), key=lambda x: (x[0][0] or "", x[0][1])):
        row = conn.execute(_DML_TARGET_SQL, (_regclass_text(schema, table),)).fetchone()
        if row is None or int(row[0]) in seen or not is_user_schema(str(row[1])):
            continue  # created by the migration (or not a table): nothing of it to keep
        seen.add(int(row[0]))
        key = _key_columns(conn, row[1], row[2])
        if not key:
            refusals.append(f"{row[1]}.{row[2]} has no primary key (or unique NOT NULL key): "
                            f"the rows the migration {'/'.join(sorted(kinds))}s cannot be told "
                            "apart from the others")
            continue
        copy = None
        if kinds & {"update", "delete", "upsert"}:
            copy = f"dbsage_rb_before_{len(copies) + 1}"
            conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {}.{}")
                         .format(sql.Identifier(copy), sql.Identifier(row[1]),
                                 sql.Identifier(row[2])))
        copies.append(_Copy(int(row[0]), row[1], row[2], key, copy))
    del n
    return copies, refusals


# The tables this transaction wrote rows of (its own pending statistics), that existed before.
_XACT_CHANGES_SQL = """
SELECT * FROM (
  SELECT c.oid, n.nspname, c.relname, pg_stat_get_xact_tuples_inserted(c.oid) AS ins,
         pg_stat_get_xact_tuples_updated(c.oid) AS upd,
         pg_stat_get_xact_tuples_deleted(c.oid) AS del
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND c.oid <= %(watermark)s AND {user}) x
WHERE ins > 0 OR upd > 0 OR del > 0
"""


def capture_after(conn: psycopg.Connection, cap: Capture, ts: str, version: str, *,
                  refusal: str | None = None) -> ReverseScript:
    """Inside the migration's transaction, after its last statement: derive the reverse
    script, keep the rows it changed in tables that existed before, and store the plan in
    dbsage.rollback_plan (unless this role cannot: then on disk only, said in `notes`).
    `refusal`: why this run cannot be undone at all (nothing is derived)."""
    import psycopg

    from dbsage.tools import rollback_reverse as rr
    from dbsage.tools import rollback_state as rs

    refusals = list(cap.irreversible) + list(cap.refusals)
    if refusal is not None:
        return _store(conn, ReverseScript((), ts=ts, version=version, before=cap.before,
                                          refusals=(refusal, *refusals)))
    warnings: list[str] = []
    script = ReverseScript((), source="plan", ts=ts, version=version)
    after: CatalogState | None = None
    sets = list(cap.sets)
    xid = 0
    try:
        with conn.transaction():
            row = conn.execute("SELECT (pg_current_xact_id()::text::bigint %% 4294967296)::bigint",
                               {}).fetchone()
            xid = int(row[0]) if row else 0
            if cap.before is not None:
                t = rs.touched(conn, thorough=cap.opaque)
                scope = cap.before.oids()
                scope.update(t.scope)
                after = rs.capture(conn, scope, deps=False)
                unseen = _unseen(cap.before, after, t.scope)
                derived = rr.derive(cap.before, after, unseen=unseen, other=t.other)
                refusals += derived.refusals
                warnings += derived.warnings
                script = replace(script, statements=tuple(_reparse(derived.statements)),
                                 deferred=tuple(_reparse(derived.deferred)),
                                 guards=tuple(derived.guards), absent=tuple(derived.absent))
                more, problems = _row_changes(conn, cap, len(sets) + cap.next_set)
                sets += more
                refusals += problems
    except psycopg.Error as exc:
        refusals.append(f"dbsage could not derive the rollback after the migration: {exc}")
    except Exception as exc:  # a dbsage bug must not fail the migration
        refusals.append(f"dbsage could not derive the rollback after the migration "
                        f"({type(exc).__name__}: {exc}); please report it")
    script = replace(script, refusals=tuple(dict.fromkeys(refusals)),
                     warnings=tuple(warnings), data=tuple(sets), before=cap.before, after=after,
                     xid=xid)
    return _store(conn, script)


def _unseen(before: CatalogState, after: CatalogState, touched: Any) -> list[str]:
    """Objects that existed before, were changed, and were not captured before."""
    out: list[str] = []
    known = before.oids()
    for kind, bucket, objects in (("rel", touched.relations, after.relations),
                                  ("func", touched.functions, after.functions),
                                  ("type", touched.types, after.types),
                                  ("schema", touched.schemas, after.schemas)):
        for oid in sorted(bucket):
            if oid <= before.watermark and (kind, oid) not in known:
                obj = objects.get(oid)
                name = getattr(obj, "qualified", None) or getattr(obj, "name", str(oid))
                out.append(f"{ {'rel': 'relation', 'func': 'function'}.get(kind, kind)} {name}")
    return out


def _row_changes(conn: psycopg.Connection, cap: Capture,
                 n: int) -> tuple[list[DataSet], list[str]]:
    """The rows this transaction inserted, updated or deleted in tables that existed before
    it: keys of inserted rows, old versions of updated and deleted rows."""
    from dbsage.tools.catalog import user_schemas_sql
    from dbsage.tools.rollback_state import _ours

    assert cap.before is not None
    copies = {c.oid: c for c in cap.copies}
    destroyed = {(s.schema, s.table) for s in cap.sets if s.kind == "table"}
    rows = conn.execute(_XACT_CHANGES_SQL.replace("{user}", user_schemas_sql("n.nspname")),
                        {"watermark": cap.before.watermark}).fetchall()
    sets: list[DataSet] = []
    problems: list[str] = []
    for relid, schema, table, ins, upd, dele in rows:
        rel = cap.before.relations.get(int(relid))
        bname = (rel.schema, rel.name) if rel is not None else (schema, table)
        copy = copies.get(int(relid))
        key = copy.key if copy is not None else _key_columns(conn, schema, table)
        if not key:
            problems.append(f"{schema}.{table} has no primary key (or unique NOT NULL key): the "
                            "rows the migration changed in it cannot be told apart")
            continue
        present = set(_table_columns(conn, schema, table, generated=True))
        if not set(key) <= present:
            problems.append(f"the key of {schema}.{table} changed: its rows cannot be matched")
            continue
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        keys = _cols(key)
        me = sql.SQL("WITH me AS (SELECT pg_current_xact_id()::text::bigint AS top) ")
        ours = sql.SQL(_ours("t.xmin"))
        if copy is None or copy.copy is None:
            if (upd or dele) and bname not in destroyed:
                problems.append(f"rows of {schema}.{table} were updated or deleted by something "
                                "dbsage could not see before it ran (a trigger or a function): "
                                "their earlier values were not kept")
                continue
            if not ins:
                continue
            _ensure_rows_table(conn)
            cur = conn.execute(me + sql.SQL(
                "INSERT INTO {rows} (set_no, row) SELECT %(n)s, to_jsonb(k) FROM (SELECT {keys} "
                "FROM {target} t, me WHERE {ours}) k").format(
                    rows=sql.Identifier(_ROWS), keys=keys, target=target, ours=ours), {"n": n})
            if cur.rowcount > 0:
                sets.append(DataSet(n, "inserted", bname[0], bname[1], key, key, cur.rowcount))
            n += 1
            continue
        before_t = sql.Identifier(copy.copy)
        match = sql.SQL(" AND ").join(sql.SQL("t.{c} = b.{c}").format(c=sql.Identifier(c))
                                      for c in key)
        all_cols = tuple(_table_columns(conn, copy.schema, copy.table, generated=False,
                                        of=copy.copy))
        _ensure_rows_table(conn)
        statements = (
            ("inserted", key, sql.SQL(
                "INSERT INTO {rows} (set_no, row) SELECT %(n)s, to_jsonb(k) FROM ("
                "SELECT {keys} FROM {target} t, me WHERE {ours} EXCEPT SELECT {keys} FROM {b}) k")),
            ("updated", all_cols, sql.SQL(
                "INSERT INTO {rows} (set_no, row) SELECT %(n)s, to_jsonb(b) FROM {b} b "
                "WHERE EXISTS (SELECT FROM {target} t, me WHERE {match} AND {ours})")),
            ("deleted", all_cols, sql.SQL(
                "INSERT INTO {rows} (set_no, row) SELECT %(n)s, to_jsonb(b) FROM {b} b "
                "WHERE NOT EXISTS (SELECT FROM {target} t WHERE {match})")),
        )
        for kind, cols, query in statements:
            if kind == "inserted" and not ins:
                continue
            if bname in destroyed and kind == "deleted":
                continue
            cur = conn.execute(me + query.format(rows=sql.Identifier(_ROWS), keys=keys,
                                                 target=target, ours=ours, b=before_t,
                                                 match=match), {"n": n})
            if cur.rowcount > 0:
                sets.append(DataSet(n, kind, bname[0], bname[1], cols, key, cur.rowcount))
            n += 1
    return sets, problems


def _store(conn: psycopg.Connection, script: ReverseScript) -> ReverseScript:
    """Keep the plan in dbsage.rollback_plan (and its rows in rollback_rows)."""
    import psycopg

    from dbsage.tools.history import record_rollback_plan, rollback_store_problem

    problem = rollback_store_problem(conn)
    if problem is not None:
        return replace(script, notes=(*script.notes, f"the rollback plan is kept on disk only: "
                                      f"{problem}"))
    has_rows = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pg_temp.{_ROWS}",)
                            ).fetchone() == (True,)
    try:
        with conn.transaction():
            record_rollback_plan(conn, script.ts, script.version, plan_to_json(script),
                                 _ROWS if has_rows else None, plan_format=PLAN_FORMAT)
    except psycopg.Error as exc:
        return replace(script, notes=(*script.notes, f"the rollback plan is kept on disk only: "
                                      f"{exc}"))
    return replace(script, stored=True)


def pending_rows(conn: psycopg.Connection) -> list[tuple[int, Any]]:
    """The saved rows still in this transaction's temporary table (for the copy on disk when
    the database could not keep them)."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pg_temp.{_ROWS}",)).fetchone()
    if found != (True,):
        return []
    return [(int(r[0]), r[1]) for r in conn.execute(
        sql.SQL("SELECT set_no, row FROM {} ORDER BY set_no").format(sql.Identifier(_ROWS))
    ).fetchall()]


def stored_rows(conn: psycopg.Connection, ts: str, version: str) -> list[tuple[int, Any]]:
    """The saved rows of a plan kept in the database (for the copy on disk)."""
    from dbsage.tools.history import export_saved_rows

    return export_saved_rows(conn, ts, version)


# ---------------------------------------------------------------------------------------------
# Which run to undo
# ---------------------------------------------------------------------------------------------


def resolve_runs(conn: psycopg.Connection, target: str | None,
                 to: str | None = None) -> list[RunRecord]:
    """The apply runs to undo, newest first: `target` (a version: its newest run; a 14-digit
    run TS; or `latest`) or, with `to`, every run applied after version `to`. Anything but the
    newest run(s) is refused (RollbackRefusedError) while a later run is still applied; call it
    under the migration lock so no run commits in between."""
    from dbsage.tools.history import dbsage_runs

    if (target is None) == (to is None):
        raise InvalidTimestampError(
            "Name one run to undo (VERSION, TS or latest), or --to VERSION to undo every run "
            "after a version.", hint="The versions and TSs are in the history (*status).")
    for value in (target, to):
        if value is not None:
            _check_value(value)
    runs = dbsage_runs(conn)
    active = [r for r in runs if r.active]
    if not runs:
        raise InvalidTimestampError("No migration has been applied with dbsage here.",
                                    hint="There is nothing to roll back.", value=target or to)
    if to is not None:
        anchor = next((r for r in reversed(active) if r.version == to), None)
        if anchor is None:
            raise InvalidTimestampError(f"Version {to} is not applied (by dbsage) here, so there "
                                        "is nothing to roll back to.", value=to)
        later = [r for r in active if r.id > anchor.id]
        if not later:
            raise InvalidTimestampError(f"No run was applied after version {to}: nothing to "
                                        "roll back.", value=to)
        return list(reversed(later))
    assert target is not None
    run = _find(runs, active, target.strip())
    later = [r for r in active if r.id > run.id]
    if later:
        names = ", ".join(f"{r.version} (run {r.ts})" for r in reversed(later))
        raise RollbackRefusedError(
            f"Run {run.ts} (version {run.version}) is not the newest applied run: {names} "
            "came after it and may depend on it. Roll those back first.",
            hint=f"Undo every run after the one before it at once with --to (e.g. --to "
                 f"{_version_before(active, run)}), or roll back {later[-1].version} first.",
            version=run.version, ts=run.ts, later=[r.version for r in later])
    return [run]


def _check_value(value: str) -> None:
    v = value.strip()
    if "/" in v or "\\" in v or ".." in v or v.lower().endswith(".sql"):
        raise InvalidTimestampError(
            f"{value!r} looks like a path; rollback takes a migration version, the TS of an "
            "apply run, or `latest`.",
            hint="dbsage no longer restores *_before.sql snapshots to roll back: give the "
                 "version or the TS from the apply report.", value=value)
    if v != "latest" and not _VERSION.match(v):
        raise InvalidTimestampError(
            f"{value!r} is neither a version nor a run TS (digits) nor `latest`.",
            hint="The version is the file name's leading digits; the TS is in the apply report.",
            value=value)


def _find(runs: list[RunRecord], active: list[RunRecord], value: str) -> RunRecord:
    if value == "latest":
        if not active:
            raise InvalidTimestampError("No applied migration is left in dbsage's history.",
                                        value=value)
        return active[-1]
    if _TS.match(value):
        by_ts = [r for r in runs if r.ts == value]
        if by_ts:
            live = [r for r in by_ts if r.active]
            if not live:
                raise InvalidTimestampError(f"Run {value} was rolled back already.", value=value)
            return live[-1]
    by_version = [r for r in runs if r.version == value]
    if not by_version:
        raise InvalidTimestampError(f"No migration run or version {value} in dbsage's history.",
                                    hint="See *status for what is applied.", value=value)
    live = [r for r in by_version if r.active]
    if not live:
        raise InvalidTimestampError(f"Version {value} is not applied (its run "
                                    f"{by_version[-1].ts} was rolled back already).", value=value)
    return live[-1]


def _version_before(active: list[RunRecord], run: RunRecord) -> str:
    earlier = [r for r in active if r.id < run.id]
    return earlier[-1].version if earlier else "<the version before it>"


def load_plan(conn: psycopg.Connection, run: RunRecord, rollback_file: Path,
              plan_file: Path) -> tuple[ReverseScript, str, list[Any] | None]:
    """The reverse script of `run`, where it came from and (for a plan read from disk) its
    rows: the user's own (edited) rollback file, else the plan kept in the database, else the
    plan on disk, else a rollback file alone (runs applied before plans were kept)."""
    from dbsage.tools.history import load_rollback_plan

    stored = load_rollback_plan(conn, run.ts, run.version)
    plan: ReverseScript | None = None
    rows: list[Any] | None = None
    source = ""
    if stored is not None:
        plan, source = plan_from_json(stored, source="dbsage.rollback_plan"), \
            f"dbsage.rollback_plan (run {run.ts})"
    else:
        on_disk = read_plan_file(plan_file)
        if on_disk is not None:
            plan, source, rows = on_disk[0], str(plan_file), list(on_disk[1])
    if rollback_file.is_file():
        mine = read_rollback_script(rollback_file)
        if plan is None:
            return mine, str(rollback_file), None
        if not mine.same_statements(plan):
            return replace(plan, statements=mine.statements, deferred=mine.deferred,
                           source=str(rollback_file), refusals=()), str(rollback_file), rows
    if plan is None:
        raise RollbackRefusedError(
            f"No rollback plan was kept for run {run.ts} (version {run.version}): neither "
            "dbsage.rollback_plan nor supabase/rollback/ has one, so dbsage cannot know what "
            "to undo.", hint=f"Write the reverse DDL to {rollback_file}, then roll back again.",
            ts=run.ts, version=run.version)
    return plan, source, rows


def refuse_irreversible(script: ReverseScript, run: RunRecord) -> None:
    """RollbackRefusedError naming everything the run did that cannot be undone."""
    if script.refusals:
        raise RollbackRefusedError(
            f"Run {run.ts} (version {run.version}) cannot be rolled back: "
            + "; ".join(script.refusals) + ". Nothing was changed.",
            hint="Undo it by hand with a new migration; or write supabase/rollback/"
                 f"{run.ts}_rollback.sql yourself (dbsage runs it, verified, instead).",
            refusals=list(script.refusals), ts=run.ts, version=run.version)


def check_guards(conn: psycopg.Connection, script: ReverseScript) -> None:
    """Run the plan's guards; RollbackRefusedError when one finds rows in the way."""
    import psycopg

    problems = []
    for g in script.guards:
        try:
            with conn.transaction():
                row = conn.execute(g.sql.encode()).fetchone()
        except psycopg.Error as exc:
            problems.append(f"{g.message.format(rows='?')} (could not check: {exc})")
            continue
        rows = int(row[0]) if row and row[0] is not None else 0
        if rows:
            problems.append(g.message.format(rows=rows))
    if problems:
        raise RollbackRefusedError("The rollback cannot go ahead: " + "; ".join(problems) +
                                   ". Nothing was changed.",
                                   hint="Change those rows first (or undo by hand).",
                                   problems=problems)


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
_ALL_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum
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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _regclass_text(schema: str | None, table: str) -> str:
    return (f"{_ident(schema)}." if schema else "") + _ident(table)


def _resolve(conn: psycopg.Connection, schema: str | None, table: str) -> tuple[str, str] | None:
    row = conn.execute(_RESOLVE_SQL, (_regclass_text(schema, table),)).fetchone()
    return (row[0], row[1]) if row else None


def _table_columns(conn: psycopg.Connection, schema: str, table: str, *,
                   generated: bool = False, of: str | None = None) -> list[str]:
    """The columns of a table (without generated ones unless `generated`); `of` names the
    temporary copy whose columns to list instead (generated ones of `table` left out)."""
    if of is not None:
        gen = set(_table_columns(conn, schema, table, generated=True)) - \
            set(_table_columns(conn, schema, table))
        rows = conn.execute(_ALL_COLUMNS_SQL, (f"pg_temp.{_ident(of)}",)).fetchall()
        return [r[0] for r in rows if r[0] not in gen]
    rows = conn.execute(_ALL_COLUMNS_SQL if generated else _COLUMNS_SQL,
                        (_regclass_text(schema, table),)).fetchall()
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


def write_saved_rows(dest_dir: Path, script: ReverseScript,
                     rows: Sequence[tuple[int, Any]]) -> list[Path]:
    """The rows of the plan's data sets as JSON lines in `dest_dir` (one file per set), for
    people; nothing for none."""
    by_set: dict[int, list[Any]] = {}
    for n, row in rows:
        by_set.setdefault(n, []).append(row)
    out = []
    for d in script.data:
        if d.kind in ("table", "columns"):
            continue  # the CSV files hold those
        items = by_set.get(d.number, [])
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", d.label)
        path = dest_dir / f"{d.number:02d}_{safe}.{d.kind}.jsonl"
        dest_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, default=str) + "\n" for r in items),
                        encoding="utf-8")
        out.append(path)
    return out


def restore_data(conn: psycopg.Connection, saved: Sequence[SavedData]) -> list[RestoredData]:
    """Load CSV-saved data back, after the reverse DDL has re-created its columns/tables (runs
    whose plan was not kept in the database).

    Columns: UPDATE by key from a temp table. Whole tables: every saved row goes back as it
    was (rows added since the save stay), then identity/serial sequences move past the
    restored values. A table without a key is only restored when it is empty.
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
            rows = _restore_table(conn, item.schema, item.table, item.columns,
                                  item.key_columns, tmp, str(item.file)) if item.whole_table \
                else _restore_columns(conn, item.schema, item.table, item.columns,
                                      item.key_columns, tmp, str(item.file))
            if item.whole_table:
                _advance_sequences(conn, item.schema, item.table, item.columns)
            conn.execute(sql.SQL("DROP TABLE {}").format(tmp))
            out.append(RestoredData(item, rows))
    return out


def _target(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _cols(names: Iterable[str], prefix: str = "") -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(prefix),
                                                          sql.Identifier(n)) for n in names)
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _load_temp(conn: psycopg.Connection, item: SavedData, name: str) -> sql.Identifier:
    """A temp table shaped like the saved columns of the (restored) target, filled from CSV."""
    tmp = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                 .format(tmp, _cols(item.columns), _target(item.schema, item.table)))
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER)").format(
        tmp, _cols(item.columns))
    with conn.cursor() as cur, cur.copy(query) as copy, item.file.open("rb") as f:
        while chunk := f.read(1 << 16):
            copy.write(chunk)
    return tmp


def _match(key: Sequence[str], a: str = "t", b: str = "s") -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{a}.{c} = {b}.{c}").format(a=sql.Identifier(a), b=sql.Identifier(b),
                                            c=sql.Identifier(c)) for c in key)


def _restore_columns(conn: psycopg.Connection, schema: str, table: str, columns: Sequence[str],
                     key: Sequence[str], tmp: sql.Identifier, where: str) -> int:
    restored = [c for c in columns if c not in key]
    if not key:
        raise DataRestoreError(
            f"{schema}.{table} has no primary key, so the saved values of "
            f"{', '.join(restored)} cannot be matched to rows.",
            hint=f"Load them by hand from {where}.")
    if not restored:
        return 0
    sets = sql.SQL(", ").join(sql.SQL("{} = s.{}").format(sql.Identifier(c), sql.Identifier(c))
                              for c in restored)
    cur = conn.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
        _target(schema, table), sets, tmp, _match(key)))
    return max(cur.rowcount, 0)


def _restore_table(conn: psycopg.Connection, schema: str, table: str, columns: Sequence[str],
                   key: Sequence[str], tmp: sql.Identifier, where: str) -> int:
    """Every saved row back: missing rows inserted, existing ones (by key) set to the saved
    values; a table without a key only when it is empty."""
    target = _target(schema, table)
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone()
    if row and row[0] and not key:
        raise DataRestoreError(
            f"{schema}.{table} has rows and no primary key: dbsage cannot tell "
            "which saved rows are missing.", hint=f"Load them by hand from {where}.")
    updated = 0
    restored = [c for c in columns if c not in key]
    if key and restored:
        sets = sql.SQL(", ").join(sql.SQL("{} = s.{}").format(sql.Identifier(c),
                                                              sql.Identifier(c))
                                  for c in restored)
        cur = conn.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
            target, sets, tmp, _match(key)))
        updated = max(cur.rowcount, 0)
    missing: sql.Composable = sql.SQL("")
    if key:
        missing = sql.SQL(" WHERE NOT EXISTS (SELECT FROM {} t WHERE {})").format(
            target, _match(key))
    cur = conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s"
                               "{}").format(target, _cols(columns), _cols(columns, "s"), tmp,
                                            missing))
    return updated + max(cur.rowcount, 0)


def _advance_sequences(conn: psycopg.Connection, schema: str, table: str,
                       columns: Sequence[str]) -> None:
    """Move serial/identity sequences past the restored values."""
    for col in columns:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)",
                           (_regclass_text(schema, table), col)).fetchone()
        if not row or not row[0]:
            continue
        conn.execute(sql.SQL("SELECT setval(%s, m) FROM (SELECT max({}) AS m FROM {}) x "
                             "WHERE m IS NOT NULL").format(sql.Identifier(col),
                                                           _target(schema, table)), (row[0],))


# --- the plan's data sets ---------------------------------------------------------------------

_TABLE_OID_SQL = """
SELECT c.oid, pg_has_role(c.relowner, 'USAGE') FROM pg_class c
WHERE c.oid = to_regclass(%s)
"""
_ENABLED_TRIGGERS_SQL = """
SELECT tgname, tgenabled::text FROM pg_trigger
WHERE tgrelid = %s AND NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname
"""
_FK_EDGES_SQL = """
SELECT conrelid, confrelid FROM pg_constraint
WHERE contype = 'f' AND conrelid = ANY (%(oids)s::oid[]) AND confrelid = ANY (%(oids)s::oid[])
  AND conrelid <> confrelid
"""


def restore_sets(conn: psycopg.Connection, script: ReverseScript,
                 rows: Sequence[tuple[int, Any]] | None = None) -> list[RestoredData]:
    """Put the plan's rows back (after its reverse DDL, before its deferred part): delete the
    rows the migration inserted (children first), load dropped tables and columns, insert
    deleted rows and write back updated ones (parents first). User triggers on those tables
    are disabled meanwhile where this role may (they would fire on restored rows). `rows`:
    the rows from the copy on disk, when the database does not hold the plan."""
    if not script.data:
        return []
    out: list[RestoredData] = []
    tables: dict[tuple[str, str], tuple[int, bool]] = {}
    for d in script.data:
        row = conn.execute(_TABLE_OID_SQL, (_regclass_text(d.schema, d.table),)).fetchone()
        if row is None:
            raise DataRestoreError(f"{d.label} does not exist after the reverse DDL; its saved "
                                   "rows have nowhere to go.")
        tables[(d.schema, d.table)] = (int(row[0]), bool(row[1]))
    order = _parents_first(conn, [oid for oid, _ in tables.values()])
    rank = {oid: i for i, oid in enumerate(order)}

    def pos(d: DataSet) -> int:
        return rank.get(tables[(d.schema, d.table)][0], 0)

    disabled = _disable_triggers(conn, tables)
    n = 0
    for d in sorted((d for d in script.data if d.kind == "inserted"), key=lambda d: -pos(d)):
        n += 1
        tmp = _saved_temp(conn, script, d, n, rows)
        cur = conn.execute(sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
            _target(d.schema, d.table), tmp, _match(d.key_columns)))
        out.append(RestoredData(d, max(cur.rowcount, 0)))
    for d in sorted((d for d in script.data if d.kind != "inserted"), key=pos):
        n += 1
        tmp = _saved_temp(conn, script, d, n, rows)
        cols = [c for c in d.columns if c in set(_table_columns(conn, d.schema, d.table))]
        if d.kind in ("table", "deleted"):
            count = _restore_table(conn, d.schema, d.table, cols, d.key_columns, tmp,
                                   "the rollback plan")
        else:
            count = _restore_columns(conn, d.schema, d.table, cols, d.key_columns, tmp,
                                     "the rollback plan")
        out.append(RestoredData(d, count))
    for (schema, table), triggers in disabled.items():
        for name, mode in triggers:
            how = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}[mode]
            conn.execute(sql.SQL("ALTER TABLE {} " + how + " TRIGGER {}").format(
                _target(schema, table), sql.Identifier(name)))
    return out


def _saved_temp(conn: psycopg.Connection, script: ReverseScript, d: DataSet, n: int,
                rows: Sequence[tuple[int, Any]] | None) -> sql.Identifier:
    """A temporary table of data set `d`, typed as the (restored) table's columns."""
    from psycopg.types.json import Jsonb

    from dbsage.tools.history import saved_rows_select

    tmp = sql.Identifier(f"dbsage_restore_{n}")
    target = _target(d.schema, d.table)
    if rows is None:
        query = saved_rows_select(script.ts, script.version, d.number, target,
                                  sql.SQL("x.*"))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(tmp, query))
        return tmp
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA")
                 .format(tmp, target))
    for number, row in rows:
        if number == d.number:
            conn.execute(sql.SQL("INSERT INTO {} SELECT (jsonb_populate_record(NULL::{}, %s)).*")
                         .format(tmp, target), (Jsonb(row),))
    return tmp


def _parents_first(conn: psycopg.Connection, oids: list[int]) -> list[int]:
    edges = conn.execute(_FK_EDGES_SQL, {"oids": oids}).fetchall()
    parents: dict[int, set[int]] = {o: set() for o in oids}
    for child, parent in edges:
        parents.setdefault(int(child), set()).add(int(parent))
    out: list[int] = []
    seen: set[int] = set()

    def visit(o: int, path: set[int]) -> None:
        if o in seen or o in path:
            return
        path.add(o)
        for p in sorted(parents.get(o, ())):
            visit(p, path)
        seen.add(o)
        out.append(o)

    for o in sorted(oids):
        visit(o, set())
    return out


def _disable_triggers(conn: psycopg.Connection, tables: dict[tuple[str, str], tuple[int, bool]]
                      ) -> dict[tuple[str, str], list[tuple[str, str]]]:
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for (schema, table), (oid, owned) in tables.items():
        if not owned:
            continue
        triggers = [(str(r[0]), str(r[1])) for r in
                    conn.execute(_ENABLED_TRIGGERS_SQL, (oid,)).fetchall()]
        for name, _mode in triggers:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                _target(schema, table), sql.Identifier(name)))
        if triggers:
            out[(schema, table)] = triggers
    return out


# ---------------------------------------------------------------------------------------------
# What a rollback loses
# ---------------------------------------------------------------------------------------------


def rows_at_stake(conn: psycopg.Connection, script: ReverseScript) -> list[Loss]:
    """Row counts of the tables (rows) and columns (non-null values) the script destroys.

    With the plan's transaction id, rows the migration itself wrote do not count (undoing
    them is the point): only what was written since.
    """
    losses: list[Loss] = []
    since: sql.Composable = sql.SQL("")
    if script.xid:
        since = sql.SQL(" WHERE xmin::text::bigint <> {}").format(sql.Literal(script.xid))
    for t in script.losing_targets():
        found = _resolve(conn, t.schema, t.table)
        if found is None:
            continue
        target = _target(*found)
        for col in t.columns or (None,):
            if col is not None and col not in _table_columns(conn, *found):
                continue
            if col is None:
                query = sql.SQL("SELECT count(*) FROM {}{}").format(target, since)
            else:
                default = _added_default(script, found, col)
                cond: sql.Composable = sql.SQL("{} IS NOT NULL").format(sql.Identifier(col))
                if default is not None:
                    cond = sql.SQL("{} AND {} IS DISTINCT FROM ({})").format(
                        cond, sql.Identifier(col), sql.SQL(default))
                where = sql.SQL(" AND ") if script.xid else sql.SQL(" WHERE ")
                query = sql.SQL("SELECT count(*) FROM {}{}{}{}").format(target, since, where,
                                                                        cond)
            row = conn.execute(query).fetchone()
            rows = int(row[0]) if row else 0
            if rows:
                losses.append(Loss(found[0], found[1], col, rows, t.reason))
    return losses


def _added_default(script: ReverseScript, table: tuple[str, str], col: str) -> str | None:
    """The default the migration gave a column it added (a constant one fills old rows without
    rewriting them, so those values are not data written since)."""
    if script.after is None:
        return None
    for r in script.after.relations.values():
        if (r.schema, r.name) == table:
            c = next((c for c in r.columns if c.name == col), None)
            if c is not None and c.default is not None and not c.generated and \
                    "(" not in c.default:
                return c.default
    return None


# ---------------------------------------------------------------------------------------------
# Running the rollback
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunToUndo:
    """One apply run and how to undo it."""

    applied_ts: str
    version: str
    script: ReverseScript
    saved: Sequence[SavedData] = ()  # CSV data of runs without a plan in the database
    rows: Sequence[tuple[int, Any]] | None = None  # the plan's rows, from its copy on disk
    path: str = ""


def apply_rollback(conn: psycopg.Connection, script: ReverseScript, saved: Sequence[SavedData],
                   version: str, *, ts: str, mode: str = "yolo", path: str = "",
                   snapshot_before: str | None = None, snapshot_after: str | None = None,
                   diff_patch: str | None = None, lock_timeout: str = "5s",
                   statement_timeout: str | None = None,
                   retry: LockRetryPolicy | None = None, applied_ts: str = "",
                   accept_difference: bool = False) -> RollbackResult:
    """`apply_rollbacks` of one run."""
    return apply_rollbacks(conn, [RunToUndo(applied_ts or script.ts, version, script, saved,
                                            path=path)],
                           ts=ts, mode=mode, snapshot_before=snapshot_before,
                           snapshot_after=snapshot_after, diff_patch=diff_patch,
                           lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                           retry=retry, accept_difference=accept_difference)


def apply_rollbacks(conn: psycopg.Connection, runs: Sequence[RunToUndo], *, ts: str,
                    mode: str = "yolo", snapshot_before: str | None = None,
                    snapshot_after: str | None = None, diff_patch: str | None = None,
                    lock_timeout: str = "5s", statement_timeout: str | None = None,
                    retry: LockRetryPolicy | None = None,
                    accept_difference: bool = False) -> RollbackResult:
    """Undo `runs` (newest first) in ONE transaction: for each, reverse DDL, data restore,
    deferred DDL, then the comparison of the touched objects with their state before that
    migration (a difference rolls everything back: RollbackVerificationError, unless
    `accept_difference`), then its history.

    `conn` is an autocommit connection holding the migration advisory lock. Each version
    leaves `supabase_migrations.schema_migrations` (like `supabase migration repair --status
    reverted`) and `dbsage.migration_log` gets a 'rollback' event with `ts` (this run's TS).
    A lock timeout rolls the transaction back and runs it again, as apply does (`retry`).
    """
    from dbsage.tools.lock import holds_lock

    if not conn.autocommit or not holds_lock(conn):
        raise RollbackError("apply_rollback needs an autocommit connection that holds the "
                            "migration lock.", hint="Acquire it with tools.lock.acquire_lock.")
    policy = retry or LockRetryPolicy()
    run = _RollbackRun(tuple(runs), ts, mode, snapshot_before, snapshot_after, diff_patch,
                       accept_difference, datetime.now(UTC), time.perf_counter())
    try:
        (names, restored, accepted), attempts = with_lock_retry(
            lambda: run.transaction(conn, lock_timeout, statement_timeout, policy), policy)
    except LockRetry as last:
        stmt = cast("Statement | None", last.outcome)
        where = _where(runs[0].script, last.failure, stmt)
        raise RollbackFailedError(
            f"{where}could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times. The rollback transaction was "
            "rolled back each time; the database is unchanged.",
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start) and let it finish; or allow a longer lock_timeout.",
            statement=stmt.sql if stmt else None, sqlstate=last.failure.sqlstate,
            lock_timeout=lock_timeout, attempts=policy.attempts) from None
    first = runs[0]
    return RollbackResult(first.version, names[0],
                          sum(len(r.script.all_statements) for r in runs), restored,
                          time.perf_counter() - run.t0, attempts,
                          tuple((r.applied_ts, r.version) for r in runs), tuple(accepted))


@dataclass(frozen=True)
class _RollbackRun:
    """What one rollback transaction needs; `transaction` may run more than once."""

    runs: tuple[RunToUndo, ...]
    ts: str
    mode: str
    snapshot_before: str | None
    snapshot_after: str | None
    diff_patch: str | None
    accept_difference: bool
    started_at: datetime
    t0: float

    def transaction(self, conn: psycopg.Connection, lock_timeout: str,
                    statement_timeout: str | None, policy: LockRetryPolicy
                    ) -> tuple[list[str], list[RestoredData], list[str]]:
        import psycopg

        from dbsage.tools.history import HistoryRecord, mark_rolled_back, record_rolled_back

        current: Statement | None = None
        script = self.runs[0].script
        names: list[str] = []
        restored: list[RestoredData] = []
        accepted: list[str] = []
        try:
            with conn.transaction():
                set_timeouts(conn, lock_timeout, statement_timeout, local=True)
                for item in self.runs:
                    script = item.script
                    name = _version_name(conn, item.version)
                    names.append(name)
                    for current in script.statements:
                        execute_statement(conn, current)
                    current = None
                    mine = restore_sets(conn, script, item.rows) if script.data else \
                        restore_data(conn, item.saved)
                    restored += mine
                    for current in script.deferred:
                        execute_statement(conn, current)
                    current = None
                    diffs = verify(conn, script)
                    if diffs and not self.accept_difference:
                        raise _Differences(item, diffs)
                    accepted += [f"{item.version}: {d}" for d in diffs]
                    record_rolled_back(conn, HistoryRecord(
                        ts=self.ts, version=item.version, name=name, path=item.path,
                        checksum=script.checksum, mode=self.mode, started_at=self.started_at,
                        duration_ms=(time.perf_counter() - self.t0) * 1000,
                        rows_affected=sum(r.rows for r in mine),
                        statements=[s.sql for s in script.all_statements],
                        snapshot_before=self.snapshot_before,
                        snapshot_after=self.snapshot_after, diff_patch=self.diff_patch))
                    if script.stored:
                        mark_rolled_back(conn, item.applied_ts, item.version, self.ts,
                                         diffs or None)
        except _Differences as exc:
            raise RollbackVerificationError(
                f"After undoing version {exc.run.version} (run {exc.run.applied_ts}) the "
                f"database does not match its state before that migration: "
                + "; ".join(exc.diffs) + ". The rollback transaction was rolled back; the "
                "database is unchanged.",
                hint="Something else changed these objects since the migration, or the reverse "
                     "script misses a step. Inspect them; to commit the rollback anyway, accept "
                     "the differences (they are logged).",
                differences=exc.diffs, version=exc.run.version) from None
        except psycopg.Error as exc:
            failure = statement_failure(exc, current)
            if policy.retries(failure.sqlstate):
                raise LockRetry(failure, current) from None
            raise _failed(failure, current, script) from None
        return names, restored, accepted


class _Differences(Exception):
    def __init__(self, run: RunToUndo, diffs: list[str]) -> None:
        super().__init__("differences")
        self.run, self.diffs = run, diffs


def verify(conn: psycopg.Connection, script: ReverseScript) -> list[str]:
    """How the objects the migration touched differ now from their state before it (empty:
    equal; nothing to compare for a script without a captured state)."""
    from dbsage.tools import rollback_state as rs

    if script.before is None:
        return []
    keys = list(rs.named(script.before)) + list(script.absent)
    now = rs.capture(conn, rs.scope_of_names(conn, keys))
    return rs.differences(script.before, now, script.absent)


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
