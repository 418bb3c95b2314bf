"""History the Supabase CLI agrees with (issue 10): rows the CLI wrote are applied, not drift;
dbsage writes `statements` exactly as the CLI would; drift is judged on what was recorded.

Every test runs as the NON-superuser `postgres` role on a Supabase-shaped database, on
PostgreSQL 18 and 15. A "CLI row" is written as `supabase db push` writes it: the CLI's DDL,
each statement of its split run in turn, then INSERT (version, name, statements).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import apply, run_cli
from supabase_shaped import SupaDb

from dbsage.tools.cli_split import matches_cli_history, statements_for_history

# The CLI's own DDL (apps/cli-go/pkg/migration/history.go), as `supabase db push` runs it.
CLI_DDL = (
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL "
    "PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)

PLAIN = ("create table public.plain (id bigint primary key);\n"
         "alter table public.plain enable row level security;\n")
# Comments before and after, an outer BEGIN/COMMIT, a function body with ';' in it, and a
# trailing comment: the CLI's split keeps all of it, dbsage's own (pglast) split keeps none.
COMMENTED = """-- Profiles, one per user
begin;

/* the table */
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  username text unique -- shown in the app
);
alter table public.profiles enable row level security;

create function public.handle_new_user() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into public.profiles (id) values (new.id);
  return new;
end;
$$;

