"""Dry-run a migration: run it as apply would, inside a transaction that is always rolled back,
say truthfully what it would change, and leave no trace.

**What it would change.** The schema change is computed with `results` (migra's successor): its
inspector takes a psycopg 3 cursor, so it reads the catalog on *this* connection, inside the open
dry-run transaction, and sees the uncommitted changes that pg_dump cannot. The before-inspection
runs in its own short transaction just before the dry-run transaction (and is rolled back): the
inspection queries take locks of their own (RowExclusiveLock on every sequence, which PostgreSQL
keeps until the end of the top-level transaction even when a savepoint is rolled back) and would
otherwise hide the locks the migration's statements take. Under READ COMMITTED every catalog
query takes a fresh snapshot anyway, so one transaction would not make the two inspections more
consistent.

Next to each inspection dbsage reads a few catalog facts of its own (`_read_facts`): the oid of
every object, privileges, default privileges, comments, publication membership and enum values.
The oid is what makes the description truthful:

* a rename keeps the oid, so an object whose oid is in both inspections under another name is
  *renamed* (tables, views, sequences, indexes, columns by table oid and attnum, constraints,
  policies, triggers, functions, types, enum values, schemas), never dropped and added;
* an object with the same oid can only have changed in the ways PostgreSQL changes it in place
  (a constraint can be validated, a policy's USING altered, a trigger disabled, ...); text that
  differs only because something it mentions was renamed is not a change. So an FK to
  auth.users that the migration does not touch is never dropped and re-added;
* privileges are compared per object oid and grantee; a new object's privileges are compared
  with those it got when it was created (PostgreSQL's defaults and ALTER DEFAULT PRIVILEGES),
  so exactly the migration's own GRANTs and REVOKEs show.

`results` itself diffs a *normalised* before-inspection (renamed objects under their new names,
and where only in-place state changed, their new text) against the after-inspection, so its
ordered DDL script has neither rename-as-drop-and-add nor the foreign-key churn it would otherwise
produce: results drops, re-adds NOT VALID and validates every unchanged foreign key on or to any
table whose definition changed in any way (an added column, a column comment, a value added to a
column's enum, RLS switched on). On Supabase nearly every table references auth.users, so that
churn always showed as FKs to auth.users. dbsage keeps only results' one genuine reason for it (a
primary key or unique index the FK depends on was dropped or changed).

**No trace.** Sequences are not transactional: nextval() in the rolled-back transaction stays
consumed, so the real apply would get other ids than psql. After the rollback every user
sequence the dry run moved is put back where it was, each in a transaction of its own that is
rolled back too (setval is not undone by a rollback): `SET LOCAL lock_timeout`, a no-op
`ALTER SEQUENCE ... OWNER TO <its owner>` for its AccessExclusiveLock (the only lock that stops
nextval(); LOCK TABLE refuses sequences), which holds other sessions' nextval() for that instant
and never longer than lock_timeout; then, only if the sequence still stands exactly where the dry
run left it, the dry run's own session drew its last value, and no column the sequence feeds
holds a value of the range the dry run consumed (another session drawing in between), `setval`.
Otherwise it is left and a warning names it. Session advisory locks the statements took are
released, prepared statements they made are deallocated, and what cannot be undone (dblink,
HTTP calls, COPY ... TO PROGRAM, signals to other backends, ...) is named in a warning.

Statements run, fail and are retried through tools/execute.py, as apply runs them, so that a
dry run executes and reports exactly as apply does.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dbsage.tools.analyze import STATUS_ACTS_ON_SERVER, ServerAction, dry_run_skips
from dbsage.tools.catalog import EXCLUDED_SCHEMAS, user_schemas_sql
from dbsage.tools.errors import (
    ConfigError,
    ConnectionFailedError,
    DbsageError,
    StatementFailure,
    TransactionShapeError,
)
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    StatementResult,
    describe_failure,
    failure_hint,
    run_statement,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.history import DryRunRecord as DryRunRecord  # re-exported: agent, tests
from dbsage.tools.history import find_passing_dry_run as find_passing_dry_run
from dbsage.tools.history import record_dry_run
from dbsage.tools.sqlfile import MigrationFile, Statement, walk

if TYPE_CHECKING:
    import psycopg

STATUS_NOT_RUN = "not_run"
STATUS_PARSED_ONLY = "validated by parsing only"

# Transaction control a migration may hold: it stays inside dbsage's transaction.
_ALLOWED_TXN_KINDS = frozenset({"SAVEPOINT", "RELEASE", "ROLLBACK_TO"})


_USER_RELATIONS_SQL = f"""
SELECT c.oid, n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {user_schemas_sql()}
"""

# Relation locks of this backend in this database; system catalogs (oid < 16384) are the locks
# of this very query and of PostgreSQL's own catalog access, not the migration's.
_OWN_LOCKS_SQL = f"""
SELECT l.relation::oid::bigint, l.mode, n.nspname, c.relname
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation::oid::bigint >= 16384
  AND (n.nspname IS NULL OR ({user_schemas_sql()}))
