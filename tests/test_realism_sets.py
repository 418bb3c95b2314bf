"""The realism sets (tests/realism/) apply as a Supabase project's migrations do.

For every set: each migration file, in version order, through psql as the non-superuser
``postgres`` role on a fresh Supabase-shaped database (``-v ON_ERROR_STOP=1
--single-transaction``, except a file that builds an index concurrently), then the seed, then
the set's pgTAP files where pgTAP is installed; after each stage the catalog must hold what
the set declares (tests/realism/sets.py). The static tests check the files themselves: names,
order, the declared shape flags against the SQL, and that the suite as a whole covers the
Supabase features it is meant to.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psycopg
import pytest
from realism.sets import (
    EXPECT,
    SET_DIRS,
    SETS,
    VERSION_RE,
    RealismSet,
    adds_not_valid_fk,
    has_dump_header,
    has_explicit_transaction,
    inserts_rows,
    psql_command,
    statements_only,
    uses_concurrently,
    validates_constraint,
)

PGTAP_15 = Path("/usr/share/postgresql/15/extension/pgtap.control")
IDS = [s.name for s in SETS]


# --- the files ------------------------------------------------------------------------------


def test_every_folder_is_a_declared_set() -> None:
    assert len(SETS) >= 12
    assert sorted(p.name for p in SET_DIRS) == sorted(EXPECT) == sorted(IDS)


@pytest.mark.parametrize("rs", SETS, ids=IDS)
def test_migration_files_are_named_and_ordered_like_supabase(rs: RealismSet) -> None:
    names = [p.name for p in rs.migrations]
    assert 3 <= len(names) <= 10, names
    assert all(VERSION_RE.match(n) for n in names), names
    versions = [n[:14] for n in names]
    assert versions == sorted(set(versions)), "versions must be strictly increasing"
    # Plausible UTC timestamps: YYYYMMDDHHMMSS.
    for v in versions:
        assert "2020" <= v[:4] <= "2030" and "01" <= v[4:6] <= "12" and "01" <= v[6:8] <= "31", v
        assert v[8:10] <= "23" and v[10:12] <= "59" and v[12:14] <= "59", v
    assert all(t.name.endswith(".sql") for t in rs.tests)


@pytest.mark.parametrize("rs", SETS, ids=IDS)
def test_declared_shape_matches_the_sql(rs: RealismSet) -> None:
    e, mig = rs.expect, rs.migrations
    assert any(uses_concurrently(p) for p in mig) == e.has_concurrently_file
    assert any(adds_not_valid_fk(p) for p in mig) == e.has_not_valid_fk
    assert any(has_explicit_transaction(p) for p in mig) == e.has_explicit_transaction
    assert any(has_dump_header(p) for p in mig) == e.has_dump_header
    assert any(inserts_rows(p) for p in mig) == e.inserts_rows
    for p in rs.concurrent_migrations:
        # Alone in its file: one statement, so running it outside a transaction is safe.
        statements = [s for s in statements_only(p.read_text()).split(";") if s.strip()]
        assert len(statements) == 1, p.name
    if e.has_not_valid_fk:
        added = next(i for i, p in enumerate(mig) if adds_not_valid_fk(p))
        assert any(validates_constraint(p) for p in mig[added + 1:]), "validated in a later file"


# The Supabase features the suite must cover, each as a pattern over the migration SQL.
FEATURES = {
    "unwrapped auth.uid()": r"\(\s*auth\.uid\(\)\s*=|=\s*auth\.uid\(\)",
    "wrapped (select auth.uid())": r"\(\s*select\s+auth\.uid\(\)",
    "handle_new_user on auth.users": r"after\s+insert\s+on\s+auth\.users",
    "security definer + search_path ''": r"security\s+definer\s+set\s+search_path\s*=\s*''",
    "storage.buckets insert": r"insert\s+into\s+storage\.buckets",
    "storage.foldername policy": r"on\s+storage\.objects[^;]*storage\.foldername\(name\)",
    "create enum": r"create\s+type\s+[\w.]+\s+as\s+enum",
    "enum add value": r"alter\s+type\s+[\w.]+\s+add\s+value",
    "grant to anon/authenticated/service_role": r"grant\s[^;]+\sto\s[^;]*service_role",
    "revoke from anon": r"revoke\s[^;]+\sfrom\s[^;]*\banon\b",
    "realtime publication": r"alter\s+publication\s+supabase_realtime\s+add\s+table",
    "uuid-ossp in extensions": (r'create\s+extension\s+if\s+not\s+exists\s+"uuid-ossp"'
                                r"\s+with\s+schema\s+extensions"),
    "pgcrypto": r"create\s+extension\s+if\s+not\s+exists\s+\"?pgcrypto",
    "extensions.uuid_generate_v4()": r"extensions\"?\.\"?uuid_generate_v4\(\)",
    "gen_random_uuid()": r"gen_random_uuid\(\)",
    "security_invoker view": r"with\s*\(\s*security_invoker\s*=\s*(true|on)\s*\)",
    "FK not valid": r"foreign\s+key[^;]+not\s+valid\s*;",
    "validate constraint": r"validate\s+constraint",
    "create index concurrently": r"create\s+index\s+concurrently",
    "rename table": r"alter\s+table\s+[\w.]+\s+rename\s+to",
    "rename column": r"rename\s+column",
    "update backfill": r"^\s*update\s+public\.\w+",
    "identity lookup rows": r"generated\s+(always|by\s+default)\s+as\s+identity",
    "comment on": r"comment\s+on\s+(table|column|function|view|policy)",
    "updated_at trigger": r"before\s+update\s+on\s+[\w.\"]+",
    "JWT claim org_id": r"auth\.jwt\(\)\s*->>\s*'org_id'",
    "auth.role()": r"auth\.role\(\)",
    "pg_dump header": r"SELECT pg_catalog\.set_config\('search_path', '', false\);",
    "begin/commit in a file": r"^begin;.*^commit;",
}


def test_suite_covers_the_supabase_features() -> None:
    text = "\n".join(p.read_text() for s in SETS for p in s.migrations)
    missing = [k for k, rx in FEATURES.items() if not re.search(rx, text, re.I | re.M | re.S)]
    assert not missing


# --- applying them --------------------------------------------------------------------------


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _psql(url: str, path: Path) -> None:
    r = _run(psql_command(url, path))
    assert r.returncode == 0, f"{path.relative_to(path.parents[2])} failed:\n{r.stderr}"
    assert "ERROR:" not in r.stderr, r.stderr


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"select count(*) from {table}").fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def _check_rows(conn: psycopg.Connection, expected: Mapping[str, int], stage: str) -> None:
    got = {t: _count(conn, t) for t in expected}
    assert got == dict(expected), f"row counts after {stage}"


def _check_catalog(conn: psycopg.Connection, rs: RealismSet) -> None:
    e = rs.expect

    def one(sql: str, *params: object) -> object:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]

    for table in e.rls_tables:
        assert one("select relrowsecurity from pg_class where oid = to_regclass(%s)", table) is True, (
            f"{table} missing or without RLS")
        assert one("select relowner::regrole::text from pg_class where oid = to_regclass(%s)",
                   table) == "postgres", f"{table} is owned by postgres, the role that applied it"
    for table, policy in e.policies:
        schema, name = table.split(".")
        assert one("select count(*) from pg_policies where schemaname = %s and tablename = %s"
                   " and policyname = %s", schema, name, policy) == 1, (table, policy)
    for fn in e.definer_functions:
        schema, name = fn.split(".")
        rows = conn.execute(
            "select p.prosecdef, p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %s and p.proname = %s", (schema, name)).fetchall()
        assert len(rows) == 1, fn
        prosecdef, proconfig = rows[0]
        assert prosecdef, f"{fn} is SECURITY DEFINER"
        assert any(c.startswith("search_path=") for c in proconfig or []), f"{fn} pins search_path"
    for enum, labels in e.enums.items():
        got = conn.execute("select enumlabel from pg_enum where enumtypid = %s::regtype"
                           " order by enumsortorder", (enum,)).fetchall()
        assert tuple(r[0] for r in got) == labels, enum
    for view in e.invoker_views:
        opts = one("select reloptions from pg_class where oid = to_regclass(%s) and relkind = 'v'", view)
        assert opts is not None and any(o in ("security_invoker=true", "security_invoker=on")
                                        for o in opts), view  # type: ignore[attr-defined]
    published = {f"{r[0]}.{r[1]}" for r in conn.execute(
        "select schemaname, tablename from pg_publication_tables where pubname = 'supabase_realtime'")}
    assert set(e.realtime_tables) <= published, published
    for bucket, public in e.buckets.items():
        assert one("select public from storage.buckets where id = %s", bucket) is public, bucket
    for rel in e.absent:
        assert one("select to_regclass(%s)", rel) is None, f"{rel} should be gone"
    for table, trigger in e.triggers:
        assert one("select count(*) from pg_trigger where tgrelid = to_regclass(%s) and tgname = %s"
                   " and not tgisinternal", table, trigger) == 1, (table, trigger)
    for table, con in e.validated_constraints:
        assert one("select convalidated from pg_constraint where conrelid = to_regclass(%s)"
                   " and conname = %s", table, con) is True, (table, con)
    for index in e.indexes:
        assert one("select indisvalid from pg_index where indexrelid = to_regclass(%s)", index) is True, index
    for ext in e.extensions:
        assert one("select extnamespace::regnamespace::text from pg_extension where extname = %s",
                   ext) == "extensions", f"{ext} lives in the extensions schema"


def _run_pgtap(url: str, path: Path) -> None:
    r = _run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)])
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == 0, f"{path.name}:\n{r.stdout}\n{r.stderr}"
    plan = next((int(m.group(1)) for ln in lines if (m := re.fullmatch(r"1\.\.(\d+)", ln))), None)
    failed = [ln for ln in lines if ln.startswith("not ok")]
    passed = [ln for ln in lines if re.match(r"ok \d+", ln)]
    assert plan, f"{path.name}: no plan in\n{r.stdout}"
    assert not failed, f"{path.name}:\n" + "\n".join(ln for ln in lines if ln.startswith(("not ok", "#")))
    assert len(passed) == plan, f"{path.name}: {len(passed)} of {plan} tests ran"


@pytest.mark.parametrize("rs", SETS, ids=IDS)
def test_set_applies_with_psql(supa_db, rs: RealismSet) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(supa_db.url) as conn:
        row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
        assert row == (False,), "migrations run as the non-superuser postgres role"

    for path in rs.migrations:
        _psql(supa_db.url, path)

    with psycopg.connect(supa_db.admin_url, autocommit=True) as admin:
        _check_rows(admin, rs.expect.migration_rows, "the migrations")
        _check_catalog(admin, rs)

    if rs.seed is not None:
        _psql(supa_db.url, rs.seed)
        with psycopg.connect(supa_db.admin_url, autocommit=True) as admin:
            _check_rows(admin, rs.expect.seeded_rows, "the seed")
    else:
        assert not rs.expect.seeded_rows

    if supa_db.server.major == 15 and rs.tests and PGTAP_15.exists():
        with psycopg.connect(supa_db.admin_url, autocommit=True) as admin:
            admin.execute("create extension if not exists pgtap with schema extensions")
        for test in rs.tests:
            _run_pgtap(supa_db.url, test)
