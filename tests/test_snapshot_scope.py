"""Snapshots cover what the user owns (issue 13): pg_dump leaves out the schemas the Supabase
CLI's own dump leaves out and whatever the role cannot read, so a platform table the role may
not SELECT never fails an apply, a plan or a rollback; a migration that changes an excluded
schema is warned about. On the Supabase-shaped database (PostgreSQL 18 and 15), as the
non-superuser postgres.

The fixture's postgres is a member of pg_read_all_data (it reads everything); the restricted
cases take that membership away for the test and give it back after it (roles are per cluster,
and each pytest worker has clusters of its own, running one test at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import run_cli_json as cli
from supabase_shaped import SupaDb

from dbsage.tools.catalog import in_snapshot_excluded_schema
from dbsage.tools.snapshot import DumpScope, dump_schema, dump_scope

# What Supabase's platform looks like to a role that may not read everything: vault.secrets
# owned by supabase_admin with no grant; a schema of its own the role may use but one table
# of which it may not read; a schema it may not even use.
RESTRICTED = """
create schema if not exists vault;
create table vault.secrets (id uuid primary key, secret text);
create schema ops;
grant usage on schema ops to postgres;
create table ops.public_notes (id int);
grant select on ops.public_notes to postgres;
create table ops.keys (id int, k text);
create sequence ops.key_seq;
create view ops.key_view as select id from ops.keys;
create function ops.key_count() returns bigint language sql as 'select count(*) from ops.keys';
create schema "Hidden|One";
create table "Hidden|One".t (id int);
"""

MIGRATION = """create table public.things (id bigint primary key, name text);
alter table public.things enable row level security;
create function public.thing_count() returns bigint language sql stable
  as $$ select count(*) from public.things $$;
"""


@contextmanager
def without_read_all_data(db: SupaDb) -> Iterator[None]:
    """postgres without pg_read_all_data, and the RESTRICTED objects, for one test."""
    db.execute(RESTRICTED, admin=True)
    db.execute("revoke pg_read_all_data from postgres", admin=True)
    try:
        yield
    finally:
        db.execute("grant pg_read_all_data to postgres", admin=True)


def write(project: Path, sql: str, name: str = "20250101000000_things.sql") -> Path:
    path = project / "supabase" / "migrations" / name
    path.write_text(sql)
    return path


def test_the_excluded_schemas_are_the_supabase_clis_and_dbsages() -> None:
    for name in ("auth", "storage", "realtime", "extensions", "vault", "pgsodium", "graphql",
                 "supabase_migrations", "dbsage", "timescaledb_information", "pg_temp_3",
                 "information_schema", "cron", "net"):
        assert in_snapshot_excluded_schema(name), name
    for name in ("public", "app", "private", "authx", "vaults", "my_storage"):
        assert not in_snapshot_excluded_schema(name), name


def test_unreadable_names_reach_pg_dump_quoted() -> None:
    scope = DumpScope(unreadable_schemas=('a"b',), unreadable_tables=(("S", "t*x"),))
    args = scope.arguments()
    assert '--exclude-schema="a""b"' in args and '--exclude-table="S"."t*x"' in args
    assert "--exclude-schema=vault" in args and "--exclude-schema=auth" in args


def test_a_table_the_role_cannot_read_is_left_out_not_fatal(supa_db: SupaDb) -> None:
    with without_read_all_data(supa_db):
        with supa_db.connect() as conn:
            scope = dump_scope(conn)
        # vault is excluded by name; what is left over is listed by the catalog
        assert scope.unreadable_tables == (("ops", "keys"),)
        assert scope.unreadable_schemas == ("Hidden|One",)
        text, _ = dump_schema(supa_db.url, supa_db.server.major, scope=scope)
        assert "ops.public_notes" in text and "CREATE TABLE ops.keys" not in text
        # what pg_dump does not lock it still dumps (definitions are in the catalog)
        assert "ops.key_seq" in text and "ops.key_view" in text and "ops.key_count" in text
        assert "vault.secrets" not in text and "auth.users" not in text


def test_apply_plan_and_rollback_work_beside_an_unreadable_platform_table(
        supa_db: SupaDb, project: Path) -> None:
    path = write(project, MIGRATION)
    with without_read_all_data(supa_db):
        rc, _plan, out = cli(project, "plan", str(path), "--db", supa_db.url)
        assert rc == 0, out
        # yolo: the early snapshot (psql + pg_dump before the lock)
        rc, report, out = cli(project, "apply", str(path), "--mode", "yolo", "--db",
                              supa_db.url)
        assert rc == 0, out
        assert "permission denied" not in out
        before = (project / report["files"]["before"]).read_text()
        after = (project / report["files"]["after"]).read_text()
        diff = (project / report["files"]["diff"]).read_text()
        assert "public.things" not in before and "CREATE TABLE public.things" in after
        assert "thing_count" in diff and "CREATE TABLE ops.keys" not in after + before
        assert "ops.public_notes" in before  # what it may read is still there
        rc, back, out = cli(project, "rollback", str(report["ts"]), "--mode", "yolo", "--db",
                            supa_db.url)
        assert rc == 0, out
        assert supa_db.scalar("select to_regclass('public.things')") is None
        assert supa_db.scalar("select to_regprocedure('public.thing_count()')") is None
        rolled = (project / back["files"]["after"]).read_text()
        assert rolled == before  # the rollback compares equal to the apply's before-snapshot


def test_the_snapshot_under_the_lock_leaves_out_the_unreadable_too(
        supa_db: SupaDb, project: Path) -> None:
    """Interactive runs dump under the lock, on the run's own session."""
    path = write(project, MIGRATION)
    with without_read_all_data(supa_db):
        rc, report, out = cli(project, "apply", str(path), "--mode", "interactive", "--yes",
                              "--db", supa_db.url)
        assert rc == 0, out
        after = (project / report["files"]["after"]).read_text()
        assert "CREATE TABLE public.things" in after and "CREATE TABLE ops.keys" not in after