"""


@dataclass(frozen=True)
class LockTaken:
    """A relation lock a statement took (granted, on the dry run's own backend)."""

    relation: str  # schema.name
    mode: str  # e.g. "AccessExclusiveLock"


@dataclass
class DryRunStatement(StatementResult):
    """How one statement went in the dry run; `locks` are the ones new since the previous one."""

    locks: list[LockTaken] = field(default_factory=list)


@dataclass(frozen=True)
class SchemaChange:
    """One change the migration would make to the schema.

    kind:   schema | extension | type | enum value | table | column | view | sequence | index |
            constraint | rls | policy | function | trigger | grant | default privileges |
            publication | publication table | publication schema | comment
    action: added | dropped | altered | renamed | validated | granted | revoked
    name:   what changed, as `schema.table[.member]`, `schema.function(args)`; a rename's new
            name (its `detail` says `from <old>`); a grant's `<object> to|from <role>`; a
            comment's `<object type> <object>`; a publication member's `<publication>: <table>`
    """

    kind: str
    action: str
    name: str
    detail: str
    ddl: str


@dataclass(frozen=True)
class SequenceReset:
    """A sequence the dry run advanced (nextval/setval are not undone by a rollback)."""

    name: str  # schema.sequence
    before: int  # last_value before the dry run
    before_called: bool  # False: the next nextval() returns `before` itself
    left_at: int  # where the dry run left it
    left_called: bool
    restored: bool  # put back to `before`
    reason: str = ""  # why not, when not


@dataclass(frozen=True)
class DryRunResult:
    """The outcome of a dry run; nothing of it persisted except its dry_run_log row."""

    passed: bool
    statements: list[DryRunStatement]
    changes: list[SchemaChange]
    failure: StatementFailure | None
    duration_s: float
    attempts: int
    record_id: int
    message: str | None = None  # apply's description of the failure, when one failed
    ddl_script: str = ""  # the whole change as one ordered DDL script (results/migra)
    warnings: list[str] = field(default_factory=list)
    sequences: tuple[SequenceReset, ...] = ()  # sequences the dry run moved, and what became of them
    #: Statements it did not run because they act on the database host (COPY ... PROGRAM, ...).
    not_run_on_server: tuple[ServerAction, ...] = ()

    @property
    def parsed_only(self) -> list[DryRunStatement]:
        """Statements that cannot run in a transaction, checked by parsing alone."""
        return [s for s in self.statements if s.status == STATUS_PARSED_ONLY]


@dataclass
class _Attempt:
    statements: list[DryRunStatement]
    changes: list[SchemaChange] = field(default_factory=list)
    ddl_script: str = ""
    failure: StatementFailure | None = None
    failed: Statement | None = None


class _StatementFailed(Exception):
    def __init__(self, exc: Exception, stmt: Statement) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.stmt = stmt


def dry_run_migration(conn: psycopg.Connection, migration: MigrationFile, *,
                      lock_timeout: str = "1s", statement_timeout: str | None = None,
                      retry: LockRetryPolicy | None = None,
                      describe_changes: bool = True, observe: bool = True,
                      inside: Callable[[psycopg.Connection], None] | None = None) -> DryRunResult:
    """Run the migration in a transaction that is always rolled back, undo what a rollback does
    not undo, then log the outcome.

    Args:
        conn: an autocommit connection that already holds the migration advisory lock.
        migration: the parsed migration file.
        lock_timeout: SET LOCAL lock_timeout for the transaction, as apply uses it; also the
            most that putting a sequence back may hold other sessions' nextval().
        statement_timeout: SET LOCAL statement_timeout, or None for no limit.
        retry: backoff between whole-transaction retries after a lock timeout.
        describe_changes: inspect the catalog before and after to list the schema change.
            A gate that only needs pass/fail (yolo's automatic dry-run) skips it: two full
            catalog inspections cost about 0.7 s at 1,000 tables and 3.7 s at 5,000.
        observe: record the locks each statement takes. A pass/fail gate skips that too: it
            reads a row per user relation. Sequences are put back either way.
        inside: called with the connection inside the transaction, after every statement ran
            and before it is rolled back (again on each lock-timeout retry; not when a
            statement failed), to look at the migration's uncommitted effect.

    A failing statement gives `passed=False` and its `failure`; only connection trouble raises.
    """
    _check_connection(conn)
    _refuse_transaction_control(migration)
    started = time.perf_counter()
    skips = dry_run_skips(migration)
    sequences, advisory = _before_the_run(conn)
    try:
        attempt, attempts = _run_with_retry(conn, migration, lock_timeout, statement_timeout,
                                            retry or LockRetryPolicy(), describe_changes, observe,
                                            inside, skips)
    except BaseException:
        _undo_quietly(conn, migration, sequences, advisory, lock_timeout)
        raise
    resets = _restore_sequences(conn, sequences, _sequence_states(conn), lock_timeout)
    warnings = [a.not_run_message for a in skips.values()]
    warnings += [_sequence_warning(r) for r in resets]
    warnings += _release_advisory_locks(conn, advisory)
    _deallocate_prepared(conn, migration)
    warnings += non_transactional_warnings(migration, skip=frozenset(skips))
    duration = time.perf_counter() - started
    message = (describe_failure(migration.path, len(migration.statements), attempt.failure,
                                attempt.failed) if attempt.failure else None)
    record_id = record_dry_run(conn, migration.version, str(migration.path), migration.checksum,
                               attempt.failure is None, len(migration.statements), message,
                               duration * 1000)
    return DryRunResult(attempt.failure is None, attempt.statements, attempt.changes,
                        attempt.failure, duration, attempts, record_id, message,
                        attempt.ddl_script, warnings, tuple(resets), tuple(skips.values()))


def _before_the_run(conn: psycopg.Connection
                    ) -> tuple[dict[int, _Position], frozenset[tuple[int, int, int, str]]]:
    """Where the sequences stand and which advisory locks this session holds, in one round
    trip; DISCARD SEQUENCES first, so that currval() tells what the dry run drew itself."""
    with conn.pipeline():
        conn.execute("DISCARD SEQUENCES")
        seq = conn.execute(_SEQUENCE_VALUES_SQL)
        adv = conn.execute(_ADVISORY_SQL)
    return _sequence_states(conn, seq.fetchall()), _advisory_rows(adv.fetchall())


def _check_connection(conn: psycopg.Connection) -> None:
    from psycopg.pq import TransactionStatus

    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        raise ConfigError("A dry run needs an idle autocommit connection (it opens and rolls "
                          "back its own transaction).",
                          hint="Connect with autocommit=True, as the apply pipeline does.")


def _refuse_transaction_control(migration: MigrationFile) -> None:
    """Defence in depth: read_migration refuses these already; never let one end the dry run."""
    for s in migration.statements:
        if s.kind != "TransactionStmt":
            continue
        kind = str(s.node.kind.name).removeprefix("TRANS_STMT_") if s.tree is not None else "?"
        if kind not in _ALLOWED_TXN_KINDS:
            raise TransactionShapeError(
                f"{migration.path}:{s.line}: {s.summary.upper()} would end the dry run's "
                "transaction. Nothing was run.", path=str(migration.path), line=s.line,
                hint="Remove it, or split the file into two migrations at that line.")


def _run_with_retry(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
                    statement_timeout: str | None, policy: LockRetryPolicy,
                    describe: bool = True, observe: bool = True,
                    inside: Callable[[psycopg.Connection], None] | None = None,
                    skips: Mapping[int, ServerAction] | None = None
                    ) -> tuple[_Attempt, int]:
    try:
        return with_lock_retry(lambda: _run_once(conn, migration, lock_timeout,
                                                 statement_timeout, policy, describe, observe,
                                                 inside, skips),
                               policy)
    except LockRetry as last:
        attempt = cast(_Attempt, last.outcome)
        attempt.failure = dataclasses.replace(last.failure, hint=(
            f"lock_timeout {lock_timeout} fired {policy.attempts} times: a long transaction "
            "holds the table. Find it in pg_stat_activity (state, xact_start) and let it "
            "finish; or allow a longer lock_timeout."))
        return attempt, policy.attempts


def _run_once(conn: psycopg.Connection, migration: MigrationFile, lock_timeout: str,
              statement_timeout: str | None, policy: LockRetryPolicy, describe: bool = True,
              observe: bool = True,
              inside: Callable[[psycopg.Connection], None] | None = None,
              skips: Mapping[int, ServerAction] | None = None) -> _Attempt:
    """One transaction: inspect, run every statement, inspect again, roll back. A failure the
    policy retries raises LockRetry with this attempt."""
    import psycopg

    attempt = _Attempt([DryRunStatement(s.index, s.line, s.summary, STATUS_NOT_RUN)
                        for s in migration.statements])
    try:
        before = _inspect_before(conn, lock_timeout, statement_timeout) if describe else None
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            _run_statements(conn, migration, attempt.statements, observe, skips or {})
            if inside is not None:
                inside(conn)
            if before is not None:
                attempt.changes, attempt.ddl_script = describe_change(
                    before, _snapshot(conn), migration.statements)
            raise psycopg.Rollback()  # always: a dry run never commits
    except _StatementFailed as failed:
        failure = statement_failure(failed.exc, failed.stmt)
        attempt.failure = dataclasses.replace(failure, hint=failure_hint(failure, failed.stmt))
        attempt.failed = failed.stmt
    except psycopg.Error as exc:
        raise _infrastructure_error(conn, exc) from exc
    if attempt.failure and policy.retries(attempt.failure.sqlstate):
        raise LockRetry(attempt.failure, attempt)
    return attempt


def _infrastructure_error(conn: psycopg.Connection, exc: Exception) -> DbsageError:
    if conn.broken or conn.closed:
        return ConnectionFailedError(f"The connection broke during the dry run: {exc}",
                                     hint="Nothing was committed. Check the server, then retry.")
    return DbsageError(f"The dry run could not inspect the database: {exc}",
                       hint="Nothing was committed. This is a dbsage bug if it repeats.")


def _run_statements(conn: psycopg.Connection, migration: MigrationFile,
                    results: list[DryRunStatement], observe: bool = True,
                    skips: Mapping[int, ServerAction] | None = None) -> None:
    """Run each transactional statement, recording the relation locks new since the last one
    (when `observe`); never one in `skips` (it acts on the database host, where no rollback
    reaches: STATUS_ACTS_ON_SERVER), but the statements after it."""
    import psycopg

    names = _user_relation_names(conn) if observe else {}
    held = _own_relation_locks(conn, names) if observe else set()
    for stmt, res in zip(migration.statements, results, strict=True):
        if not stmt.transactional:
            res.status = STATUS_PARSED_ONLY
            continue
        if skips and stmt.index in skips:
            res.status = STATUS_ACTS_ON_SERVER
            continue
        try:
            run_statement(conn, stmt, res)
        except psycopg.Error as exc:
            if conn.broken:
                raise
            raise _StatementFailed(exc, stmt) from None
        if not observe:
            continue
        current = _own_relation_locks(conn, names)
        res.locks = sorted((lk for lk in current if lk not in held),
                           key=lambda lk: (lk.relation, lk.mode))
        held |= current


def _user_relation_names(conn: psycopg.Connection) -> dict[int, str]:
    """oid -> schema.name of every user relation, so locks on dropped ones keep their name."""
    return {int(oid): name for oid, name in conn.execute(_USER_RELATIONS_SQL).fetchall()}


def _own_relation_locks(conn: psycopg.Connection, names: dict[int, str]) -> set[LockTaken]:
    locks: set[LockTaken] = set()
    for oid, mode, nsp, rel in conn.execute(_OWN_LOCKS_SQL).fetchall():
        if nsp is not None:
            names[int(oid)] = f"{nsp}.{rel}"
        locks.add(LockTaken(names.get(int(oid), f"(dropped relation {oid})"), mode))
    return locks


# ---- inspection: results' inspector and dbsage's catalog facts -------------------------------

@dataclass(frozen=True)
class CatalogSnapshot:
    """One inspection: results' inspector (definitions, DDL) and dbsage's facts (oids, ...)."""

    inspected: Any  # results.schemainspect.PostgreSQL
    facts: _Facts


def _snapshot(conn: psycopg.Connection) -> CatalogSnapshot:
    """Inspect the catalog over this connection, without PostgreSQL's and dbsage's schemas."""
    from results.schemainspect import PostgreSQL

    inspected = PostgreSQL(conn.cursor())
    for schema in EXCLUDED_SCHEMAS:  # PostgreSQL's own and the bookkeeping schemas
        inspected.exclude_schema(schema)
    return CatalogSnapshot(inspected, _read_facts(conn))


def _inspect_before(conn: psycopg.Connection, lock_timeout: str,
                    statement_timeout: str | None) -> CatalogSnapshot:
    """Inspect in a transaction of its own (rolled back), so its locks are gone before the run."""
    import psycopg

    snapshot = None
    with conn.transaction():
        set_timeouts(conn, lock_timeout, statement_timeout, local=True)
        snapshot = _snapshot(conn)
        raise psycopg.Rollback()
    assert snapshot is not None
    return snapshot


_Key = tuple[str, int, int]  # (kind, oid, sub): sub is a column's attnum, else 0
_Grant = tuple[str, str, bool]  # (grantee, privilege, grantable)


@dataclass(frozen=True)
class _Obj:
    """One catalog object, by oid."""

    kind: str  # schema | class | column | constraint | policy | trigger | function | type | enum
    oid: int  # a column's is its table's
    sub: int  # a column's attnum
    parent: int  # namespace oid (schema, class, function, type), table oid, enum type oid
    schema: str
    name: str
    info: str  # relkind | "typid:typmod" | contype | identity arguments | typtype | sort order
    owner: str


@dataclass(frozen=True)
class _Facts:
    """What dbsage reads itself next to results' inspection, keyed by oid (rename-proof)."""

    objects: Mapping[_Key, _Obj]
    privileges: Mapping[_Key, frozenset[_Grant]]
    default_acl: Mapping[tuple[str, str, str], frozenset[_Grant]]  # (role, schema | "", objtype)
    comments: Mapping[tuple[int, int, int], tuple[str, str, str]]  # -> (type, identity, text)
    publications: Mapping[str, str]  # name -> what it publishes
    publication_tables: Mapping[tuple[str, int], str]  # (publication, table oid) -> clause
    publication_schemas: frozenset[tuple[str, int]]  # (publication, schema oid)

    def get(self, kind: str, oid: int, sub: int = 0) -> _Obj | None:
        return self.objects.get((kind, oid, sub))

    def relation(self, oid: int) -> _Obj | None:
        return self.objects.get(("class", oid, 0))

    def display(self, o: _Obj) -> str:
        """How reports name the object: schema.name, schema.table.member, schema.f(args)."""
        if o.kind == "schema":
            return o.name
        if o.kind in ("column", "constraint", "policy", "trigger"):
            rel = self.relation(o.parent)
            return f"{rel.schema}.{rel.name}.{o.name}" if rel else f"{o.schema}.{o.name}"
        if o.kind == "enum":
            t = self.get("type", o.parent)
            return f"{t.schema}.{t.name}.{o.name}" if t else o.name
        if o.kind == "function":
            return f"{o.schema}.{o.name}({o.info})"
        return f"{o.schema}.{o.name}"

    def sql_name(self, o: _Obj) -> str:
        """The object as DDL names it (quoted, qualified)."""
        if o.kind == "schema":
            return _qi(o.name)
        if o.kind in ("column", "constraint", "policy", "trigger"):
            rel = self.relation(o.parent)
            return _qi(rel.name, rel.schema) if rel else _qi(o.name)
        if o.kind == "function":
            return f"{_qi(o.name, o.schema)}({o.info})"
        return _qi(o.name, o.schema)

    def results_key(self, o: _Obj) -> str:
        """The key results' inspector files the object under."""
        if o.kind == "schema":
            return o.name
        if o.kind in ("constraint", "policy", "trigger"):
            rel = self.relation(o.parent)
            table = f"{_qi(rel.schema)}.{_qi(rel.name)}" if rel else "?"
            return f"{table}.{_qi(o.name)}"
        if o.kind == "function":
            return f"{_qi(o.name, o.schema)}({o.info})"
        return _qi(o.name, o.schema)


def _qi(name: str, schema: str | None = None) -> str:
    """Quoted (and qualified) the way results quotes: "schema"."name"."""
    quoted = '"' + name.replace('"', '""') + '"'
    return f'{_qi(schema)}.{quoted}' if schema else quoted


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_NS_CTE = f"ns AS (SELECT n.oid, n.nspname, n.nspowner FROM pg_namespace n WHERE {user_schemas_sql()})"
_NOT_EXTENSION = ("NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = '{catalog}'::regclass "
                  "AND e.objid = {oid} AND e.deptype = 'e')")

_OBJECTS_SQL = f"""
WITH {_NS_CTE}
SELECT 'schema', ns.oid::bigint, 0, 0::bigint, ns.nspname, ns.nspname, '',
       pg_get_userbyid(ns.nspowner)
FROM ns
UNION ALL
SELECT 'class', c.oid::bigint, 0, c.relnamespace::bigint, ns.nspname, c.relname, c.relkind::text,
       pg_get_userbyid(c.relowner)
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 'f')
  AND {_NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")}
UNION ALL
SELECT 'column', a.attrelid::bigint, a.attnum, a.attrelid::bigint, ns.nspname, a.attname,
       a.atttypid::bigint::text || ':' || a.atttypmod::text, ''
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'constraint', co.oid::bigint, 0, co.conrelid::bigint, ns.nspname, co.conname,
       co.contype::text, ''
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN ns ON ns.oid = c.relnamespace
UNION ALL
SELECT 'policy', p.oid::bigint, 0, p.polrelid::bigint, ns.nspname, p.polname, '', ''
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN ns ON ns.oid = c.relnamespace
UNION ALL
SELECT 'trigger', t.oid::bigint, 0, t.tgrelid::bigint, ns.nspname, t.tgname, '', ''
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
WHERE NOT t.tgisinternal
UNION ALL
SELECT 'function', p.oid::bigint, 0, p.pronamespace::bigint, ns.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid), pg_get_userbyid(p.proowner)
FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
WHERE {_NOT_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
UNION ALL
SELECT 'type', t.oid::bigint, 0, t.typnamespace::bigint, ns.nspname, t.typname, t.typtype::text,
       pg_get_userbyid(t.typowner)
FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'c', 'r')
  AND (t.typrelid = 0 OR EXISTS (SELECT FROM pg_class r WHERE r.oid = t.typrelid
                                 AND r.relkind = 'c'))
  AND {_NOT_EXTENSION.format(catalog="pg_type", oid="t.oid")}
UNION ALL
SELECT 'enum', e.oid::bigint, 0, e.enumtypid::bigint, ns.nspname, e.enumlabel,
       e.enumsortorder::text, ''
FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN ns ON ns.oid = t.typnamespace
"""

_GRANTEE = "CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END"

# Every privilege held by a role other than the object's owner; a NULL ACL is the default one.
_PRIVILEGES_SQL = f"""
WITH {_NS_CTE}
SELECT 'class', c.oid::bigint, 0, {_GRANTEE}, x.privilege_type, x.is_grantable
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace,
     LATERAL aclexplode(coalesce(c.relacl, acldefault(
         CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) x
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND x.grantee <> c.relowner
UNION ALL
SELECT 'column', c.oid::bigint, a.attnum, {_GRANTEE}, x.privilege_type, x.is_grantable
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace,
     LATERAL aclexplode(a.attacl) x
WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND x.grantee <> c.relowner
UNION ALL
SELECT 'function', p.oid::bigint, 0, {_GRANTEE}, x.privilege_type, x.is_grantable
FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace,
     LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
WHERE x.grantee <> p.proowner
UNION ALL
SELECT 'schema', ns.oid::bigint, 0, {_GRANTEE}, x.privilege_type, x.is_grantable
FROM pg_namespace n JOIN ns ON ns.oid = n.oid,
     LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) x
WHERE x.grantee <> n.nspowner
"""

_DEFAULT_ACL_SQL = f"""
SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
       {_GRANTEE}, x.privilege_type, x.is_grantable
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
LEFT JOIN LATERAL aclexplode(d.defaclacl) x ON true
WHERE d.defaclnamespace = 0 OR ({user_schemas_sql()})
"""

_COMMENTS_SQL = f"""
SELECT d.classoid::bigint, d.objoid::bigint, d.objsubid, o.type, o.identity, d.description
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
WHERE (d.objoid >= 16384 OR d.classoid = 'pg_namespace'::regclass)
  AND ((o.schema IS NOT NULL AND {user_schemas_sql("o.schema")})
       OR (o.type = 'schema' AND {user_schemas_sql("o.identity")}))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid
                  AND e.deptype = 'e')
"""

_PUBLICATIONS_SQL = """
SELECT pubname, puballtables, concat_ws(', ', CASE WHEN pubinsert THEN 'insert' END,
       CASE WHEN pubupdate THEN 'update' END, CASE WHEN pubdelete THEN 'delete' END,
       CASE WHEN pubtruncate THEN 'truncate' END)
FROM pg_publication
"""
_PUBLICATION_TABLES_SQL = {  # PostgreSQL 15 added column lists and row filters
    15: """SELECT p.pubname, r.prrelid::bigint, concat_ws(' ',
               '(' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                       FROM pg_attribute a WHERE a.attrelid = r.prrelid
                       AND a.attnum = ANY (r.prattrs)) || ')',
               'where (' || pg_get_expr(r.prqual, r.prrelid) || ')')
           FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid""",
    0: """SELECT p.pubname, r.prrelid::bigint, ''
          FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid""",
}
_PUBLICATION_SCHEMAS_SQL = """SELECT p.pubname, s.pnnspid::bigint
FROM pg_publication_namespace s JOIN pg_publication p ON p.oid = s.pnpubid"""


def _read_facts(conn: psycopg.Connection) -> _Facts:
    """All of it in one round trip (a pipeline): it runs before the dry run's first statement."""
    major = conn.info.server_version // 10000
    queries = [_OBJECTS_SQL, _PRIVILEGES_SQL, _DEFAULT_ACL_SQL, _COMMENTS_SQL, _PUBLICATIONS_SQL,
               _PUBLICATION_TABLES_SQL[15 if major >= 15 else 0]]
    queries += [_PUBLICATION_SCHEMAS_SQL] if major >= 15 else []
    with conn.pipeline():
        cursors = [conn.execute(q) for q in queries]
    rows = [c.fetchall() for c in cursors]
    objects = {(str(k), int(oid), int(sub)): _Obj(str(k), int(oid), int(sub), int(parent),
                                                  str(schema), str(name), str(info), str(owner))
               for k, oid, sub, parent, schema, name, info, owner in rows[0]}
    privileges: dict[_Key, set[_Grant]] = {}
    for k, oid, sub, grantee, priv, grantable in rows[1]:
        privileges.setdefault((str(k), int(oid), int(sub)), set()).add(
            (str(grantee), str(priv), bool(grantable)))
    defaults: dict[tuple[str, str, str], set[_Grant]] = {}
    for role, schema, objtype, grantee, priv, grantable in rows[2]:
        grants = defaults.setdefault((str(role), str(schema), str(objtype)), set())
        if grantee is not None:
            grants.add((str(grantee), str(priv), bool(grantable)))
    comments = {(int(c), int(o), int(s)): (str(t), str(i), str(d)) for c, o, s, t, i, d in rows[3]}
    publications = {str(n): ("all tables" if every else "selected tables") + f"; {ops or 'nothing'}"
                    for n, every, ops in rows[4]}
    tables = {(str(p), int(r)): str(c or "") for p, r, c in rows[5]}
    schemas = frozenset((str(p), int(n)) for p, n in rows[6]) if major >= 15 else frozenset()
    return _Facts(objects, {k: frozenset(v) for k, v in privileges.items()},
                  {k: frozenset(v) for k, v in defaults.items()}, comments, publications,
                  tables, schemas)


# ---- what changed: renames first (by oid), then everything else ------------------------------

@dataclass
class _Matches:
    """The objects both inspections hold (same oid), and how their names changed."""

    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # kind: before key -> after key
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # after rel key: old -> new
    retyped: set[tuple[str, str]] = field(default_factory=set)  # (after rel key, column)
    idents: dict[str, str] = field(default_factory=dict)  # renamed names, old -> new
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # enum type key: old -> new
    renames: list[SchemaChange] = field(default_factory=list)
    rename_ddl: list[tuple[int, str]] = field(default_factory=list)  # (order, statement)
    replaced_views: frozenset[str] = frozenset()  # names a CREATE OR REPLACE VIEW gives

    def view_replaced(self, view: Any) -> bool:
        """The migration may have replaced this view's query: with no renames, any change of
        its text says so; after renames (which make PostgreSQL print `new AS old`), only a
        CREATE OR REPLACE VIEW of it in the file does."""
        if not self.idents and not any(o != n for c in self.columns.values()
                                       for o, n in c.items()):
            return True
        return bool({view.name, f"{view.schema}.{view.name}"} & self.replaced_views)

    def column_idents(self, rel_key: str) -> dict[str, str]:
        """Renamed names as they may appear in text attached to `rel_key`."""
        renamed = self.columns.get(rel_key, {})
        return {**self.idents, **{o: n for o, n in renamed.items() if o != n}}

    def all_idents(self) -> dict[str, str]:
        out = dict(self.idents)
        for renamed in self.columns.values():
            out.update({o: n for o, n in renamed.items() if o != n})
        return out

    def key(self, kind: str, before_key: str) -> str:
        return self.keys.get(kind, {}).get(before_key, before_key)


_RELKIND_KIND = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "view",
                 "S": "sequence", "i": "index", "I": "index"}
