"""What a migration will do to the database before it runs: locks, rewrites, destruction.

Pure analysis of parsed statements (no database), a squawk lint wrapper, and a few
read-only catalog look-ups (sizes, rows at stake, missing objects) that the pre-flight
plan and the yolo rules build on. Nothing here prints, prompts or writes to a database.

Lock levels follow the PostgreSQL documentation ("Explicit Locking", and the lock notes of
ALTER TABLE, CREATE INDEX, REINDEX, CREATE POLICY, ...); they are kept as data in the tables
below and the test suite checks them against `pg_locks` on real servers.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbsage.tools.catalog import names_bookkeeping
from dbsage.tools.errors import DbsageError, LintUnavailableError, MigrationFileError
from dbsage.tools.sqlfile import (
    MigrationFile,
    Statement,
    called_functions,
    constant_text,
    do_block_body,
    line_in,
    walk,
)

if TYPE_CHECKING:
    import psycopg

DEFAULT_SCHEMA = "public"

# PostgreSQL's table-level lock modes, weakest first (the order of their conflicts).
LOCK_MODES: tuple[str, ...] = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
AS, RS, RX, SUX, SH, SRX, EX, AX = LOCK_MODES

# What other sessions can no longer do while the lock is held (for reports).
LOCK_BLOCKS: dict[str, str] = {
    AS: "blocks only ACCESS EXCLUSIVE (most DDL)",
    RS: "blocks EXCLUSIVE and ACCESS EXCLUSIVE",
    RX: "blocks CREATE INDEX and most DDL; reads and writes continue",
    SUX: "blocks DDL, VACUUM and CREATE INDEX; reads and writes continue",
    SH: "blocks writes; reads continue",
    SRX: "blocks writes; reads continue",
    EX: "blocks writes and SELECT ... FOR UPDATE; plain reads continue",
    AX: "blocks reads and writes",
}

# Lock taken on the statement's target relation, by pglast node name; a "+variant" key
# refines a kind (see _variant). Statement kinds absent here take no table lock.
STATEMENT_LOCKS: dict[str, str] = {
    "SelectStmt": AS,
    "SelectStmt+for_update": RS,
    "InsertStmt": RX,
    "UpdateStmt": RX,
    "DeleteStmt": RX,
    "MergeStmt": RX,
    "CopyStmt": AS,
    "CopyStmt+from": RX,
    "TruncateStmt": AX,
    "ClusterStmt": AX,
    "VacuumStmt": SUX,  # VACUUM and ANALYZE
    "VacuumStmt+full": AX,
    "IndexStmt": SH,
    "IndexStmt+concurrently": SUX,
    "ReindexStmt": SH,  # on the table; the index itself is held ACCESS EXCLUSIVE
    "ReindexStmt+concurrently": SUX,
    "RefreshMatViewStmt": AX,
    "RefreshMatViewStmt+concurrently": EX,
    "CreateTrigStmt": SRX,
    "CreatePolicyStmt": AX,
    "AlterPolicyStmt": AX,
    "RuleStmt": AX,
    "CommentStmt": SUX,
    "CreateStatsStmt": SUX,
    "AlterObjectSchemaStmt": AX,
    "CreateStmt": AX,  # on the new table (and its partition parent, see PARENT_LOCKS)
    "CreateTableAsStmt": AX,
    "ViewStmt": AX,
    "LockStmt": AX,  # default mode of LOCK TABLE
    "AlterTableStmt": AX,  # refined per sub-command by ALTER_TABLE_LOCKS
    "RenameStmt": AX,  # refined by RENAME_LOCKS
    "DropStmt": AX,  # refined by DROP_LOCKS
    "GrantStmt": AS,  # GRANT/REVOKE on tables (PostgreSQL 18 holds it; 15 holds none)
}

# ALTER TABLE sub-commands that take less than ACCESS EXCLUSIVE (see the ALTER TABLE page).
ALTER_TABLE_LOCKS: dict[str, str] = {
    "AT_SetStatistics": SUX,
    "AT_SetOptions": SUX,
    "AT_ResetOptions": SUX,
    "AT_SetStorage": AX,
    "AT_ClusterOn": SUX,
    "AT_DropCluster": SUX,
    "AT_SetRelOptions": SUX,  # fillfactor, autovacuum_* and other storage parameters
    "AT_ResetRelOptions": SUX,
    "AT_ValidateConstraint": SUX,
    "AT_AttachPartition": SUX,  # on the parent; the new partition: ACCESS EXCLUSIVE
    "AT_DetachPartitionFinalize": SUX,
    "AT_EnableTrig": SRX,
    "AT_EnableAlwaysTrig": SRX,
    "AT_EnableReplicaTrig": SRX,
    "AT_DisableTrig": SRX,
    "AT_EnableTrigAll": SRX,
    "AT_DisableTrigAll": SRX,
    "AT_EnableTrigUser": SRX,
    "AT_DisableTrigUser": SRX,
    "AT_AddConstraint+foreign": SRX,  # on both the table and the referenced table
    "AT_DetachPartition+concurrently": SUX,
}

# INHERIT / NO INHERIT and CREATE TABLE ... INHERITS: the lock on the parent table.
INHERIT_PARENT_LOCK = SUX

# ALTER TABLE sub-commands that rewrite every row (a new copy of the table is written).
ALTER_TABLE_REWRITES: dict[str, str] = {
    "AT_AlterColumnType": "changing a column's type rewrites the table (unless the types are "
    "binary-compatible, e.g. varchar(n) to text) and rebuilds its indexes",
    "AT_SetLogged": "SET LOGGED rewrites the table",
    "AT_SetUnLogged": "SET UNLOGGED rewrites the table",
    "AT_SetAccessMethod": "SET ACCESS METHOD rewrites the table",
    "AT_SetTableSpace": "SET TABLESPACE copies the whole table",
    "AT_SetExpression": "SET EXPRESSION recomputes a stored generated column for every row",
}

# RENAME targets: the lock on the renamed relation (or the table owning the object).
RENAME_LOCKS: dict[str, str] = {
    "OBJECT_INDEX": SUX,
    "OBJECT_TRIGGER": AX,
    "OBJECT_POLICY": AX,
    "OBJECT_RULE": AX,
}

# DROP object type -> lock on the relation dropped (or on the table owning the object).
DROP_LOCKS: dict[str, str] = {
    "OBJECT_TABLE": AX,
    "OBJECT_VIEW": AX,
    "OBJECT_MATVIEW": AX,
    "OBJECT_SEQUENCE": AX,
    "OBJECT_FOREIGN_TABLE": AX,
    "OBJECT_INDEX": AX,
    "OBJECT_INDEX+concurrently": SUX,
    "OBJECT_TRIGGER": AX,
    "OBJECT_POLICY": AX,
    "OBJECT_RULE": AX,
    "OBJECT_SCHEMA": AX,  # on every relation in the schema
}
_RELATION_OBJECTS = {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE",
                     "OBJECT_FOREIGN_TABLE", "OBJECT_INDEX"}
_TABLE_OWNED_OBJECTS = {"OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE"}

# Functions whose results change per row: as a column default, ADD COLUMN rewrites the table.
VOLATILE_FUNCTIONS = frozenset({
    "random", "random_normal", "setseed", "gen_random_uuid", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "clock_timestamp",
    "timeofday", "nextval", "txid_current", "pg_current_xact_id",
})
# Functions known to be stable or immutable (a default using only these is stored once).
NON_VOLATILE_FUNCTIONS = frozenset({
    "now", "statement_timestamp", "transaction_timestamp", "current_setting", "lower",
    "upper", "length", "concat", "concat_ws", "md5", "timezone", "date_trunc", "make_date",
    "make_interval", "make_timestamp", "make_timestamptz", "to_timestamp", "to_char",
    "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "array_fill", "btrim", "trim", "replace", "abs", "round",
    "jsonb_object", "json_object", "current_database", "current_schema",
})
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial",
                           "bigserial"})

DESTRUCTIVE_KINDS = ("drop_table", "drop_column", "alter_type", "truncate",
                     "delete_without_where", "update_without_where", "drop_schema")


class LintFailedError(DbsageError):
    """squawk ran but did not produce a report dbsage can read."""


@dataclass(frozen=True)
class DestructiveOp:
    """One operation that loses data or rewrites it irreversibly.

    Attributes:
        kind: one of DESTRUCTIVE_KINDS.
        table: schema-qualified table name (for drop_schema: the schema's name).
        columns: the columns concerned (drop_column, alter_type), else empty.
        statement_index: 1-based index of the statement in its migration.
        line: file line of the statement.
    """

    kind: str
    table: str
    columns: tuple[str, ...] = ()
    statement_index: int = 0
    line: int = 0

    @property
    def label(self) -> str:
        """A short text such as `drop_column public.users(email)`."""
        cols = f"({', '.join(self.columns)})" if self.columns else ""
        return f"{self.kind} {self.table}{cols}"


@dataclass(frozen=True)
class StatementAnalysis:
    """What one statement does to the database.

    Attributes:
        statement: the analysed statement (index, sql, line, ...).
        lock_level: the strongest table lock mode the statement takes, or None.
        locks: lock mode per schema-qualified relation, in order of appearance.
        tables: the relations the statement touches (the keys of `locks`, plus any
            relation it names without locking).
        creates: relations this statement creates (or renames something into).
        drops: relations this statement drops (or renames away).
        rewrites_table: True when every row of a table is written anew.
        rewrite_reason: why, when `rewrites_table`.
        destructive_ops: data-losing operations (empty for safe statements).
        missing_ok: IF EXISTS / IF NOT EXISTS: a missing target is not an error.
        transactional: False when the statement cannot run inside a transaction.
        description: one line for reports.
        settings: the run-time settings it changes (SET, RESET, set_config()).
        acts_on_server: what it does on the database host outside any transaction (COPY
            ... PROGRAM, lo_export, pg_terminate_backend, ...), or None. A dry-run must not
            run a statement that has one.
    """

    statement: Statement
    lock_level: str | None
    locks: dict[str, str]
    tables: tuple[str, ...]
    creates: tuple[str, ...]
    drops: tuple[str, ...]
    rewrites_table: bool
    rewrite_reason: str | None
    destructive_ops: tuple[DestructiveOp, ...]
    missing_ok: bool
    transactional: bool
    description: str
    settings: tuple[SettingChange, ...] = ()
    acts_on_server: ServerAction | None = None

    @property
    def destructive(self) -> DestructiveOp | None:
        """The first destructive operation, or None when the statement loses no data."""
        return self.destructive_ops[0] if self.destructive_ops else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for plans and --json output)."""
        return {
            "index": self.statement.index,
            "line": self.statement.line,
            "kind": self.statement.kind,
            "summary": self.statement.summary,
            "lock_level": self.lock_level,
            "locks": dict(self.locks),
            "tables": list(self.tables),
            "creates": list(self.creates),
            "drops": list(self.drops),
            "rewrites_table": self.rewrites_table,
            "rewrite_reason": self.rewrite_reason,
            "destructive": [asdict(op) for op in self.destructive_ops],
            "transactional": self.transactional,
            "description": self.description,
            "settings": [asdict(c) for c in self.settings],
            "acts_on_server": asdict(self.acts_on_server) if self.acts_on_server else None,
        }


@dataclass(frozen=True)
class MigrationAnalysis:
    """Per-statement analyses of one migration and the roll-ups a plan needs.

    Attributes:
        statements: one analysis per statement, in order.
        destructive: every destructive operation, in order.
        rewrites: the statements that rewrite a table.
        non_transactional: the statements that cannot run in a transaction.
        strongest_lock: the strongest lock taken on a relation that existed before the
            migration (relations the migration creates first block nobody), or None.
        created: every relation the migration creates.
        settings: every run-time setting the file changes, with its line (pg_dump's header
            lines recognised as such).
        server_actions: every statement that acts on the database host, with its line.
    """

    statements: tuple[StatementAnalysis, ...]
    destructive: tuple[DestructiveOp, ...]
    rewrites: tuple[StatementAnalysis, ...]
    non_transactional: tuple[StatementAnalysis, ...]
    strongest_lock: str | None
    created: tuple[str, ...]
    settings: tuple[SettingChange, ...] = ()
    server_actions: tuple[ServerAction, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the file's settings change and what it does on the host, `line N: ...`."""
        items = [(c.line, c.message) for c in self.settings]
        items += [(a.line, a.message) for a in self.server_actions]
        return tuple(text for _, text in sorted(items, key=lambda x: x[0]))

    @property
    def tables(self) -> tuple[str, ...]:
        """Every relation any statement touches, in order of first appearance."""
        return tuple(dict.fromkeys(t for s in self.statements for t in s.tables))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for plans and --json output)."""
        return {
            "statements": [s.to_dict() for s in self.statements],
            "destructive": [asdict(op) for op in self.destructive],
            "rewrites": [s.statement.index for s in self.rewrites],
            "non_transactional": [s.statement.index for s in self.non_transactional],
            "strongest_lock": self.strongest_lock,
            "created": list(self.created),
            "settings": [asdict(c) for c in self.settings],
            "server_actions": [asdict(a) for a in self.server_actions],
        }


@dataclass(frozen=True)
class LintFinding:
    """One squawk finding, located in the migration file (1-based line and column)."""

    rule: str
    level: str  # "error" or "warning"
    line: int
    column: int
    message: str
    help: str | None = None
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True)
class TableSize:
    """Size of a relation from the catalog (cheap: no scan).

    Attributes:
        name: the schema-qualified name asked for.
        exists: False when no such relation exists.
        bytes: pg_total_relation_size (table, indexes, TOAST; summed over partitions).
        estimated_rows: pg_class.reltuples, or None when never analysed/vacuumed.
        kind: "table", "partitioned table", "view", "materialized view", "index", ...
    """

    name: str
    exists: bool
    bytes: int | None = None
    estimated_rows: int | None = None
    kind: str | None = None

    @property
    def pretty_bytes(self) -> str:
        """The size in B/kB/MB/GB/TB, or "-" when unknown."""
        if self.bytes is None:
            return "-"
        size = float(self.bytes)
        for unit in ("B", "kB", "MB", "GB"):
            if size < 1024:
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
        return f"{size:.1f} TB"


@dataclass(frozen=True)
class RowsAtStake:
    """How many rows a destructive operation would touch.

    Attributes:
        rows: exact count, or None when it could not be counted (see status).
        status: "counted", "missing" (table or column does not exist) or "timeout".
        detail: a short explanation for reports.
    """

    rows: int | None
    status: str
    detail: str = ""


@dataclass(frozen=True)
class MissingObject:
    """A relation or schema the migration uses that neither exists nor is created first."""

    name: str
    kind: str  # "relation" or "schema"
    statement_index: int
    line: int
    reason: str


# --------------------------------------------------------------------------- lock helpers


def lock_rank(mode: str | None) -> int:
    """Position of `mode` in LOCK_MODES (-1 for None); higher conflicts with more."""
    return -1 if mode is None else LOCK_MODES.index(mode)


def strongest_lock(modes: Iterable[str | None]) -> str | None:
    """The strongest of the given lock modes, or None when there are none."""
    best: str | None = None
    for mode in modes:
        if lock_rank(mode) > lock_rank(best):
            best = mode
    return best


# --------------------------------------------------------------------------- AST helpers


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))




def _qualify(rangevar: Any) -> str:
    schema = getattr(rangevar, "schemaname", None) or DEFAULT_SCHEMA
    return f"{schema}.{rangevar.relname}"


def _qualify_names(names: Sequence[Any]) -> str:
    parts = [str(getattr(n, "sval", n)) for n in names]
    return ".".join(parts) if len(parts) > 1 else f"{DEFAULT_SCHEMA}.{parts[0]}"


def _has_option(options: Any, name: str) -> bool:
    return any(getattr(o, "defname", None) == name for o in (options or ()))


def _cte_names(node: Any) -> set[str]:
    names: set[str] = set()
    for n in walk(node):
        if type(n).__name__ == "CommonTableExpr":
            names.add(str(n.ctename))
    return names


def _type_name(type_name: Any) -> str:
    names = [str(getattr(n, "sval", n)) for n in (getattr(type_name, "names", None) or ())]
    return names[-1] if names else "?"


def _func_name(func_call: Any) -> str:
    return str(getattr(func_call.funcname[-1], "sval", func_call.funcname[-1]))


def _volatile_default(expr: Any) -> str | None:
    """Why a default expression may be volatile (so ADD COLUMN rewrites), or None."""
    for n in walk(expr):
        if type(n).__name__ != "FuncCall":
            continue
        name = _func_name(n).lower()
        if name in VOLATILE_FUNCTIONS:
            return f"the default {name}() is volatile: every existing row gets its own value"
        if name not in NON_VOLATILE_FUNCTIONS:
            return (f"the default calls {name}(), whose volatility is unknown here; a volatile "
                    "default rewrites the table")
    return None


# --------------------------------------------------------------------------- analysis state


@dataclass
class _Facts:
    """Mutable collector used while one statement is analysed."""

    stmt: Statement
    locks: dict[str, str] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    creates: list[str] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    rewrite: str | None = None
    destructive: list[DestructiveOp] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    missing_ok: bool = False
    unnamed_lock: str | None = None  # a lock on relations the SQL does not name


    def lock(self, relation: str, mode: str | None) -> None:
        if relation not in self.named:
            self.named.append(relation)
        if mode is not None and lock_rank(mode) > lock_rank(self.locks.get(relation)):
            self.locks[relation] = mode

    def destroy(self, kind: str, table: str, columns: Sequence[str] = ()) -> None:
        self.destructive.append(DestructiveOp(kind, table, tuple(columns), self.stmt.index,
                                              self.stmt.line))

    def rewrites(self, reason: str) -> None:
        self.rewrite = self.rewrite or reason

    def reads(self, node: Any, skip: Any = None) -> None:
        """ACCESS SHARE on every relation read by `node` (sub-queries, sources)."""
        ctes = _cte_names(node)
        for n in walk(node):
            if n is skip or type(n).__name__ != "RangeVar":
                continue
            if not n.schemaname and n.relname in ctes:
                continue
            self.lock(_qualify(n), AS)


def _variant(base: str, flag: bool, table: dict[str, str], variant: str) -> str:
    key = f"{base}+{variant}"
    return table[key] if flag and key in table else table[base]


# --------------------------------------------------------------------------- per-kind rules


def _dml(f: _Facts, node: Any) -> None:
    kind = type(node).__name__
    target = node.relation
    f.lock(_qualify(target), STATEMENT_LOCKS[kind])
    f.reads(node, skip=target)
    has_where = getattr(node, "whereClause", None) is not None
    if kind == "DeleteStmt" and not has_where:
        f.destroy("delete_without_where", _qualify(target))
    if kind == "UpdateStmt" and not has_where:
        f.destroy("update_without_where", _qualify(target))
    verb = {"InsertStmt": "insert into", "UpdateStmt": "update", "DeleteStmt": "delete from",
            "MergeStmt": "merge into"}[kind]
    suffix = " (no WHERE: every row)" if kind in ("UpdateStmt", "DeleteStmt") and not has_where \
        else ""
    f.details.append(f"{verb} {_qualify(target)}{suffix}")


def _select(f: _Facts, node: Any) -> None:
    if node.intoClause is not None:  # SELECT ... INTO new_table
        new = _qualify(node.intoClause.rel)
        f.creates.append(new)
        f.lock(new, AX)
        f.reads(node, skip=node.intoClause.rel)
        f.details.append(f"create table {new} from a query")
        return
    mode = STATEMENT_LOCKS["SelectStmt+for_update" if node.lockingClause else "SelectStmt"]
    ctes = _cte_names(node)
    for n in walk(node):
        if type(n).__name__ == "RangeVar" and not (not n.schemaname and n.relname in ctes):
            f.lock(_qualify(n), mode)
    f.details.append("query")


def _copy(f: _Facts, node: Any) -> None:
    if node.relation is None:
        f.reads(node.query)
        f.details.append("copy a query's result")
        return
    table = _qualify(node.relation)
    f.lock(table, _variant("CopyStmt", node.is_from, STATEMENT_LOCKS, "from"))
    f.details.append(f"copy {'into' if node.is_from else 'from'} {table}")


def _truncate(f: _Facts, node: Any) -> None:
    for rel in node.relations:
        f.lock(_qualify(rel), STATEMENT_LOCKS["TruncateStmt"])
        f.destroy("truncate", _qualify(rel))
    f.details.append(f"truncate {', '.join(_qualify(r) for r in node.relations)}")


def _create_table(f: _Facts, node: Any) -> None:
    new = _qualify(node.relation)
    f.creates.append(new)
    f.missing_ok = bool(node.if_not_exists)
    f.lock(new, STATEMENT_LOCKS["CreateStmt"])
    for parent in node.inhRelations or ():
        # PARTITION OF locks the parent ACCESS EXCLUSIVE; INHERITS takes SHARE UPDATE EXCLUSIVE.
        f.lock(_qualify(parent), AX if node.partbound is not None else INHERIT_PARENT_LOCK)
    _foreign_keys(f, node.tableElts)
    f.details.append(f"create table {new}")


def _foreign_keys(f: _Facts, nodes: Any) -> None:
    for n in walk(nodes):
        if type(n).__name__ == "Constraint" and _enum_name(n.contype) == "CONSTR_FOREIGN" \
                and n.pktable is not None:
            f.lock(_qualify(n.pktable), ALTER_TABLE_LOCKS["AT_AddConstraint+foreign"])


def _create_table_as(f: _Facts, node: Any) -> None:
    new = _qualify(node.into.rel)
    f.creates.append(new)
    f.missing_ok = bool(node.if_not_exists)
    f.lock(new, STATEMENT_LOCKS["CreateTableAsStmt"])
    f.reads(node.query)
    what = "materialized view" if _enum_name(node.objtype) == "OBJECT_MATVIEW" else "table"
    f.details.append(f"create {what} {new}")


def _create_view(f: _Facts, node: Any) -> None:
    view = _qualify(node.view)
    f.creates.append(view)
    f.lock(view, STATEMENT_LOCKS["ViewStmt"])
    f.reads(node.query)
    f.details.append(f"create {'or replace ' if node.replace else ''}view {view}")


def _create_index(f: _Facts, node: Any) -> None:
    table = _qualify(node.relation)
    f.lock(table, _variant("IndexStmt", node.concurrent, STATEMENT_LOCKS, "concurrently"))
    f.missing_ok = bool(node.if_not_exists)
    if node.idxname:
        f.creates.append(f"{table.split('.', 1)[0]}.{node.idxname}")
    unique = "unique " if node.unique else ""
    conc = " concurrently" if node.concurrent else ""
    f.details.append(f"create {unique}index{conc} {node.idxname or ''} on {table}".replace(
        "  ", " "))


def _reindex(f: _Facts, node: Any) -> None:
    kind = _enum_name(node.kind)
    conc = _has_option(node.params, "concurrently")
    if node.relation is not None and kind == "REINDEX_OBJECT_TABLE":
        f.lock(_qualify(node.relation), _variant("ReindexStmt", conc, STATEMENT_LOCKS,
                                                 "concurrently"))
    elif node.relation is not None:  # REINDEX INDEX: the table is not named in the SQL
        f.named.append(_qualify(node.relation))
    f.details.append(f"reindex {kind.removeprefix('REINDEX_OBJECT_').lower()} "
                     f"{_qualify(node.relation) if node.relation is not None else node.name}")


def _vacuum(f: _Facts, node: Any) -> None:
    full = node.is_vacuumcmd and _has_option(node.options, "full")
    mode = _variant("VacuumStmt", full, STATEMENT_LOCKS, "full")
    names = []
    for rel in node.rels or ():
        f.lock(_qualify(rel.relation), mode)
        names.append(_qualify(rel.relation))
        if full:
            f.rewrites("VACUUM FULL writes a new copy of the table")
    verb = "vacuum full" if full else "vacuum" if node.is_vacuumcmd else "analyze"
    f.details.append(f"{verb} {', '.join(names) or 'the whole database'}")


def _cluster(f: _Facts, node: Any) -> None:
    if node.relation is None:
        f.details.append("cluster every previously clustered table")
        return
    table = _qualify(node.relation)
    f.lock(table, STATEMENT_LOCKS["ClusterStmt"])
    f.rewrites("CLUSTER writes a new copy of the table in index order")
    f.details.append(f"cluster {table}")


def _refresh(f: _Facts, node: Any) -> None:
    mv = _qualify(node.relation)
    f.lock(mv, _variant("RefreshMatViewStmt", node.concurrent, STATEMENT_LOCKS,
                        "concurrently"))
    if not node.concurrent:
        f.rewrites("REFRESH MATERIALIZED VIEW replaces the view's whole contents")
    f.details.append(f"refresh materialized view {'concurrently ' if node.concurrent else ''}"
                     f"{mv}")


def _lock_table(f: _Facts, node: Any) -> None:
    mode = LOCK_MODES[int(node.mode) - 1] if node.mode else STATEMENT_LOCKS["LockStmt"]
    for rel in node.relations:
        f.lock(_qualify(rel), mode)
    f.details.append(f"lock {', '.join(_qualify(r) for r in node.relations)} in {mode} mode")


def _simple_target(attr: str, verb: str) -> Callable[[_Facts, Any], None]:
    def rule(f: _Facts, node: Any) -> None:
        rel = getattr(node, attr)
        f.lock(_qualify(rel), STATEMENT_LOCKS[type(node).__name__])
        f.details.append(f"{verb} on {_qualify(rel)}")

    return rule


def _create_trigger(f: _Facts, node: Any) -> None:
    _simple_target("relation", f"create trigger {node.trigname}")(f, node)
    if node.constrrel is not None:
        f.lock(_qualify(node.constrrel), AS)


def _create_stats(f: _Facts, node: Any) -> None:
    for rel in node.relations or ():
        if type(rel).__name__ == "RangeVar":
            f.lock(_qualify(rel), STATEMENT_LOCKS["CreateStatsStmt"])
    f.details.append("create statistics")


def _comment(f: _Facts, node: Any) -> None:
    objtype = _enum_name(node.objtype)
    obj = node.object
    target = _object_name(obj)
    if objtype in ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE"):
        target = _qualify_names(obj)
        f.lock(target, STATEMENT_LOCKS["CommentStmt"])
    elif objtype == "OBJECT_COLUMN":
        f.lock(_qualify_names(obj[:-1]), STATEMENT_LOCKS["CommentStmt"])
        target = f"{_qualify_names(obj[:-1])}.{obj[-1].sval}"
    f.details.append(f"comment on {objtype.removeprefix('OBJECT_').lower()} {target}")


def _alter_table(f: _Facts, node: Any) -> None:
    table = _qualify(node.relation)
    f.missing_ok = bool(node.missing_ok)
    objtype = _enum_name(node.objtype).removeprefix("OBJECT_").lower()
    parts: list[str] = []
    dropped: list[str] = []
    retyped: list[str] = []
    for cmd in node.cmds:
        sub = _enum_name(cmd.subtype)
        mode = ALTER_TABLE_LOCKS.get(sub, STATEMENT_LOCKS["AlterTableStmt"])
        definition = cmd.def_
        if sub == "AT_AddConstraint" and _enum_name(definition.contype) == "CONSTR_FOREIGN":
            mode = ALTER_TABLE_LOCKS["AT_AddConstraint+foreign"]
        if sub == "AT_DetachPartition" and definition.concurrent:
            mode = ALTER_TABLE_LOCKS["AT_DetachPartition+concurrently"]
        f.lock(table, mode)
        _foreign_keys(f, definition)
        if sub in ("AT_AttachPartition", "AT_DetachPartition"):
            f.lock(_qualify(definition.name), AX if not definition.concurrent else SUX)
        if sub in ("AT_AddInherit", "AT_DropInherit"):
            f.lock(_qualify(definition), INHERIT_PARENT_LOCK)
        if sub in ALTER_TABLE_REWRITES:
            f.rewrites(ALTER_TABLE_REWRITES[sub])
        if sub == "AT_AddColumn":
            reason = _add_column_rewrite(definition)
            if reason:
                f.rewrites(reason)
        if sub == "AT_DropColumn":
            dropped.append(str(cmd.name))
        if sub == "AT_AlterColumnType":
            retyped.append(str(cmd.name))
        parts.append(_describe_subcommand(sub, cmd))
    if dropped:
        f.destroy("drop_column", table, dropped)
    if retyped:
        f.destroy("alter_type", table, retyped)
    f.details.append(f"alter {objtype} {table}: {', '.join(parts)}")


def _add_column_rewrite(coldef: Any) -> str | None:
    if _type_name(coldef.typeName) in _SERIAL_TYPES:
        return f"a {_type_name(coldef.typeName)} column fills every row from a sequence"
    for con in coldef.constraints or ():
        contype = _enum_name(con.contype)
        if contype == "CONSTR_IDENTITY":
            return "an identity column fills every row from a sequence"
        if contype == "CONSTR_GENERATED" and con.generated_kind != "v":
            return "a stored generated column is computed for every row"
        if contype == "CONSTR_DEFAULT" and con.raw_expr is not None:
            reason = _volatile_default(con.raw_expr)
            if reason:
                return reason
    return None


def _describe_subcommand(sub: str, cmd: Any) -> str:
    words = sub.removeprefix("AT_")
    text = "".join(" " + c.lower() if c.isupper() else c for c in words).strip()
    if sub == "AT_AddColumn":
        return f"add column {cmd.def_.colname}"
    if sub == "AT_AddConstraint":
        kind = _enum_name(cmd.def_.contype).removeprefix("CONSTR_").lower()
        return f"add {kind} constraint {cmd.def_.conname or ''}".rstrip()
    if cmd.name:
        return f"{text} {cmd.name}"
    return text


def _rename(f: _Facts, node: Any) -> None:
    rtype = _enum_name(node.renameType)
    f.missing_ok = bool(node.missing_ok)
    if node.relation is not None:
        old = _qualify(node.relation)
        f.lock(old, RENAME_LOCKS.get(rtype, STATEMENT_LOCKS["RenameStmt"]))
        if rtype in _RELATION_OBJECTS:
            new = f"{old.split('.', 1)[0]}.{node.newname}"
            f.drops.append(old)
            f.creates.append(new)
        what = f"{node.subname} on {old}" if node.subname else old
        f.details.append(f"rename {rtype.removeprefix('OBJECT_').lower()} {what} to "
                         f"{node.newname}")
    else:
        f.details.append(f"rename {rtype.removeprefix('OBJECT_').lower()} to {node.newname}")


def _set_schema(f: _Facts, node: Any) -> None:
    f.missing_ok = bool(node.missing_ok)
    if node.relation is None:
        f.details.append(f"move {_enum_name(node.objectType).removeprefix('OBJECT_').lower()} "
                         f"to schema {node.newschema}")
        return
    old = _qualify(node.relation)
    f.lock(old, STATEMENT_LOCKS["AlterObjectSchemaStmt"])
    f.drops.append(old)
    f.creates.append(f"{node.newschema}.{node.relation.relname}")
    f.details.append(f"move {old} to schema {node.newschema}")


def _drop(f: _Facts, node: Any) -> None:
    rtype = _enum_name(node.removeType)
    f.missing_ok = bool(node.missing_ok)
    what = rtype.removeprefix("OBJECT_").lower().replace("_", " ")
    names: list[str] = []
    for obj in node.objects:
        if rtype in _RELATION_OBJECTS:
            name = _qualify_names(obj)
            f.lock(name, _variant(rtype, node.concurrent, DROP_LOCKS, "concurrently"))
            f.drops.append(name)
            if rtype == "OBJECT_TABLE":
                f.destroy("drop_table", name)
        elif rtype in _TABLE_OWNED_OBJECTS:
            name = f"{obj[-1].sval} on {_qualify_names(obj[:-1])}"
            f.lock(_qualify_names(obj[:-1]), DROP_LOCKS[rtype])
        elif rtype == "OBJECT_SCHEMA":
            name = str(getattr(obj, "sval", obj))
            f.destroy("drop_schema", name)
            f.unnamed_lock = DROP_LOCKS[rtype]
        else:
            name = _object_name(obj)
        names.append(name)
    cascade = " cascade" if _enum_name(node.behavior) == "DROP_CASCADE" else ""
    f.details.append(f"drop {what} {', '.join(names)}{cascade}")


def _object_name(obj: Any) -> str:
    if isinstance(obj, list | tuple):
        return ".".join(str(getattr(o, "sval", o)) for o in obj)
    if type(obj).__name__ == "ObjectWithArgs":
        return ".".join(str(getattr(o, "sval", o)) for o in obj.objname)
    if type(obj).__name__ == "TypeName":
        return _type_name(obj)
    return str(getattr(obj, "sval", obj))


def _grant(f: _Facts, node: Any) -> None:
    if _enum_name(node.objtype) == "OBJECT_TABLE" and \
            _enum_name(node.targtype) == "ACL_TARGET_OBJECT":
        for rel in node.objects or ():
            f.lock(_qualify(rel), STATEMENT_LOCKS["GrantStmt"])
    verb = "grant" if node.is_grant else "revoke"
    f.details.append(f"{verb} on {_enum_name(node.objtype).removeprefix('OBJECT_').lower()}")


_RULES: dict[str, Callable[[_Facts, Any], None]] = {
    "InsertStmt": _dml,
    "UpdateStmt": _dml,
    "DeleteStmt": _dml,
    "MergeStmt": _dml,
    "SelectStmt": _select,
    "CopyStmt": _copy,
    "TruncateStmt": _truncate,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "ViewStmt": _create_view,
    "IndexStmt": _create_index,
    "ReindexStmt": _reindex,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "RefreshMatViewStmt": _refresh,
    "LockStmt": _lock_table,
    "CreateTrigStmt": _create_trigger,
    "CreatePolicyStmt": _simple_target("table", "create policy"),
    "AlterPolicyStmt": _simple_target("table", "alter policy"),
    "RuleStmt": _simple_target("relation", "create rule"),
    "CreateStatsStmt": _create_stats,
    "CommentStmt": _comment,
    "AlterTableStmt": _alter_table,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
    "DropStmt": _drop,
    "GrantStmt": _grant,
}


def _describe_other(stmt: Statement) -> str:
    node = stmt.node
    kind = stmt.kind
    if kind == "CreateSchemaStmt":
        return f"create schema {node.schemaname}"
    if kind == "CreateFunctionStmt":
        what = "procedure" if node.is_procedure else "function"
        return f"create {what} {_object_name(node.funcname)}"
    if kind == "CreateSeqStmt":
        return f"create sequence {_qualify(node.sequence)}"
    if kind == "CreateExtensionStmt":
        return f"create extension {node.extname}"
    words = kind.removesuffix("Stmt")
    return "".join(" " + c.lower() if c.isupper() else c for c in words).strip()


def analyze_statement(stmt: Statement) -> StatementAnalysis:
    """Analyse one parsed statement without a database.

    Args:
        stmt: a statement from `dbsage.tools.sqlfile.parse_statements` (with its AST node).

    Returns:
        The statement's lock level and locked relations, the relations it creates and
        drops, whether it rewrites a table, the destructive operations it performs, and a
        one-line description.
    """
    facts = _Facts(stmt)
    rule = _RULES.get(stmt.kind)
    if rule is not None and stmt.tree is not None:
        rule(facts, stmt.node)
    else:
        facts.details.append(_describe_other(stmt))
        if stmt.kind == "CreateSeqStmt" and stmt.tree is not None:
            facts.creates.append(_qualify(stmt.node.sequence))
    lock_level = strongest_lock([*facts.locks.values(), facts.unnamed_lock])
    description = "; ".join(facts.details)
    if lock_level:
        description += f" [{lock_level}: {LOCK_BLOCKS[lock_level]}]"
    if facts.rewrite:
        description += " [rewrites the table]"
    if not stmt.transactional:
        description += " [cannot run in a transaction]"
    return StatementAnalysis(
        statement=stmt,
        lock_level=lock_level,
        locks=dict(facts.locks),
        tables=tuple(facts.named),
        creates=tuple(dict.fromkeys(facts.creates)),
        drops=tuple(dict.fromkeys(facts.drops)),
        rewrites_table=facts.rewrite is not None,
        rewrite_reason=facts.rewrite,
        destructive_ops=tuple(facts.destructive),
        missing_ok=facts.missing_ok,
        transactional=stmt.transactional,
        description=description,
        settings=setting_changes_of(stmt) if _may_set(stmt) else (),
        acts_on_server=acts_on_server(stmt),
    )


def analyze_migration(migration: MigrationFile) -> MigrationAnalysis:
    """Analyse every statement of a migration and roll the results up.

    Args:
        migration: a file read by `dbsage.tools.sqlfile.read_migration`.

    Returns:
        The per-statement analyses plus every destructive operation, the statements that
        rewrite a table or cannot run in a transaction, and the strongest lock taken on a
        relation that existed before the migration.
    """
    shared: dict[str, StatementAnalysis] = {}
    analyses = tuple(_analyze_shape(s, shared) for s in migration.statements)
    created: dict[str, None] = {}
    existing_locks: list[str] = []
    for a in analyses:
        existing_locks += [mode for rel, mode in a.locks.items()
                           if rel not in created and rel not in a.creates]
        created.update(dict.fromkeys(a.creates))
    return MigrationAnalysis(
        statements=analyses,
        destructive=tuple(op for a in analyses for op in a.destructive_ops),
        rewrites=tuple(a for a in analyses if a.rewrites_table),
        non_transactional=tuple(a for a in analyses if not a.transactional),
        strongest_lock=strongest_lock(existing_locks),
        created=tuple(created),
        settings=tuple(c for a in analyses for c in a.settings),
        server_actions=tuple(a.acts_on_server for a in analyses if a.acts_on_server),
    )


#: Statement kinds whose analysis does not depend on the values of their constants (only on
#: which statement, on which table, with or without a WHERE): one analysis serves every
#: statement of a shape (`Statement.shape`).
_SHAPE_KINDS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt"})


def _analyze_shape(stmt: Statement, shared: dict[str, StatementAnalysis]) -> StatementAnalysis:
    """`analyze_statement`, computed once per shape for the kinds that allow it: a file of
    10,000 INSERTs into one table is analysed once, not 10,000 times. A statement that
    destroys data, changes a setting or acts on the server is analysed on its own."""
    key = stmt.shape
    if key is None or stmt.kind not in _SHAPE_KINDS:
        return analyze_statement(stmt)
    first = shared.get(key)
    if first is not None:
        # dataclasses.replace, at a fifth of its cost (it runs the frozen __init__ field by
        # field): the same analysis, of this statement
        same = object.__new__(StatementAnalysis)
        same.__dict__.update(first.__dict__, statement=stmt)
        return same
    analysis = analyze_statement(stmt)
    if not (analysis.destructive_ops or analysis.settings or analysis.acts_on_server):
        shared[key] = analysis
    return analysis


#: Statement kinds whose table locks analysis knows entirely (they run no user code that
#: could take others, apart from triggers and defaults of the rows they write).
_KNOWN_LOCK_KINDS = frozenset({
    "CreateStmt", "IndexStmt", "CreateSeqStmt", "AlterSeqStmt", "CommentStmt",
    "CreateStatsStmt", "CreateTrigStmt", "GrantStmt", "CreateFunctionStmt", "CreateSchemaStmt",
    "CreateEnumStmt", "CompositeTypeStmt", "CreateDomainStmt", "AlterTableStmt", "ViewStmt",
    "InsertStmt", "UpdateStmt", "DeleteStmt", "CreatePolicyStmt", "AlterPolicyStmt",
    "CreateTableAsStmt", "AlterEnumStmt"})


def compatible_with_a_dump(analysis: MigrationAnalysis) -> bool:
    """True when no statement wants a lock that a running pg_dump blocks: pg_dump holds ACCESS
    SHARE on every table it dumps, which only ACCESS EXCLUSIVE conflicts with, so a migration
    that takes at most EXCLUSIVE on the relations that existed before can run while the
    before-snapshot is still being written. False when analysis cannot tell (DO, CALL, a
    SELECT of a function, an extension's script: any lock is possible). The caller also
    checks that the relations named are tables (tools/catalog.non_tables): a view's ALTER
    takes more than the same ALTER on a table."""
    return (all(a.statement.kind in _KNOWN_LOCK_KINDS and a.transactional
                and not (a.statement.kind == "ViewStmt"  # OR REPLACE: an existing view, AX
                         and getattr(a.statement.node, "replace", False))
                for a in analysis.statements)
            and lock_rank(analysis.strongest_lock) < lock_rank(AX))


# --------------------------------------------------------------------------- settings, host effects

#: The SET lines every pg_dump output starts with (name, value as dbsage normalises it), and
#: what each does to the statements after it.
PG_DUMP_HEADER: dict[tuple[str, str], str] = {
    ("statement_timeout", "0"): "",  # said by the timeout rule below
    ("lock_timeout", "0"): "",
    ("idle_in_transaction_session_timeout", "0"): "no limit on time idle in a transaction for "
    "the rest of dbsage's session: no effect on the migration",
    ("transaction_timeout", "0"): "no limit on a transaction's time for the rest of dbsage's "
    "session: no effect on the migration",
    ("client_encoding", "utf8"): "the encoding dbsage already uses: no change",
    ("standard_conforming_strings", "on"): "the default: no change",
    ("search_path", ""): "",  # said by the search_path rule below
    ("check_function_bodies", "false"): "function bodies are not checked when they are created: "
    "a function that refers to something missing fails only when it is called",
    ("xmloption", "content"): "the default: no change",
    ("client_min_messages", "warning"): "notices (such as `... does not exist, skipping`) are "
    "not sent: no change to what runs",
    ("row_security", "off"): "a query that row-level security would filter fails instead "
    "(for a role without BYPASSRLS), so a statement on a table with RLS may fail",
    ("default_tablespace", ""): "new tables go to the database's default tablespace: no change",
    ("default_table_access_method", "heap"): "new tables use heap, the default: no change",
    ("default_with_oids", "false"): "the default: no change",
}
_TIMEOUTS = ("lock_timeout", "statement_timeout")
#: SET and set_config in a DO block's PL/pgSQL (not parsed by pglast): a text match.
_SET_IN_CODE = re.compile(
    r"(?i)(?:^|;|\bbegin\b|\bthen\b|\bloop\b|\belse\b)\s*set\s+(?P<local>local\s+|session\s+)?"
    r"(?P<name>[a-z_][a-z0-9_.]*)\s*(?:=|\bto\b)\s*(?P<value>[^;]*)|"
    r"set_config\s*\(\s*'(?P<cname>[^']*)'\s*,\s*'(?P<cvalue>[^']*)'\s*,\s*(?P<clocal>\w+)")


@dataclass(frozen=True)
class SettingChange:
    """A statement that changes a run-time setting: SET, SET LOCAL, RESET, set_config().

    Attributes:
        statement_index: 1-based index of the statement in its migration.
        line: file line of the change.
        name: the setting, lower-case; "" when the name is computed at run time.
        value: the new value as written (normalised), None for a reset to the default.
        scope: "session" (SET, set_config(..., false)) or "transaction" (SET LOCAL,
            set_config(..., true)).
        written: how the file writes it, e.g. `SET lock_timeout = 0`.
        pg_dump_header: one of the SET lines pg_dump output starts with (PG_DUMP_HEADER).
        effect: what it does to the statements after it, and what dbsage does about it.
    """

    statement_index: int
    line: int
    name: str
    value: str | None
    scope: str
    written: str
    pg_dump_header: bool
    effect: str

    @property
    def changes_timeouts(self) -> bool:
        """It may change lock_timeout or statement_timeout (the executor then sets dbsage's
        own again)."""
        return self.name in (*_TIMEOUTS, "", "all")

    @property
    def message(self) -> str:
        """`line 1: SET lock_timeout = 0 (a pg_dump header line): ...`."""
        header = " (a pg_dump header line)" if self.pg_dump_header else ""
        return f"line {self.line}: {self.written}{header}: {self.effect}"


@dataclass(frozen=True)
class ServerAction:
    """A statement that acts on the database host, outside any transaction: nothing rolls it
    back, so a dry-run must not run it (COPY ... PROGRAM, server-side COPY files, lo_export,
    pg_terminate_backend, pg_reload_conf, dblink, ...).

    Attributes:
        statement_index: 1-based index of the statement in its migration.
        line: file line of the call (or of the statement).
        what: the statement or function, e.g. `COPY ... TO PROGRAM`, `lo_export()`.
        reason: what it does there, e.g. "runs a shell command".
    """

    statement_index: int
    line: int
    what: str
    reason: str

    @property
    def message(self) -> str:
        """`line 4: COPY ... TO PROGRAM acts on the database host (runs a shell command) ...`."""
        return (f"line {self.line}: {self.what} acts on the database host ({self.reason}), "
                "outside the transaction: no rollback undoes it")

    @property
    def not_run_message(self) -> str:
        """What a dry-run says of it: it was skipped (STATUS_ACTS_ON_SERVER)."""
        return (f"line {self.line}: {self.what} was {STATUS_ACTS_ON_SERVER} ({self.reason}), "
                "which no rollback undoes; the apply will run it, once. The statements after "
                "it ran without its effect.")


#: A dry-run's status for a statement it does not run because it acts on the server.
STATUS_ACTS_ON_SERVER = "not run in the dry-run: acts on the server"


def dry_run_skips(migration: MigrationFile) -> dict[int, ServerAction]:
    """The statements no dry-run may run (they act on the database host), by index."""
    return {a.statement_index: a for a in server_actions(migration)}


#: Functions that act on the host or on other sessions, by name: what they do.
SERVER_FUNCTIONS: dict[str, str] = {
    "lo_export": "writes a file there",
    "lo_import": "reads a file there",
    "pg_terminate_backend": "ends another session",
    "pg_cancel_backend": "cancels another session's query",
    "pg_reload_conf": "makes the server reload its configuration",
    "pg_rotate_logfile": "makes the server start a new log file",
    "pg_switch_wal": "makes the server switch to a new WAL file",
    "pg_promote": "promotes a standby server",
    "pg_create_restore_point": "writes a restore point into the WAL",
    "pg_file_write": "writes a file there",
    "pg_file_rename": "renames a file there",
    "pg_file_unlink": "deletes a file there",
    "pg_file_sync": "syncs a file there",
    "pg_create_physical_replication_slot": "creates a replication slot (not transactional)",
    "pg_create_logical_replication_slot": "creates a replication slot (not transactional)",
    "pg_drop_replication_slot": "drops a replication slot (not transactional)",
    "pg_copy_physical_replication_slot": "creates a replication slot (not transactional)",
    "pg_copy_logical_replication_slot": "creates a replication slot (not transactional)",
}
_DBLINK_REASON = ("runs SQL over another connection, possibly to another database, that "
                  "commits on its own")
_SERVER_CALL_HINT = re.compile(
    "(?i)" + "|".join(sorted({*SERVER_FUNCTIONS, "dblink"}, key=len, reverse=True)))
_SERVER_IN_CODE = re.compile(
    r"(?i)\b(?P<func>" + "|".join(sorted(SERVER_FUNCTIONS, key=len, reverse=True))
    + r"|dblink\w*)\s*\(|(?P<copy>\bcopy\b[^;]*?\b(?P<dir>to|from)\s+(?P<program>program\s+)?"
    r"(?:'|e'))")
_SERVER_STATEMENTS = {
    "AlterSystemStmt": ("ALTER SYSTEM", "writes the server's configuration file "
                        "(postgresql.auto.conf)"),
    "CreateSubscriptionStmt": ("CREATE SUBSCRIPTION", "connects to another server and starts "
                               "replicating from it"),
}


def _unquote(value: str | None) -> str | None:
    return None if value is None else value.strip().strip("'\"").strip()


def _setting_effect(name: str, value: str | None, scope: str) -> str:
    """What a change of `name` to `value` (None: its default) does, in words."""
    rest = "the rest of the migration" if scope == "transaction" else \
        "the rest of the migration (dbsage resets it afterwards)"
    if name == "lock_timeout":
        wait = ("for locks without limit" if value in (None, "0") else f"for locks up to {value}")
        return (f"the statements after it would wait {wait}, queueing other sessions' queries "
                "on the same tables behind them; dbsage sets its own lock_timeout again "
                "right after this line, so the file's value does not apply")
    if name == "statement_timeout":
        limit = "no limit" if value in (None, "0") else f"a limit of {value}"
        return (f"it would give the statements after it {limit}; dbsage sets its own "
                "statement_timeout again right after this line, so the file's value does not "
                "apply")
    if name == "":
        return ("it sets a setting whose name is computed when it runs; if it is lock_timeout "
                "or statement_timeout, dbsage sets its own again right after it")
    if name == "search_path":
        if value is None:
            return f"name resolution goes back to the default search_path for {rest}"
        if value == "":
            return (f"search_path is empty for {rest}: an unqualified name resolves only in "
                    "pg_catalog, so every other name must be schema-qualified (as pg_dump "
                    "output is)")
        return f"unqualified names resolve in {value} for {rest}"
    if name == "client_encoding" and (value or "").lower() not in ("", "utf8", "utf-8",
                                                                   "unicode"):
        return (f"the server would exchange text with dbsage in {value} for {rest}: a "
                "character that encoding cannot hold fails")
    if name == "timezone":
        return (f"times without a zone are read and shown in {value or 'the default zone'} "
                f"for {rest}")
    if value is None:
        return f"{name} goes back to its default for {rest}"
    return f"{name} is {value or 'empty'} for {rest}"


def _setting_change(stmt: Statement, line: int, name: str, value: str | None, scope: str,
                    written: str, *, top_level: bool = True) -> SettingChange:
    name = name.lower()
    shown = _unquote(value)
    key = (name, (shown or "").lower())
    header = top_level and shown is not None and key in PG_DUMP_HEADER
    effect = (PG_DUMP_HEADER[key] if header else "") or _setting_effect(name, shown, scope)
    return SettingChange(stmt.index, line, name, shown, scope, written, header, effect)


def setting_changes_of(stmt: Statement) -> tuple[SettingChange, ...]:
    """The run-time settings one statement changes (SET, SET LOCAL, RESET, set_config(),
    and SET/set_config in a DO block; RESET ALL changes "all"). SET ROLE and its kind never
    get here: read_migration refuses them."""
    node = stmt.node
    if node is None:
        return ()
    out: list[SettingChange] = []
    if stmt.kind == "VariableSetStmt":
        kind = _enum_name(node.kind)
        name = str(node.name or "").lower()
        scope = "transaction" if node.is_local else "session"
        local = "LOCAL " if node.is_local else ""
        if kind == "VAR_SET_VALUE":
            joined = ", ".join(c if (c := constant_text(a)) is not None else "?"
                               for a in node.args or ())
            shown = " ".join(stmt.sql.split())
            out.append(_setting_change(stmt, stmt.line, name, joined, scope, shown))
        elif kind in ("VAR_RESET", "VAR_SET_DEFAULT"):
            out.append(_setting_change(stmt, stmt.line, name, None, scope,
                                       f"RESET {name}" if kind == "VAR_RESET"
                                       else f"SET {local}{name} TO DEFAULT"))
        elif kind == "VAR_RESET_ALL":
            out.append(SettingChange(stmt.index, stmt.line, "all", None, "session",
                                     "RESET ALL", False,
                                     "resets every setting of the session to its default; "
                                     "dbsage sets its own lock_timeout and statement_timeout "
                                     "again right after it"))
        elif kind == "VAR_SET_MULTI":
            out.append(SettingChange(stmt.index, stmt.line, name, None, scope,
                                     " ".join(stmt.sql.split()), False,
                                     f"sets the {name.lower()} characteristics for the rest of "
                                     "the migration"))
        return tuple(out)
    if "set_config" in stmt.sql.lower():
        for fname, call in called_functions(stmt):
            if fname != "set_config" or not call.args:
                continue
            args = list(call.args)
            setting = constant_text(args[0])
            value = constant_text(args[1]) if len(args) > 1 else None
            is_local = (constant_text(args[2]) or "").lower() if len(args) > 2 else ""
            scope = "transaction" if is_local in ("true", "t", "on", "1", "yes") else "session"
            line = line_in(stmt, stmt.sql.lower().find("set_config"))
            flag = "true" if scope == "transaction" else "false"
            written = (f"set_config('{setting}', '{value}', {flag})" if setting is not None
                       else "set_config(...) with a computed name")
            out.append(_setting_change(stmt, line, setting or "", value, scope, written))
    body = do_block_body(stmt)
    if body is not None:
        for m in _SET_IN_CODE.finditer(body[0]):
            line = line_in(stmt, body[1] + (m.start("name") if m["name"] else m.start()))
            if m["cname"] is not None:
                scope = "transaction" if m["clocal"].lower() == "true" else "session"
                out.append(_setting_change(stmt, line, m["cname"], m["cvalue"], scope,
                                           f"set_config('{m['cname']}', ...) in a DO block",
                                           top_level=False))
            else:
                scope = "transaction" if (m["local"] or "").strip().lower() == "local" \
                    else "session"
                out.append(_setting_change(stmt, line, m["name"], m["value"].strip(), scope,
                                           f"SET {m['name']} in a DO block", top_level=False))
    return tuple(out)


def acts_on_server(stmt: Statement) -> ServerAction | None:
    """What the statement does on the database host, outside any transaction, or None.

    COPY ... TO/FROM PROGRAM, server-side COPY to or from a file, lo_export/lo_import,
    pg_terminate_backend, pg_reload_conf, dblink, replication slots, ALTER SYSTEM, CREATE
    SUBSCRIPTION; calls are looked for in what the statement runs now and in DO blocks. A
    dry-run must not run such a statement (nothing rolls it back). Pure: no database.
    """
    if stmt.tree is None:
        return None
    if stmt.kind in _SERVER_STATEMENTS:
        return ServerAction(stmt.index, stmt.line, *_SERVER_STATEMENTS[stmt.kind])
    node = stmt.node if stmt.kind == "CopyStmt" else None  # the rest: no tree needed yet
    if node is not None and node.filename is not None:
        direction = "FROM" if node.is_from else "TO"
        if node.is_program:
            return ServerAction(stmt.index, stmt.line, f"COPY ... {direction} PROGRAM",
                                "runs a shell command")
        verb = "reads" if node.is_from else "writes"
        return ServerAction(stmt.index, stmt.line, f"COPY ... {direction} '{node.filename}'",
                            f"{verb} the file {node.filename}")
    if _may_call_server_function(stmt.sql):
        for name, _call in called_functions(stmt):
            line = line_in(stmt, stmt.sql.lower().find(name))
            if name in SERVER_FUNCTIONS:
                return ServerAction(stmt.index, line, f"{name}()", SERVER_FUNCTIONS[name])
            if name.startswith("dblink"):
                return ServerAction(stmt.index, line, f"{name}()", _DBLINK_REASON)
    body = do_block_body(stmt)
    if body is not None:
        m = _SERVER_IN_CODE.search(body[0])
        if m is not None:
            line = line_in(stmt, body[1] + m.start())
            where = f" (in the DO block at line {stmt.line})"
            if m["func"]:
                name = m["func"].lower()
                reason = SERVER_FUNCTIONS.get(name, _DBLINK_REASON)
                return ServerAction(stmt.index, line, f"{name}(){where}", reason)
            direction = m["dir"].upper()
            if m["program"]:
                return ServerAction(stmt.index, line, f"COPY ... {direction} PROGRAM{where}",
                                    "runs a shell command")
            verb = "reads" if direction == "FROM" else "writes"
            return ServerAction(stmt.index, line, f"COPY ... {direction} a file{where}",
                                f"{verb} a file there")
    return None


def _may_set(stmt: Statement) -> bool:
    return stmt.kind in ("VariableSetStmt", "DoStmt") or "set_config" in stmt.sql.lower()


def _may_call_server_function(sql: str) -> bool:
    """A cheap test (substrings first: a regex per statement costs a 10,000-statement file
    half a second) before a statement's tree is walked for SERVER_FUNCTIONS."""
    low = sql.lower()
    return ("pg_" in low or "lo_" in low or "dblink" in low) and bool(
        _SERVER_CALL_HINT.search(low))


def setting_changes(migration: MigrationFile) -> tuple[SettingChange, ...]:
    """Every run-time setting the migration changes, in order (cheap: a kind or substring
    test per statement before any tree is walked)."""
    return tuple(c for s in migration.statements if _may_set(s) for c in setting_changes_of(s))


def server_actions(migration: MigrationFile) -> tuple[ServerAction, ...]:
    """Every statement of the migration that acts on the database host (see acts_on_server)."""
    found = (acts_on_server(s) for s in migration.statements)
    return tuple(a for a in found if a is not None)


def file_warnings(migration: MigrationFile,
                  analysis: MigrationAnalysis | None = None) -> tuple[str, ...]:
    """What the file's own settings change, what it does on the database host and what it
    changes that the snapshots leave out, one `line N: ...` sentence each, in file order (for
    plan, dry-run and apply reports). With the file's `analysis`, its settings and host
    effects are taken from it rather than worked out again."""
    if analysis is not None and analysis.statements and \
            analysis.statements[0].statement is migration.statements[0]:
        settings, actions = analysis.settings, analysis.server_actions
    else:
        settings, actions = setting_changes(migration), server_actions(migration)
    items: list[tuple[int, str]] = [(c.line, c.message) for c in settings]
    items += [(a.line, a.message) for a in actions]
    items += [(c.line, c.message) for c in excluded_schema_changes(migration)]
    return tuple(text for _, text in sorted(items, key=lambda x: x[0]))


# --------------------------------------------------------------------------- named objects
#
# The objects a statement creates, changes or drops, by the kinds of statement that name them
# (what they read, such as a foreign key's referenced table or a query's tables, is left out).

_TARGET_ATTRS: dict[str, tuple[str, ...]] = {
    "CreateStmt": ("relation",), "CreateTableAsStmt": ("into",), "ViewStmt": ("view",),
    "IndexStmt": ("relation",), "AlterTableStmt": ("relation",), "CreateTrigStmt": ("relation",),
    "CreatePolicyStmt": ("table",), "AlterPolicyStmt": ("table",), "RuleStmt": ("relation",),
    "CreateFunctionStmt": ("funcname",), "AlterFunctionStmt": ("func",),
    "DropStmt": ("objects",), "RenameStmt": ("relation", "object"),
    "AlterObjectSchemaStmt": ("relation", "object"), "AlterOwnerStmt": ("relation", "object"),
    "CommentStmt": ("object",), "GrantStmt": ("objects",), "CreateSeqStmt": ("sequence",),
    "AlterSeqStmt": ("sequence",), "CompositeTypeStmt": ("typevar",),
    "CreateEnumStmt": ("typeName",), "AlterEnumStmt": ("typeName",), "DefineStmt": ("defnames",),
    "CreateDomainStmt": ("domainname",), "CreateStatsStmt": ("defnames",),
    "TruncateStmt": ("relations",), "CreateSchemaStmt": ("schemaname",),
}
_SCHEMA_OBJECT = "OBJECT_SCHEMA"


def _named(value: Any, schema_names: bool) -> Iterator[tuple[str | None, str]]:
    """(schema or None when unqualified, name) of each object `value` names."""
    kind = type(value).__name__  # by name: no import per call (10,000-statement files)
    if value is None:
        return
    if isinstance(value, str):
        yield (value, "") if schema_names else (None, value)
    elif kind == "RangeVar":
        yield value.schemaname, str(value.relname)
    elif kind == "IntoClause":
        yield from _named(value.rel, False)
    elif kind == "ObjectWithArgs":
        yield from _named(value.objname, False)
    elif kind == "TypeName":
        yield from _named(value.names, False)
    elif kind == "String":
        yield (str(value.sval), "") if schema_names else (None, str(value.sval))
    elif isinstance(value, list | tuple):
        if value and all(type(v).__name__ == "String" for v in value) and not schema_names:
            parts = [str(v.sval) for v in value]  # [schema.]name[.column]
            yield (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        else:
            for v in value:
                yield from _named(v, schema_names)


def changed_objects(stmt: Statement) -> Iterator[tuple[str | None, str]]:
    """(schema, name) of each object the statement creates, changes or drops; a schema itself
    as (schema, ""). Pure: no database."""
    node = stmt.node
    attrs = _TARGET_ATTRS.get(stmt.kind)
    if node is None or not attrs:
        return
    kind = _enum_name(getattr(node, "objtype", None) or getattr(node, "renameType", None)
                      or getattr(node, "objectType", None) or getattr(node, "removeType", None))
    schema_names = kind == _SCHEMA_OBJECT or stmt.kind == "CreateSchemaStmt"
    if stmt.kind == "RenameStmt" and schema_names:
        yield str(node.subname), ""
        return
    for attr in attrs:
        yield from _named(getattr(node, attr, None), schema_names)


@dataclass(frozen=True)
class ExcludedSchemaChange:
    """A statement that changes an object in a schema the snapshots leave out
    (tools/catalog.py SNAPSHOT_EXCLUDED_SCHEMAS): the snapshot diff will not show it."""

    statement_index: int
    line: int
    schema: str
    name: str

    @property
    def message(self) -> str:
        what = (f"changes {self.schema}.{self.name}, in schema {self.schema}" if self.name
                else f"changes schema {self.schema}")
        return (f"line {self.line}: {what}, which dbsage's snapshots leave out (as `supabase "
                "db dump` does: a platform or extension schema), so the before/after snapshots "
                "and their diff will not show this change; the rollback plan is read from the "
                "catalog in the migration's transaction and does not depend on them")


def excluded_schema_changes(migration: MigrationFile) -> tuple[ExcludedSchemaChange, ...]:
    """The statements that change objects in schemas the snapshots leave out, one entry per
    statement. Unqualified names are taken as the user's (public). Pure: no database."""
    from dbsage.tools.catalog import in_snapshot_excluded_schema

    found = []
    for stmt in migration.statements:
        if stmt.kind not in _TARGET_ATTRS or ("." not in stmt.sql
                                              and "schema" not in stmt.sql.lower()):
            continue
        for schema, name in changed_objects(stmt):
            if schema and schema not in ("public", "dbsage", "supabase_migrations") \
                    and in_snapshot_excluded_schema(schema):
                found.append(ExcludedSchemaChange(stmt.index, stmt.line, schema, name))
                break
    return tuple(found)


# --------------------------------------------------------------------------- the bookkeeping
#
# dbsage's history (schema dbsage: migration_log, rollback plans, the dry-run log) and the
# Supabase CLI's (supabase_migrations.schema_migrations, seed_files) are what drift, status,
# rollback and `supabase db push` judge by. A migration that writes to them could hide an
# applied version or fake one. Refused here, before anything runs; a write analysis cannot see
# (in a function it calls, or SQL a DO block builds) is caught before commit by
# tools/history.py (`ensure_bookkeeping_untouched`).

#: The CLI's history tables a migration must not touch (its other tables are its own business).
CLI_HISTORY_TABLES = frozenset({"schema_migrations", "seed_files"})
_DML_VERBS = {"InsertStmt": "INSERT INTO", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE FROM",
              "MergeStmt": "MERGE INTO"}
_DDL_VERBS = {"TruncateStmt": "TRUNCATE", "AlterTableStmt": "ALTER TABLE", "DropStmt": "DROP",
              "RenameStmt": "ALTER ... RENAME", "AlterObjectSchemaStmt": "ALTER ... SET SCHEMA",
              "AlterOwnerStmt": "ALTER ... OWNER", "CreateTrigStmt": "CREATE TRIGGER on",
              "CreatePolicyStmt": "CREATE POLICY on", "AlterPolicyStmt": "ALTER POLICY on",
              "RuleStmt": "CREATE RULE on", "IndexStmt": "CREATE INDEX on",
              "GrantStmt": "GRANT/REVOKE on", "CommentStmt": "COMMENT ON"}
_BOOKKEEPING_IN_CODE = re.compile(
    r"(?is)\b(?P<verb>insert\s+into|update|delete\s+from|truncate(?:\s+table)?|merge\s+into|"
    r"alter\s+table(?:\s+if\s+exists)?|drop\s+(?:table|schema)(?:\s+if\s+exists)?|"
    r"copy)\s+(?:only\s+)?\"?(?P<target>dbsage\b(?:\"?\.\"?\w+)?|supabase_migrations\"?\.\"?"
    r"(?:schema_migrations|seed_files)\b|supabase_migrations\b(?!\"?\.))")


def is_bookkeeping(schema: str | None, name: str) -> bool:
    """`schema.name` is bookkeeping: anything in schema dbsage, the CLI's history tables, or
    one of the two schemas itself (`name` empty)."""
    if schema == "dbsage":
        return True
    return schema == "supabase_migrations" and (not name or name in CLI_HISTORY_TABLES)


@dataclass(frozen=True)
class BookkeepingWrite:
    """A statement that changes dbsage's or the Supabase CLI's migration history."""

    statement_index: int
    line: int
    what: str  # e.g. "DELETE FROM dbsage.migration_log"
    target: str  # schema.table, or the schema

    @property
    def whose(self) -> str:
        if self.target.startswith("dbsage"):
            return ("dbsage's migration history (its record of every run, by which drift, "
                    "status and rollback are judged)")
        return ("the Supabase CLI's migration history (the versions `supabase db push` and "
                "dbsage take as applied)")


BOOKKEEPING_HINT = ("Remove it: a migration changes the schema and data, not the record of "
                    "which migrations ran. To mark versions applied or reverted, use `dbsage "
                    "repair VERSION --status applied|reverted` (as `supabase migration repair` "
                    "does); to undo a run, `dbsage rollback`.")


def _search_path(node: Any, current: tuple[str, ...]) -> tuple[str, ...]:
    """The schemas unqualified names resolve to after a `SET search_path` statement."""
    if str(getattr(node, "name", "") or "").lower() != "search_path":
        return current
    if _enum_name(node.kind) != "VAR_SET_VALUE":
        return ()
    return tuple((constant_text(a) or "").strip().strip('"') for a in node.args or ())


def _bookkeeping_target(schema: str | None, name: str, path: tuple[str, ...]) -> str | None:
    if schema is not None:
        return (f"{schema}.{name}" if name else schema) if is_bookkeeping(schema, name) else None
    for s in path:
        if is_bookkeeping(s, name):
            return f"{s}.{name}"
    return None


def _statement_writes(stmt: Statement, path: tuple[str, ...]
                      ) -> Iterator[tuple[str, str, str]]:
    """(verb, target, where) of each bookkeeping object the statement writes to or changes."""
    from pglast import ast

    node = stmt.node
    for n in walk(node):  # DML anywhere, CTEs included
        verb = _DML_VERBS.get(type(n).__name__)
        if verb and isinstance(n.relation, ast.RangeVar):
            target = _bookkeeping_target(n.relation.schemaname, str(n.relation.relname), path)
            if target:
                yield verb, target, ""
    if stmt.kind == "CopyStmt" and node.is_from and node.relation is not None:
        target = _bookkeeping_target(node.relation.schemaname, str(node.relation.relname), path)
        if target:
            yield "COPY ... FROM", target, ""
    verb = _DDL_VERBS.get(stmt.kind, "CREATE")
    for schema, name in changed_objects(stmt):
        target = _bookkeeping_target(schema, name, path)
        if target:
            yield verb, target, ""
    body = do_block_body(stmt)
    if body is not None:
        m = _BOOKKEEPING_IN_CODE.search(body[0])
        if m is not None:
            target = m["target"].replace('"', "")
            yield (" ".join(m["verb"].split()).upper(), target,
                   f" (in the DO block at line {stmt.line})")


def bookkeeping_writes(migration: MigrationFile) -> tuple[BookkeepingWrite, ...]:
    """Every statement that writes to or changes dbsage's or the Supabase CLI's history
    (INSERT/UPDATE/DELETE/MERGE, also in a CTE; TRUNCATE, ALTER, DROP, COPY ... FROM, a
    trigger, rule, policy, index, grant or comment on them; anything created in schema
    dbsage; the same written out in a DO block), the first per statement. Names without a
    schema are resolved by the file's own `SET search_path`. Pure: no database."""
    if not names_bookkeeping(migration.text):
        return ()  # the common case: one substring test per file
    found: list[BookkeepingWrite] = []
    path: tuple[str, ...] = ()
    for stmt in migration.statements:
        if stmt.kind == "VariableSetStmt" and stmt.tree is not None:
            path = _search_path(stmt.node, path)
            continue
        if stmt.tree is None or (not path and not names_bookkeeping(stmt.sql)):
            continue
        for verb, target, where in _statement_writes(stmt, path):
            line = line_in(stmt, max(stmt.sql.lower().find(target.split(".")[-1]), 0))
            found.append(BookkeepingWrite(stmt.index, line, f"{verb} {target}{where}", target))
            break
    return tuple(found)


def refuse_bookkeeping_writes(migration: MigrationFile) -> None:
    """MigrationFileError (exit 2) naming the first statement that writes to the history,
    before anything runs (see bookkeeping_writes)."""
    writes = bookkeeping_writes(migration)
    if not writes:
        return
    w = writes[0]
    lines = migration.text.splitlines()
    source = lines[w.line - 1] if 0 < w.line <= len(lines) else None
    err = MigrationFileError(
        f"{migration.path}:{w.line}: {w.what} changes {w.whose}. Nothing was run.",
        path=str(migration.path), line=w.line, source_line=source, hint=BOOKKEEPING_HINT)
    err.data["refused"] = "bookkeeping"
    raise err


# --------------------------------------------------------------------------- squawk


# dbsage sets lock_timeout and statement_timeout itself for every migration it applies.
DEFAULT_EXCLUDED_RULES: tuple[str, ...] = ("require-lock-timeout", "require-statement-timeout")


def lint_with_squawk(
    path: Path,
    *,
    pg_version: str | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDED_RULES,
    assume_in_transaction: bool = False,
    timeout: float = 120.0,
    text: str | None = None,
) -> list[LintFinding]:
    """Lint a migration file with squawk and return its findings.

    Args:
        path: the migration file.
        pg_version: the target server's version (e.g. "15" or "15.4"), so that squawk
            judges rules by what that version does.
        exclude: squawk rule names to skip (by default the timeout rules: dbsage sets
            lock_timeout and statement_timeout itself).
        assume_in_transaction: tell squawk the file runs inside one transaction.
        timeout: seconds before squawk is given up on.
        text: lint this text (`lint_view`) in place of the file's, reported as `path`.

    Returns:
        The findings in file order, with 1-based lines and columns.

    Raises:
        MigrationFileError: the file does not exist.
        LintUnavailableError: squawk is not installed.
        LintFailedError: squawk failed or printed something that is not its JSON report.
    """
    p = Path(path)
    if not p.is_file():
        raise MigrationFileError(f"{p}: no such file.", path=str(p))
    from dbsage.tools.binaries import find_squawk, run_child

    cmd = [str(find_squawk()), "--reporter", "json"]
    if pg_version:
        cmd += ["--pg-version", pg_version]
    if exclude:
        cmd += ["--exclude", ",".join(exclude)]
    if assume_in_transaction:
        cmd.append("--assume-in-transaction")
    cmd += [str(p)] if text is None else ["--stdin-filepath", str(p)]
    try:
        proc = run_child(cmd, timeout=timeout, input=text)
    except subprocess.TimeoutExpired:
        raise LintFailedError(f"squawk did not finish linting {p} within {timeout:.0f}s.",
                              path=str(p)) from None
    except OSError as exc:
        raise LintUnavailableError(f"squawk could not be started: {exc}",
                                   hint="Reinstall it: pip install --force-reinstall "
                                   "squawk-cli") from None
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, list):
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise LintFailedError(
            f"squawk failed on {p} (exit {proc.returncode}): {err[-1] if err else 'no output'}",
            path=str(p), hint="Run `squawk --reporter json FILE` to see the full output.")
    findings = [_finding(item) for item in report]
    return sorted(findings, key=lambda x: (x.line, x.column, x.rule))


def lint_view(migration: MigrationFile) -> str | None:
    """The file's text for squawk with every INSERT, UPDATE and DELETE after the first of its
    shape (`Statement.shape`) blanked to spaces, lines and columns unchanged; None when no
    statement repeats a shape. squawk has no rule on such statements that their constants
    decide, and reads a 10,000-INSERT file in a tenth of a second; with one of each shape
    left, it reads it at once and finds the same."""
    seen: set[str] = set()
    repeats = []
    for s in migration.statements:
        if s.shape is not None and s.kind in _SHAPE_KINDS:
            if s.shape in seen:
                repeats.append(s)
            else:
                seen.add(s.shape)
    if not repeats:
        return None
    text = migration.text
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    parts, done = [], 0
    for s in repeats:
        at = starts[s.line - 1] + s.column - 1
        parts += [text[done:at], re.sub(r"[^\n]", " ", s.sql) if "\n" in s.sql
                  else " " * len(s.sql)]
        done = at + len(s.sql)
    parts.append(text[done:])
    return "".join(parts)


def _finding(item: dict[str, Any]) -> LintFinding:
    """squawk's JSON lines and columns are 0-based; dbsage reports 1-based ones."""
    def one_based(key: str) -> int | None:
        value = item.get(key)
        return int(value) + 1 if isinstance(value, int) else None

    return LintFinding(
        rule=str(item.get("rule_name") or item.get("rule") or "unknown"),
        level="error" if str(item.get("level", "")).lower() == "error" else "warning",
        line=one_based("line") or 1,
        column=one_based("column") or 1,
        message=str(item.get("message") or ""),
        help=item.get("help"),
        end_line=one_based("line_end"),
        end_column=one_based("column_end"),
    )


# --------------------------------------------------------------------------- catalog look-ups

_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
             "i": "index", "I": "partitioned index", "S": "sequence", "f": "foreign table",
             "t": "TOAST table", "c": "composite type"}

_SIZES_SQL = """
SELECT q.name, c.relkind::text,
       CASE WHEN c.relkind IN ('p', 'I')
            THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
                    FROM pg_partition_tree(c.oid) t)
            ELSE pg_total_relation_size(c.oid) END::bigint,
       CASE WHEN c.relkind IN ('p', 'I')
            THEN (SELECT CASE WHEN bool_and(cc.reltuples < 0) THEN NULL
                              ELSE sum(greatest(cc.reltuples, 0)) END
                    FROM pg_partition_tree(c.oid) t JOIN pg_class cc ON cc.oid = t.relid
                   WHERE t.isleaf)
            WHEN c.reltuples < 0 THEN NULL
            ELSE c.reltuples END::bigint
  FROM unnest(%s::text[], %s::text[], %s::text[]) AS q(name, nsp, rel)
  JOIN pg_namespace n ON n.nspname = q.nsp
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = q.rel
"""


def _split(name: str) -> tuple[str, str]:
    schema, _, rel = name.partition(".")
    return (schema, rel) if rel else (DEFAULT_SCHEMA, schema)


def table_sizes(conn: psycopg.Connection[Any], tables: Iterable[str]) -> dict[str, TableSize]:
    """Size and estimated row count of each relation, from the catalog only.

    Args:
        conn: an open psycopg 3 connection (only SELECTs are run).
        tables: schema-qualified names such as "public.users" (unqualified means public).

    Returns:
        One TableSize per distinct name asked for; relations that do not exist have
        `exists=False`.
    """
    names = list(dict.fromkeys(tables))
    if not names:
        return {}
    parts = [_split(n) for n in names]
    rows = conn.execute(_SIZES_SQL, (names, [p[0] for p in parts],
                                     [p[1] for p in parts])).fetchall()
    found = {r[0]: r for r in rows}
    out: dict[str, TableSize] = {}
    for name in names:
        row = found.get(name)
        if row is None:
            out[name] = TableSize(name, exists=False)
        else:
            out[name] = TableSize(name, True, int(row[2]),
                                  None if row[3] is None else int(row[3]),
                                  _RELKINDS.get(row[1], row[1]))
    return out


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str] | None:
    schema, rel = _split(table)
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'f', 'm') "
        "AND a.attnum > 0 AND NOT a.attisdropped "
        "UNION ALL SELECT NULL FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'f', 'm')",
        (schema, rel, schema, rel)).fetchall()
    if not rows:
        return None
    return {r[0] for r in rows if r[0] is not None}


