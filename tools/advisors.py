"""Database advisors: the Supabase linter's exposure and performance lints, on the catalog alone.

The lint names, levels, categories and rules are those of Supabase's database linter
(supabase/splinter); the queries are dbsage's own. Where splinter reads the API-exposed schemas
from `pgrst.db_schemas`, these take them as an argument. Every query reads only the system
catalogs and the statistics views (the one table read is storage.buckets, for the bucket lint;
no lock is taken on any table), so `run_advisors` is fast and can run
inside a migration's dry-run transaction, seeing the migration's uncommitted DDL: run it before
and after, then `compare_findings` says what the migration introduces and what it fixes.

Where dbsage's rule is narrower or wider than splinter's, the rule's docstring says so.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from dbsage.tools.catalog import API_ROLES, api_roles, excluded_schemas
from dbsage.tools.errors import DbsageError

Level = Literal["ERROR", "WARN", "INFO"]
Category = Literal["SECURITY", "PERFORMANCE"]

# Schemas no lint looks into: PostgreSQL's own (and every `pg_*` schema), the migration
# bookkeeping and Supabase's platform schemas (tools/catalog.py), and the internal schemas of
# extensions Supabase offers (as splinter leaves them out).
EXCLUDED_SCHEMAS: tuple[str, ...] = (
    *excluded_schemas(platform=False),
    "pgmq", "pgroonga", "pgtle", "repack", "tiger", "topology",
    "_timescaledb_cache", "_timescaledb_catalog", "_timescaledb_config", "_timescaledb_internal",
)

# Column names that usually hold credentials, personal identifiers, financial, medical, device
# or biometric data (compared lower-case, with '-' read as '_').
SENSITIVE_COLUMN_NAMES: frozenset[str] = frozenset({
    # credentials and secrets
    "password", "passwd", "pwd", "passphrase", "secret", "secret_key", "private_key",
    "api_key", "apikey", "auth_key", "token", "jwt", "access_token", "refresh_token",
    "oauth_token", "session_token", "bearer_token", "auth_code", "session_id", "session_key",
    "session_secret", "recovery_code", "backup_code", "verification_code", "otp", "two_factor",
    "2fa_secret", "2fa_code",
    # personal identifiers
    "ssn", "social_security", "social_security_number", "driver_license", "drivers_license",
    "license_number", "passport_number", "passport_id", "national_id", "tax_id",
    # financial
    "credit_card", "card_number", "cvv", "cvc", "cvn", "bank_account", "account_number",
    "routing_number", "iban", "swift_code", "bic",
    # health
    "health_record", "medical_record", "patient_id", "insurance_number", "health_insurance",
    "medical_insurance", "treatment",
    # devices, keys, biometrics
    "mac_address", "macaddr", "imei", "device_uuid", "pgp_key", "gpg_key", "ssh_key",
    "certificate", "license_key", "activation_key", "facial_recognition",
})

_ALWAYS_TRUE = frozenset({"true", "(true)", "1=1", "(1=1)"})
_TRUE_OPTIONS = frozenset({"true", "on", "yes", "1"})
_COMMANDS: dict[str, tuple[str, ...]] = {
    "r": ("SELECT",), "a": ("INSERT",), "w": ("UPDATE",), "d": ("DELETE",),
    "*": ("SELECT", "INSERT", "UPDATE", "DELETE"),
}
_COMMAND_NAME = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
# Calls a policy should wrap in `(select ...)` so that they run once per statement (an
# initPlan), not once per row.
_PER_ROW_CALL = re.compile(r"\b(?:auth\.(?:uid|jwt|role|email)\(\)|current_setting\()", re.I)
_USER_METADATA = (
    re.compile(r"auth\.jwt\(\).*user_metadata", re.S),
    re.compile(r"current_setting\(\s*'request\.jwt\.claims'.*user_metadata", re.S),
    re.compile(r"\braw_user_meta_data\b"),
)
_BUCKET_ONLY = re.compile(
    r"\A\s*\(*\s*bucket_id\s*=\s*'((?:[^']|'')*)'(?:\s*::\s*[\w.]+)?\s*\)*\s*\Z", re.I)
_SELECT_BEHIND = re.compile(r"\bselect[\s(]*\Z", re.I)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_PAREN_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[()]")


class AdvisorError(DbsageError):
    """The advisors could not run as asked (e.g. an unknown lint name)."""


@dataclass(frozen=True)
class LintRule:
    """One lint: its published name, level and categories, the rule and dbsage's advice."""

    name: str
    title: str
    level: Level
    categories: tuple[Category, ...]
    rule: str  # what fires it, in one line
    why: str  # why it matters
    docs: str  # Supabase's page about it