_RELKIND_SQL = {"r": "table", "p": "table", "f": "foreign table", "v": "view",
                "m": "materialized view", "S": "sequence", "i": "index", "I": "index"}
_RENAME_ORDER = {"schema": 0, "class": 1, "column": 2, "constraint": 3, "policy": 4,
                 "trigger": 5, "function": 6, "type": 7, "enum": 8}


def _match(before: CatalogSnapshot, after: CatalogSnapshot,
           statements: Iterable[Statement] = ()) -> _Matches:
    """Pair the objects by oid; a pair under two names is a rename (its entry and DDL)."""
    fb, fa = before.facts, after.facts
    m = _Matches(replaced_views=_replaced_views(statements))
    gone = [o for k, o in fb.objects.items() if k not in fa.objects]
    # A new name that an object dropped in the same transaction had: the DDL could not say it
    # in order, so such a pair is reported as the drop and the add it also is.
    taken = {(o.kind, fb.results_key(o)) for o in gone if o.kind not in ("column", "enum")}
    taken_columns = {(o.parent, o.name) for o in gone if o.kind == "column"}
    for k in sorted(fb.objects.keys() & fa.objects.keys(), key=lambda k: (_RENAME_ORDER[k[0]], k)):
        ob, oa = fb.objects[k], fa.objects[k]
        if ob.kind == "column":
            _match_column(m, fb, fa, ob, oa, taken_columns)
        elif ob.kind == "enum":
            t = fa.get("type", oa.parent)
            if ob.name != oa.name and t is not None:
                m.labels.setdefault(fa.results_key(t), {})[ob.name] = oa.name
                m.renames.append(SchemaChange("enum value", "renamed", fa.display(oa),
                                              f"from '{ob.name}'", ""))
                m.rename_ddl.append((8, f"alter type {fa.sql_name(t)} rename value "
                                        f"{_literal(ob.name)} to {_literal(oa.name)};"))
        else:
            kb, ka = fb.results_key(ob), fa.results_key(oa)
            if kb != ka and (ob.kind, ka) in taken:
                continue
            m.keys.setdefault(ob.kind, {})[kb] = ka
            if ob.kind == "class":
                m.columns.setdefault(ka, {})  # its columns are matched by attnum
            if ob.name != oa.name and ob.kind in ("schema", "class", "function", "type"):
                m.idents[ob.name] = oa.name
            _rename_entry(m, before, after, ob, oa)
    return m


