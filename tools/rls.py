"""Row level security: what the policies say (`audit_rls`) and what they do (`probe_access`).

`audit_rls` reads the catalog: per table of the API-exposed schemas, whether RLS is enabled and
forced, each policy, which commands the permissive policies cover, and flags.

`probe_access` impersonates the API roles the way PostgREST does (`SET LOCAL ROLE`, the JWT
claims in `request.jwt.claims`) and tries SELECT, INSERT, UPDATE and DELETE on every exposed
table, each in its own subtransaction that is undone (one DO block per role runs them all: see
`_run_probes`), all inside one transaction that is always rolled back (a savepoint, rolled
back, when the connection is already in a transaction). So nothing it
does is ever committed. What it cannot undo, it avoids: the probe row of an INSERT carries
explicit values for identity and `nextval()` columns, so no sequence of the probed table
advances. Triggers do run (and are rolled back with everything else): a trigger with effects
outside the transaction (e.g. calling `nextval` or a remote service) keeps them. UPDATE and
DELETE touch every row the role may touch, so on big tables restrict `tables`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from dbsage.tools.errors import DbsageError

Command = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]
PolicyCommand = Literal["ALL", "SELECT", "INSERT", "UPDATE", "DELETE"]
TableFlag = Literal["rls_off", "rls_on_no_policy", "incomplete_coverage"]
ProbeRoleName = Literal["anon", "authenticated", "service_role"]
Outcome = Literal["allowed", "denied_rls", "denied_privilege", "not_testable", "error"]

COMMANDS: tuple[Command, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")
PROBE_ROLES: tuple[ProbeRoleName, ...] = ("anon", "authenticated", "service_role")
_POLCMD: dict[str, PolicyCommand] = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE",
                                     "d": "DELETE"}
# Columns that hold the owning user's id: filled with the probe's `sub` when they have no
# default (as are uuid columns referencing auth.users).
OWNER_COLUMNS = frozenset({"user_id", "owner_id", "owner", "created_by", "author_id", "profile_id"})
_INT_MAX = {"int2": "32767", "int4": "2147483647", "int8": "9223372036854775807"}
_RLS_VIOLATION = "row-level security"


class RlsError(DbsageError):
    """The audit or the access probe cannot run as asked."""


# --------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class PolicyInfo:
    """One policy as the catalog has it (expressions deparsed by PostgreSQL)."""

    name: str
    command: PolicyCommand
    permissive: bool  # False: AS RESTRICTIVE
    roles: tuple[str, ...]  # ("public",) for PUBLIC
    using: str | None
    with_check: str | None
    # the pg_policy row (its oid and xmin): what tools/advisors.py's DeparsedPolicies is keyed
    # by, so the lints that follow an audit need not deparse the same expressions again
    oid: int = field(default=0, compare=False, repr=False)
    xmin: str = field(default="", compare=False, repr=False)


def deparsed_policies(audit: RlsAudit) -> dict[tuple[int, str], tuple[str | None, str | None]]:
    """The audit's deparsed expressions, for run_advisors(..., deparsed=...)."""
    return {(p.oid, p.xmin): (p.using, p.with_check) for t in audit.tables
            for p in t.policies if p.oid}


