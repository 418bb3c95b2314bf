"""The bookkeeping is protected (issue 13): a migration that writes to dbsage's history (schema
dbsage) or the Supabase CLI's (supabase_migrations.schema_migrations, seed_files) is refused by
analysis before any I/O (exit 2, file:line, why); a write analysis cannot see (in a function the
migration calls, or SQL a DO block builds) is caught before commit and everything rolls back
(exit 1). The runtime cases run on the Supabase-shaped database (PostgreSQL 18 and 15) as the
non-superuser postgres."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli_json as cli
from supabase_shaped import SupaDb

from dbsage.tools.analyze import bookkeeping_writes, refuse_bookkeeping_writes
from dbsage.tools.errors import MigrationFileError
from dbsage.tools.sqlfile import read_migration

LOG = "dbsage.migration_log"
CLI = "supabase_migrations.schema_migrations"
SEEDS = "supabase_migrations.seed_files"


def _file(folder: Path, sql: str, name: str = "20250101000000_x.sql") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)
    return path


# --- analysis: refused before anything runs ----------------------------------------------------

@pytest.mark.parametrize("sql, line, what", [
    ("delete from dbsage.migration_log;", 1, f"DELETE FROM {LOG}"),
    ("create table public.a (id int);\nupdate dbsage.migration_log set status = 'x';", 2,
     f"UPDATE {LOG}"),
    ("insert into supabase_migrations.schema_migrations (version) values ('1');", 1,
     f"INSERT INTO {CLI}"),
    ("delete from supabase_migrations.schema_migrations where version = '1';", 1,
     f"DELETE FROM {CLI}"),
    ("truncate supabase_migrations.seed_files;", 1, f"TRUNCATE {SEEDS}"),
    ("truncate table dbsage.migration_log, public.t;", 1, f"TRUNCATE {LOG}"),
    ("alter table dbsage.migration_log drop column checksum;", 1, f"ALTER TABLE {LOG}"),
    ("alter table supabase_migrations.schema_migrations add column x int;", 1,
     f"ALTER TABLE {CLI}"),
    ("drop table dbsage.migration_log;", 1, f"DROP {LOG}"),
    ("drop table if exists supabase_migrations.schema_migrations;", 1, f"DROP {CLI}"),
    ("drop schema dbsage cascade;", 1, "DROP dbsage"),
    ("drop schema supabase_migrations cascade;", 1, "DROP supabase_migrations"),
    ("copy dbsage.migration_log from '/tmp/log.csv';", 1, f"COPY ... FROM {LOG}"),
    ("copy supabase_migrations.schema_migrations (version) from program 'echo 1';", 1,
     f"COPY ... FROM {CLI}"),
    ("with gone as (delete from dbsage.migration_log returning id)\n"
     "select count(*) from gone;", 1, f"DELETE FROM {LOG}"),
    ("merge into supabase_migrations.schema_migrations m using (select '1' v) s "
     "on m.version = s.v when not matched then insert (version) values (s.v);", 1,
     f"MERGE INTO {CLI}"),
    ('delete from "dbsage"."migration_log";', 1, f"DELETE FROM {LOG}"),
    ("set search_path = dbsage, public;\n\ndelete from migration_log;", 3,
     f"DELETE FROM {LOG}"),
    ("do $$\nbegin\n  delete from dbsage.migration_log where true;\nend $$;", 3,
     f"DELETE FROM {LOG} (in the DO block at line 1)"),
    ("do $$ begin truncate supabase_migrations.schema_migrations; end $$;", 1,
     f"TRUNCATE {CLI} (in the DO block at line 1)"),
    ("create table dbsage.mine (id int);", 1, "CREATE dbsage.mine"),
    ("create trigger t before insert on supabase_migrations.schema_migrations for each row "
     "execute function public.f();", 1, f"CREATE TRIGGER on {CLI}"),
    ("create index on dbsage.migration_log (status);", 1, f"CREATE INDEX on {LOG}"),
    ("alter table dbsage.migration_log rename to old_log;", 1, f"ALTER ... RENAME {LOG}"),
])
def test_a_write_to_the_history_is_refused_with_its_line(tmp_path: Path, sql: str, line: int,
                                                         what: str) -> None:
    m = read_migration(_file(tmp_path, sql))
    with pytest.raises(MigrationFileError) as caught:
        refuse_bookkeeping_writes(m)
    err = caught.value
    assert err.exit_code == 2 and err.data["line"] == line and err.data["refused"] == "bookkeeping"
    assert err.message.startswith(f"{m.path}:{line}: {what} changes ")
    assert "migration history" in err.message and "Nothing was run" in err.message
    assert "dbsage repair" in (err.hint or "")


@pytest.mark.parametrize("sql", [
    "select count(*) from dbsage.migration_log;",
    "insert into public.t select version from supabase_migrations.schema_migrations;",
    "create table supabase_migrations.notes (id int);",  # the CLI's schema, not its history
    "create table public.dbsage_settings (id int);",
    "comment on table public.t is 'written by dbsage.migration_log';",
    "create function public.f() returns bigint language sql as "
    "'select count(*) from dbsage.migration_log';",  # defining it writes nothing
    "create table public.t (id int);\ndelete from public.t;",
])
def test_reading_the_history_or_naming_it_is_not_a_write(tmp_path: Path, sql: str) -> None:
    assert bookkeeping_writes(read_migration(_file(tmp_path, sql))) == ()


def test_the_refusal_comes_before_any_connection(project: Path) -> None:
    path = _file(project / "supabase" / "migrations",
                 "create table public.a (id int);\ndelete from dbsage.migration_log;\n")
    nowhere = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    for args in (("apply", str(path), "--mode", "yolo"), ("dry-run", str(path)),
                 ("plan", str(path))):
        rc, report, out = cli(project, *args, "--db", nowhere)
        assert rc == 2, out
        assert f"{path}:2: DELETE FROM {LOG}" in report["error"]["message"], out
        assert "127.0.0.1" not in report["error"]["message"]


def test_up_refuses_the_batch_before_anything_runs(supa_db: SupaDb, project: Path) -> None:
    migrations = project / "supabase" / "migrations"
    _file(migrations, "create table public.a (id int primary key);\n"
                      "alter table public.a enable row level security;\n")
    bad = _file(migrations, "update supabase_migrations.schema_migrations set name = 'x';\n",
                "20250102000000_bad.sql")
    rc, report, out = cli(project, "up", "--mode", "yolo", "--db", supa_db.url)
    assert rc == 2, out
    assert f"{bad}:1: UPDATE {CLI} changes " in report["error"]["message"]
    assert supa_db.scalar("select to_regclass('public.a')") is None  # not even the good file


# --- at run time: what analysis cannot see -----------------------------------------------------

FIRST = "create table public.a (id int primary key);\nalter table public.a enable row level " \
        "security;\n"


def _function(body: str) -> str:
    """A migration that hides `body` in a function it creates and calls."""
    return ("create function public.sneaky() returns void language plpgsql as $f$\n"
            f"begin\n  {body}\nend $f$;\n"
            "select public.sneaky();\n")


def _history(db: SupaDb) -> tuple[list[str], int]:
    versions = [r[0] for r in db.connect().execute(
        "select version from supabase_migrations.schema_migrations order by 1").fetchall()]
    return versions, db.scalar("select count(*) from dbsage.migration_log")


@pytest.mark.parametrize("body, table", [
    ("delete from dbsage.migration_log;", LOG),
    ("update supabase_migrations.schema_migrations set name = 'renamed';", CLI),
    ("insert into supabase_migrations.schema_migrations (version) values ('29990101000000');",
     CLI),
    ("truncate supabase_migrations.seed_files;", SEEDS),
    ("alter table dbsage.migration_log add column note text;", LOG),
    ("execute 'delete from ' || 'dbs' || 'age.migration_log';", LOG),
    ("drop table supabase_migrations.schema_migrations;", CLI),
])
def test_a_hidden_write_rolls_the_migration_back(supa_db: SupaDb, project: Path, body: str,
                                                 table: str) -> None:
    migrations = project / "supabase" / "migrations"
    rc, _first, out = cli(project, "apply", str(_file(migrations, FIRST)), "--mode", "yolo",
                          "--db", supa_db.url)
    assert rc == 0, out
    supa_db.execute("create table if not exists supabase_migrations.seed_files "
                    "(path text not null primary key, hash text not null);"
                    "insert into supabase_migrations.seed_files values ('seed.sql', 'h')")
    before = _history(supa_db)
    path = _file(migrations, _function(body), "20250102000000_sneaky.sql")
    rc, report, out = cli(project, "apply", str(path), "--mode", "yolo", "--db", supa_db.url)
    assert rc == 1, out
    message = report["error"]["message"]
    assert f"{table} (" in message and "changed the migration history" in message, message
    assert "rolled back" in message
    assert _history(supa_db) == before == (["20250101000000"], 1)
    assert supa_db.scalar("select count(*) from supabase_migrations.seed_files") == 1
    assert supa_db.scalar("select to_regprocedure('public.sneaky()')") is None


def test_a_hidden_write_in_an_atomic_batch_rolls_it_all_back(supa_db: SupaDb,
                                                             project: Path) -> None:
    migrations = project / "supabase" / "migrations"
    _file(migrations, FIRST)
    _file(migrations, "create table public.b (id int primary key);\n"
                      "alter table public.b enable row level security;\n",
          "20250102000000_b.sql")
    _file(migrations, _function("delete from dbsage.migration_log where version <> '';"),
          "20250103000000_sneaky.sql")
    rc, report, out = cli(project, "up", "--atomic", "--mode", "yolo", "--db", supa_db.url)
    assert rc == 1, out
    message = report["error"]["message"]
    assert "20250103000000_sneaky.sql: the migration changed the migration history" in message
    assert f"{LOG} (" in message and "none of the 3 file(s) is applied" in message, message
    assert supa_db.scalar("select to_regclass('public.a')") is None
    assert supa_db.scalar("select to_regclass('supabase_migrations.schema_migrations')") is None \
        or _history(supa_db)[0] == []


@pytest.mark.parametrize("atomic", [True, False])
def test_a_clean_batch_is_not_taken_for_a_hidden_write(supa_db: SupaDb, project: Path,
                                                       atomic: bool) -> None:
    migrations = project / "supabase" / "migrations"
    _file(migrations, FIRST + "insert into public.a values (1);\nanalyze;\n")
    for n in (2, 3):
        _file(migrations, f"create table public.t{n} (id bigint generated always as identity "
                          f"primary key);\nalter table public.t{n} enable row level security;\n",
              f"2025010{n}000000_t{n}.sql")
    flags = ["--atomic"] if atomic else []
    rc, _report, out = cli(project, "up", *flags, "--mode", "yolo", "--db", supa_db.url)
    assert rc == 0, out
    assert _history(supa_db) == (["20250101000000", "20250102000000", "20250103000000"], 3)