def _match_column(m: _Matches, fb: _Facts, fa: _Facts, ob: _Obj, oa: _Obj,
                  taken: set[tuple[int, str]]) -> None:
    rel = fa.relation(oa.parent)
    if rel is None or fb.relation(ob.parent) is None:
        return
    if ob.name != oa.name and (oa.parent, oa.name) in taken:
        return
    rel_key = fa.results_key(rel)
    m.columns.setdefault(rel_key, {})[ob.name] = oa.name
    if ob.info != oa.info:
        m.retyped.add((rel_key, oa.name))
    if ob.name != oa.name:
        m.renames.append(SchemaChange("column", "renamed", fa.display(oa), f"from {ob.name}", ""))
        word = "table" if rel.info in ("r", "p", "f") else _RELKIND_SQL[rel.info]
        m.rename_ddl.append((2, f"alter {word} {fa.sql_name(rel)} rename column {_qi(ob.name)} "
                                f"to {_qi(oa.name)};"))


def _rename_entry(m: _Matches, before: CatalogSnapshot, after: CatalogSnapshot, ob: _Obj,
                  oa: _Obj) -> None:
    """The entry and DDL of a rename (or a move to another schema) of one object."""
    fb, fa = before.facts, after.facts
    moved = ob.kind in ("class", "function", "type") and ob.parent != oa.parent
    if ob.name == oa.name and not moved:
        return
    order = _RENAME_ORDER[ob.kind]
    if ob.kind == "schema":
        m.renames.append(SchemaChange("schema", "renamed", oa.name, f"from {ob.name}", ""))
        m.rename_ddl.append((order, f"alter schema {_qi(ob.name)} rename to {_qi(oa.name)};"))
        return
    if ob.kind in ("constraint", "policy", "trigger"):
        rel = fa.sql_name(oa)
        kind = ob.kind
        ddl = {"constraint": f"alter table {rel} rename constraint {_qi(ob.name)} to {_qi(oa.name)};",
               "policy": f"alter policy {_qi(ob.name)} on {rel} rename to {_qi(oa.name)};",
               "trigger": f"alter trigger {_qi(ob.name)} on {rel} rename to {_qi(oa.name)};"}[kind]
        m.renames.append(SchemaChange(kind, "renamed", fa.display(oa),
                                      f"from {ob.name}", ddl))
        m.rename_ddl.append((order, ddl))
        return
    if ob.kind == "class":
        index = after.inspected.indexes.get(fa.results_key(oa))
        if index is not None and getattr(index, "constraint", None) is not None:
            return  # renamed with its constraint: the constraint's rename says it
        kind, word = _RELKIND_KIND[oa.info], _RELKIND_SQL[oa.info]
    elif ob.kind == "function":
        kind, word = "function", "routine"
    else:
        kind, word = "type", "domain" if oa.info == "d" else "type"
    schema_now = fa.get("schema", ob.parent)
    in_schema = schema_now.name if schema_now else ob.schema
    args = f"({ob.info})" if ob.kind == "function" else ""
    stmts = []
    if moved:
        stmts.append(f"alter {word} {_qi(ob.name, in_schema)}{args} set schema {_qi(oa.schema)};")
    if ob.name != oa.name:
        stmts.append(f"alter {word} {_qi(ob.name, oa.schema)}{args} rename to {_qi(oa.name)};")
    m.renames.append(SchemaChange(kind, "renamed", fa.display(oa), f"from {fb.display(ob)}",
                                  "\n".join(stmts)))
    m.rename_ddl += [(order, s) for s in stmts]


def _replaced_views(statements: Iterable[Statement]) -> frozenset[str]:
    names = set()
    for s in statements:
        if s.kind == "ViewStmt" and s.tree is not None and s.node.replace:
            rv = s.node.view
            names.add(f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname))
    return frozenset(names)


# -- text that mentions renamed things: equal once the old names are replaced by the new ones --

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_$]*|\s+|.", re.S)


def _canon(text: str, idents: Mapping[str, str]) -> str:
    out = []
    for tok in _TOKENS.findall(text):
        if tok[0] == "'":
            out.append(tok)
        elif tok[0] == '"':
            name = tok[1:-1].replace('""', '"')
            out.append(idents.get(name, name))
        elif tok[0].isspace():
            out.append(" ")
        else:
            out.append(idents.get(tok, tok))
    return "".join(out).strip()


def _same_text(before: str | None, after: str | None, idents: Mapping[str, str]) -> bool:
    """`before` says what `after` says, once renamed names are read as their new ones."""
    if before is None or after is None:
        return before is after
    return before == after or _canon(before, idents) == _canon(after, {})


# -- results' before-inspection, normalised to the after-inspection's names --------------------

_COLLECTIONS = {  # results' collections by the facts kind of their keys
    "tables": ("class",), "views": ("class",), "materialized_views": ("class",),
    "relations": ("class",), "indexes": ("class",), "sequences": ("class",),
    "constraints": ("constraint",), "rlspolicies": ("policy",), "triggers": ("trigger",),
    "functions": ("function",), "enums": ("type",), "types": ("type",), "domains": ("type",),
    "composite_types": ("type",), "schemas": ("schema",),
    "selectables": ("class", "function", "type"),
}


def _normalised(before: CatalogSnapshot, after: CatalogSnapshot, m: _Matches) -> Any:
    """A copy of results' before-inspection with every object both inspections hold filed
    under its new name and with its new text, keeping only the state PostgreSQL changes in
    place (columns, RLS, a view's query, a function's body, sequence options, ...). Diffing
    it against the after-inspection shows what changed, and no rename as a drop and an add.

    Constraints, policies and triggers take the after-inspection's state entirely: what
    changes in place there (VALIDATE, ALTER POLICY, ENABLE/DISABLE TRIGGER) is reported and
    written as DDL by dbsage itself (results would drop and re-create them)."""
    b, a = before.inspected, after.inspected
    norm = copy.copy(b)
    memo: dict[int, Any] = {}

    def merged(old: Any, new: Any, key: str) -> Any:
        if id(old) not in memo:
            memo[id(old)] = _merge(old, new, key, m)
        return memo[id(old)]

    for coll, kinds in _COLLECTIONS.items():
        old_items: Mapping[str, Any] = getattr(b, coll, None) or {}
        new_items: Mapping[str, Any] = getattr(a, coll, None) or {}
        out: OrderedDict[str, Any] = OrderedDict()
        for k, v in old_items.items():
            nk = next((m.keys[kd][k] for kd in kinds if k in m.keys.get(kd, {})), None)
            if nk is not None and nk in new_items and nk not in out:
                out[nk] = merged(v, new_items[nk], nk)
            elif k not in out:
                out[k] = v
        setattr(norm, coll, out)
    return norm


def _merge(old: Any, new: Any, key: str, m: _Matches) -> Any:
    from results.schemainspect.pg.obj import (
        InspectedConstraint,
        InspectedEnum,
        InspectedFunction,
        InspectedIndex,
        InspectedRowPolicy,
        InspectedSequence,
        InspectedTrigger,
    )

    if isinstance(old, InspectedFunction):
        return _merge_function(old, new, m)
    if isinstance(old, InspectedIndex | InspectedConstraint | InspectedRowPolicy):
        return new
    if isinstance(old, InspectedTrigger):
        n = copy.copy(new)
        if not _same_text(old.full_definition, new.full_definition, m.all_idents()):
            n.full_definition = old.full_definition  # CREATE OR REPLACE TRIGGER
        return n
    if isinstance(old, InspectedSequence):
        n = copy.copy(new)
        for attr in ("data_type", "start_value", "increment_by", "min_value", "max_value",
                     "cache_size", "cycle"):
            setattr(n, attr, getattr(old, attr))
        owner = (m.key("class", _qi(old.table_name, old.schema)) if old.table_name else None,
                 m.columns.get(m.key("class", _qi(old.table_name, old.schema)), {}).get(
                     old.column_name, old.column_name) if old.table_name else None)
        if owner != ((_qi(new.table_name, new.schema) if new.table_name else None),
                     new.column_name):
            n.table_name, n.column_name = old.table_name, old.column_name
        return n
    if isinstance(old, InspectedEnum):
        n = copy.copy(new)
        labels = m.labels.get(key, {})
        kept = [labels.get(e, e) for e in old.elements]
        if [e for e in new.elements if e in kept] != kept:
            n.elements = kept  # not explained by added values: results recreates the type
        return n
    if hasattr(old, "columns") and hasattr(old, "relationtype"):
        return _merge_relation(old, new, key, m)
    n = copy.copy(old)  # composite types, domains, schemas: under the new name
    for attr in ("name", "schema"):
        if hasattr(new, attr):
            setattr(n, attr, getattr(new, attr))
    return n


def _merge_relation(old: Any, new: Any, key: str, m: _Matches) -> Any:
    n = copy.copy(new)
    idents = m.column_idents(key)
    for attr in ("rowsecurity", "forcerowsecurity", "persistence", "options"):
        setattr(n, attr, getattr(old, attr, None))
    if (old.relationtype == "v" and not _same_text(old.definition, new.definition, m.all_idents())
            and m.view_replaced(new)):
        n.definition = old.definition  # CREATE OR REPLACE VIEW changed the query
    renamed = m.columns.get(key)  # None: no facts (a composite type): same names
    columns: OrderedDict[str, Any] = OrderedDict()
    dropped = []
    for name, col in old.columns.items():
        new_name = name if renamed is None else renamed.get(name)
        if new_name is None or new_name not in new.columns:
            dropped.append((name, col))
            continue
        nc = copy.copy(new.columns[new_name])
        for attr in ("not_null", "is_identity", "is_identity_always", "is_generated",
                     "collation"):
            setattr(nc, attr, getattr(col, attr))
        if not _same_text(col.default, nc.default, idents):
            nc.default = col.default
        if (key, new_name) in m.retyped:
            for attr in ("dbtype", "dbtypestr", "is_enum", "enum"):
                setattr(nc, attr, getattr(col, attr))
        columns[new_name] = nc
    for name, col in dropped:  # under their names (an added column may have one of them)
        columns.setdefault(name, col)
    n.columns = columns
    return n


def _merge_function(old: Any, new: Any, m: _Matches) -> Any:
    n = copy.copy(new)
    for attr in ("definition", "volatility", "strictness", "security_type", "language", "kind"):
        setattr(n, attr, getattr(old, attr))
    idents = m.all_idents()
    if not _same_text(old.result_string, new.result_string, idents):
        n.result_string = old.result_string
    # The header (name, arguments, settings) may mention renamed things; the body is text
    # PostgreSQL never rewrites, so it must be equal as it is.
    head_old = (old.full_definition or "").replace(old.definition or "\0", "\0")
    head_new = (new.full_definition or "").replace(new.definition or "\0", "\0")
    if old.definition != new.definition or not _same_text(head_old, head_new, idents):
        n.full_definition = old.full_definition
    return n


# -- the change as a list and as DDL -----------------------------------------------------------

_KIND_ORDER = ("schema", "extension", "type", "enum value", "table", "column", "view", "sequence",
               "index", "constraint", "rls", "policy", "function", "trigger", "grant",
               "default privileges", "publication", "publication table", "publication schema",
               "comment")