@dataclass(frozen=True)
class TableRls:
    """Row level security of one table.

    `covered` are the commands at least one permissive policy (FOR ALL or that command)
    allows; `uncovered` the others: with RLS on, rows are reachable through a command only when
    a permissive policy covers it (restrictive policies only narrow).
    """

    schema: str
    name: str
    owner: str
    rls_enabled: bool
    rls_forced: bool  # FORCE ROW LEVEL SECURITY: the owner is subject to it too
    extension: str | None  # the extension that owns the table, if any
    policies: tuple[PolicyInfo, ...]
    covered: tuple[Command, ...]
    uncovered: tuple[Command, ...]
    flags: tuple[TableFlag, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class RlsSummary:
    """Counts over the audited tables."""

    tables: int
    rls_enabled: int
    rls_forced: int
    policies: int
    rls_off: int
    rls_on_no_policy: int
    incomplete_coverage: int
    fully_covered: int  # RLS on and all four commands covered


@dataclass(frozen=True)
class RlsAudit:
    """The audit of the exposed schemas' tables (ordered by schema and name)."""

    schemas: tuple[str, ...]
    tables: tuple[TableRls, ...]
    summary: RlsSummary

    def table(self, qualified: str) -> TableRls:
        """The audit of `schema.name` (KeyError if it was not audited)."""
        for t in self.tables:
            if t.qualified == qualified:
                return t
        raise KeyError(qualified)


_Q_AUDIT_TABLES = """
    SELECT c.oid, n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text,
           c.relrowsecurity, c.relforcerowsecurity,
           (SELECT e.extname::text FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' LIMIT 1)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s::text[])
    ORDER BY 2, 3"""

_Q_AUDIT_POLICIES = """
    SELECT p.polrelid, p.polname::text, p.polcmd::text, p.polpermissive,
           ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                 FROM unnest(p.polroles) r ORDER BY 1),
           pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
           p.oid::int8, p.xmin::text
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s::text[])
    ORDER BY 1, 2"""


def _coverage(policies: Sequence[PolicyInfo]) -> tuple[tuple[Command, ...], tuple[Command, ...]]:
    permissive = {p.command for p in policies if p.permissive}
    covered = tuple(c for c in COMMANDS if "ALL" in permissive or c in permissive)
    return covered, tuple(c for c in COMMANDS if c not in covered)


def _flags(rls: bool, policies: Sequence[PolicyInfo],
           uncovered: Sequence[Command]) -> tuple[TableFlag, ...]:
    if not rls:
        return ("rls_off",)
    if not policies:
        return ("rls_on_no_policy",)
    return ("incomplete_coverage",) if uncovered else ()


def audit_rls(conn: psycopg.Connection[Any], exposed_schemas: Sequence[str]) -> RlsAudit:
    """Row level security of every table (regular and partitioned) in `exposed_schemas`.

    Flags: `rls_off` (RLS disabled: grants alone decide), `rls_on_no_policy` (nobody but the
    owner and BYPASSRLS roles reaches a row), `incomplete_coverage` (policies exist, but some
    commands have no permissive policy: `uncovered` says which).
    """
    params = {"schemas": list(exposed_schemas)}
    with conn.transaction(force_rollback=True):
        # expressions deparsed with every name qualified, whatever the session's search_path
        conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        tables = conn.execute(_Q_AUDIT_TABLES, params).fetchall()
        policy_rows = conn.execute(_Q_AUDIT_POLICIES, params).fetchall()
    by_table: dict[int, list[PolicyInfo]] = {}
    for relid, name, cmd, permissive, roles, using, check, oid, xmin in policy_rows:
        by_table.setdefault(relid, []).append(
            PolicyInfo(name, _POLCMD[cmd], permissive, tuple(roles), using, check, oid, xmin))
    audited: list[TableRls] = []
    for oid, schema, name, owner, rls, forced, extension in tables:
        policies = by_table.get(oid, [])
        covered, uncovered = _coverage(policies)
        audited.append(TableRls(schema, name, owner, rls, forced, extension, tuple(policies),
                                covered, uncovered, _flags(rls, policies, uncovered)))
    summary = RlsSummary(
        tables=len(audited),
        rls_enabled=sum(t.rls_enabled for t in audited),
        rls_forced=sum(t.rls_forced for t in audited),
        policies=sum(len(t.policies) for t in audited),
        rls_off=sum("rls_off" in t.flags for t in audited),
        rls_on_no_policy=sum("rls_on_no_policy" in t.flags for t in audited),
        incomplete_coverage=sum("incomplete_coverage" in t.flags for t in audited),
        fully_covered=sum(t.rls_enabled and not t.uncovered for t in audited))
    return RlsAudit(tuple(exposed_schemas), tuple(audited), summary)


# --------------------------------------------------------------------------- access probe


@dataclass(frozen=True)
class RoleProbe:
    """An API caller to impersonate: the role PostgREST would switch to and the JWT claims.

    `claims` is a JSON object (text); `role` is added to it, and for `authenticated` its `sub`
    is the user's id that `auth.uid()` returns.
    """

    role: ProbeRoleName
    claims: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.role not in PROBE_ROLES:
            raise RlsError(f"Cannot impersonate {self.role!r}.",
                           hint="Probe the API roles: " + ", ".join(PROBE_ROLES) + ".")
        try:
            parsed: Any = json.loads(self.claims) if self.claims else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise RlsError(f"The claims of a {self.role} probe are not a JSON object: "
                           f"{self.claims}.",
                           hint='Pass claims like {"sub": "<user id>", "app_metadata": {}}.')

    @classmethod
    def anon(cls) -> RoleProbe:
        return cls("anon")

    @classmethod
    def authenticated(cls, sub: str | None = None, claims: Mapping[str, Any] | None = None,
                      label: str = "") -> RoleProbe:
        merged = dict(claims or {})
        if sub is not None:
            merged["sub"] = sub
        return cls("authenticated", json.dumps(merged) if merged else None, label)

    @classmethod
    def service_role(cls) -> RoleProbe:
        return cls("service_role")

    @property
    def claim_set(self) -> dict[str, Any]:
        """The claims as set for the request (with `role`)."""
        parsed: dict[str, Any] = json.loads(self.claims) if self.claims else {}
        return {"role": self.role, **parsed}

    @property
    def sub(self) -> str | None:
        value = self.claim_set.get("sub")
        return None if value is None else str(value)

    @property
    def name(self) -> str:
        """The label, or `role` (with `sub=...` when there is one)."""
        if self.label:
            return self.label
        sub = self.sub
        return f"{self.role} sub={sub}" if sub else self.role


@dataclass(frozen=True)
class CommandProbe:
    """One command tried by one role on one table.

    outcome: `allowed` (it ran; `rows` are the rows it returned, inserted, updated or deleted,
    0 meaning RLS let none through), `denied_rls` (the new row violates a WITH CHECK: "new row
    violates row-level security policy"), `denied_privilege` (no grant on the table, column or
    schema), `not_testable` (the probe row broke a constraint, NOT NULL, foreign key, unique,
    check, or a value was rejected: says nothing about access), `error` (anything else, e.g. a
    lock or statement timeout, a recursive policy; `detail` says what).
    """

    command: Command
    outcome: Outcome
    rows: int | None
    detail: str = ""
    sqlstate: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


@dataclass(frozen=True)
class AccessCell:
    """What one role could do on one table."""

    table: str  # schema.name
    role: str  # RoleProbe.name
    select: CommandProbe
    insert: CommandProbe
    update: CommandProbe
    delete: CommandProbe

    def command(self, command: Command) -> CommandProbe:
        return {"SELECT": self.select, "INSERT": self.insert, "UPDATE": self.update,
                "DELETE": self.delete}[command]


@dataclass(frozen=True)
class AccessMatrix:
    """Tables × roles × commands. `total_rows` are the rows the connecting role itself sees
    (all of them for a table owner or a BYPASSRLS role; None when it may not read them)."""

    schemas: tuple[str, ...]
    roles: tuple[str, ...]
    tables: tuple[str, ...]
    total_rows: Mapping[str, int | None] = field(default_factory=dict)
    cells: tuple[AccessCell, ...] = ()

    def cell(self, table: str, role: str) -> AccessCell:
        for c in self.cells:
            if c.table == table and c.role == role:
                return c
        raise KeyError((table, role))

    def result(self, table: str, role: str, command: Command) -> CommandProbe:
        return self.cell(table, role).command(command)


@dataclass(frozen=True)
class _Column:
    attnum: int
    name: str
    type_sql: str  # format_type(): a valid type name
    category: str
    base_type: str
    is_enum: bool
    not_null: bool
    identity: str
    generated: str
    default: str | None
    owner_ref: bool  # uuid referencing auth.users, or an owner-named uuid column


@dataclass(frozen=True)
class _Table:
    oid: int
    schema: str
    name: str
    columns: tuple[_Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


_Q_PROBE_COLUMNS = """
    SELECT c.oid, n.nspname::text, c.relname::text, a.attnum, a.attname::text,
           format_type(a.atttypid, a.atttypmod), coalesce(bt.typcategory, t.typcategory)::text,
           coalesce(bt.typname, t.typname)::text, coalesce(bt.typtype, t.typtype) = 'e',
           a.attnotnull, a.attidentity::text, a.attgenerated::text,
           pg_get_expr(d.adbin, d.adrelid),
           coalesce(bt.typname, t.typname) = 'uuid' AND (a.attname = ANY(%(owner_columns)s::text[])
             OR EXISTS (SELECT 1 FROM pg_constraint f WHERE f.conrelid = c.oid AND f.contype = 'f'
                        AND f.conkey = ARRAY[a.attnum] AND f.confrelid = (
                          SELECT u.oid FROM pg_class u JOIN pg_namespace un ON un.oid = u.relnamespace
                          WHERE un.nspname = 'auth' AND u.relname = 'users')))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s::text[])
    ORDER BY 2, 3, 4"""

_Q_COLUMN_RIGHTS = """
    SELECT a.attrelid, a.attnum
    FROM pg_attribute a
    WHERE a.attrelid = ANY(%(tables)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      AND has_column_privilege(%(role)s, a.attrelid, a.attnum, 'SELECT')
      AND has_column_privilege(%(role)s, a.attrelid, a.attnum, 'UPDATE')"""


def _load_tables(conn: psycopg.Connection[Any], schemas: Sequence[str],
                 only: Sequence[str] | None) -> list[_Table]:
    rows = conn.execute(_Q_PROBE_COLUMNS, {"schemas": list(schemas),
                                           "owner_columns": sorted(OWNER_COLUMNS)}).fetchall()
    columns: dict[int, list[_Column]] = {}
    names: dict[int, tuple[str, str]] = {}
    for oid, schema, table, *col in rows:
        names[oid] = (schema, table)
        columns.setdefault(oid, []).append(_Column(*col))
    tables = [_Table(oid, s, t, tuple(columns[oid])) for oid, (s, t) in names.items()]
    if only is not None:
        wanted = set(only)
        missing = sorted(wanted - {t.qualified for t in tables})
        if missing:
            raise RlsError(f"Not a table of the exposed schemas: {', '.join(missing)}.",
                           hint="Name tables as schema.name, in one of: " + ", ".join(schemas))
        tables = [t for t in tables if t.qualified in wanted]
    return tables


class _Quoted:
    """psycopg's quoting of names and literals, once per distinct one: the probe statements
    of a large schema repeat the same few values and column names thousands of times, and
    composing each statement from sql objects cost more than running it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._names: dict[tuple[str, ...], str] = {}
        self._literals: dict[str, str] = {}

    def name(self, *parts: str) -> str:
        text = self._names.get(parts)
        if text is None:
            text = self._names[parts] = sql.Identifier(*parts).as_string(self.conn)
        return text

    def literal(self, value: str) -> str:
        text = self._literals.get(value)
        if text is None:
            text = self._literals[value] = sql.Literal(value).as_string(self.conn)
        return text

    def cast(self, value: str, type_sql: str) -> str:
        return f"CAST({self.literal(value)} AS {type_sql})"


def _dummy(col: _Column, q: _Quoted, *, sequence: bool) -> str | None:
    """A harmless value for a column that needs one, or None (left NULL)."""
    if col.base_type in _INT_MAX:
        # the top of the range: a value a sequence would reach last
        return q.cast(_INT_MAX[col.base_type] if sequence else "0", col.type_sql)
    if col.is_enum:
        return f"(enum_range(NULL::{col.type_sql}))[1]"
    by_type = {"uuid": "00000000-0000-0000-0000-000000000000", "json": "{}", "jsonb": "{}",
               "interval": "0", "inet": "0.0.0.0", "cidr": "0.0.0.0/32", "bytea": ""}
    if col.base_type in by_type:
        return q.cast(by_type[col.base_type], col.type_sql)
    by_category = {"N": "0", "S": "x", "B": "false", "D": "now", "A": "{}"}
    if col.category in by_category:
        return q.cast(by_category[col.category], col.type_sql)
    return None


def _insert_statement(table: _Table, probe: RoleProbe, given: Mapping[str, str],
                      q: _Quoted) -> str:
    """INSERT of one probe row: the `given` values (column → text), defaults where a column has
    one (except `nextval()`, which would advance a sequence for good), the probe's `sub` in
    owner columns, a plain value in other NOT NULL columns, NULL elsewhere."""
    names: list[str] = []
    values: list[str] = []
    overriding = False
    sub = probe.sub
    for col in table.columns:
        if col.generated:
            continue
        sequence = bool(col.identity) or "nextval(" in (col.default or "")
        value: str | None
        if col.name in given:
            value = q.cast(given[col.name], col.type_sql)
            overriding = overriding or bool(col.identity)
        elif sequence:
            value = _dummy(col, q, sequence=True)
            overriding = overriding or bool(col.identity)
        elif col.default is not None:
            continue
        elif col.owner_ref and sub is not None:
            value = q.cast(sub, col.type_sql)
        elif col.not_null:
            value = _dummy(col, q, sequence=False)
        else:
            continue
        names.append(q.name(col.name))
        values.append(value if value is not None else "NULL")
    target = q.name(table.schema, table.name)
    if not names:
        return f"INSERT INTO {target} DEFAULT VALUES"
    return (f"INSERT INTO {target} ({', '.join(names)})"
            f"{' OVERRIDING SYSTEM VALUE' if overriding else ''} VALUES ({', '.join(values)})")


def _update_statement(table: _Table, writable: set[int], q: _Quoted) -> str | None:
    """`UPDATE t SET c = c` on the first column the role may read and update (else the first
    updatable column, which then shows the missing privilege); None if no column can be set."""
    candidates = [c for c in table.columns if not c.generated and c.identity != "a"]
    if not candidates:
        return None
    col = next((c for c in candidates if c.attnum in writable), candidates[0])
    ident = q.name(col.name)
    return f"UPDATE {q.name(table.schema, table.name)} SET {ident} = {ident}"


def _classify(command: Command, exc: psycopg.Error) -> CommandProbe:
    return _classified(command, exc.sqlstate, exc.diag.message_primary or str(exc))


def _classified(command: Command, state: str | None, message: str) -> CommandProbe:
    message = message.splitlines()[0] if message else ""
    if state == "42501":
        outcome: Outcome = "denied_rls" if _RLS_VIOLATION in message else "denied_privilege"
    elif state is not None and (state.startswith(("23", "22")) or state == "428C9"):
        outcome = "not_testable"
        message = f"constraint: {message}"
    else:
        outcome = "error"
    return CommandProbe(command, outcome, None, message, state)


def _attempt(conn: psycopg.Connection[Any], command: Command,
             stmt: str | None) -> CommandProbe:
    """Run one probe statement (SQL text quoted by `_Quoted`) in a savepoint that is always
    rolled back."""
    if stmt is None:
        return CommandProbe(command, "not_testable", None, "no column can be updated")
    try:
        with conn.transaction(force_rollback=True):
            cur = conn.execute(sql.SQL(stmt))
            if command == "SELECT":
                row = cur.fetchone()
                rows = int(row[0]) if row else 0
            else:
                rows = max(cur.rowcount, 0)
    except psycopg.Error as exc:
        if exc.sqlstate is None or conn.closed:
            raise
        return _classify(command, exc)
    return CommandProbe(command, "allowed", rows)


# Every probe statement of one role in ONE statement: a DO block runs each in its own
# subtransaction (BEGIN ... EXCEPTION, which is a savepoint) and undoes it, also when it
# succeeded (it raises _UNDO after reading the row count), so each statement sees what a
# rolled-back savepoint leaves: the same outcome, row count, SQLSTATE and message as one round
# trip per statement (three, with the savepoint), without the 12 round trips per table. The
# statements come in, and the outcomes go out, through two transaction-local settings.
_UNDO = "DBSG0"
_PROBE_BLOCK = f"""
DO $dbsage_probe$
DECLARE
  item jsonb;
  n bigint;
  state text;
  message text;
  outcomes jsonb[] := '{{}}';
BEGIN
  FOR item IN SELECT value FROM jsonb_array_elements(current_setting('dbsage.probe_in')::jsonb)
  LOOP
    BEGIN
      IF item->>'c' = 'SELECT' THEN
        EXECUTE item->>'q' INTO n;
      ELSE
        EXECUTE item->>'q';
        GET DIAGNOSTICS n = ROW_COUNT;
      END IF;
      RAISE SQLSTATE '{_UNDO}';
    EXCEPTION
      WHEN SQLSTATE '{_UNDO}' THEN
        outcomes := array_append(outcomes, jsonb_build_array(coalesce(n, 0)));
      WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        outcomes := array_append(outcomes, jsonb_build_array(state, message));
    END;
  END LOOP;
  PERFORM set_config('dbsage.probe_out', to_jsonb(outcomes)::text, true);
END
$dbsage_probe$"""


def _run_probes(conn: psycopg.Connection[Any],
                items: Sequence[tuple[Command, str | None]]) -> list[CommandProbe]:
    """Run the probe statements in order, each undone before the next, as the current role.

    One DO block for all of them; if it cannot run (no PL/pgSQL, or the whole block outlived
    statement_timeout, which then also held for each statement), each statement runs in its
    own savepoint instead (`_attempt`), which gives the per-statement timeouts exactly."""
    runnable = [(c, q) for c, q in items if q is not None]
    outcomes: list[Any] | None = None
    if runnable:
        payload = json.dumps([{"c": c, "q": q} for c, q in runnable])
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('dbsage.probe_in', %s, true)", (payload,))
                conn.execute(_PROBE_BLOCK)
                row = conn.execute("SELECT current_setting('dbsage.probe_out')").fetchone()
                outcomes = json.loads(row[0]) if row and row[0] else None
        except psycopg.Error as exc:
            if exc.sqlstate is None or conn.closed:
                raise
            outcomes = None
        if outcomes is None or len(outcomes) != len(runnable):
            return [_attempt(conn, c, q) for c, q in items]
    done = iter(outcomes or [])
    probes: list[CommandProbe] = []
    for command, stmt in items:
        if stmt is None:
            probes.append(_attempt(conn, command, None))
            continue
        out = next(done)
        if len(out) == 1:
            probes.append(CommandProbe(command, "allowed", max(int(out[0]), 0)))
        else:
            probes.append(_classified(command, out[0], out[1] or ""))
    return probes


def _check_roles(conn: psycopg.Connection[Any], probes: Sequence[RoleProbe]) -> None:
    names = [p.name for p in probes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RlsError(f"Two probes have the same name: {', '.join(duplicates)}.",
                       hint="Give each probe its own label.")
    wanted = sorted({p.role for p in probes})
    rows = conn.execute("SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s::text[])",
                        (wanted,)).fetchall()
    missing = sorted(set(wanted) - {r[0] for r in rows})
    if missing:
        raise RlsError(f"Role(s) {', '.join(missing)} do not exist in this database.",
                       hint="These are Supabase's API roles; on plain PostgreSQL create them "
                       "(and grant them to the connecting role) to probe access.")


def _impersonate(conn: psycopg.Connection[Any], probe: RoleProbe) -> None:
    claims = probe.claim_set
    conn.execute(
        "SELECT set_config('request.jwt.claims', %s, true), "
        "set_config('request.jwt.claim.sub', %s, true), "
        "set_config('request.jwt.claim.role', %s, true)",
        (json.dumps(claims), probe.sub or "", probe.role))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(probe.role)))
    except psycopg.errors.InsufficientPrivilege as exc:
        user = conn.execute("SELECT current_user::text").fetchone()
        who = user[0] if user else "the connecting role"
        raise RlsError(f"{who} cannot switch to the role {probe.role}.",
                       hint=f"Grant it membership: GRANT {probe.role} TO {who}; (Supabase's "
                       "postgres role is a member of anon, authenticated and service_role).") from exc


def probe_access(conn: psycopg.Connection[Any], exposed_schemas: Sequence[str],
                 roles: Sequence[RoleProbe], *, tables: Sequence[str] | None = None,
                 values: Mapping[str, Mapping[str, str]] | None = None,
                 lock_timeout: str = "1s", statement_timeout: str = "30s") -> AccessMatrix:
    """Impersonate each role on every table of `exposed_schemas` (or only `tables`, as
    `schema.name`) and report what SELECT, INSERT, UPDATE and DELETE may do.

    The INSERT's probe row is built from the column defaults; `values` ("schema.table" →
    column → value as text) sets columns a policy checks (e.g. a tenant id matching a claim).
    A `denied_rls` INSERT means this row was refused: with other values it might pass.

    Per role: `SET LOCAL ROLE`, `request.jwt.claims` (and `request.jwt.claim.sub` / `.role`)
    set locally, then per table `SELECT count(*)`, an INSERT of one probe row, `UPDATE t SET
    c = c` and `DELETE FROM t` (no WHERE: the rows counted are those the policies let through),
    each in its own subtransaction, undone; one statement (a DO block) per role runs them all.
    Everything runs in one transaction that is rolled back whatever happens. A statement
    waiting longer than `lock_timeout` for a row lock, or running longer than
    `statement_timeout`, is reported as an `error`.
    """
    if not roles:
        raise RlsError("No role to probe.", hint="Probe anon, authenticated and/or service_role.")
    matrix_cells: list[AccessCell] = []
    totals: dict[str, int | None] = {}
    with conn.transaction(force_rollback=True):
        _check_roles(conn, roles)
        conn.execute("SELECT set_config('lock_timeout', %s, true), "
                     "set_config('statement_timeout', %s, true)", (lock_timeout, statement_timeout))
        probed = _load_tables(conn, exposed_schemas, tables)
        q = _Quoted(conn)
        counting = {t.oid: f"SELECT count(*) FROM {q.name(t.schema, t.name)}" for t in probed}
        deleting = {t.oid: f"DELETE FROM {q.name(t.schema, t.name)}" for t in probed}
        counts = _run_probes(conn, [("SELECT", counting[table.oid]) for table in probed])
        for table, count in zip(probed, counts, strict=True):
            totals[table.qualified] = count.rows
        for probe in roles:
            rights = conn.execute(_Q_COLUMN_RIGHTS, {"tables": [t.oid for t in probed],
                                                     "role": probe.role}).fetchall()
            writable: dict[int, set[int]] = {}
            for relid, attnum in rights:
                writable.setdefault(relid, set()).add(attnum)
            with conn.transaction(force_rollback=True):
                _impersonate(conn, probe)
                items: list[tuple[Command, str | None]] = []
                for table in probed:
                    items += [
                        ("SELECT", counting[table.oid]),
                        ("INSERT", _insert_statement(
                            table, probe, (values or {}).get(table.qualified, {}), q)),
                        ("UPDATE", _update_statement(table, writable.get(table.oid, set()), q)),
                        ("DELETE", deleting[table.oid])]
                done = _run_probes(conn, items)
                for k, table in enumerate(probed):
                    select, insert, update, delete = done[4 * k:4 * k + 4]
                    matrix_cells.append(AccessCell(table.qualified, probe.name, select, insert,
                                                   update, delete))
    return AccessMatrix(tuple(exposed_schemas), tuple(p.name for p in roles),
                        tuple(t.qualified for t in probed), totals, tuple(matrix_cells))
