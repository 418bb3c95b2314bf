"""The database advisors (tools/advisors.py) on Supabase-shaped PostgreSQL 18 and 15.

tests/advisor_fixtures/dirty.sql makes every lint fire exactly once, clean.sql none. The
fixtures run, and the lints run, as Supabase's postgres role, which is no superuser.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from supabase_shaped import SupaDb, SupaServer

from dbsage.tools.advisors import (
    LINTS,
    AdvisorError,
    LintFinding,
    compare_findings,
    per_row_calls,
    run_advisors,
    wrap_per_row_calls,
)
from dbsage.tools.platform import clone_database

FIXTURES = Path(__file__).resolve().parent / "advisor_fixtures"
OWNER = "postgres"  # the fixtures' objects belong to Supabase's postgres: no superuser
USER_A = "aaaaaaaa-0000-0000-0000-000000000001"
USER_B = "bbbbbbbb-0000-0000-0000-000000000002"


def prepare(sdb: SupaDb, fixture: str | None) -> None:
    """Users A and B in auth.users (as the superuser), then `fixture` run as postgres."""
    with sdb.connect(admin=True) as admin:
        admin.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'a@example.com'), "
                      "(%s, 'b@example.com')", (USER_A, USER_B))
    if fixture:
        with sdb.connect() as conn:
            conn.execute((FIXTURES / fixture).read_text())


@contextmanager
def supabase_db(server: SupaServer, fixture: str | None = None) -> Iterator[SupaDb]:
    """A fresh Supabase-shaped database (cloned like `supa_db`'s) prepared with `fixture`,
    for module-scoped fixtures; dropped afterwards."""
    name = f"adv_{uuid.uuid4().hex[:12]}"
    clone_database(server.admin_url(), name, template=server.template)
    sdb = SupaDb(server, name)
    try:
        prepare(sdb, fixture)
        yield sdb
    finally:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect_as(sdb: SupaDb, role: str) -> psycopg.Connection:
    """A session of `role` (the socket trusts every role)."""
    return psycopg.connect(sdb.url, user=role, autocommit=True)


def create_login_role(sdb: SupaDb, role: str) -> None:
    """A login role without any privilege (roles are cluster-wide: made once)."""
    with sdb.connect(admin=True) as admin:
        admin.execute(f"DO $$ BEGIN CREATE ROLE {role} LOGIN; "
                      "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$")


@pytest.fixture(scope="module", params=["supa18", "supa15"])
def dirty(request: pytest.FixtureRequest) -> Iterator[tuple[SupaDb, list[LintFinding]]]:
    """dirty.sql on each server, with the findings of all lints (computed once, as postgres)."""
    server: SupaServer = request.getfixturevalue(request.param)
    with supabase_db(server, "dirty.sql") as sdb:
        with sdb.connect() as conn:
            findings = run_advisors(conn, ["public"])
        yield sdb, findings


@pytest.fixture(scope="module", params=["supa18", "supa15"])
def clean(request: pytest.FixtureRequest) -> Iterator[SupaDb]:
    server: SupaServer = request.getfixturevalue(request.param)
    with supabase_db(server, "clean.sql") as sdb:
        yield sdb


# Published by supabase/splinter: name → (level, categories).
SPLINTER = {
    "rls_disabled_in_public": ("ERROR", ("SECURITY",)),
    "policy_exists_rls_disabled": ("ERROR", ("SECURITY",)),
    "rls_enabled_no_policy": ("INFO", ("SECURITY",)),
    "rls_policy_always_true": ("WARN", ("SECURITY",)),
    "rls_references_user_metadata": ("ERROR", ("SECURITY",)),
    "auth_rls_initplan": ("WARN", ("PERFORMANCE",)),
    "multiple_permissive_policies": ("WARN", ("PERFORMANCE",)),
    "security_definer_view": ("ERROR", ("SECURITY",)),
    "auth_users_exposed": ("ERROR", ("SECURITY",)),
    "function_search_path_mutable": ("WARN", ("SECURITY",)),
    "anon_security_definer_function_executable": ("WARN", ("SECURITY",)),
    "authenticated_security_definer_function_executable": ("WARN", ("SECURITY",)),
    "sensitive_columns_exposed": ("ERROR", ("SECURITY",)),
    "public_bucket_allows_listing": ("WARN", ("SECURITY",)),
    "extension_in_public": ("WARN", ("SECURITY",)),
    "unindexed_foreign_keys": ("INFO", ("PERFORMANCE",)),
    "duplicate_index": ("WARN", ("PERFORMANCE",)),
    "unused_index": ("INFO", ("PERFORMANCE",)),
}

# What each lint finds on dirty.sql: (object, object type, item).
EXPECTED = {
    "rls_disabled_in_public": ("public.accounts", "table", ""),
    "policy_exists_rls_disabled": ("private.notes", "table", ""),
    "rls_enabled_no_policy": ("public.audit_log", "table", ""),
    "rls_policy_always_true": ("public.posts", "table", "posts_edit"),
    "rls_references_user_metadata": ("public.reports", "table", "reports_admin"),
    "auth_rls_initplan": ("public.todos", "table", "todos_delete"),
    "multiple_permissive_policies": ("public.comments", "table", "anon SELECT"),
    "security_definer_view": ("public.todo_counts", "view", ""),
    "auth_users_exposed": ("public.user_directory", "materialized view", ""),
    "function_search_path_mutable": ("public.touch", "function", ""),
    "anon_security_definer_function_executable": ("public.whoami", "function", ""),
    "authenticated_security_definer_function_executable":
        ("public.delete_my_todos", "function", ""),
    "sensitive_columns_exposed": ("public.accounts", "table", ""),
    "public_bucket_allows_listing": ("storage.avatars", "bucket", ""),
    "extension_in_public": ("public.citext", "extension", ""),
    "unindexed_foreign_keys": ("public.comments", "table", "comments_post_id_fkey"),
    "duplicate_index": ("public.accounts", "table", "accounts_email_a, accounts_email_b"),
    "unused_index": ("public.posts", "table", "posts_body_idx"),
}


def test_the_lint_table_mirrors_splinter() -> None:
    assert list(LINTS) == list(SPLINTER) == list(EXPECTED)
    for name, (level, categories) in SPLINTER.items():
        rule = LINTS[name]
        assert (rule.level, rule.categories) == (level, categories), name
        assert rule.title and rule.rule and rule.why and rule.docs.startswith("https://")


@pytest.mark.parametrize("lint", list(EXPECTED))
def test_each_lint_fires_exactly_once_on_its_fixture(
        dirty: tuple[SupaDb, list[LintFinding]], lint: str) -> None:
    _, findings = dirty
    mine = [f for f in findings if f.name == lint]
    assert len(mine) == 1, mine
    f = mine[0]
    assert (f.object, f.object_type, f.item) == EXPECTED[lint]
    assert (f.level, f.categories) == SPLINTER[lint]
    assert f.title == LINTS[lint].title and f.why == LINTS[lint].why
    assert f.object.split(".")[1] in f.detail or f.object in f.detail
    assert f.fix.strip()


def test_the_dirty_fixture_fires_each_lint_once_and_nothing_else(
        dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    _, findings = dirty
    assert Counter(f.name for f in findings) == Counter(list(LINTS))
    assert [f.name for f in findings] == list(LINTS)  # in the order of the table


def test_a_clean_database_has_no_finding(clean: SupaDb) -> None:
    with clean.connect() as conn:
        assert run_advisors(conn, ["public"]) == []


def test_the_bare_platform_has_no_finding(supa_db: SupaDb) -> None:
    """Supabase's own schemas (auth, storage, realtime, extensions, ...) are not the user's."""
    with supa_db.connect() as conn:
        assert run_advisors(conn, ["public", "graphql_public"]) == []


def test_only_runs_the_named_lints(dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    sdb, findings = dirty
    with sdb.connect() as conn:
        some = run_advisors(conn, ["public"], only={"unused_index", "auth_rls_initplan"})
    assert sorted(f.name for f in some) == ["auth_rls_initplan", "unused_index"]
    assert set(some) <= set(findings)


def test_kept_deparsed_policies_give_the_same_findings_until_a_policy_changes(
        supa_db: SupaDb) -> None:
    """The batch gate keeps the policies' deparsed expressions between its looks: the same
    findings as a fresh run; an unchanged policy is not deparsed again; a changed one is."""
    supa_db.execute("create table public.r (id int, owner uuid);\n"
                    "alter table public.r enable row level security;\n"
                    "create policy r_read on public.r for select to authenticated using (true);")
    metadata = {"rls_references_user_metadata"}
    kept: dict[tuple[int, str], tuple[str | None, str | None]] = {}
    with supa_db.connect() as conn:
        assert run_advisors(conn, ["public"], deparsed=kept) == run_advisors(conn, ["public"])
        (key, _texts), = [(k, v) for k, v in kept.items() if v[0] == "true"]
        # not deparsed again: what was kept is what the lints read
        kept[key] = ("((auth.jwt() -> 'user_metadata'::text) ->> 'role'::text) = 'x'", None)
        reused = run_advisors(conn, ["public"], only=metadata, deparsed=kept)
        assert [(f.name, f.item) for f in reused] == [("rls_references_user_metadata", "r_read")]
        # a changed policy (another xmin) is deparsed afresh
        conn.execute("alter policy r_read on public.r using (owner is not null)")
        assert run_advisors(conn, ["public"], only=metadata, deparsed=kept) == []
        assert ("(owner IS NOT NULL)", None) in kept.values()
        assert run_advisors(conn, ["public"], deparsed=kept) == run_advisors(conn, ["public"])


def test_findings_do_not_depend_on_who_runs_the_lints(
        dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    """supabase_admin has auth on its search_path (postgres has not): the deparsed policies,
    hence the findings, are the same."""
    sdb, findings = dirty
    with sdb.connect(admin=True) as admin:
        assert "auth" in admin.execute("SHOW search_path").fetchone()[0]  # type: ignore[index]
        assert run_advisors(admin, ["public"]) == findings


def test_an_unknown_lint_name_is_refused_before_any_query() -> None:
    with pytest.raises(AdvisorError) as err:
        run_advisors(None, ["public"], only={"rls_disabled_in_public", "no_such_lint"})
    assert "no_such_lint" in err.value.message and "unused_index" in (err.value.hint or "")


def test_fix_templates_name_the_objects(dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    _, findings = dirty
    fixes = {f.name: f.fix for f in findings}
    rls = fixes["rls_disabled_in_public"]
    assert "alter table public.accounts enable row level security;" in rls
    assert "(select auth.uid()) = user_id" in rls  # owner
    assert "for select to anon, authenticated" in rls and "using (true)" in rls  # public read
    assert "'app_metadata' ->> 'tenant_id'" in rls  # multi-tenant by a claim
    assert fixes["auth_rls_initplan"] == (
        'alter policy "todos_delete" on public.todos\n'
        "  using ((select auth.uid()) = user_id);")
    assert fixes["security_definer_view"] == (
        "alter view public.todo_counts set (security_invoker = on);")
    assert "alter function public.touch() set search_path = '';" in fixes[
        "function_search_path_mutable"]
    assert "revoke execute on function public.whoami() from public, anon;" in fixes[
        "anon_security_definer_function_executable"]
    assert 'create index concurrently "comments_post_id_idx" on public.comments (post_id);' in fixes[
        "unindexed_foreign_keys"]
    assert "drop index concurrently public.accounts_email_b;" in fixes["duplicate_index"]
    assert "drop index concurrently public.posts_body_idx;" in fixes["unused_index"]
    assert 'drop policy "avatars are listable" on storage.objects;' in fixes[
        "public_bucket_allows_listing"]
    assert 'alter extension "citext" set schema extensions;' in fixes["extension_in_public"]
    assert "((NOT hidden))" not in fixes["multiple_permissive_policies"]
    assert "(NOT hidden)" in fixes["multiple_permissive_policies"]


def test_the_findings_apply_cleanly(dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    """The concrete fixes (no placeholders) run, and each one removes its finding."""
    sdb, findings = dirty
    concrete = ["auth_rls_initplan", "security_definer_view", "function_search_path_mutable",
                "anon_security_definer_function_executable", "unindexed_foreign_keys",
                "extension_in_public", "public_bucket_allows_listing"]
    # As the superuser: moving a trusted extension's objects needs their owner.
    with sdb.connect(admin=True, autocommit=False) as conn, conn.transaction(force_rollback=True):
        for f in findings:
            if f.name in concrete:
                fix = f.fix.replace("concurrently ", "")  # not inside a transaction
                conn.execute(fix)
        after = run_advisors(conn, ["public"])
    assert not set(concrete) & {f.name for f in after}, after
    assert len(after) == len(findings) - len(concrete)


def test_compare_findings_for_a_migration_in_a_dry_run(
        dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    """Lints before, then inside the migration's rolled-back transaction: what it introduces
    and what it fixes."""
    sdb, before = dirty
    migration = ("CREATE INDEX comments_post_id_idx ON public.comments (post_id);"
                 "ALTER TABLE public.todos DISABLE ROW LEVEL SECURITY;")
    with sdb.connect(autocommit=False) as conn, conn.transaction(force_rollback=True):
        conn.execute(migration)
        during = run_advisors(conn, ["public"])
    delta = compare_findings(before, during)
    assert {(f.name, f.object) for f in delta.introduced} == {
        ("rls_disabled_in_public", "public.todos"), ("policy_exists_rls_disabled", "public.todos")}
    # auth_rls_initplan looks at tables with RLS on only: "fixed" by switching it off.
    assert [(f.name, f.object) for f in delta.fixed] == [
        ("auth_rls_initplan", "public.todos"), ("unindexed_foreign_keys", "public.comments")]
    assert len(delta.unchanged) == len(before) - 2 and delta.changed
    with sdb.connect() as conn:  # the dry-run left nothing behind
        assert run_advisors(conn, ["public"]) == before


def test_advisors_read_only_the_catalog(dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    """A role without any privilege on any table gets the same findings (bar the bucket lint,
    the one that reads a table: storage.buckets), while another session holds EXCLUSIVE locks
    on every table: the lints take no lock above ACCESS SHARE (which deparsing a policy or
    index expression takes) and read no row."""
    sdb, before = dirty
    create_login_role(sdb, "dbsage_test_nobody")
    with sdb.connect(admin=True, autocommit=False) as locker:
        tables = locker.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v') AND n.nspname IN "
            "('public', 'private', 'auth', 'storage')").fetchall()
        locker.execute("LOCK TABLE " + ", ".join(t[0] for t in tables)
                       + " IN EXCLUSIVE MODE")
        with connect_as(sdb, "dbsage_test_nobody") as conn:
            conn.execute("SET lock_timeout = '2s'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM public.posts")
            found = run_advisors(conn, ["public"])
        locker.rollback()
    assert found == [f for f in before if f.name != "public_bucket_allows_listing"]


def test_only_the_exposed_schemas_count_as_exposed(dirty: tuple[SupaDb, list[LintFinding]]) -> None:
    sdb, _ = dirty
    with sdb.connect() as conn:
        private = run_advisors(conn, ["private"])
    names = {f.name for f in private}
    # private.notes (a policy, RLS off) has no grant to the API roles, so it is not exposed;
    # and nothing in public counts as exposed any more.
    assert "rls_disabled_in_public" not in names and "security_definer_view" not in names
    assert "anon_security_definer_function_executable" not in names
    assert {"policy_exists_rls_disabled", "unused_index", "auth_rls_initplan"} <= names


# --------------------------------------------------------------------------- without a database


def _f(name: str, obj: str, item: str = "", detail: str = "") -> LintFinding:
    rule = LINTS[name]
    return LintFinding(name, rule.title, rule.level, rule.categories, obj, "table", item,
                       detail, rule.why, "")


def test_compare_findings_matches_by_name_object_and_item() -> None:
    before = [_f("rls_disabled_in_public", "public.a"), _f("unused_index", "public.a", "i1"),
              _f("unused_index", "public.a", "i2"), _f("unindexed_foreign_keys", "public.o", "fk")]
    after = [_f("rls_disabled_in_public", "public.a", detail="changed wording"),
             _f("unused_index", "public.a", "i2"), _f("rls_disabled_in_public", "public.todos")]
    delta = compare_findings(before, after)
    assert [(f.name, f.object, f.item) for f in delta.introduced] == [
        ("rls_disabled_in_public", "public.todos", "")]
    assert [(f.name, f.object, f.item) for f in delta.fixed] == [
        ("unused_index", "public.a", "i1"), ("unindexed_foreign_keys", "public.o", "fk")]
    assert [f.detail for f in delta.unchanged] == ["changed wording", ""]  # as found after
    assert compare_findings(before, before).changed is False
    same = compare_findings([before[0], before[0]], [before[0]])
    assert len(same.fixed) == 1 and len(same.unchanged) == 1


def test_findings_are_frozen_and_hashable() -> None:
    f = _f("unused_index", "public.a", "i1")
    with pytest.raises(AttributeError):
        f.name = "x"
    assert {f, replace(f)} == {f} and f.key == ("unused_index", "public.a", "i1")


@pytest.mark.parametrize(("expr", "bare"), [
    ("(auth.uid() = user_id)", ["auth.uid()"]),
    ("(( SELECT auth.uid() AS uid) = user_id)", []),
    ("((user_id = ( SELECT auth.uid() AS uid)) OR (auth.uid() IS NULL))", ["auth.uid()"]),
    ("(( SELECT (((current_setting('request.jwt.claims'::text, true))::jsonb ->> 'sub'::text)))"
     " = 'x'::text)", []),
    ("(current_setting('app.tenant'::text) = (tenant)::text)", ["current_setting('app.tenant'::text)"]),
    ("((auth.jwt() ->> 'role'::text) = 'auth.uid()'::text)", ["auth.jwt()"]),
    ("(myauth.uid() = user_id)", []),
    (None, []),
])
def test_per_row_calls(expr: str | None, bare: list[str]) -> None:
    assert [expr[s:e] for s, e in per_row_calls(expr)] == bare  # type: ignore[index]


def test_wrap_per_row_calls() -> None:
    assert wrap_per_row_calls("((auth.uid() = a) AND (current_setting('x'::text, true) = b))") == (
        "(((select auth.uid()) = a) AND ((select current_setting('x'::text, true)) = b))")
    wrapped = wrap_per_row_calls("(auth.uid() = user_id)")
    assert per_row_calls(wrapped) == []