def count_rows_at_stake(
    conn: psycopg.Connection[Any],
    destructive_ops: Iterable[DestructiveOp],
    *,
    timeout_ms: int = 30_000,
) -> dict[DestructiveOp, RowsAtStake]:
    """Count exactly how many rows each destructive operation would touch.

    Tables (drop_table, truncate, delete/update without WHERE): count(*). Columns
    (drop_column, alter_type): rows where any of the columns is not null. Schemas: the
    sum of count(*) over the schema's tables.

    Args:
        conn: an open psycopg 3 connection (only SELECTs are run).
        destructive_ops: operations from an analysis.
        timeout_ms: statement_timeout for each count; a count that takes longer is
            reported with status "timeout".

    Returns:
        One RowsAtStake per operation.
    """
    from psycopg import errors, sql

    out: dict[DestructiveOp, RowsAtStake] = {}
    for op in destructive_ops:
        if op in out:
            continue
        if op.kind == "drop_schema":
            rels = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1", (op.table,)).fetchall()
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                  (op.table,)).fetchone()
            if exists is None:
                out[op] = RowsAtStake(None, "missing", f"schema {op.table} does not exist")
                continue
            queries = [sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(op.table, r[0]))
                       for r in rels]
            detail = f"rows in the {len(rels)} table(s) of schema {op.table}"
        else:
            cols = _columns(conn, op.table)
            if cols is None:
                out[op] = RowsAtStake(None, "missing", f"{op.table} does not exist")
                continue
            absent = [c for c in op.columns if c not in cols]
            if absent:
                out[op] = RowsAtStake(None, "missing",
                                      f"{op.table} has no column {', '.join(absent)}")
                continue
            target = sql.Identifier(*_split(op.table))
            if op.columns:
                cond = sql.SQL(" OR ").join(
                    sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in op.columns)
                queries = [sql.SQL("SELECT count(*) FROM {} WHERE {}").format(target, cond)]
                detail = f"rows with a value in {', '.join(op.columns)}"
            else:
                queries = [sql.SQL("SELECT count(*) FROM {}").format(target)]
                detail = f"rows in {op.table}"
        try:
            total = 0
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(int(timeout_ms))))
                for q in queries:
                    row = conn.execute(q).fetchone()
                    total += int(row[0]) if row else 0
            out[op] = RowsAtStake(total, "counted", detail)
        except errors.QueryCanceled:
            out[op] = RowsAtStake(None, "timeout", f"counting took longer than {timeout_ms} ms")
    return out