commit;
-- done
"""
CRLF = ("create table public.crlf (\r\n  id int\r\n);\r\nalter table public.crlf enable row level "
        "security;\r\n\r\n-- end\r\n")


def cli_push(db: SupaDb, path: Path) -> list[str] | None:
    """Apply `path` as `supabase db push` does and record it as the CLI does; its statements."""
    version, _, rest = path.name.partition("_")
    name = rest.removesuffix(".sql")
    with path.open(newline="") as f:
        text = f.read()
    statements = statements_for_history(text)
    with db.connect() as conn:
        for ddl in CLI_DDL:
            conn.execute(ddl.encode())
        with conn.transaction():
            for statement in statements or []:
                conn.execute(statement.encode())
            conn.execute("INSERT INTO supabase_migrations.schema_migrations(version, name, "
                         "statements) VALUES (%s, %s, %s)", (version, name, statements))
    return statements


def write(project: Path, name: str, text: str) -> Path:
    path = project / "supabase" / "migrations" / name
    path.write_bytes(text.encode())  # byte-exact: CRLF stays CRLF
    return path


def recorded(db: SupaDb, version: str) -> list[str] | None:
    return db.scalar("SELECT statements FROM supabase_migrations.schema_migrations "  # type: ignore[no-any-return]
                     "WHERE version = %s", (version,))


def status(db: SupaDb, project: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = run_cli("status", "--db", db.url, "--json", cwd=project)
    return done.returncode, json.loads(done.stdout)


def test_rows_the_cli_wrote_are_applied_not_drift(supa_db: SupaDb, project: Path) -> None:
    files = [write(project, "20250101000000_plain.sql", PLAIN),
             write(project, "20250102000000_profiles.sql", COMMENTED),
             write(project, "20250103000000_crlf.sql", CRLF)]
    for path in files:
        cli_push(supa_db, path)
    assert recorded(supa_db, "20250102000000")[0].startswith("-- Profiles")  # type: ignore[index]
    assert recorded(supa_db, "20250102000000")[-1] == "-- done"  # type: ignore[index]
    assert "\r\n" in recorded(supa_db, "20250103000000")[0]  # type: ignore[index]

    for path in files:
        report = apply(supa_db, path, project)
        assert report.exit_code == 4, report.error
        assert report.error and "already applied" in report.error["message"]
        assert "statements recorded by the Supabase CLI" in report.error["message"]
        assert not (report.error["message"].count("drift") or "changed" in report.error["message"])

    code, data = status(supa_db, project)
    assert code == 0, data
    assert data["applied"] == [p.name for p in files]
    assert data["drifted"] == [] and data["pending"] == [] and data["missing"] == []
    assert supa_db.scalar("SELECT to_regclass('dbsage.migration_log')") is None  # nothing logged


def test_the_cli_command_line_says_already_applied(supa_db: SupaDb, project: Path) -> None:
    path = write(project, "20250102000000_profiles.sql", COMMENTED)
    cli_push(supa_db, path)
    done = run_cli("apply", str(path), "--mode", "yolo", "--db", supa_db.url, cwd=project)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "already applied" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_a_cli_row_of_an_edited_file_is_drift_by_the_cli_statements(supa_db: SupaDb,
                                                                     project: Path) -> None:
    path = write(project, "20250102000000_profiles.sql", COMMENTED)
    cli_push(supa_db, path)
    path.write_text(COMMENTED.replace("username text unique", "username text not null unique"))
    report = apply(supa_db, path, project)
    assert report.exit_code == 5, report.error
    assert report.error is not None
    message, hint = report.error["message"], report.error["hint"]
    assert "applied by the Supabase CLI" in message and "has changed since" in message
    assert "statements differ from the statements recorded by the Supabase CLI" in message
    assert "first at statement 2" in message  # statement 1 is the BEGIN
    assert "checksum" not in message
    assert "new migration" in hint and "supabase migration repair" in hint
    assert supa_db.scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                          "'public.profiles'::regclass AND attname = 'username' AND attnotnull") == 0


def test_dbsage_writes_the_statements_the_cli_would(supa_db: SupaDb, project: Path) -> None:
    files = {"20250101000000": write(project, "20250101000000_plain.sql", PLAIN),
             "20250102000000": write(project, "20250102000000_profiles.sql", COMMENTED),
             "20250103000000": write(project, "20250103000000_crlf.sql", CRLF)}
    for version, path in files.items():
        assert apply(supa_db, path, project).status == "applied"
        text = path.read_bytes().decode()
        assert recorded(supa_db, version) == statements_for_history(text)
        assert matches_cli_history(text, recorded(supa_db, version))
    assert recorded(supa_db, "20250102000000")[0] == "-- Profiles, one per user\nbegin"  # type: ignore[index]
    assert supa_db.scalar("SELECT name FROM supabase_migrations.schema_migrations WHERE "
                          "version = '20250102000000'") == "profiles"

    again = apply(supa_db, files["20250102000000"], project)
    assert again.exit_code == 4 and again.error
    assert "checksum recorded by dbsage" in again.error["message"]
    code, data = status(supa_db, project)
    assert code == 0 and data["applied"] == [p.name for p in files.values()], data

    edited = files["20250101000000"]
    edited.write_text(PLAIN + "create index plain_id on public.plain (id);\n")
    drift = apply(supa_db, edited, project)
    assert drift.exit_code == 5 and drift.error
    assert "applied by dbsage" in drift.error["message"]
    assert "sha256 is not the checksum recorded by dbsage" in drift.error["message"]


def test_a_repaired_row_is_judged_by_the_statements_it_now_holds(supa_db: SupaDb,
                                                                 project: Path) -> None:
    """`supabase migration repair --status reverted` then `--status applied` rewrites the row
    with the file's statements: the documented repair for a file changed by hand."""
    path = write(project, "20250101000000_plain.sql", PLAIN)
    assert apply(supa_db, path, project).status == "applied"
    path.write_text(PLAIN.replace("bigint", "int"))
    assert apply(supa_db, path, project).exit_code == 5
    supa_db.execute("ALTER TABLE public.plain ALTER COLUMN id TYPE int")  # changed by hand
    with supa_db.connect() as conn:  # the repair, as the CLI runs it
        conn.execute("DELETE FROM supabase_migrations.schema_migrations WHERE version = ANY(%s)",
                     (["20250101000000"],))
        conn.execute("INSERT INTO supabase_migrations.schema_migrations(version, name, statements)"
                     " VALUES (%s, %s, %s)",
                     ("20250101000000", "plain", statements_for_history(path.read_text())))
    report = apply(supa_db, path, project)
    assert report.exit_code == 4, report.error
    assert report.error and "statements recorded in supabase_migrations" in report.error["message"]