@dataclass(frozen=True)
class LintFinding:
    """One thing one lint found.

    `object` is the table, view, function, extension or bucket as `schema.name`; `item` names
    the policy, constraint, index(es), role and command or argument list within it that the
    finding is about ('' when it is about the object as a whole). `fix` is SQL to start from:
    names are filled in, `user_id` / `tenant_id` and the claim names are placeholders.
    """

    name: str
    title: str
    level: Level
    categories: tuple[Category, ...]
    object: str
    object_type: str
    item: str
    detail: str
    why: str
    fix: str

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a finding across two runs: lint name, object and item."""
        return (self.name, self.object, self.item)


@dataclass(frozen=True)
class AdvisorDelta:
    """Findings after a change compared with before it, matched by `LintFinding.key`."""

    introduced: tuple[LintFinding, ...]
    fixed: tuple[LintFinding, ...]
    unchanged: tuple[LintFinding, ...]

    @property
    def changed(self) -> bool:
        return bool(self.introduced or self.fixed)


# --------------------------------------------------------------------------- fix templates


def _owner_policies(target: str, label: str) -> str:
    return (
        "-- owner-only rows (user_id: the column holding the owner's auth.users id)\n"
        f'create policy "{label}: owner reads" on {target} for select to authenticated\n'
        "  using ((select auth.uid()) = user_id);\n"
        f'create policy "{label}: owner inserts" on {target} for insert to authenticated\n'
        "  with check ((select auth.uid()) = user_id);\n"
        f'create policy "{label}: owner updates" on {target} for update to authenticated\n'
        "  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);\n"
        f'create policy "{label}: owner deletes" on {target} for delete to authenticated\n'
        "  using ((select auth.uid()) = user_id);"
    )


def _public_read_policies(target: str, label: str) -> str:
    return (
        "-- public read, signed-in write (one policy per command: SELECT keeps a single\n"
        "-- permissive policy, a FOR ALL write policy would add a second one)\n"
        f'create policy "{label}: anyone reads" on {target} for select to anon, authenticated\n'
        "  using (true);\n"
        f'create policy "{label}: signed-in users insert their own" on {target} for insert\n'
        "  to authenticated with check ((select auth.uid()) = user_id);\n"
        f'create policy "{label}: authors update" on {target} for update to authenticated\n'
        "  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);\n"
        f'create policy "{label}: authors delete" on {target} for delete to authenticated\n'
        "  using ((select auth.uid()) = user_id);"
    )


def _tenant_policies(target: str, label: str) -> str:
    return (
        "-- multi-tenant by a JWT claim (tenant_id: the column; set the claim in app_metadata,\n"
        "-- which users cannot edit)\n"
        f'create policy "{label}: tenant members" on {target} for all to authenticated\n'
        "  using (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid)\n"
        "  with check (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid);"
    )


def _policy_choices(target: str, label: str) -> str:
    return "\n\n".join((_owner_policies(target, label), _public_read_policies(target, label),
                        _tenant_policies(target, label)))


def _label(name: str) -> str:
    return name.replace('"', "")


# --------------------------------------------------------------------------- catalog reads

_USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> ALL(%(system)s::text[])"
_NOT_EXTENSION_REL = ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass"
                      " AND e.objid = {rel} AND e.deptype = 'e')")


def _api_readable(rel: str, column: str | None = None) -> str:
    """SQL: anon or authenticated may select from `rel` (any column, or `column`); always true
    when neither role exists (plain PostgreSQL: everything in an exposed schema is exposed)."""
    check = (f"has_column_privilege(r, {rel}, {column}, 'SELECT')" if column
             else f"has_any_column_privilege(r, {rel}, 'SELECT')")
    return (f"(cardinality(%(api)s::text[]) = 0 OR EXISTS (SELECT 1 FROM unnest(%(api)s::text[]) r"
            f" WHERE {check}))")


_Q_RELATIONS = f"""
    SELECT n.nspname::text, c.relname::text, format('%%I.%%I', n.nspname, c.relname),
           c.relkind::text, c.relrowsecurity, n.nspname = ANY(%(exposed)s::text[]),
           coalesce(c.reloptions, '{{}}')::text[],
           ARRAY(SELECT p.polname::text FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1),
           n.nspname = ANY(%(exposed)s::text[]) AND {_api_readable("c.oid")},
           NOT {_NOT_EXTENSION_REL.format(rel="c.oid")}
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {_USER_SCHEMA}
    ORDER BY 1, 2"""

_Q_POLICIES = f"""
    SELECT n.nspname::text, c.relname::text, format('%%I.%%I', n.nspname, c.relname),
           c.relkind::text, c.relrowsecurity, p.polname::text, p.polcmd::text, p.polpermissive,
           ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                 FROM unnest(p.polroles) r ORDER BY 1),
           pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
           {_USER_SCHEMA}
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ({_USER_SCHEMA} OR (n.nspname = 'storage' AND c.relname = 'objects'))
      AND {_NOT_EXTENSION_REL.format(rel="c.oid")}
    ORDER BY 1, 2, 6"""

# The same, for a caller that keeps the deparsed expressions between runs (`DeparsedPolicies`):
# only the policies whose pg_policy row is new or changed since (another oid or xmin) are
# deparsed, which was most of this query's time on a large schema.
_Q_POLICIES_KNOWN = f"""
    SELECT n.nspname::text, c.relname::text, format('%%I.%%I', n.nspname, c.relname),
           c.relkind::text, c.relrowsecurity, p.polname::text, p.polcmd::text, p.polpermissive,
           ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                 FROM unnest(p.polroles) r ORDER BY 1),
           CASE WHEN NOT k.known THEN pg_get_expr(p.polqual, p.polrelid) END,
           CASE WHEN NOT k.known THEN pg_get_expr(p.polwithcheck, p.polrelid) END,
           {_USER_SCHEMA}, p.oid::int8, p.xmin::text, k.known
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL (SELECT %(known)s::jsonb ? (p.oid::text || ':' || p.xmin::text)) k(known)
    WHERE ({_USER_SCHEMA} OR (n.nspname = 'storage' AND c.relname = 'objects'))
      AND {_NOT_EXTENSION_REL.format(rel="c.oid")}
    ORDER BY 1, 2, 6"""

# Roles a PUBLIC policy stands for, as splinter counts them: not PostgreSQL's pg_* roles, not
# Supabase's *admin roles, not roles that bypass row level security anyway.
_Q_POLICY_ROLES = """
    SELECT rolname::text FROM pg_roles
    WHERE rolname !~ '^pg_' AND rolname !~ '^supabase.*admin$' AND NOT rolbypassrls
    ORDER BY 1"""

# Index key prefix (as a set) equal to the foreign key's columns: the index serves the lookups
# of the FK checks whatever the order of those columns in it.
_COVERS_FK = """(i.indrelid = f.conrelid AND i.indisvalid AND i.indpred IS NULL
                 AND i.indnkeyatts >= cardinality(f.conkey)
                 AND (i.indkey::int2[])[0:cardinality(f.conkey) - 1] @> f.conkey
                 AND (i.indkey::int2[])[0:cardinality(f.conkey) - 1] <@ f.conkey)"""

_Q_UNINDEXED_FKS = f"""
    SELECT n.nspname::text, c.relname::text, format('%%I.%%I', n.nspname, c.relname),
           f.conname::text, f.confrelid::regclass::text,
           ARRAY(SELECT a.attname::text FROM unnest(f.conkey) WITH ORDINALITY k(attnum, o)
                 JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum
                 ORDER BY k.o),
           ARRAY(SELECT quote_ident(a.attname) FROM unnest(f.conkey) WITH ORDINALITY k(attnum, o)
                 JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum
                 ORDER BY k.o)
    FROM pg_constraint f JOIN pg_class c ON c.oid = f.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE f.contype = 'f' AND f.conparentid = 0 AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION_REL.format(rel="c.oid")}
      AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE {_COVERS_FK})
    ORDER BY 1, 2, 4"""

_Q_DUPLICATE_INDEXES = f"""
    SELECT n.nspname::text, c.relname::text, c.relkind::text,
           array_agg(ic.relname::text ORDER BY ic.relname),
           array_agg(format('%%I.%%I', n.nspname, ic.relname) ORDER BY ic.relname)
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION_REL.format(rel="c.oid")}
    GROUP BY n.nspname, c.relname, c.relkind, i.indrelid, ic.relam, i.indkey::text,
             i.indclass::text, i.indcollation::text, i.indoption::text, i.indnkeyatts,
             i.indisunique, {{nulls}} pg_get_expr(i.indexprs, i.indrelid),
             pg_get_expr(i.indpred, i.indrelid)
    HAVING count(*) > 1
    ORDER BY 1, 2, 5"""

_Q_UNUSED_INDEXES = f"""
    SELECT n.nspname::text, c.relname::text, ic.relname::text, format('%%I.%%I', n.nspname, ic.relname)
    FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION_REL.format(rel="c.oid")}
      AND NOT EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conindid = i.indexrelid)
      AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND {_COVERS_FK})
    ORDER BY 1, 2, 3"""

_Q_FUNCTIONS = f"""
    SELECT n.nspname::text, p.proname::text, format('%%I.%%I', n.nspname, p.proname),
           pg_get_function_identity_arguments(p.oid), p.prokind::text, p.prosecdef,
           n.nspname = ANY(%(exposed)s::text[]),
           EXISTS (SELECT 1 FROM unnest(p.proconfig) cfg WHERE starts_with(cfg, 'search_path=')),
           {{anon_exec}}, {{authenticated_exec}}
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE {_USER_SCHEMA}
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                      AND e.objid = p.oid AND e.deptype = 'e')
    ORDER BY 1, 2, 4"""

_Q_PUBLIC_EXTENSIONS = """
    SELECT e.extname::text, e.extversion FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE n.nspname = 'public' AND e.extname <> 'plpgsql' ORDER BY 1"""

# Views and materialized views whose query reads auth.users directly.
_Q_AUTH_USERS_READERS = f"""
    SELECT DISTINCT n.nspname::text, v.relname::text, format('%%I.%%I', n.nspname, v.relname),
           v.relkind::text, coalesce(v.reloptions, '{{}}')::text[], au.relrowsecurity
    FROM pg_class au
    JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = au.oid
         AND d.classid = 'pg_rewrite'::regclass AND d.deptype = 'n'
    JOIN pg_rewrite rw ON rw.oid = d.objid
    JOIN pg_class v ON v.oid = rw.ev_class AND v.oid <> au.oid
    JOIN pg_namespace n ON n.oid = v.relnamespace
    WHERE au.relname = 'users' AND v.relkind IN ('v', 'm')
      AND au.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'auth')
      AND n.nspname = ANY(%(exposed)s::text[]) AND {_USER_SCHEMA} AND {_api_readable("v.oid")}
    ORDER BY 1, 2"""

_Q_SENSITIVE_COLUMNS = f"""
    SELECT n.nspname::text, c.relname::text, format('%%I.%%I', n.nspname, c.relname),
           array_agg(a.attname::text ORDER BY a.attnum)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
      AND n.nspname = ANY(%(exposed)s::text[]) AND {_USER_SCHEMA}
      AND replace(lower(a.attname), '-', '_') = ANY(%(sensitive)s::text[])
      AND {_api_readable("c.oid", "a.attnum")}
    GROUP BY 1, 2, 3
    ORDER BY 1, 2"""


@dataclass(frozen=True)
class _Relation:
    schema: str
    name: str
    target: str  # quoted for SQL
    kind: str
    rls: bool
    exposed: bool
    options: tuple[str, ...]
    policies: tuple[str, ...]
    api_readable: bool
    extension_owned: bool

    @property
    def object(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_table(self) -> bool:
        return self.kind in ("r", "p")

    @property
    def security_invoker(self) -> bool:
        return _security_invoker(self.options)


@dataclass(frozen=True)
class _Policy:
    schema: str
    table: str
    target: str
    kind: str
    rls: bool
    name: str
    cmd: str
    permissive: bool
    roles: tuple[str, ...]
    using: str | None
    check: str | None
    user_schema: bool

    @property
    def object(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def command(self) -> str:
        return _COMMAND_NAME[self.cmd]

    @property
    def quoted_name(self) -> str:
        return '"' + self.name.replace('"', '""') + '"'


def _security_invoker(options: Iterable[str]) -> bool:
    for option in options:
        key, _, value = option.partition("=")
        if key.strip().lower() == "security_invoker":
            return value.strip().lower() in _TRUE_OPTIONS
    return False


# (policy oid, xmin of its pg_policy row) -> (USING, WITH CHECK) as pg_get_expr deparsed them
DeparsedPolicies = dict[tuple[int, str], tuple[str | None, str | None]]


class _Catalog:
    """The catalog reads the selected lints need, each run at most once."""

    def __init__(self, conn: psycopg.Connection[Any], exposed: Sequence[str],
                 deparsed: DeparsedPolicies | None = None) -> None:
        self.conn = conn
        self.exposed = list(exposed)
        self.deparsed = deparsed

    def rows(self, query: str | sql.Composed, **params: Any) -> list[tuple[Any, ...]]:
        base = {"system": list(EXCLUDED_SCHEMAS), "exposed": self.exposed, "api": self.api_roles}
        return self.conn.execute(query, {**base, **params}).fetchall()

    @functools.cached_property
    def api_roles(self) -> list[str]:
        return list(api_roles(self.conn))

    @functools.cached_property
    def server_version(self) -> int:
        return int(self.conn.info.server_version)

    @functools.cached_property
    def relations(self) -> list[_Relation]:
        return [_Relation(s, n, t, k, rls, exp, tuple(opts), tuple(pols), bool(readable), ext)
                for s, n, t, k, rls, exp, opts, pols, readable, ext in self.rows(_Q_RELATIONS)]

    def own_relations(self) -> Iterator[_Relation]:
        """The relations no extension owns."""
        return (rel for rel in self.relations if not rel.extension_owned)

    @functools.cached_property
    def policies(self) -> list[_Policy]:
        known = self.deparsed
        if known is None:
            return [_Policy(s, t, q, k, rls, name, cmd, perm, tuple(roles), using, check, user)
                    for s, t, q, k, rls, name, cmd, perm, roles, using, check, user
                    in self.rows(_Q_POLICIES)]
        from psycopg.types.json import Jsonb

        # a jsonb object's keys are looked up by binary search (an array was a nested loop);
        # sent as jsonb, so it is parsed once, not cast from text on every row
        keys = Jsonb({f"{oid}:{xmin}": 1 for oid, xmin in known})
        rows = self.rows(_Q_POLICIES_KNOWN, known=keys)
        policies = []
        for s, t, q, k, rls, name, cmd, perm, roles, using, check, user, oid, xmin, hit in rows:
            if hit:
                using, check = known[(oid, xmin)]
            else:
                known[(oid, xmin)] = (using, check)
            policies.append(_Policy(s, t, q, k, rls, name, cmd, perm, tuple(roles), using,
                                    check, user))
        return policies

    @functools.cached_property
    def policy_roles(self) -> list[str]:
        return [r[0] for r in self.rows(_Q_POLICY_ROLES)]

    @functools.cached_property
    def policy_role_set(self) -> frozenset[str]:
        return frozenset(self.policy_roles)

    @functools.cached_property
    def functions(self) -> list[tuple[Any, ...]]:
        def executable(role: str) -> sql.Composable:
            if role not in self.api_roles:
                return sql.SQL("false")
            return sql.SQL("has_function_privilege({}, p.oid, 'EXECUTE')").format(sql.Literal(role))

        query = sql.SQL(_Q_FUNCTIONS).format(
            anon_exec=executable("anon"), authenticated_exec=executable("authenticated"))
        return self.rows(query)

    def public_buckets(self) -> list[tuple[str, str]]:
        """(id, name) of every public storage bucket; none when storage is absent or unreadable."""
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'storage' AND c.relname = 'buckets')").fetchone()
        if not row or not row[0]:
            return []
        try:
            with self.conn.transaction():
                rows = self.conn.execute(
                    "SELECT id::text, name::text FROM storage.buckets WHERE public ORDER BY id"
                ).fetchall()
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedColumn):
            return []
        return [(r[0], r[1]) for r in rows]


# --------------------------------------------------------------------------- expression helpers


def _normalized(expr: str | None) -> str:
    return re.sub(r"\s+", "", (expr or "").lower())


def _always_true(expr: str | None) -> bool:
    return expr is not None and len(expr) < 32 and _normalized(expr) in _ALWAYS_TRUE


def _matching_paren(text: str, open_at: int) -> int:
    """Index of the ')' that closes the '(' at `open_at` (quotes respected), or -1."""
    depth = 0
    for token in _PAREN_TOKENS.finditer(text, open_at):
        ch = token.group()
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return token.start()
    return -1


def per_row_calls(expr: str | None) -> list[tuple[int, int]]:
    """Spans of the `auth.uid()`, `auth.jwt()`, `auth.role()`, `auth.email()` and
    `current_setting(...)` calls in a policy expression that are not the value of a scalar
    subquery (`(select auth.uid())`): PostgreSQL evaluates those once per row instead of once
    per statement. String literals and quoted identifiers are skipped."""
    if not expr or not _PER_ROW_CALL.search(expr):
        return []
    quoted = [(m.start(), m.end()) for m in _QUOTED.finditer(expr)]
    spans: list[tuple[int, int]] = []
    done = 0  # calls nested in an argument of a call already seen are part of it
    for m in _PER_ROW_CALL.finditer(expr):
        i = m.start()
        if i < done or (i > 0 and (expr[i - 1].isalnum() or expr[i - 1] in "_.")):
            continue
        if any(a <= i < b for a, b in quoted):
            continue
        close = _matching_paren(expr, m.end() - 1)
        done = close + 1 if close >= 0 else m.end()
        if not _SELECT_BEHIND.search(expr, max(0, i - 80), i):
            spans.append((i, done))
    return spans


def _unwrapped(expr: str) -> str:
    """`expr` without the parentheses PostgreSQL puts around a whole deparsed expression."""
    text = expr.strip()
    while text.startswith("(") and _matching_paren(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    return text


def wrap_per_row_calls(expr: str) -> str:
    """`expr` with each per-row call wrapped in `(select ...)`."""
    out = expr
    for start, end in reversed(per_row_calls(expr)):
        out = f"{out[:start]}(select {out[start:end]}){out[end:]}"
    return out


# --------------------------------------------------------------------------- the lints

Finder = Callable[[_Catalog, LintRule], Iterator[LintFinding]]


def _finding(rule: LintRule, obj: str, object_type: str, item: str, detail: str,
             fix: str) -> LintFinding:
    return LintFinding(rule.name, rule.title, rule.level, rule.categories, obj, object_type,
                       item, detail, rule.why, fix)


def _rls_disabled_in_public(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Tables (regular and partitioned) in the exposed schemas, readable by anon or
    authenticated (any column), without row level security; also an extension's tables
    (e.g. PostGIS's spatial_ref_sys in public), which the API exposes all the same."""
    for rel in cat.relations:
        if rel.is_table and rel.exposed and rel.api_readable and not rel.rls:
            yield _finding(
                rule, rel.object, "table", "",
                f"Table {rel.object} is exposed through the API but row level security is not "
                "enabled: its grants are the only thing between the API keys and every row.",
                f"alter table {rel.target} enable row level security;\n\n"
                + _policy_choices(rel.target, _label(rel.name)))