def missing_objects(conn: psycopg.Connection[Any],
                    analysis: MigrationAnalysis) -> list[MissingObject]:
    """Relations and schemas the migration uses that will not exist when it needs them.

    A relation counts as present when it exists in the database or an earlier statement
    of the migration creates it (CREATE, rename, SET SCHEMA); a relation dropped earlier
    in the migration counts as gone. Statements with IF EXISTS / IF NOT EXISTS are skipped.

    Args:
        conn: an open psycopg 3 connection (only SELECTs are run).
        analysis: the migration's analysis.

    Returns:
        The missing objects in statement order (each reported once).
    """
    relations = [t for a in analysis.statements for t in a.tables]
    relations += [t for a in analysis.statements for t in a.creates]
    sizes = table_sizes(conn, relations)
    schema_rows = conn.execute("SELECT nspname FROM pg_namespace").fetchall()
    schemas = {r[0] for r in schema_rows}
    present = {name for name, size in sizes.items() if size.exists}
    out: list[MissingObject] = []
    reported: set[str] = set()
    for a in analysis.statements:
        stmt = a.statement
        if stmt.kind == "CreateSchemaStmt" and stmt.tree is not None:
            schemas.add(str(stmt.node.schemaname))
        if stmt.kind == "DropStmt" and a.destructive_ops:
            schemas -= {op.table for op in a.destructive_ops if op.kind == "drop_schema"}
        if not a.missing_ok:
            for rel in a.tables:
                if rel in present or rel in a.creates or rel in reported:
                    continue
                reported.add(rel)
                out.append(MissingObject(rel, "relation", stmt.index, stmt.line,
                                         f"{rel} does not exist and no earlier statement "
                                         "creates it"))
        for rel in a.creates:
            schema = _split(rel)[0]
            if schema not in schemas and f"schema:{schema}" not in reported:
                reported.add(f"schema:{schema}")
                out.append(MissingObject(schema, "schema", stmt.index, stmt.line,
                                         f"schema {schema} does not exist and no earlier "
                                         "statement creates it"))
        present -= set(a.drops)
        present |= set(a.creates)
    return out