AUTH_TRIGGER = """create function public.on_new_user() returns trigger language plpgsql
  security definer set search_path = '' as $$ begin return new; end $$;
create trigger on_auth_user_created after insert on auth.users
  for each row execute function public.on_new_user();
"""


def test_a_change_to_an_excluded_schema_is_warned_and_still_rolled_back(
        supa_db: SupaDb, project: Path) -> None:
    path = write(project, AUTH_TRIGGER, "20250101000000_auth_trigger.sql")
    rc, plan, out = cli(project, "plan", str(path), "--db", supa_db.url)
    assert rc == 0, out
    [warning] = [w for w in plan["warnings"] if "auth.users" in w]
    assert "line 3" in warning and "snapshot" in warning and "auth" in warning
    rc, report, out = cli(project, "apply", str(path), "--mode", "yolo", "--db", supa_db.url)
    assert rc == 0, out
    assert any("auth.users" in w and "snapshot" in w for w in report["warnings"])
    diff = (project / report["files"]["diff"]).read_text()
    assert "on_new_user" in diff and "on_auth_user_created" not in diff  # as warned
    assert supa_db.scalar("select count(*) from pg_trigger where tgname = "
                          "'on_auth_user_created'") == 1
    rc, _back, out = cli(project, "rollback", str(report["ts"]), "--mode", "yolo", "--db",
                        supa_db.url)
    assert rc == 0, out
    assert supa_db.scalar("select count(*) from pg_trigger where tgname = "
                          "'on_auth_user_created'") == 0


@pytest.mark.parametrize("sql, warned", [
    ("create policy p on storage.objects for select using (true);", True),
    ("alter table auth.users add column nickname text;", True),
    ("grant select on table auth.users to anon;", True),
    ("drop function if exists extensions.f(int);", True),
    ("create table public.t (id uuid references auth.users (id));", False),
    ("insert into storage.buckets (id, name) values ('a', 'a');", False),
    ("create table public.t (id int);", False),
])
def test_which_statements_change_an_excluded_schema(tmp_path: Path, sql: str,
                                                    warned: bool) -> None:
    from dbsage.tools.analyze import file_warnings
    from dbsage.tools.sqlfile import read_migration

    path = tmp_path / "20250101000000_x.sql"
    path.write_text(sql)
    found = [w for w in file_warnings(read_migration(path)) if "snapshots leave out" in w]
    assert bool(found) is warned, found