def _policy_exists_rls_disabled(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Tables in user schemas with policies while row level security is disabled."""
    for rel in cat.own_relations():
        if rel.is_table and rel.policies and not rel.rls:
            names = ", ".join(rel.policies)
            yield _finding(
                rule, rel.object, "table", "",
                f"Table {rel.object} has policies ({names}) but row level security is not "
                "enabled, so none of them is enforced.",
                f"-- the policies take effect at once: review them first\n"
                f"alter table {rel.target} enable row level security;")


def _rls_enabled_no_policy(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Tables in user schemas with row level security enabled and no policy at all."""
    for rel in cat.own_relations():
        if rel.is_table and rel.rls and not rel.policies:
            yield _finding(
                rule, rel.object, "table", "",
                f"Table {rel.object} has row level security enabled but no policy: only its "
                "owner and roles that bypass RLS (service_role) can see or change rows.",
                "-- intended for server-side access only? then nothing to do; otherwise:\n"
                + _policy_choices(rel.target, _label(rel.name)))


def _api_facing(policy: _Policy) -> bool:
    return "public" in policy.roles or any(r in API_ROLES for r in policy.roles)


def _rls_policy_always_true(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Permissive policies for anon, authenticated or PUBLIC on tables with RLS enabled whose
    USING (UPDATE, DELETE, ALL) or WITH CHECK (INSERT, UPDATE, ALL) lets every row through:
    `true`, `1 = 1`, or absent. `USING (true)` on SELECT is deliberate public read: not flagged."""
    for p in cat.policies:
        if not (p.user_schema and p.kind in ("r", "p") and p.rls and p.permissive
                and _api_facing(p)):
            continue
        using = p.command in ("UPDATE", "DELETE", "ALL") and (p.using is None or _always_true(p.using))
        check = (_always_true(p.check)
                 or (p.check is None and p.command == "INSERT")
                 or (p.check is None and p.command in ("UPDATE", "ALL") and _always_true(p.using)))
        if not (using or check):
            continue
        which = ("USING and WITH CHECK" if using and check else "USING" if using else "WITH CHECK")
        roles = ", ".join(p.roles)
        clauses = []
        if p.command != "INSERT":
            clauses.append("using ((select auth.uid()) = user_id)")
        if p.command != "DELETE":
            clauses.append("with check ((select auth.uid()) = user_id)")
        yield _finding(
            rule, p.object, "table", p.name,
            f"Policy {p.name} on {p.object} ({p.command} to {roles}) lets every row through its "
            f"{which}: row level security does not restrict {p.command} for these roles.",
            f"alter policy {p.quoted_name} on {p.target}\n  " + "\n  ".join(clauses) + ";")


def _rls_references_user_metadata(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Policies whose USING or WITH CHECK reads `user_metadata` from the JWT
    (`auth.jwt()` or `request.jwt.claims`), or `raw_user_meta_data` of auth.users."""
    for p in cat.policies:
        if not p.user_schema:
            continue
        texts = [t for t in (p.using, p.check) if t]
        if any(rx.search(t) for rx in _USER_METADATA for t in texts):
            yield _finding(
                rule, p.object, "table", p.name,
                f"Policy {p.name} on {p.object} decides on user_metadata, which every signed-in "
                "user can change about themselves (supabase.auth.updateUser).",
                f"-- read the claim from app_metadata (only the server can set it), e.g.\n"
                f"alter policy {p.quoted_name} on {p.target}\n"
                "  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');")


def _auth_rls_initplan(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Policies (tables with RLS enabled) calling auth.uid(), auth.jwt(), auth.role(),
    auth.email() or current_setting() outside a `(select ...)`: evaluated for every row."""
    for p in cat.policies:
        if not (p.user_schema and p.rls):
            continue
        bare_using = per_row_calls(p.using)
        bare_check = per_row_calls(p.check)
        if not (bare_using or bare_check):
            continue
        calls = sorted({(p.using or "")[s:e] for s, e in bare_using}
                       | {(p.check or "")[s:e] for s, e in bare_check})
        clauses = []
        if bare_using and p.using:
            clauses.append(f"using ({_unwrapped(wrap_per_row_calls(p.using))})")
        if bare_check and p.check:
            clauses.append(f"with check ({_unwrapped(wrap_per_row_calls(p.check))})")
        yield _finding(
            rule, p.object, "table", p.name,
            f"Policy {p.name} on {p.object} calls {', '.join(calls)} once per row; wrapped in "
            "(select ...) it is computed once per statement.",
            f"alter policy {p.quoted_name} on {p.target}\n  " + "\n  ".join(clauses) + ";")


def _condition(policy: _Policy, command: str) -> str:
    """The condition a policy applies to `command`'s rows (INSERT: WITH CHECK, which FOR ALL
    policies without one take from USING)."""
    if command == "INSERT":
        return _unwrapped(policy.check or policy.using or "true")
    return _unwrapped(policy.using or "true")


def _multiple_permissive_policies(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Tables with more than one permissive policy for the same role and command (FOR ALL counts
    for each command; PUBLIC for every role that does not bypass RLS)."""
    groups: dict[tuple[str, str, str], list[_Policy]] = {}
    for p in cat.policies:
        if not (p.user_schema and p.kind in ("r", "p") and p.permissive):
            continue
        roles = cat.policy_roles if "public" in p.roles else [
            r for r in p.roles if r in cat.policy_role_set]
        for role in roles:
            for command in _COMMANDS[p.cmd]:
                groups.setdefault((p.object, role, command), []).append(p)
    order = {"SELECT": 0, "INSERT": 1, "UPDATE": 2, "DELETE": 3}
    for (obj, role, command), policies in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
        if len(policies) < 2:
            continue
        names = sorted(p.name for p in policies)
        target = policies[0].target
        clause = "with check" if command == "INSERT" else "using"
        exprs = " or ".join(f"({_condition(p, command)})"
                            for p in sorted(policies, key=lambda p: p.name))
        yield _finding(
            rule, obj, "table", f"{role} {command}",
            f"Table {obj} has {len(policies)} permissive policies for role {role} on {command} "
            f"({', '.join(names)}): each is evaluated for every row and the results OR-ed.",
            "-- one permissive policy per role and command, OR-ing the conditions (keep the\n"
            "-- old ones where they also cover other commands or roles; a policy meant to\n"
            "-- narrow access should be AS RESTRICTIVE instead)\n"
            f'create policy "{_label(obj.split(".", 1)[1])}: {command.lower()} for {role}" on {target}\n'
            f"  for {command.lower()} to {role} {clause} ({exprs});")


def _security_definer_view(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Views in the exposed schemas readable by anon or authenticated that are not
    `security_invoker` (PostgreSQL 15 and later, where views can be)."""
    if cat.server_version < 150000:
        return
    for rel in cat.own_relations():
        if rel.kind == "v" and rel.exposed and rel.api_readable and not rel.security_invoker:
            yield _finding(
                rule, rel.object, "view", "",
                f"View {rel.object} runs with its owner's privileges: API users read the "
                "underlying tables past their row level security and grants.",
                f"alter view {rel.target} set (security_invoker = on);")


def _auth_users_exposed(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Views or materialized views in the exposed schemas, readable by anon or authenticated,
    that read auth.users: materialized views (no RLS at all), views that are not
    security_invoker, and security_invoker views while auth.users has RLS disabled."""
    for schema, name, target, kind, options, users_rls in cat.rows(_Q_AUTH_USERS_READERS):
        invoker = _security_invoker(options)
        if kind == "m" or not invoker or not users_rls:
            what = "materialized view" if kind == "m" else "view"
            fix = (f"revoke select on {target} from anon, authenticated;\n"
                   "-- or move it to a schema the API does not expose")
            if kind == "v":
                fix = f"alter view {target} set (security_invoker = on);\n" + fix
            yield _finding(
                rule, f"{schema}.{name}", what, "",
                f"The {what} {schema}.{name} reads auth.users and the API roles can select "
                "from it: user emails, phone numbers and metadata are exposed.", fix)


def _functions(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """The three function lints, told apart by the rule's name."""
    for schema, name, target, args, kind, secdef, exposed, has_path, anon_x, auth_x in cat.functions:
        obj = f"{schema}.{name}"
        signature = f"{target}({args})"
        routine = "procedure" if kind == "p" else "function"
        if rule.name == "function_search_path_mutable":
            if kind in ("f", "p") and not has_path:
                yield _finding(
                    rule, obj, "function", args,
                    f"Function {obj}({args}) resolves names through the caller's search_path, "
                    "which the caller can set.",
                    f"alter {routine} {signature} set search_path = '';\n"
                    "-- then schema-qualify every table and function the body uses")
            continue
        role = "anon" if rule.name.startswith("anon") else "authenticated"
        executable = anon_x if role == "anon" else auth_x
        if secdef and exposed and executable:
            yield _finding(
                rule, obj, "function", args,
                f"SECURITY DEFINER function {obj}({args}) can be executed by {role} through "
                f"/rest/v1/rpc/{name}; it runs with its owner's privileges, past RLS.",
                f"revoke execute on {routine} {signature} from public, {role};\n"
                f"-- or, if {role} should call it with their own privileges:\n"
                f"alter {routine} {signature} security invoker;")


def _sensitive_columns_exposed(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Tables in the exposed schemas without row level security that have columns named like
    credentials or personal data which anon or authenticated may select."""
    rows = cat.rows(_Q_SENSITIVE_COLUMNS, sensitive=sorted(SENSITIVE_COLUMN_NAMES))
    for schema, name, target, columns in rows:
        cols = ", ".join(columns)
        yield _finding(
            rule, f"{schema}.{name}", "table", "",
            f"Table {schema}.{name} is exposed without row level security and has column(s) "
            f"{cols}, which anyone with the anon key may read.",
            f"alter table {target} enable row level security;\n"
            f"-- and/or: revoke select on {target} from anon, authenticated; then grant\n"
            f"-- select (the other columns) on {target} to authenticated;\n\n"
            + _owner_policies(target, _label(name)))


def _public_bucket_allows_listing(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Public storage buckets with a permissive SELECT (or ALL) policy on storage.objects for
    PUBLIC, anon or authenticated that is always true or only checks `bucket_id = '<bucket>'`."""
    broad = [p for p in cat.policies
             if p.schema == "storage" and p.table == "objects" and p.permissive
             and p.command in ("SELECT", "ALL") and _api_facing(p)]
    for bucket_id, bucket_name in cat.public_buckets():
        names = []
        for p in broad:
            m = _BUCKET_ONLY.match(p.using or "")
            if p.using is None or _always_true(p.using) or (
                    m and m.group(1).replace("''", "'") == bucket_id):
                names.append(p.name)
        if names:
            drops = "\n".join(f'drop policy "{n}" on storage.objects;' for n in sorted(names))
            yield _finding(
                rule, f"storage.{bucket_name}", "bucket", "",
                f"Public bucket {bucket_name} has broad SELECT polic{'y' if len(names) == 1 else 'ies'}"
                f" on storage.objects ({', '.join(sorted(names))}): clients can list every file "
                "in it. Public URLs work without any policy.",
                f"{drops}\n-- if clients must list some files, add a narrower policy, e.g. by owner:\n"
                f"-- using (bucket_id = '{bucket_id}' and owner_id = (select auth.uid()::text))")


def _extension_in_public(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Extensions (other than plpgsql) installed in the public schema."""
    for name, _version in cat.rows(_Q_PUBLIC_EXTENSIONS):
        yield _finding(
            rule, f"public.{name}", "extension", "",
            f"Extension {name} is installed in public: its functions and types are exposed "
            "with your tables and can shadow or be shadowed by them.",
            "-- as the extension's owner (the objects of a trusted extension belong to the\n"
            "-- superuser that installed it: on Supabase, run it from the dashboard)\n"
            "create schema if not exists extensions;\n"
            f'alter extension "{name}" set schema extensions;')


def _unindexed_foreign_keys(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Foreign keys whose columns are not the leading key columns (in any order) of a valid,
    non-partial index."""
    for schema, table, target, fkey, referenced, columns, quoted in cat.rows(_Q_UNINDEXED_FKS):
        cols = ", ".join(quoted)
        index = f"{table}_{'_'.join(columns)}_idx"[:63]
        yield _finding(
            rule, f"{schema}.{table}", "table", fkey,
            f"Foreign key {fkey} of {schema}.{table} ({', '.join(columns)} → {referenced}) has no "
            "index starting with its columns.",
            f'create index concurrently "{index}" on {target} ({cols});')


def _duplicate_index(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Two or more indexes on one table with the same definition (method, keys, operator
    classes, collations, expressions, predicate, uniqueness)."""
    nulls = "i.indnullsnotdistinct," if cat.server_version >= 150000 else ""
    for schema, table, kind, names, targets in cat.rows(_Q_DUPLICATE_INDEXES.format(nulls=nulls)):
        yield _finding(
            rule, f"{schema}.{table}", "materialized view" if kind == "m" else "table",
            ", ".join(names),
            f"{schema}.{table} has identical indexes {', '.join(names)}: every write maintains "
            "each of them for nothing.",
            "-- keep one (a constraint's index, if one of them is); e.g.\n"
            + "\n".join(f"drop index concurrently {t};" for t in targets[1:]))


def _unused_index(cat: _Catalog, rule: LintRule) -> Iterator[LintFinding]:
    """Indexes never scanned since statistics were last reset; not unique or primary-key
    indexes, not an exclusion constraint's, not one that covers a foreign key."""
    for schema, table, index, target in cat.rows(_Q_UNUSED_INDEXES):
        yield _finding(
            rule, f"{schema}.{table}", "table", index,
            f"Index {index} on {schema}.{table} has not been used since statistics were reset.",
            "-- check the statistics are old enough (pg_stat_database.stats_reset) and that\n"
            "-- no read replica uses it, then:\n"
            f"drop index concurrently {target};")


def _rule(name: str, title: str, level: Level, categories: tuple[Category, ...], rule: str,
          why: str, number: str, slug: str | None = None) -> LintRule:
    docs = ("https://supabase.com/docs/guides/database/database-linter?lint="
            f"{number}_{slug or name}")
    return LintRule(name, title, level, categories, rule, why, docs)


_SEC: tuple[Category, ...] = ("SECURITY",)
_PERF: tuple[Category, ...] = ("PERFORMANCE",)

_REGISTRY: tuple[tuple[LintRule, Finder], ...] = (
    (_rule("rls_disabled_in_public", "RLS Disabled in Public", "ERROR", _SEC,
           "a table in an exposed schema that anon/authenticated can select from has RLS off",
           "Supabase grants anon and authenticated access to tables in the exposed schemas; "
           "without row level security anyone holding the public anon key can read, and with "
           "the default grants change, every row through the Data API.", "0013"),
     _rls_disabled_in_public),
    (_rule("policy_exists_rls_disabled", "Policy Exists RLS Disabled", "ERROR", _SEC,
           "a table has policies but RLS is off, so they are not enforced",
           "Policies do nothing until row level security is enabled: whoever wrote them "
           "believes the table is protected while every role with a grant sees every row.",
           "0007"),
     _policy_exists_rls_disabled),
    (_rule("rls_enabled_no_policy", "RLS Enabled No Policy", "INFO", _SEC,
           "a table has RLS on and no policy at all",
           "With RLS on and no policy, every API request sees zero rows and every write fails: "
           "fine for server-only tables, a bug if clients are meant to use it.", "0008"),
     _rls_enabled_no_policy),
    (_rule("rls_policy_always_true", "RLS Policy Always True", "WARN", _SEC,
           "a permissive anon/authenticated/PUBLIC policy has USING or WITH CHECK always true "
           "for INSERT/UPDATE/DELETE/ALL",
           "An always-true write policy switches row level security off for that command: any "
           "user can change or delete other users' rows while the table looks protected.",
           "0024", "permissive_rls_policy"),
     _rls_policy_always_true),
    (_rule("rls_references_user_metadata", "RLS references user metadata", "ERROR", _SEC,
           "a policy reads user_metadata of the JWT (or raw_user_meta_data)",
           "user_metadata is written by the user (supabase.auth.updateUser): a policy that "
           "trusts it lets anyone grant themselves the role or tenant it checks.", "0015"),
     _rls_references_user_metadata),
    (_rule("auth_rls_initplan", "Auth RLS Initialization Plan", "WARN", _PERF,
           "a policy calls auth.uid()/jwt()/role()/email() or current_setting() outside "
           "(select ...)",
           "A bare auth.uid() in a policy is evaluated for every row scanned; wrapped in "
           "(select ...) PostgreSQL computes it once per statement (an initPlan), often 10-100x "
           "faster on large tables.", "0003"),
     _auth_rls_initplan),
    (_rule("multiple_permissive_policies", "Multiple Permissive Policies", "WARN", _PERF,
           "a table has several permissive policies for one role and command",
           "PostgreSQL evaluates every permissive policy for each row and ORs the results; "
           "one policy with the conditions OR-ed is cheaper and easier to audit.", "0006"),
     _multiple_permissive_policies),
    (_rule("security_definer_view", "Security Definer View", "ERROR", _SEC,
           "an API-readable view in an exposed schema is not security_invoker",
           "A view runs with its owner's privileges by default: API users read the tables "
           "underneath past their row level security.", "0010"),
     _security_definer_view),
    (_rule("auth_users_exposed", "Exposed Auth Users", "ERROR", _SEC,
           "an API-readable view or materialized view in an exposed schema reads auth.users "
           "(matview, definer view, or invoker view while auth.users has RLS off)",
           "auth.users holds every user's email, phone and metadata; through such a view the "
           "anon key can read them all.", "0002"),
     _auth_users_exposed),
    (_rule("function_search_path_mutable", "Function Search Path Mutable", "WARN", _SEC,
           "a function or procedure in a user schema has no search_path setting",
           "Unqualified names in the body resolve through the caller's search_path; a caller "
           "can put their own objects first, and a SECURITY DEFINER function then runs them "
           "with its owner's privileges.", "0011"),
     _functions),
    (_rule("anon_security_definer_function_executable",
           "Public Can Execute SECURITY DEFINER Function", "WARN", _SEC,
           "anon may execute a SECURITY DEFINER function in an exposed schema",
           "Anyone with the public anon key can call it through /rest/v1/rpc, and it runs "
           "with its owner's privileges, past every RLS policy.", "0028"),
     _functions),
    (_rule("authenticated_security_definer_function_executable",
           "Signed-In Users Can Execute SECURITY DEFINER Function", "WARN", _SEC,
           "authenticated may execute a SECURITY DEFINER function in an exposed schema",
           "Any signed-up user (with open sign-up: anyone) can call it through /rest/v1/rpc, "
           "and it runs with its owner's privileges, past every RLS policy.", "0029"),
     _functions),
    (_rule("sensitive_columns_exposed", "Sensitive Columns Exposed", "ERROR", _SEC,
           "an API-readable table without RLS has columns named like credentials or PII",
           "Credentials and personal data in a table without row level security are readable "
           "by anyone with the anon key: a data breach waiting for its first curious user.",
           "0023"),
     _sensitive_columns_exposed),
    (_rule("public_bucket_allows_listing", "Public Bucket Allows Listing", "WARN", _SEC,
           "a public bucket has a broad SELECT policy on storage.objects",
           "Public buckets serve files by URL without any policy; a broad SELECT policy also "
           "lets clients list every file name, including ones never linked anywhere.", "0025"),
     _public_bucket_allows_listing),
    (_rule("extension_in_public", "Extension in Public", "WARN", _SEC,
           "an extension other than plpgsql is installed in public",
           "The extension's functions and types land in the exposed schema next to your "
           "tables; keep them in an `extensions` schema.", "0014"),
     _extension_in_public),
    (_rule("unindexed_foreign_keys", "Unindexed foreign keys", "INFO", _PERF,
           "a foreign key's columns lead no index",
           "Deleting or updating a referenced row scans the whole referencing table, and "
           "joins along the key cannot use an index.", "0001"),
     _unindexed_foreign_keys),
    (_rule("duplicate_index", "Duplicate Index", "WARN", _PERF,
           "a table has identical indexes",
           "Each copy slows every write and takes disk and cache for no query benefit.",
           "0009"),
     _duplicate_index),
    (_rule("unused_index", "Unused Index", "INFO", _PERF,
           "a non-unique index has never been scanned",
           "An index nobody reads still costs on every write and in memory; drop it once the "
           "statistics cover a representative period.", "0005"),
     _unused_index),
)

LINTS: dict[str, LintRule] = {rule.name: rule for rule, _ in _REGISTRY}


def run_advisors(conn: psycopg.Connection[Any], exposed_schemas: Sequence[str],
                 only: set[str] | None = None, *,
                 deparsed: DeparsedPolicies | None = None) -> list[LintFinding]:
    """Run the lints (all, or those named in `only`) and return their findings.

    `exposed_schemas` are the schemas the Data API serves (Supabase: public, plus any added
    in the API settings). Reads the catalog only, inside a transaction (a savepoint when one is
    already open, e.g. a dry-run's) that is rolled back. Findings come in the order of `LINTS`.
    `deparsed`, kept by a caller that looks again and again (the batch gate, once per file),
    holds the policies' deparsed expressions: only new or changed policies are deparsed, and
    added to it. (A policy's text is taken as unchanged while its pg_policy row is: renaming
    an object a policy refers to changes its text, but not what the lints look for.)
    """
    if only is not None:
        unknown = sorted(set(only) - set(LINTS))
        if unknown:
            raise AdvisorError(f"Unknown lint name(s): {', '.join(unknown)}.",
                               hint="Known lints: " + ", ".join(LINTS) + ".")
    catalog = _Catalog(conn, exposed_schemas, deparsed)
    findings: list[LintFinding] = []
    with conn.transaction(force_rollback=True):
        # Deparsed expressions qualify every name outside the search_path: with only pg_catalog
        # on it, `auth.uid()` reads the same whoever runs this (supabase_admin has auth on it).
        conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        for rule, finder in _REGISTRY:
            if only is None or rule.name in only:
                findings.extend(finder(catalog, rule))
    return findings


def compare_findings(before: Iterable[LintFinding],
                     after: Iterable[LintFinding]) -> AdvisorDelta:
    """What a change did: findings only after it (introduced), only before it (fixed), and in
    both (unchanged, as found after). Matched by lint name, object and item."""
    before_list, after_list = list(before), list(after)
    remaining = Counter(f.key for f in before_list)
    introduced: list[LintFinding] = []
    unchanged: list[LintFinding] = []
    for f in after_list:
        if remaining[f.key] > 0:
            remaining[f.key] -= 1
            unchanged.append(f)
        else:
            introduced.append(f)
    still = Counter(f.key for f in after_list)
    fixed: list[LintFinding] = []
    for f in before_list:
        if still[f.key] > 0:
            still[f.key] -= 1
        else:
            fixed.append(f)
    return AdvisorDelta(tuple(introduced), tuple(fixed), tuple(unchanged))