def describe_change(before: CatalogSnapshot, after: CatalogSnapshot,
                    statements: Iterable[Statement] = ()) -> tuple[list[SchemaChange], str]:
    """The change from `before` to `after` (that `statements` made): readable entries, and
    one ordered DDL script."""
    for inspected in (before.inspected, after.inspected):
        _forget_comments(inspected)  # comments are dbsage's own entries (pg_description)
    m = _match(before, after, statements)
    norm = _normalised(before, after, m)
    a = after.inspected
    by_results = [
        *_diff_objects("schema", norm.schemas, a.schemas, lambda s: "", None),
        *_diff_objects("extension", norm.extensions, a.extensions,
                       lambda e: f"version {e.version} in schema {e.schema}",
                       lambda n, o: str(n.update_statement).strip()),
        *_diff_objects("type", norm.enums, a.enums, _enum_detail, _recreate),
        *_diff_objects("type", norm.types, a.types,
                       lambda t: "composite: " + ", ".join(f"{k} {v}" for k, v in t.columns.items()),
                       _recreate),
        *_diff_objects("type", norm.domains, a.domains, lambda d: f"domain over {d.data_type}",
                       _recreate),
        *_diff_tables(norm, a),
        *_diff_columns(before.facts, after.facts, norm, a, m),
        *_diff_objects("view", _relations(norm, "v", "m"), _relations(a, "v", "m"),
                       _view_detail, _create_new),
        *_diff_sequences(norm, a),
        *_diff_objects("index", _plain_indexes(norm), _plain_indexes(a),
                       lambda i: f"on {i.schema}.{i.table_name}", _recreate),
        *_diff_objects("constraint", norm.constraints, a.constraints, _constraint_detail,
                       _recreate, _add_constraint),
        *_diff_rls(_relations(norm, "r", "p"), _relations(a, "r", "p")),
        *_diff_objects("policy", norm.rlspolicies, a.rlspolicies, _policy_detail, _recreate,
                       altered_detail=_policy_change_detail),
        *_diff_objects("function", norm.functions, a.functions,
                       lambda f: f"{f.thing} returning {f.result_string}, language {f.language}",
                       _create_new),
        *_diff_objects("trigger", norm.triggers, a.triggers, _trigger_detail, _recreate),
    ]
    first = _enum_values(before.facts, after.facts)  # before the objects that may use them
    last = [*_constraint_states(before, after, m), *_policy_states(before, after, m),
            *_trigger_states(before, after, m), *_grants(before.facts, after.facts),
            *_default_privileges(before.facts, after.facts),
            *_publications(before.facts, after.facts), *_comments(before.facts, after.facts)]
    changes = _in_kind_order([*m.renames, *first, *by_results, *last])
    ddl = [s for _, s in sorted(m.rename_ddl, key=lambda x: x[0])]
    ddl += [c.ddl for c in first]
    ddl += _results_ddl(norm, a)
    ddl += [c.ddl for c in last if c.ddl]
    return changes, ("\n\n".join(ddl) + "\n\n") if ddl else ""


def diff_schemas(before: CatalogSnapshot, after: CatalogSnapshot,
                 statements: Iterable[Statement] = ()) -> list[SchemaChange]:
    """Readable changes between two inspections, in dependency-friendly order."""
    return describe_change(before, after, statements)[0]


def _in_kind_order(changes: Iterable[SchemaChange]) -> list[SchemaChange]:
    rank = {k: i for i, k in enumerate(_KIND_ORDER)}
    return sorted(changes, key=lambda c: rank.get(c.kind, len(rank)))  # stable within a kind


def _forget_comments(inspected: Any) -> None:
    for coll in ("relations", "functions", "types", "composite_types"):
        for obj in (getattr(inspected, coll, None) or {}).values():
            if hasattr(obj, "comment"):
                obj.comment = None
            for col in (getattr(obj, "columns", None) or {}).values():
                if hasattr(col, "comment"):
                    col.comment = None


def _results_ddl(norm: Any, after: Any) -> list[str]:
    """results' ordered DDL, without its FK churn, constraints added as the migration adds
    them (not NOT VALID then VALIDATE)."""
    from results.dbdiff.ordered import ordered_changes

    statements = [s for group in ordered_changes(_changes_class()(norm, after)) for s in group]
    plain: dict[str, str] = {}
    validations: set[str] = set()
    for c in after.constraints.values():
        if c.can_use_not_valid and not c.is_not_valid:
            plain[c.get_create_statement(set_not_valid=True)] = c.create_statement
            validations.add(c.validate_statement)
    return [plain.get(s, s) for s in statements if s not in validations]


@functools.cache
def _changes_class() -> type:
    from results.dbdiff.changes import FK, PK, Changes, statements_for_changes
    from results.dbdiff.util import differences

    class TruthfulChanges(Changes):
        """results' Changes, re-adding an unchanged FK only when a key it depends on changed.

        results forces a drop, NOT VALID re-add and VALIDATE of every unchanged FK on or to any
        table whose definition differs at all (a new column, RLS, an enum value of a column):
        the spurious churn of FKs to auth.users. Only a dropped or changed primary key or
        unique index under it makes re-adding an FK necessary."""

        @property
        def fk_constraints(self) -> Callable[..., Any]:
            def fks(inspected: Any) -> OrderedDict[str, Any]:
                return OrderedDict(
                    (k, v) for k, v in inspected.constraints.items()
                    if v.constraint_type == FK
                    and not self._partition_constraint_child(v, inspected))

            a_od, b_od = fks(self.i_from), fks(self.i_target)
            changed_keys: set[str] = set()
            _, removed, modified, _ = differences(self.i_from.constraints,
                                                  self.i_target.constraints)
            for c in (*removed.values(), *modified.values()):
                if c.constraint_type in (PK, "UNIQUE"):
                    changed_keys.add(c.quoted_full_table_name)
            _, removed, modified, _ = differences(self.i_from.indexes, self.i_target.indexes)
            for i in (*removed.values(), *modified.values()):
                if i.is_unique:
                    changed_keys.add(i.quoted_full_table_name)
            _, _, _, unmodified = differences(a_od, b_od)
            forced = [k for k, c in unmodified.items()
                      if c.quoted_full_table_name in changed_keys
                      or c.quoted_full_foreign_table_name in changed_keys]

            def statements(creations_only: bool = False, drops_only: bool = False,
                           **kwargs: Any) -> Any:
                result = statements_for_changes(a_od, b_od, creations_only=creations_only,
                                                drops_only=drops_only, **kwargs)
                if drops_only:
                    result += [a_od[k].drop_statement for k in forced]
                elif creations_only:
                    for k in forced:
                        result += b_od[k].safer_create_statements
                return result

            return statements

    return TruthfulChanges


def _plain(key: str) -> str:
    """`"public"."a"."x"` -> `public.a.x` for reports."""
    return key.replace('"', "")


def _relations(inspected: Any, *relkinds: str) -> dict[str, Any]:
    return {k: v for k, v in inspected.relations.items() if v.relationtype in relkinds}


def _create(obj: Any) -> str:
    return str(obj.create_statement).strip()


def _drop(obj: Any) -> str:
    return str(obj.drop_statement).strip()


def _create_new(new: Any, old: Any) -> str:
    """CREATE OR REPLACE kinds (views, functions): the new definition replaces the old."""
    return _create(new)


def _recreate(new: Any, old: Any) -> str:
    return f"{_drop(old)}\n{_create(new)}"


def _add_constraint(c: Any) -> str:
    """Self-contained (results' own says `PRIMARY KEY using index`, an index not listed)."""
    return f"alter table {c.quoted_full_table_name} add constraint {c.quoted_name} {c.definition};"


