"""Privilege errors are messages, and nothing is half-created (issue 10); locks are per
database (issue 13).

On the Supabase-shaped database (PostgreSQL 18 and 15). The restricted roles are made with the
admin URL (supabase_admin) and dropped afterwards; each case runs the real `dbsage` command and
asserts the exit code, the missing privilege and its GRANT in the message, no traceback, and
that neither the migration nor any bookkeeping schema was created.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from helpers import lock_is_free, run_cli
from supabase_shaped import SupaDb

from dbsage.tools.errors import LockBusyError
from dbsage.tools.lock import ensure_lock_free, find_lock_holder, holder_count_sql
from dbsage.tools.platform import clone_database

MIGRATION = ("create table public.x (id int);\n"
             "alter table public.x enable row level security;\n")


def role_url(db: SupaDb, role: str) -> str:
    """db.url as `role` (the socket trusts every role)."""
    parts = urlsplit(db.url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname or ''}"))


@contextmanager
def restricted_role(db: SupaDb, *grants: str) -> Iterator[str]:
    """A LOGIN role with only `grants` ({role} is its name); yields its name."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    with db.connect(admin=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN".encode())
        for grant in grants:
            admin.execute(grant.format(role=role).encode())
    try:
        yield role
    finally:
        with db.connect(admin=True) as admin:
            admin.execute(f"REASSIGN OWNED BY {role} TO supabase_admin; DROP OWNED BY {role}"
                          .encode())
            admin.execute(f"DROP ROLE {role}".encode())


def write(project: Path, name: str = "20250101000000_x.sql", sql: str = MIGRATION) -> Path:
    path = project / "supabase" / "migrations" / name
    path.write_text(sql)
    return path


def dbsage_apply(url: str, path: Path, project: Path) -> tuple[CompletedProcess[str], dict]:  # type: ignore[type-arg]
    done = run_cli("apply", str(path), "--mode", "yolo", "--db", url, "--json", cwd=project)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done, json.loads(done.stdout)


def schemas(db: SupaDb) -> set[str]:
    with db.connect(admin=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname IN "
                            "('dbsage', 'supabase_migrations')").fetchall()
    return {r[0] for r in rows}


def assert_nothing_created(db: SupaDb, project: Path, before: set[str] = frozenset()  # type: ignore[assignment]
                           ) -> None:
    assert db.scalar("SELECT to_regclass('public.x')", admin=True) is None
    assert schemas(db) == set(before)
    assert not list((project / "supabase").glob("snapshots/*_after.sql"))
    assert lock_is_free(db)  # type: ignore[arg-type]