def test_a_row_without_statements_is_applied_but_unverifiable(supa_db: SupaDb,
                                                              project: Path) -> None:
    path = write(project, "20250101000000_plain.sql", PLAIN)
    with supa_db.connect() as conn:
        for ddl in CLI_DDL:
            conn.execute(ddl.encode())
        conn.execute(PLAIN.encode())
        conn.execute("INSERT INTO supabase_migrations.schema_migrations (version) "
                     "VALUES ('20250101000000')")  # a CLI older than v1.67.0
    path.write_text(PLAIN + "-- edited: nobody can tell\n")
    report = apply(supa_db, path, project)
    assert report.exit_code == 4, report.error
    assert report.error and "cannot be verified" in report.error["message"]
    code, data = status(supa_db, project)
    assert code == 0 and data["drifted"] == [] and data["applied"] == [path.name], data


@pytest.mark.parametrize("by", ["dbsage", "cli"])
def test_another_file_with_an_applied_version_names_the_migration_using_it(
        supa_db: SupaDb, project: Path, by: str) -> None:
    first = write(project, "20250101000000_first_one.sql", PLAIN)
    if by == "dbsage":
        assert apply(supa_db, first, project).status == "applied"
    else:
        cli_push(supa_db, first)
    other_dir = project / "elsewhere"
    other_dir.mkdir()
    second = other_dir / "20250101000000_second_one.sql"
    second.write_text("create table public.second (id int);\n"
                      "alter table public.second enable row level security;\n")
    report = apply(supa_db, second, project)
    assert report.exit_code == 2, report.error
    assert report.error is not None
    message = report.error["message"]
    assert "version 20250101000000 is already used by 20250101000000_first_one.sql" in message
    assert "changed since" not in message and "checksum" not in message
    assert "rename" in report.error["hint"]
    assert supa_db.scalar("SELECT to_regclass('public.second')") is None


def test_history_ddl_runs_only_what_is_missing(supa_db: SupaDb, project: Path) -> None:
    """A CLI table that another role owns, complete and granted: dbsage only inserts (no
    CREATE SCHEMA, no ALTER TABLE, which would need ownership and ACCESS EXCLUSIVE). A table
    from an old CLI without `name` gets the column, as the CLI's own DDL would add it."""
    with supa_db.connect(admin=True) as admin:
        for ddl in CLI_DDL:
            admin.execute(ddl.encode())
        admin.execute("GRANT USAGE ON SCHEMA supabase_migrations TO postgres; GRANT SELECT, "
                      "INSERT, DELETE ON supabase_migrations.schema_migrations TO postgres")
    path = write(project, "20250101000000_plain.sql", PLAIN)
    report = apply(supa_db, path, project)
    assert report.status == "applied", report.error
    assert supa_db.scalar("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = "
                          "'supabase_migrations.schema_migrations'::regclass") == "supabase_admin"
    assert recorded(supa_db, "20250101000000") == statements_for_history(PLAIN)

    supa_db.execute("DROP SCHEMA supabase_migrations CASCADE; DROP SCHEMA dbsage CASCADE",
                    admin=True)
    supa_db.execute("CREATE SCHEMA supabase_migrations; CREATE TABLE "
                    "supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY, "
                    "statements text[])")  # CLI v1.67 .. before the name column
    second = write(project, "20250102000000_second.sql", "create table public.second (id int);\n"
                   "alter table public.second enable row level security;\n")
    report = apply(supa_db, second, project)
    assert report.status == "applied", report.error
    assert supa_db.scalar("SELECT name FROM supabase_migrations.schema_migrations") == "second"