def _diff_objects(kind: str, before: Mapping[str, Any], after: Mapping[str, Any],
                  detail: Callable[[Any], str], alter: Callable[[Any, Any], str] | None,
                  create: Callable[[Any], str] | None = None, *,
                  altered_detail: Callable[[Any, Any], str] | None = None) -> list[SchemaChange]:
    """Dropped, added and (when `alter` is given) altered objects of one kind, by key."""
    create = create or _create
    changes = [SchemaChange(kind, "dropped", _plain(k), detail(before[k]), _drop(before[k]))
               for k in sorted(before.keys() - after.keys())]
    changes += [SchemaChange(kind, "added", _plain(k), detail(after[k]), create(after[k]))
                for k in sorted(after.keys() - before.keys())]
    if alter is not None:
        changes += [SchemaChange(kind, "altered", _plain(k),
                                 (altered_detail or (lambda o, n: detail(n)))(before[k], after[k]),
                                 alter(after[k], before[k]))
                    for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return changes


def _table_detail(t: Any) -> str:
    return f"{len(t.columns)} column(s): {', '.join(t.columns)}"


def _view_detail(v: Any) -> str:
    kind = "materialized view" if v.relationtype == "m" else "view"
    return f"{kind}: {' '.join(str(v.definition).split())}"


def _enum_detail(e: Any) -> str:
    return "enum: " + ", ".join(_literal(x) for x in e.elements)


def _constraint_detail(c: Any) -> str:
    return f"{c.constraint_type} on {c.schema}.{c.table_name}: {c.definition}"


def _trigger_detail(t: Any) -> str:
    state = {"D": ", disabled", "R": ", replica only", "A": ", always"}.get(t.enabled, "")
    return f"on {t.schema}.{t.table_name}, calls {t.proc_schema}.{t.proc_name}(){state}"


def _policy_roles(p: Any) -> str:
    return ", ".join(p.roles or ["public"])


def _policy_detail(p: Any) -> str:
    text = f"on {p.schema}.{p.table_name} " + ("" if p.permissive else "as restrictive ")
    text += f"for {p.commandtype_keyword} to {_policy_roles(p)}"
    if p.qual:
        text += f" using ({p.qual})"
    if p.withcheck:
        text += f" with check ({p.withcheck})"
    return text


def _policy_change_detail(old: Any, new: Any) -> str:
    was = []
    if _policy_roles(old) != _policy_roles(new):
        was.append(f"to {_policy_roles(old)}")
    if old.qual != new.qual:
        was.append(f"using ({old.qual})" if old.qual else "no using")
    if old.withcheck != new.withcheck:
        was.append(f"with check ({old.withcheck})" if old.withcheck else "no with check")
    if old.commandtype != new.commandtype or old.permissive != new.permissive:
        was.append(f"{'' if old.permissive else 'restrictive '}for {old.commandtype_keyword}")
    return _policy_detail(new) + (f"; was {' '.join(was)}" if was else "")


def _plain_indexes(inspected: Any) -> dict[str, Any]:
    """Indexes that do not back a constraint (those show as the constraint)."""
    return {k: i for k, i in inspected.indexes.items() if not getattr(i, "constraint", None)}


def _diff_tables(norm: Any, after: Any) -> list[SchemaChange]:
    before_t, after_t = _relations(norm, "r", "p"), _relations(after, "r", "p")
    changes = _diff_objects("table", before_t, after_t, _table_detail, None)
    for k in sorted(before_t.keys() & after_t.keys()):  # dropped and created again
        if getattr(before_t[k], "oid", None) != getattr(after_t[k], "oid", None):
            changes += [SchemaChange("table", "dropped", _plain(k), _table_detail(before_t[k]),
                                     _drop(before_t[k])),
                        SchemaChange("table", "added", _plain(k), _table_detail(after_t[k]),
                                     _create(after_t[k]))]
    return changes


def _diff_columns(fb: _Facts, fa: _Facts, norm: Any, after: Any, m: _Matches
                  ) -> list[SchemaChange]:
    """Columns of the tables both hold, matched by attnum: a renamed column is not dropped and
    added, and a column dropped and added again under its name is (its data goes)."""
    changes: list[SchemaChange] = []
    before_t, after_t = _relations(norm, "r", "p"), _relations(after, "r", "p")
    for key in sorted(before_t.keys() & after_t.keys()):
        old_t, new_t = before_t[key], after_t[key]
        if getattr(old_t, "oid", None) != getattr(new_t, "oid", None):
            continue  # dropped and created again: the table entries say it
        if key in m.columns:
            kept = set(m.columns[key].values())
            dropped = [n for n in old_t.columns if n not in kept]
        else:
            kept = set(old_t.columns) & set(new_t.columns)
            dropped = [n for n in old_t.columns if n not in kept]
        for name in sorted(dropped):
            col = old_t.columns[name]
            changes.append(SchemaChange("column", "dropped", f"{_plain(key)}.{name}",
                                        col.dbtypestr,
                                        f"alter table {key} {col.drop_column_clause};"))
        for name in sorted(n for n in new_t.columns if n not in kept):
            col = new_t.columns[name]
            changes.append(SchemaChange("column", "added", f"{_plain(key)}.{name}",
                                        _column_detail(col),
                                        f"alter table {key} {col.add_column_clause};"))
        for name in sorted(n for n in new_t.columns if n in kept and n in old_t.columns):
            old, new = old_t.columns[name], new_t.columns[name]
            if old != new:
                changes.append(SchemaChange(
                    "column", "altered", f"{_plain(key)}.{name}",
                    f"{_column_detail(old)} -> {_column_detail(new)}",
                    "\n".join(new.alter_table_statements(old, key))))
    return changes


def _column_detail(col: Any) -> str:
    text = str(col.dbtypestr) + (" not null" if col.not_null else "")
    return text + (f" default {col.default}" if col.default else "")


def _diff_rls(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SchemaChange]:
    changes = []
    for key in sorted(after):
        new = after[key]
        old = before.get(key)
        if old is None and new.rowsecurity:
            changes.append(SchemaChange("rls", "added", _plain(key), "row level security enabled",
                                        f"{new.alter_rls_statement}".strip()))
        elif old is not None and old.rowsecurity != new.rowsecurity:
            state = "enabled" if new.rowsecurity else "disabled"
            changes.append(SchemaChange("rls", "altered", _plain(key),
                                        f"row level security {state}",
                                        f"{new.alter_rls_statement}".strip()))
        if old is not None and old.forcerowsecurity != new.forcerowsecurity:
            state = "forced on the owner too" if new.forcerowsecurity else "no longer forced"
            changes.append(SchemaChange("rls", "altered", _plain(key),
                                        f"row level security {state}",
                                        f"{new.alter_force_rls_statement}".strip()))
    return changes


def _diff_sequences(norm: Any, after: Any) -> list[SchemaChange]:
    """Sequences other than identity ones; a serial column's comes and goes with its column."""
    def with_its_column(seq: Any, other: Any) -> bool:
        if not seq.table_name:
            return False
        table = other.relations.get(_qi(seq.table_name, seq.schema))
        return table is None or seq.column_name not in table.columns

    b, a = norm.sequences, after.sequences
    return _diff_objects("sequence",
                         {k: v for k, v in b.items() if k in a or not with_its_column(v, after)},
                         {k: v for k, v in a.items() if k in b or not with_its_column(v, norm)},
                         lambda s: str(s.options_clause),
                         lambda n, o: "\n".join(n.alter_statements(o)))


def _enum_values(fb: _Facts, fa: _Facts) -> list[SchemaChange]:
    """Values added to enum types both inspections hold, where they were added."""
    labels: dict[int, list[_Obj]] = {}
    for o in fa.objects.values():
        if o.kind == "enum" and fb.get("type", o.parent) is not None:
            labels.setdefault(o.parent, []).append(o)
    changes = []
    for type_oid, values in sorted(labels.items()):
        t = fa.get("type", type_oid)
        if t is None:
            continue
        ordered = sorted(values, key=lambda o: float(o.info))
        names = [o.name for o in ordered]
        for i, o in enumerate(ordered):
            if fb.get("enum", o.oid) is not None:
                continue
            where = f"before {_literal(names[i + 1])}" if i + 1 < len(names) else ""
            changes.append(SchemaChange(
                "enum value", "added", fa.display(o),
                f"{_literal(o.name)} {where or 'at the end'}; values now: "
                + ", ".join(map(_literal, names)),
                f"alter type {fa.sql_name(t)} add value {_literal(o.name)}"
                + (f" {where}" if where else "") + ";"))
    return changes


def _pairs(before: CatalogSnapshot, after: CatalogSnapshot, m: _Matches, kind: str,
           coll: str) -> Iterator[tuple[str, Any, Any]]:
    """(after key, object before, object after) of the objects of `coll` both hold by oid."""
    old, new = getattr(before.inspected, coll), getattr(after.inspected, coll)
    for kb, ka in m.keys.get(kind, {}).items():
        if kb in old and ka in new:
            yield ka, old[kb], new[ka]


def _constraint_states(before: CatalogSnapshot, after: CatalogSnapshot, m: _Matches
                       ) -> list[SchemaChange]:
    """VALIDATE CONSTRAINT and ALTER CONSTRAINT ... DEFERRABLE: the same constraint, changed."""
    changes = []
    for key, old, new in sorted(_pairs(before, after, m, "constraint", "constraints")):
        table = new.quoted_full_table_name
        if old.is_not_valid and not new.is_not_valid:
            changes.append(SchemaChange("constraint", "validated", _plain(key),
                                        _constraint_detail(new),
                                        f"alter table {table} validate constraint "
                                        f"{new.quoted_name};"))
        if (old.is_deferrable, old.initially_deferred) != (new.is_deferrable,
                                                           new.initially_deferred):
            clause = ("deferrable initially deferred" if new.initially_deferred else
                      "deferrable initially immediate" if new.is_deferrable else "not deferrable")
            changes.append(SchemaChange("constraint", "altered", _plain(key), clause,
                                        f"alter table {table} alter constraint "
                                        f"{new.quoted_name} {clause};"))
    return changes


def _policy_states(before: CatalogSnapshot, after: CatalogSnapshot, m: _Matches
                   ) -> list[SchemaChange]:
    """ALTER POLICY: the same policy with other roles, USING or WITH CHECK."""
    changes = []
    for key, old, new in sorted(_pairs(before, after, m, "policy", "rlspolicies")):
        idents = m.column_idents(new.quoted_full_table_name)
        clauses = []
        if list(old.roles or []) != list(new.roles or []):
            clauses.append(f"to {_policy_roles(new)}")
        if not _same_text(old.qual, new.qual, idents):
            clauses.append(f"using ({new.qual})")
        if not _same_text(old.withcheck, new.withcheck, idents):
            clauses.append(f"with check ({new.withcheck})")
        if clauses:
            changes.append(SchemaChange(
                "policy", "altered", _plain(key), _policy_change_detail(old, new),
                f"alter policy {new.quoted_name} on {new.quoted_full_table_name} "
                f"{' '.join(clauses)};"))
    return changes


def _trigger_states(before: CatalogSnapshot, after: CatalogSnapshot, m: _Matches
                    ) -> list[SchemaChange]:
    """ALTER TABLE ... ENABLE/DISABLE TRIGGER: the same trigger, switched."""
    words = {"O": "enable", "D": "disable", "R": "enable replica", "A": "enable always"}
    changes = []
    for key, old, new in sorted(_pairs(before, after, m, "trigger", "triggers")):
        if old.enabled != new.enabled:
            changes.append(SchemaChange(
                "trigger", "altered", _plain(key), f"{words.get(new.enabled, new.enabled)}d",
                f"alter table {_qi(new.table_name, new.schema)} "
                f"{words.get(new.enabled, 'enable')} trigger {_qi(new.name)};"))
    return changes


# -- privileges ----------------------------------------------------------------------------------

_PRIVILEGE_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER",
                    "MAINTAIN", "USAGE", "EXECUTE", "CREATE", "TEMPORARY", "CONNECT")
# What PostgreSQL grants to others on a new object with no default privileges (besides its
# owner), by pg_default_acl object type.
_BUILTIN_GRANTS = {"f": frozenset({("PUBLIC", "EXECUTE", False)}),
                   "T": frozenset({("PUBLIC", "USAGE", False)})}
_DEFAULT_ACL_WORDS = {"r": "tables", "S": "sequences", "f": "functions", "T": "types",
                      "n": "schemas"}


def _privilege_list(grants: Iterable[_Grant]) -> str:
    rank = {p: i for i, p in enumerate(_PRIVILEGE_ORDER)}
    privileges = sorted({(p, g) for _, p, g in grants}, key=lambda x: (rank.get(x[0], 99), x[1]))
    return ", ".join(p.lower() + (" with grant option" if g else "") for p, g in privileges)


def _grantee_sql(grantee: str) -> str:
    return "public" if grantee == "PUBLIC" else _qi(grantee)


def _acl_objtype(o: _Obj) -> str:
    if o.kind == "class":
        return "S" if o.info == "S" else "r"
    return {"function": "f", "schema": "n", "type": "T"}.get(o.kind, "")


def _initial_grants(facts: _Facts, o: _Obj) -> frozenset[_Grant]:
    """What a new object got from others at creation: the defaults for its owner."""
    if o.kind == "column":
        return frozenset()
    objtype = _acl_objtype(o)
    grants = set(facts.default_acl.get((o.owner, "", objtype), _BUILTIN_GRANTS.get(objtype,
                                                                                 frozenset())))
    if o.kind != "schema":
        grants |= facts.default_acl.get((o.owner, o.schema, objtype), frozenset())
    return frozenset(g for g in grants if g[0] != o.owner)


def _grant_target(facts: _Facts, o: _Obj) -> tuple[str, str, str, str]:
    """(its kind, its name in reports, the GRANT's `ON ...`, a column list or "")."""
    if o.kind == "column":
        return "column", facts.display(o), f"table {facts.sql_name(o)}", f" ({_qi(o.name)})"
    if o.kind == "function":
        return "function", facts.display(o), f"function {facts.sql_name(o)}", ""
    if o.kind == "schema":
        return "schema", o.name, f"schema {_qi(o.name)}", ""
    word = _RELKIND_SQL.get(o.info, "table")
    return (word, facts.display(o),
            f"{'sequence' if o.info == 'S' else 'table'} {facts.sql_name(o)}", "")


