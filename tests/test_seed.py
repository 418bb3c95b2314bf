"""Seeds and files that are not migrations (issue 10), on a Supabase-shaped database as the
non-superuser postgres role: apply and dry-run refuse a file the Supabase CLI would skip
(unless --version names its version), and `dbsage seed` loads supabase/seed.sql or
[db.seed] sql_paths in one transaction, recording nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers import apply, fast_retry, lock_is_free, migration, run_cli
from supabase_shaped import SupaDb

from dbsage.agent.commands import Session, execute, parse
from dbsage.agent.modes import ScriptedAsker
from dbsage.agent.runner import RunOptions, run_named
from dbsage.tools.errors import ConfigError, TransactionShapeError
from dbsage.tools.seed import find_seed_files, load_seed
from dbsage.tools.sqlfile import why_not_a_migration

TABLE = """create table public.plans (
  id bigint generated always as identity primary key,
  name text not null unique
);
alter table public.plans enable row level security;
"""


def _history(db: SupaDb) -> tuple[int, int]:
    """Rows in supabase_migrations.schema_migrations and dbsage.migration_log (0 when absent)."""
    counts = []
    for table in ("supabase_migrations.schema_migrations", "dbsage.migration_log"):
        present = db.scalar("select to_regclass(%s) is not null", (table,))
        counts.append(int(db.scalar(f"select count(*) from {table}")) if present else 0)
    return counts[0], counts[1]


def _write(project: Path, relative: str, text: str) -> Path:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _plans_table(db: SupaDb, project: Path) -> None:
    path = migration(project, "20250101000000_plans.sql", TABLE)
    assert apply(db, path, project).status == "applied"  # type: ignore[arg-type]


def _names(db: SupaDb) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("select name from public.plans order by id")]


def _snapshots(project: Path) -> list[str]:
    folder = project / "supabase" / "snapshots"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------- files that are not migrations


@pytest.mark.parametrize(("name", "reason"), [
    ("seed.sql", "does not start with version digits"),
    ("20250101000000.sql", "no _<name> part after the version 20250101000000"),
    ("2025-01-01_x.sql", "leading digits 2025 are not followed by _"),
    ("20250101000000_x.SQL", "does not end in .sql"),
])
def test_the_name_rule_says_why(name: str, reason: str) -> None:
    found = why_not_a_migration(Path(name))
    assert found is not None and reason in found
    assert why_not_a_migration(Path("20250101000000_x.sql")) is None
    assert why_not_a_migration(Path("0001_.sql")) is None  # the CLI's rule takes it


@pytest.mark.parametrize("command", ["apply", "dry-run"])
@pytest.mark.parametrize("relative", ["supabase/seed.sql",
                                      "supabase/migrations/20250101000000.sql"])
def test_a_file_that_is_not_a_migration_is_refused_before_anything_runs(
        supa_db: SupaDb, project: Path, command: str, relative: str) -> None:
    _write(project, relative, "create table public.sneaky (id int);\n")
    before = _history(supa_db)
    done = run_cli(command, relative, "--db", supa_db.url, *(["--mode", "yolo"]
                   if command == "apply" else []), cwd=project)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"the file is not a migration: {relative}: the Supabase CLI takes only" in out
    assert "^([0-9]+)_(.*)\\.sql$" in out  # the rule
    assert "<YYYYMMDDHHMMSS>_<name>.sql" in out and "dbsage seed" in out
    assert "--version V" in out
    assert _history(supa_db) == before == (0, 0)
    assert supa_db.scalar("select to_regclass('public.sneaky')") is None
    assert _snapshots(project) == []
    assert lock_is_free(supa_db)  # type: ignore[arg-type]


def test_version_applies_it_under_that_version(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    seed = _write(project, "supabase/seed.sql", "insert into public.plans (name) values "
                  "('Free'), ('Pro');\n")
    report = apply(supa_db, seed, project, version="20250102000000")  # type: ignore[arg-type]
    assert report.status == "applied", report.error
    assert report.version == "20250102000000"
    assert any("applied as version 20250102000000 (--version)" in w for w in report.warnings)
    with supa_db.connect() as conn:
        rows = conn.execute("select version, name from supabase_migrations.schema_migrations "
                            "order by version").fetchall()
        log = conn.execute("select version from dbsage.migration_log where event = 'apply' "
                           "order by version").fetchall()
    assert rows == [("20250101000000", "plans"), ("20250102000000", "seed")]
    assert log == [("20250101000000",), ("20250102000000",)]
    assert _names(supa_db) == ["Free", "Pro"]
    again = apply(supa_db, seed, project, version="20250102000000")  # type: ignore[arg-type]
    assert again.exit_code == 4  # already applied: the version is its identity now


def test_version_through_the_cli_and_its_validation(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('Free');\n")
    bad = run_cli("apply", "supabase/seed.sql", "--version", "2025-01-02", "--db", supa_db.url,
                  "--mode", "yolo", cwd=project)
    assert bad.returncode == 2 and "digits only" in bad.stderr
    dry = run_cli("dry-run", "supabase/seed.sql", "--version", "20250102000000", "--db",
                  supa_db.url, cwd=project)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    done = run_cli("apply", "supabase/seed.sql", "--version", "20250102000000", "--db",
                   supa_db.url, "--mode", "yolo", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert supa_db.scalar("select count(*) from supabase_migrations.schema_migrations "
                          "where version = '20250102000000'") == 1
    clash = run_cli("apply", "supabase/migrations/20250101000000_plans.sql", "--version",
                    "20990101000000", "--db", supa_db.url, "--mode", "yolo", cwd=project)
    assert clash.returncode == 2
    assert "is version 20250101000000 by its name" in clash.stdout + clash.stderr


# ----------------------------------------------------------------------------------- dbsage seed


def test_seed_inserts_the_rows_and_records_nothing(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "-- plans\ninsert into public.plans (name) values "
           "('Free'), ('Pro');\ninsert into public.plans (name) values ('Team');\n")
    history, snapshots = _history(supa_db), _snapshots(project)
    done = run_cli("seed", "--db", supa_db.url, "--yes", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Seed Data Loaded" in done.stdout
    assert "supabase/seed.sql: insert into public.plans" in done.stdout
    assert _names(supa_db) == ["Free", "Pro", "Team"]
    assert _history(supa_db) == history == (1, 1)  # the migration's rows only
    assert _snapshots(project) == snapshots  # a seed leaves no files either
    assert lock_is_free(supa_db)  # type: ignore[arg-type]


def test_seed_in_process_reports_statements_and_the_commit(supa_db: SupaDb,
                                                           project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('Free');\n"
           "update public.plans set name = 'Free tier' where name = 'Free';\n")
    outcome = execute(parse("*seed --yes --json"),
                      Session(db=supa_db.url, project_dir=project, interactive=False))
    report = outcome.report
    assert report is not None and outcome.ok, report and report.error
    assert (report.task, report.status, report.records_affected) == ("seed", "applied", 2)
    assert [s["status"] for s in report.statements] == ["ok", "ok"]
    assert [s["line"] for s in report.statements] == [1, 2]
    checks = {c["id"]: c["status"] for c in report.checks}
    assert checks == {"seed_files_parse": "pass", "connection_established": "pass",
                      "lock_available": "pass", "seed_committed": "pass"}
    assert '"task": "seed"' in outcome.text
    assert not report.files  # no snapshot, no decision log


def test_an_error_at_a_line_of_the_second_file_rolls_everything_back(
        supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/config.toml", '[db.seed]\nenabled = true\n'
           'sql_paths = ["./seeds/*.sql"]\n')
    _write(project, "supabase/seeds/01_plans.sql",
           "insert into public.plans (name) values ('Free');\n")
    _write(project, "supabase/seeds/02_more.sql",
           "insert into public.plans (name) values ('Pro');\n\n"
           "insert into public.plans (name) values ('Free');\n")  # duplicate: line 3
    done = run_cli("seed", "--db", supa_db.url, "--yes", "--json", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    import json

    report = json.loads(done.stdout)
    assert report["status"] == "failed"
    assert report["error"]["message"].startswith("supabase/seeds/02_more.sql:3 (statement 2 "
                                                 "of 2): duplicate key value")
    assert report["error"]["path"] == "supabase/seeds/02_more.sql"
    assert report["error"]["line"] == 3 and report["error"]["sqlstate"] == "23505"
    assert [s["status"] for s in report["statements"]] == ["ok", "ok", "failed"]
    assert _names(supa_db) == []  # the first file's row too
    assert _history(supa_db) == (1, 1)
    assert lock_is_free(supa_db)  # type: ignore[arg-type]


def test_sql_paths_globs_run_in_the_clis_order(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/config.toml",
           '[db.seed]\nsql_paths = ["./seeds/b_*.sql", "./seeds/*.sql", "./missing/*.sql", '
           '"seed.sql"]\n')
    for name in ("a_1", "b_2", "b_1"):
        _write(project, f"supabase/seeds/{name}.sql",
               f"insert into public.plans (name) values ('{name}');\n")
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('seed');\n")
    sources = find_seed_files(project)
    assert [str(p) for p in sources.paths] == [
        "supabase/seeds/b_1.sql", "supabase/seeds/b_2.sql", "supabase/seeds/a_1.sql",
        "supabase/seed.sql"]
    assert sources.unmatched == ("./missing/*.sql",)
    report = run_named("seed", RunOptions(mode="yolo", db=supa_db.url, project_dir=project))
    assert report.status == "applied", report.error
    assert _names(supa_db) == ["b_1", "b_2", "a_1", "seed"]
    assert any("no file matched ./missing/*.sql" in w for w in report.warnings)


def test_enabled_false_means_nothing_to_do(project: Path) -> None:
    _write(project, "supabase/config.toml", '[db.seed]\nenabled = false\n')
    _write(project, "supabase/seed.sql", "insert into nowhere values (1);\n")
    # an unreachable database: nothing may be attempted
    done = run_cli("seed", "--db", "postgresql://nobody@127.0.0.1:9/none", "--yes", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Seeding is disabled (supabase/config.toml:2: [db.seed] enabled = false)" in done.stdout
    with pytest.raises(ConfigError, match="Seeding is disabled"):
        load_seed(project)  # the task's own pre-condition says so too


def test_no_seed_file_and_a_bad_seed_file_are_refused(supa_db: SupaDb, project: Path) -> None:
    done = run_cli("seed", "--db", supa_db.url, "--yes", cwd=project)
    assert done.returncode == 2
    assert "No seed file to run: supabase/seed.sql" in done.stdout
    _write(project, "supabase/seed.sql", "insert into public.plans (name)\nvalus ('x');\n")
    bad = run_cli("seed", "--db", supa_db.url, "--yes", cwd=project)
    assert bad.returncode == 2 and "supabase/seed.sql:2:1: syntax error" in bad.stdout
    _write(project, "supabase/seed.sql", "create index concurrently i on public.plans (name);\n")
    with pytest.raises(TransactionShapeError, match="cannot run inside a transaction"):
        load_seed(project)
    _write(project, "supabase/config.toml", "[db.seed\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"config.toml:1:\d+: invalid TOML"):
        load_seed(project)


def test_interactive_seed_asks_first_and_no_stops_it(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('Free');\n")
    asker = ScriptedAsker({"confirm_database": "no"})
    outcome = execute(parse("*seed --mode interactive"),
                      Session(db=supa_db.url, project_dir=project, asker=asker))
    assert outcome.exit_code == 6
    assert [q.id for q in asker.asked] == ["confirm_database"]
    assert supa_db.name in asker.asked[0].text  # the target, resolved by then
    assert _names(supa_db) == []


def test_seed_waits_for_the_migration_lock_holder(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('Free');\n")
    with supa_db.connect() as other:
        other.execute("select pg_advisory_lock(hashtext('dbsage:migrate'))")
        done = run_cli("seed", "--db", supa_db.url, "--yes", cwd=project)
    assert done.returncode == 3, done.stdout + done.stderr
    assert _names(supa_db) == []


def test_a_lock_timeout_retries_the_whole_seed(supa_db: SupaDb, project: Path) -> None:
    _plans_table(supa_db, project)
    _write(project, "supabase/seed.sql", "insert into public.plans (name) values ('Free');\n")
    held = threading.Event()

    def hold() -> None:
        with supa_db.connect(autocommit=False) as conn:
            conn.execute("lock table public.plans in access exclusive mode")
            held.set()
            time.sleep(0.6)
            conn.rollback()

    blocker = threading.Thread(target=hold)
    blocker.start()
    held.wait(5)
    report = run_named("seed", RunOptions(mode="yolo", db=supa_db.url, project_dir=project,
                                          lock_timeout="100ms", lock_retry=fast_retry()))
    blocker.join()
    assert report.status == "applied", report.error
    assert report.attempts > 1
    assert any("lock_timeout 100ms fired" in w for w in report.warnings)
    assert _names(supa_db) == ["Free"]