# --- constraints a migration leaves NOT VALID ---------------------------------------------------

@dataclass(frozen=True)
class NotValidAddition:
    """An `ADD CONSTRAINT ... NOT VALID` of the file: validated later, by another migration."""

    table: str
    constraint: str | None  # None: PostgreSQL names it
    line: int

    @property
    def validate_sql(self) -> str:
        """The statement of the later migration that validates it."""
        return f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {self.constraint or '<name>'}"


def not_valid_additions(migration: MigrationFile) -> list[NotValidAddition]:
    """Every constraint the file adds NOT VALID and does not VALIDATE itself."""
    added: list[NotValidAddition] = []
    validated: set[tuple[str, str]] = set()
    for stmt in migration.statements:
        if stmt.kind != "AlterTableStmt" or stmt.tree is None:
            continue
        table = _qualify(stmt.node.relation)
        for cmd in stmt.node.cmds or ():
            sub = _enum_name(getattr(cmd, "subtype", None))
            definition = getattr(cmd, "def_", None)
            if sub == "AT_AddConstraint" and getattr(definition, "skip_validation", False):
                added.append(NotValidAddition(table, getattr(definition, "conname", None),
                                              stmt.line))
            elif sub == "AT_ValidateConstraint" and cmd.name:
                validated.add((table, cmd.name))
    return [a for a in added if (a.table, a.constraint) not in validated]