def _grants(fb: _Facts, fa: _Facts) -> list[SchemaChange]:
    """GRANT and REVOKE on tables, views, sequences, columns, functions and schemas, per
    object and role; a new object's grants against what it got at creation."""
    changes = []
    keys = {k for k in (*fb.privileges, *fa.privileges) if k in fa.objects}
    keys |= {k for k, o in fa.objects.items() if o.kind in ("class", "function", "schema")
             and k not in fb.objects}
    for key in sorted(keys):
        o = fa.objects[key]
        if o.kind == "class" and o.info in ("i", "I"):
            continue
        old = fb.privileges.get(key, frozenset()) if key in fb.objects else _initial_grants(fa, o)
        new = fa.privileges.get(key, frozenset())
        word, name, target, columns = _grant_target(fa, o)
        for action, grants, prep in (("granted", new - old, "to"), ("revoked", old - new, "from")):
            for grantee in sorted({g[0] for g in grants}):
                mine = [g for g in grants if g[0] == grantee]
                plain = _privilege_list((g[0], g[1], False) for g in mine)
                verb = "grant" if action == "granted" else "revoke"
                option = " with grant option" if action == "granted" and all(
                    g[2] for g in mine) else ""
                changes.append(SchemaChange(
                    "grant", action, f"{name} {prep} {grantee}",
                    f"{_privilege_list(mine)} on {word} {name}",
                    f"{verb} {plain}{columns} on {target} {prep} {_grantee_sql(grantee)}"
                    f"{option};"))
    return changes


def _default_privileges(fb: _Facts, fa: _Facts) -> list[SchemaChange]:
    """ALTER DEFAULT PRIVILEGES: what objects a role creates will grant to others."""
    def effective(facts: _Facts, key: tuple[str, str, str]) -> frozenset[_Grant]:
        role, schema, objtype = key
        fallback = _BUILTIN_GRANTS.get(objtype, frozenset()) if not schema else frozenset()
        return frozenset(g for g in facts.default_acl.get(key, fallback) if g[0] != role)

    changes = []
    for key in sorted(fb.default_acl.keys() | fa.default_acl.keys()):
        role, schema, objtype = key
        old, new = effective(fb, key), effective(fa, key)
        words = _DEFAULT_ACL_WORDS.get(objtype, objtype)
        scope = f" in schema {schema}" if schema else ""
        scope_sql = f" in schema {_qi(schema)}" if schema else ""
        for action, grants, word in (("granted", new - old, "to"), ("revoked", old - new, "from")):
            for grantee in sorted({g[0] for g in grants}):
                mine = [g for g in grants if g[0] == grantee]
                verb = "grant" if action == "granted" else "revoke"
                changes.append(SchemaChange(
                    "default privileges", action,
                    f"{words} created by {role}{scope} {word} {grantee}",
                    f"{_privilege_list(mine)} on new {words}",
                    f"alter default privileges for role {_qi(role)}{scope_sql} {verb} "
                    f"{_privilege_list((g[0], g[1], False) for g in mine)} on {words} "
                    f"{word} {_grantee_sql(grantee)};"))
    return changes


# -- publications and comments -------------------------------------------------------------------

def _publications(fb: _Facts, fa: _Facts) -> list[SchemaChange]:
    """Publications, and the tables and schemas they publish (`alter publication ... add
    table`); a member that went with its dropped table or publication is not listed again."""
    changes = [SchemaChange("publication", "dropped", p, fb.publications[p],
                            f"drop publication {_qi(p)};")
               for p in sorted(fb.publications.keys() - fa.publications.keys())]
    changes += [SchemaChange("publication", "added", p, fa.publications[p],
                             f"create publication {_qi(p)};")
                for p in sorted(fa.publications.keys() - fb.publications.keys())]
    for pub, relid in sorted(fb.publication_tables.keys() | fa.publication_tables.keys()):
        rel = fa.relation(relid)
        if rel is None or pub not in fa.publications:
            continue
        name, table = f"{pub}: {fa.display(rel)}", fa.sql_name(rel)
        old, new = fb.publication_tables.get((pub, relid)), fa.publication_tables.get((pub, relid))
        clause = f" {new}" if new else ""
        if old is None and new is not None:
            changes.append(SchemaChange("publication table", "added", name,
                                        f"published by {pub}{clause}",
                                        f"alter publication {_qi(pub)} add table {table}{clause};"))
        elif new is None and old is not None:
            changes.append(SchemaChange("publication table", "dropped", name,
                                        f"no longer published by {pub}",
                                        f"alter publication {_qi(pub)} drop table {table};"))
        elif old != new:
            changes.append(SchemaChange("publication table", "altered", name,
                                        f"published by {pub}{clause or ' (all columns, rows)'}",
                                        f"alter publication {_qi(pub)} set table {table}{clause};"))
    for pub, nsp in sorted(fb.publication_schemas ^ fa.publication_schemas):
        schema = fa.get("schema", nsp)
        if schema is None or pub not in fa.publications:
            continue
        added = (pub, nsp) in fa.publication_schemas
        changes.append(SchemaChange(
            "publication schema", "added" if added else "dropped", f"{pub}: {schema.name}",
            f"tables in schema {schema.name}",
            f"alter publication {_qi(pub)} {'add' if added else 'drop'} tables in schema "
            f"{_qi(schema.name)};"))
    return changes


# pg_identify_object's type -> the kind of object it is in dbsage's facts (to tell a comment
# removed with COMMENT ... IS NULL from one that went with its object).
_COMMENTED = {"table": "class", "view": "class", "materialized view": "class",
              "sequence": "class", "index": "class", "foreign table": "class",
              "table column": "column", "view column": "column",
              "materialized view column": "column", "foreign table column": "column",
              "function": "function", "procedure": "function",
              "aggregate": "function", "type": "type", "domain": "type", "schema": "schema",
              "table constraint": "constraint", "policy": "policy", "trigger": "trigger"}


def _comments(fb: _Facts, fa: _Facts) -> list[SchemaChange]:
    """COMMENT ON: added, changed, removed (but not a comment that went with its object)."""
    changes = []
    for key in sorted(fb.comments.keys() | fa.comments.keys()):
        old, new = fb.comments.get(key), fa.comments.get(key)
        if new is None:
            assert old is not None
            otype, identity, text = old
            kind = _COMMENTED.get(otype)
            otype = _comment_type(otype)
            _, objoid, sub = key
            if kind is None or fa.get(kind, objoid, sub if kind == "column" else 0) is None:
                continue  # the object went, and its comment with it
            changes.append(SchemaChange("comment", "dropped", f"{otype} {identity}",
                                        f"was {_literal(text)}",
                                        f"comment on {otype} {identity} is null;"))
            continue
        otype, identity, text = new
        otype = _comment_type(otype)
        if old is not None and old[2] == text:
            continue
        changes.append(SchemaChange(
            "comment", "added" if old is None else "altered", f"{otype} {identity}",
            _literal(text) + (f" (was {_literal(old[2])})" if old else ""),
            f"comment on {otype} {identity} is {_literal(text)};"))
    return changes


def _comment_type(otype: str) -> str:
    """pg_identify_object's type as COMMENT ON names it."""
    return {"table column": "column", "view column": "column",
            "materialized view column": "column", "foreign table column": "column",
            "table constraint": "constraint", "composite type": "type"}.get(otype, otype)


# ---- what a rollback does not undo ---------------------------------------------------------------

_Position = tuple[int, bool]  # a sequence's (last_value, is_called)


@dataclass(frozen=True)
class _Seq:
    """A user sequence the dry run moved: what putting it back needs to know."""

    oid: int
    name: str  # schema.name
    sql_name: str  # quoted
    owner: str
    owned: bool  # this role may ALTER it
    updatable: bool  # this role may setval() it
    increment: int
    cache: int
    users: tuple[tuple[str, str], ...]  # (table, column), quoted: the columns it feeds


# One catalog query, cheap (it runs before the dry run's first statement): where every user
# sequence this role can read stands; NULL (pg_sequences.last_value's): never drawn.
_SEQUENCE_VALUES_SQL = f"""
SELECT c.oid::bigint, c.oid::regclass::text, has_sequence_privilege(c.oid, 'SELECT,USAGE'),
       CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE')
            THEN pg_sequence_last_value(c.oid::regclass) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND {user_schemas_sql()}
"""

# The moved ones, after the run: owner, rights, and the columns they feed (owned by, default).
_SEQUENCE_DETAILS_SQL = """
SELECT c.oid::bigint, n.nspname || '.' || c.relname,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner),
       pg_has_role(c.relowner, 'USAGE'), has_sequence_privilege(c.oid, 'UPDATE'),
       s.seqincrement, s.seqcache,
       ARRAY(SELECT ARRAY[quote_ident(tn.nspname) || '.' || quote_ident(t.relname),
                          quote_ident(a.attname)]
             FROM (SELECT d.refobjid AS relid, d.refobjsubid AS attnum FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
                     AND d.deptype IN ('a', 'i')
                   UNION
                   SELECT ad.adrelid, ad.adnum FROM pg_depend d
                   JOIN pg_attrdef ad ON ad.oid = d.objid
                   WHERE d.classid = 'pg_attrdef'::regclass
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid) u
             JOIN pg_class t ON t.oid = u.relid AND t.relkind IN ('r', 'p')
             JOIN pg_namespace tn ON tn.oid = t.relnamespace
             JOIN pg_attribute a ON a.attrelid = u.relid AND a.attnum = u.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.oid = ANY (%s::oid[])
"""


def _sequence_states(conn: psycopg.Connection, rows: list[Any] | None = None
                     ) -> dict[int, _Position]:
    """Where every user sequence this role can read stands, exactly (`rows`:
    _SEQUENCE_VALUES_SQL's, when already read): a never-drawn one's own last_value is read
    from it, since setval(..., false) and RESTART leave it anywhere."""
    import psycopg
    from psycopg import sql

    states: dict[int, _Position] = {}
    never_drawn: list[tuple[int, str]] = []
    for oid, name, readable, last in (conn.execute(_SEQUENCE_VALUES_SQL).fetchall()
                                      if rows is None else rows):
        if not readable:
            continue
        if last is None:
            never_drawn.append((int(oid), str(name)))
        else:
            states[int(oid)] = (int(last), True)
    for i in range(0, len(never_drawn), 200):
        chunk = never_drawn[i:i + 200]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::bigint, last_value, is_called FROM {}").format(
                sql.Literal(oid), sql.SQL(name)) for oid, name in chunk)
        try:
            for oid, last, called in conn.execute(query).fetchall():
                states[int(oid)] = (int(last), bool(called))
        except psycopg.Error:  # one went meanwhile: these are not checked
            continue
    return states