def test_no_create_on_the_database_is_a_message_naming_the_grant(supa_db: SupaDb,
                                                                   project: Path) -> None:
    with restricted_role(supa_db, "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as role:
        done, report = dbsage_apply(role_url(supa_db, role), write(project), project)
        assert done.returncode == 2, done.stdout
        error = report["error"]
        assert error["error"] == "ConfigError"
        assert f"Role {role} cannot record migrations" in error["message"]
        assert f"CREATE on database {supa_db.name}" in error["message"]
        assert f'GRANT CREATE ON DATABASE {supa_db.name} TO {role};' in error["hint"]
        assert error["grants"] == [f"GRANT CREATE ON DATABASE {supa_db.name} TO {role};"]
        assert_nothing_created(supa_db, project)

        text = run_cli("apply", str(write(project)), "--mode", "yolo", "--db",
                       role_url(supa_db, role), cwd=project)
        assert text.returncode == 2 and "GRANT CREATE ON DATABASE" in text.stdout, text.stdout
        assert "Traceback" not in text.stdout + text.stderr


def test_a_history_schema_of_another_role_names_each_grant_then_applies(
        supa_db: SupaDb, project: Path) -> None:
    """supabase_migrations made by supabase_admin (say, a push as the admin): postgres reads it
    (pg_read_all_data) but may not insert. The GRANTs the message names are exactly enough."""
    supa_db.execute("CREATE SCHEMA supabase_migrations; CREATE TABLE "
                    "supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY, "
                    "statements text[], name text)", admin=True)
    path = write(project)
    done, report = dbsage_apply(supa_db.url, path, project)
    assert done.returncode == 2, done.stdout
    error = report["error"]
    assert ("INSERT on table supabase_migrations.schema_migrations (owned by supabase_admin)"
            in error["message"])
    assert error["grants"] == [
        "GRANT INSERT ON TABLE supabase_migrations.schema_migrations TO postgres;"]
    assert_nothing_created(supa_db, project, {"supabase_migrations"})

    for grant in error["grants"]:
        supa_db.execute(grant, admin=True)
    done, report = dbsage_apply(supa_db.url, path, project)
    assert done.returncode == 0, report.get("error")
    assert supa_db.scalar("SELECT name FROM supabase_migrations.schema_migrations") == "x"


def test_a_role_without_usage_on_the_history_schema(supa_db: SupaDb, project: Path) -> None:
    """A role outside pg_read_all_data cannot even read the history: one message names every
    GRANT (schema USAGE, table SELECT/INSERT), and the dbsage schema it could create is not."""
    supa_db.execute("CREATE SCHEMA supabase_migrations; CREATE TABLE "
                    "supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY, "
                    "statements text[], name text)", admin=True)
    with restricted_role(supa_db, f"GRANT CREATE ON DATABASE {supa_db.name} TO {{role}}",
                         "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as role:
        done, report = dbsage_apply(role_url(supa_db, role), write(project), project)
        assert done.returncode == 2, done.stdout
        error = report["error"]
        assert "USAGE on schema supabase_migrations (owned by supabase_admin)" in error["message"]
        assert error["grants"] == [
            f"GRANT USAGE ON SCHEMA supabase_migrations TO {role};",
            f"GRANT SELECT, INSERT ON TABLE supabase_migrations.schema_migrations TO {role};"]
        assert "permission denied" not in done.stdout
        assert_nothing_created(supa_db, project, {"supabase_migrations"})

        status = run_cli("status", "--db", role_url(supa_db, role), cwd=project)
        assert status.returncode == 2, status.stdout + status.stderr
        assert "GRANT USAGE ON SCHEMA supabase_migrations" in status.stdout + status.stderr
        assert "Traceback" not in status.stdout + status.stderr


def test_the_holder_of_another_role_is_reported_with_the_grant_that_shows_it(
        supa_db: SupaDb, project: Path) -> None:
    """Without pg_read_all_stats, another role's session shows no start time or state: the
    busy report says so and names the GRANT (the lock is busy: exit 3, nothing applied)."""
    with restricted_role(supa_db, f"GRANT CREATE ON DATABASE {supa_db.name} TO {{role}}",
                         "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as role, \
            supa_db.connect() as holder:
        holder.execute("SET application_name = 'other-migrator'")
        holder.execute("SELECT pg_advisory_lock(hashtext('dbsage:migrate'))")
        done, report = dbsage_apply(role_url(supa_db, role), write(project), project)
        assert done.returncode == 3, done.stdout
        error = report["error"]
        assert error["holder_pid"] == holder.info.backend_pid
        assert error["holder_application_name"] == "other-migrator"
        assert "holder_since" not in error  # hidden from this role
        assert f"hidden from role {role}" in error["message"] and "user postgres" in error["message"]
        assert f"GRANT pg_read_all_stats TO {role};" in error["hint"]
        assert db_has_no_x(supa_db)

        with psycopg.connect(role_url(supa_db, role), autocommit=True) as mine:
            found = find_lock_holder(mine)
            assert found is not None and found.grant == f"GRANT pg_read_all_stats TO {role};"
            supa_db.execute(f"GRANT pg_read_all_stats TO {role}", admin=True)
            seen = find_lock_holder(mine)
            assert seen is not None and seen.since is not None and seen.hidden is None


def db_has_no_x(db: SupaDb) -> bool:
    return db.scalar("SELECT to_regclass('public.x') IS NULL", admin=True) is True


def test_unreadable_lock_views_neither_crash_nor_block(supa_db: SupaDb, project: Path) -> None:
    """pg_stat_activity, then pg_locks, revoked from PUBLIC in this database (a role outside
    pg_read_all_data): a free lock is still found free, a held one is still refused (exit 3)
    and the message names the GRANT; no permission error escapes."""
    supa_db.execute("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC", admin=True)
    with restricted_role(supa_db, f"GRANT CREATE ON DATABASE {supa_db.name} TO {{role}}",
                         "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as role, \
            supa_db.connect() as holder, \
            psycopg.connect(role_url(supa_db, role), autocommit=True) as other:
        assert find_lock_holder(other) is None
        ensure_lock_free(other)
        holder.execute("SELECT pg_advisory_lock(hashtext('dbsage:migrate'))")
        found = find_lock_holder(other)
        assert found is not None and found.pid == holder.info.backend_pid
        assert found.grant == f"GRANT SELECT ON pg_catalog.pg_stat_activity TO {role};"
        done, report = dbsage_apply(role_url(supa_db, role), write(project), project)
        assert done.returncode == 3, done.stdout
        assert report["error"]["holder_pid"] == holder.info.backend_pid
        assert report["error"]["grant"] == found.grant and found.grant in report["error"]["hint"]

        supa_db.execute("REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC", admin=True)
        found = find_lock_holder(other)
        assert found is not None and found.pid is None
        assert found.grant == f"GRANT SELECT ON pg_catalog.pg_locks TO {role};"
        with pytest.raises(LockBusyError, match="Another migration is running") as busy:
            ensure_lock_free(other)
        assert busy.value.data["grant"] == found.grant
        done, report = dbsage_apply(role_url(supa_db, role), write(project), project)
        assert done.returncode == 3, done.stdout
        assert "a session this role may not see" in report["error"]["message"]

        holder.execute("SELECT pg_advisory_unlock_all()")
        assert find_lock_holder(other) is None
        ensure_lock_free(other)  # peeks by trying, and leaves the lock free
        assert lock_is_free(supa_db)  # type: ignore[arg-type]
    assert db_has_no_x(supa_db)


def test_a_lock_held_in_another_database_does_not_block(supa_db: SupaDb, project: Path) -> None:
    other = f"s_{uuid.uuid4().hex[:12]}"
    clone_database(supa_db.server.admin_url(), other, template=supa_db.server.template)
    try:
        url_a = supa_db.server.url(other)
        with psycopg.connect(url_a, autocommit=True) as holder_a, \
                psycopg.connect(supa_db.url, autocommit=True) as in_b, \
                psycopg.connect(url_a, autocommit=True) as also_a:
            holder_a.execute("SELECT pg_advisory_lock(hashtext('dbsage:migrate'))")
            assert find_lock_holder(in_b) is None
            assert in_b.execute(f"SELECT {holder_count_sql()}").fetchone() == (0,)  # type: ignore[arg-type]
            holder = find_lock_holder(also_a)
            assert holder is not None and holder.pid == holder_a.info.backend_pid
            assert also_a.execute(f"SELECT {holder_count_sql()}").fetchone() == (1,)  # type: ignore[arg-type]

            done, report = dbsage_apply(supa_db.url, write(project), project)
            assert done.returncode == 0, report.get("error")
            assert supa_db.scalar("SELECT to_regclass('public.x') IS NOT NULL") is True

            blocked = run_cli("apply", str(write(project, "20250101000001_y.sql", "select 1;\n")),
                              "--mode", "yolo", "--db", url_a, cwd=project)
            assert blocked.returncode == 3, blocked.stdout + blocked.stderr
            assert f"pid {holder_a.info.backend_pid}" in blocked.stdout
    finally:
        with psycopg.connect(supa_db.server.admin_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)'.encode())
