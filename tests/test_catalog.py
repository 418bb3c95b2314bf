"""tools/catalog.py: the one definition of "user schemas", in Python and in SQL, and the catalog
questions the checklists ask."""

from __future__ import annotations

import pytest
from conftest import Db

from dbsage.tools import catalog

NAMES = ["public", "app", "auth", "storage", "dbsage", "supabase_migrations", "pg_catalog",
         "pg_toast", "pg_temp_3", "pg_toast_temp_3", "information_schema", "pgsodium"]


def test_user_schemas_in_python() -> None:
    assert [n for n in NAMES if catalog.is_user_schema(n)] == [
        "public", "app", "auth", "storage", "pgsodium"]
    assert [n for n in NAMES if catalog.is_user_schema(n, platform=False)] == ["public", "app"]


@pytest.mark.parametrize("platform", [True, False])
def test_the_sql_condition_agrees_with_the_python_rule(db: Db, platform: bool) -> None:
    """Every schema of a database that has temp and TOAST schemas, bookkeeping and platform ones."""
    with db.connect() as conn:
        conn.execute("create schema app; create schema auth; create schema dbsage; "
                     "create table app.t (v text); create temp table scratch (id int)")
        rows = conn.execute(f"SELECT nspname, {catalog.user_schemas_sql('nspname', platform=platform)}"
                            " FROM pg_namespace ORDER BY 1").fetchall()  # type: ignore[arg-type]
    assert any(name.startswith("pg_temp_") for name, _ in rows)
    assert {name: ok for name, ok in rows} == {
        name: catalog.is_user_schema(name, platform=platform) for name, _ in rows}


def test_the_fingerprint_ignores_bookkeeping_and_temporary_tables(db: Db) -> None:
    with db.connect() as conn:
        before = catalog.schema_fingerprint(conn)
        conn.execute("create schema dbsage; create table dbsage.log (id int); "
                     "create temp table scratch (id int)")
        assert catalog.schema_fingerprint(conn) == before
        conn.execute("create table public.t (id int)")
        assert catalog.schema_fingerprint(conn) != before


def test_catalog_questions(db18: Db) -> None:
    db18.execute("create table public.parent (id int primary key); insert into public.parent "
                 "values (1); create table public.child (id int, parent_id int "
                 "references public.parent (id)); insert into public.child values (1, 1), (2, null);"
                 "alter table public.child disable trigger all; insert into public.child "
                 "values (3, 7); create index child_idx on public.child (id);"
                 "alter table public.parent enable row level security")
    with db18.connect() as conn:
        assert catalog.answers(conn)
        assert catalog.relation_exists(conn, "public.child_idx")
        assert not catalog.relation_exists(conn, "public.nope")
        assert catalog.is_table(conn, "public.child") and not catalog.is_table(conn, "public.child_idx")
        assert catalog.rls_enabled(conn, "public.parent") and not catalog.rls_enabled(conn, "public.child")
        found = catalog.foreign_key_orphans(conn, ["public.child", "public.nope"])
    assert found.checked == 1
    assert found.orphans == (catalog.OrphanedRows("child_parent_id_fkey", "child", "parent", 1),)