def _restore_sequences(conn: psycopg.Connection, before: Mapping[int, _Position],
                       after: Mapping[int, _Position], lock_timeout: str) -> list[SequenceReset]:
    """Put back every sequence the dry run moved, where that clobbers nothing."""
    moved = [oid for oid in before.keys() & after.keys() if before[oid] != after[oid]]
    if not moved:
        return []
    details = {int(r[0]): _Seq(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4]),
                               bool(r[5]), int(r[6]), int(r[7]),
                               tuple((str(t), str(c)) for t, c in r[8] or ()))
               for r in conn.execute(_SEQUENCE_DETAILS_SQL, (moved,)).fetchall()}
    resets = []
    for seq in sorted(details.values(), key=lambda s: s.name):
        b, a = before[seq.oid], after[seq.oid]
        drawn = _drawn_by_this_session(conn, seq, a)
        if drawn is None:
            continue  # another session moved it, not the dry run
        reason = (_put_back(conn, seq, b, a, lock_timeout) if drawn else
                  f"another session drew from it after the dry run's last value (it stands at "
                  f"{a[0]})")
        resets.append(SequenceReset(seq.name, b[0], b[1], a[0], a[1], reason is None,
                                    reason or ""))
    return resets


def _drawn_by_this_session(conn: psycopg.Connection, seq: _Seq, a: _Position) -> bool | None:
    """True: its last value (its last cached block) is this session's own draw; False:
    another session drew after it; None: this session never drew from it (DISCARD SEQUENCES
    before the dry run made currval() forget earlier draws)."""
    import psycopg

    if not a[1]:
        return True  # setval(..., false) by the migration; nothing was drawn since
    try:
        row = conn.execute("SELECT currval(%s::oid::regclass)", (seq.oid,)).fetchone()
    except psycopg.Error:
        return None
    if row is None or row[0] is None:
        return None
    steps, rest = divmod(a[0] - int(row[0]), seq.increment)
    return rest == 0 and 0 <= steps < max(seq.cache, 1)


def _put_back(conn: psycopg.Connection, seq: _Seq, b: _Position, a: _Position,
              lock_timeout: str) -> str | None:
    """setval() the sequence back to `b`, or say why not. In a transaction rolled back at the
    end (setval is not transactional and stays), holding it still for that instant."""
    import psycopg
    from psycopg import sql

    if not seq.owned:
        return f"only its owner ({seq.owner}) may hold it still for the check"
    if not seq.updatable:
        return "this role may not setval() it (no UPDATE privilege)"
    first = b[0] + (seq.increment if b[1] else 0)  # the first value drawn
    if a[1] and (a[0] - first) * seq.increment < 0:
        return "it wrapped around (CYCLE)"
    low, high = sorted((first, a[0]))
    why: list[str] = []
    try:
        with conn.transaction():
            set_timeouts(conn, lock_timeout, None, local=True)
            conn.execute("SET LOCAL row_security = off")  # a row hidden by RLS: an error
            # Its AccessExclusiveLock stops nextval() elsewhere until the rollback below;
            # LOCK TABLE refuses sequences, and OWNER TO its own owner changes nothing.
            conn.execute(sql.SQL("ALTER SEQUENCE {} OWNER TO {}").format(
                sql.SQL(seq.sql_name), sql.Identifier(seq.owner)))
            set_timeouts(conn, lock_timeout, lock_timeout, local=True)  # the checks, too
            now = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.SQL(seq.sql_name))).fetchone()
            if now is None or (int(now[0]), bool(now[1])) != a:
                why.append("another session drew from it meanwhile (it stands at "
                           f"{now[0] if now else '?'})")
            elif a[1]:
                for table, column in seq.users:
                    row = conn.execute(sql.SQL(
                        "SELECT EXISTS (SELECT FROM {} WHERE {} BETWEEN %s AND %s)").format(
                        sql.SQL(table), sql.SQL(column)), (low, high)).fetchone()
                    if row and row[0]:
                        why.append(f"{_plain(table)}.{_plain(column)} holds values from "
                                   f"{low} to {high}: another session drew them during the "
                                   "dry run")
                        break
            if not why:
                conn.execute("SELECT setval(%s::oid::regclass, %s, %s)", (seq.oid, b[0], b[1]))
            raise psycopg.Rollback()
    except psycopg.errors.LockNotAvailable:
        return (f"it could not be held still within lock_timeout {lock_timeout} (a transaction "
                "that drew from it is still open)")
    except psycopg.errors.QueryCanceled:
        return f"checking it took longer than {lock_timeout}"
    except psycopg.Error as exc:
        return f"it could not be checked ({str(exc).strip().splitlines()[0]})"
    return why[0] if why else None


def _sequence_warning(r: SequenceReset) -> str:
    def state(value: int, called: bool) -> str:
        return str(value) if called else f"unused (next {value})"

    moved = (f"sequence {r.name}: the dry run advanced it from {state(r.before, r.before_called)}"
             f" to {state(r.left_at, r.left_called)} (nextval() is not undone by a rollback)")
    if r.restored:
        return f"{moved}; dbsage put it back, so the apply draws the values psql would."
    return (f"{moved}, and it was left there: {r.reason}. The apply draws after it, so rows it "
            "inserts get other ids than under psql (a gap in the numbering).")


_ADVISORY_SQL = """SELECT classid::bigint, objid::bigint, objsubid::int, mode FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"""


def _advisory_locks(conn: psycopg.Connection) -> frozenset[tuple[int, int, int, str]]:
    return _advisory_rows(conn.execute(_ADVISORY_SQL).fetchall())


def _advisory_rows(rows: Iterable[Any]) -> frozenset[tuple[int, int, int, str]]:
    return frozenset((int(c), int(o), int(s), str(m)) for c, o, s, m in rows)


def _advisory_call(fn: str, lock: tuple[int, int, int, str]) -> tuple[str, tuple[int, ...], str]:
    """`fn` ('pg_advisory_unlock', ...) for this pg_locks row, its arguments, the key shown."""
    classid, objid, sub, mode = lock
    shared = "_shared" if mode == "ShareLock" else ""
    if sub == 1:  # one bigint key: its high and low halves
        key = (classid << 32) | objid
        key -= 1 << 64 if key >= 1 << 63 else 0
        return f"SELECT {fn}{shared}(%s::bigint)", (key,), str(key)
    one, two = (x - (1 << 32) if x >= 1 << 31 else x for x in (classid, objid))
    return f"SELECT {fn}{shared}(%s::int, %s::int)", (one, two), f"({one}, {two})"


def _release_advisory_locks(conn: psycopg.Connection,
                            before: frozenset[tuple[int, int, int, str]]) -> list[str]:
    """Session advisory locks outlive a rollback: release those the statements took, take
    back those they released (the migration lock among them)."""
    now = _advisory_locks(conn)
    warnings = []
    for lock in sorted(now - before):
        query, args, key = _advisory_call("pg_advisory_unlock", lock)
        for _ in range(1000):  # once per time it was taken
            conn.execute(query, args)
            if lock not in _advisory_locks(conn):
                break
        warnings.append(f"the dry run took session advisory lock {key}, which a rollback does "
                        "not release; dbsage released it.")
    for lock in sorted(before - now):
        query, args, key = _advisory_call("pg_try_advisory_lock", lock)
        row = conn.execute(query, args).fetchone()
        got = bool(row and row[0])
        warnings.append(f"the dry run released session advisory lock {key} that this session "
                        "held, and a rollback does not take it back; "
                        + ("dbsage took it again." if got else
                           "another session holds it now, so dbsage no longer does."))
    return warnings


def _deallocate_prepared(conn: psycopg.Connection, migration: MigrationFile) -> None:
    """PREPARE is not undone by a rollback: the apply's own PREPARE would find the name taken."""
    from psycopg import sql

    for s in migration.statements:
        if s.kind == "PrepareStmt" and s.tree is not None:
            row = conn.execute("SELECT EXISTS (SELECT FROM pg_prepared_statements WHERE name = %s)",
                               (s.node.name,)).fetchone()
            if row and row[0]:
                conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(s.node.name)))


def _undo_quietly(conn: psycopg.Connection, migration: MigrationFile,
                  sequences: Mapping[int, _Position],
                  advisory: frozenset[tuple[int, int, int, str]], lock_timeout: str) -> None:
    """After an interrupt or a broken inspection: what can still be put back, silently."""
    from psycopg.pq import TransactionStatus

    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return
    try:
        _restore_sequences(conn, sequences, _sequence_states(conn), lock_timeout)
        _release_advisory_locks(conn, advisory)
        _deallocate_prepared(conn, migration)
    except Exception:  # best effort: the original error is what the caller reports
        return


# Functions whose effect no rollback recalls (nextval/setval are put back instead).
_UNDOABLE = {
    **dict.fromkeys(("dblink", "dblink_exec", "dblink_send_query"),
                    "runs SQL over another connection, which commits on its own"),
    **dict.fromkeys(("dblink_connect", "dblink_connect_u"),
                    "opens a connection that outlives the rollback"),
    **dict.fromkeys(("http", "http_get", "http_post", "http_put", "http_patch", "http_delete",
                     "http_head"), "makes an HTTP request, which no rollback recalls"),
    "pg_terminate_backend": "ends another session",
    "pg_cancel_backend": "cancels another session's query",
    **dict.fromkeys(("pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync",
                     "lo_export"), "writes to the server's files"),
    "pg_logical_emit_message": "writes a message to the WAL for logical decoding",
    **dict.fromkeys(("pg_create_logical_replication_slot", "pg_create_physical_replication_slot",
                     "pg_drop_replication_slot", "pg_copy_logical_replication_slot",
                     "pg_copy_physical_replication_slot"), "creates or drops a replication slot"),
    **dict.fromkeys(("pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal"),
                    "acts on the server itself"),
    **dict.fromkeys(("pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
                     "pg_stat_statements_reset"), "resets statistics"),
}
_BODY_CALL = re.compile(r"\b(" + "|".join(sorted(_UNDOABLE, key=len, reverse=True)) + r")\s*\(",
                        re.I)


def non_transactional_warnings(migration: MigrationFile, *,
                               skip: frozenset[int] = frozenset()) -> list[str]:
    """What the statements (and their DO blocks) do that the dry run's rollback cannot undo,
    and that the apply will do again (leaving out the statements in `skip`: not run)."""
    warnings = []
    for s in migration.statements:
        if s.tree is None or not s.transactional or s.index in skip:
            continue
        found: dict[str, str] = {}
        for node in walk(s.node):
            kind = type(node).__name__
            if kind == "FuncCall" and node.funcname:
                name = str(getattr(node.funcname[-1], "sval", "")).lower()
                if name in _UNDOABLE:
                    found.setdefault(f"{name}()", _UNDOABLE[name])
            elif kind == "CopyStmt" and node.is_program:
                found.setdefault("COPY ... PROGRAM", "runs a program on the database server")
            elif kind == "CopyStmt" and node.filename and not node.is_from:
                found.setdefault("COPY ... TO a file", "writes a file on the database server")
            elif kind == "DoStmt":
                for arg in node.args or ():
                    body = str(getattr(getattr(arg, "arg", None), "sval", "") or "")
                    for match in _BODY_CALL.finditer(body):
                        name = match.group(1).lower()
                        found.setdefault(f"{name}() in its DO block", _UNDOABLE[name])
        warnings += [f"line {s.line}: {what} {why}: the dry run's rollback does not undo it, "
                     "and the apply will do it again." for what, why in found.items()]
    return warnings


