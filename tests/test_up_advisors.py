"""The advisor gate inside `dbsage up` (issues 12 and 14): apply's per-file guarantee holds in
a batch. In yolo a file that introduces an ERROR-level lint is refused in its own transaction
(the files before it stay committed) unless --force, which is logged; in interactive mode the
lints the files introduce are part of the one batch question, and a yes accepts them.

On the Supabase-shaped database as its non-superuser postgres, 18 and 15.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import migration, run_cli
from supabase_shaped import SupaDb

from dbsage.agent.commands import Session, execute, parse
from dbsage.agent.modes import ScriptedAsker

SAFE_A = "20250101000000_a.sql"
RISKY_B = "20250102000000_b.sql"
SAFE_C = "20250103000000_c.sql"
A_SQL = ("create table public.a (id bigint primary key);\n"
         "alter table public.a enable row level security;\n")
B_SQL = "create table public.b (id bigint primary key);\n"  # rls_disabled_in_public: ERROR
C_SQL = ("create table public.c (id bigint primary key);\n"
         "alter table public.c enable row level security;\n")


def _files(project: Path) -> None:
    migration(project, SAFE_A, A_SQL)
    migration(project, RISKY_B, B_SQL)
    migration(project, SAFE_C, C_SQL)


def _versions(db: SupaDb) -> list[str]:
    if db.scalar("select to_regclass('supabase_migrations.schema_migrations')") is None:
        return []
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            "select version from supabase_migrations.schema_migrations order by 1")]


def _exists(db: SupaDb, name: str) -> bool:
    return db.scalar("select to_regclass(%s) is not null", (name,)) is True


def test_yolo_up_refuses_the_file_that_introduces_an_error_lint(supa_db: SupaDb,
                                                                project: Path) -> None:
    _files(project)
    refused = run_cli("up", "--mode", "yolo", "--json", "--db", supa_db.url, cwd=project)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    report = json.loads(refused.stdout)
    assert [f["status"] for f in report["batch"]] == ["applied", "failed", "not_run"]
    message = report["error"]["message"]
    assert (f"introduces ERROR-level advisor lint(s): {RISKY_B}: rls_disabled_in_public on "
            "public.b") in message
    assert f"Committed before it (they stay applied): {SAFE_A}" in message
    assert "--force" in report["error"]["hint"]
    # the file before it committed, the refused one rolled back, the one after never ran
    assert _versions(supa_db) == ["20250101000000"]
    assert _exists(supa_db, "public.a") and not _exists(supa_db, "public.b")
    assert not _exists(supa_db, "public.c")

    forced = run_cli("up", "--mode", "yolo", "--force", "--json", "--db", supa_db.url,
                     cwd=project)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    done = json.loads(forced.stdout)
    assert _versions(supa_db) == ["20250101000000", "20250102000000", "20250103000000"]
    gate = [d for d in done["decisions"] if d["point"] == "advisor_errors"]
    assert len(gate) == 1 and gate[0]["answer"] == "yes"  # only the risky file, logged
    assert "allowed by --force" in gate[0]["why"] and RISKY_B in gate[0]["why"]
    assert any("Applied although it introduces ERROR-level lint(s)" in w
               for w in done["warnings"])


def test_atomic_up_refuses_the_whole_batch(supa_db: SupaDb, project: Path) -> None:
    _files(project)
    refused = run_cli("up", "--mode", "yolo", "--atomic", "--db", supa_db.url, cwd=project)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "rls_disabled_in_public on public.b" in refused.stdout
    assert _versions(supa_db) == [] and not _exists(supa_db, "public.a")


def test_yolo_up_of_clean_files_is_not_stopped(supa_db: SupaDb, project: Path) -> None:
    migration(project, SAFE_A, A_SQL)
    migration(project, SAFE_C, C_SQL)
    done = run_cli("up", "--mode", "yolo", "--json", "--db", supa_db.url, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert not [d for d in report["decisions"] if d["point"] == "advisor_errors"]
    assert _versions(supa_db) == ["20250101000000", "20250103000000"]


ANSWERS = {"confirm_database": "yes", "dry_run_done": "yes", "snapshot_notice": "yes",
           "post_migration_menu": "3"}


def test_interactive_up_lists_the_lints_in_its_one_question(supa_db: SupaDb,
                                                            project: Path) -> None:
    _files(project)
    no = ScriptedAsker({**ANSWERS, "confirm_batch": "no"})
    stopped = execute(parse("*up"), Session(db=supa_db.url, project_dir=project, asker=no))
    assert not stopped.ok and stopped.exit_code == 6
    asked = [q.id for q in no.asked]
    assert asked.count("confirm_batch") == 1 and "advisor_errors" not in asked
    detail = next(q for q in no.asked if q.id == "confirm_batch").detail
    assert f"{RISKY_B}: rls_disabled_in_public on public.b" in detail
    assert "enable row level security" in detail  # with its fix
    assert SAFE_A not in detail.split("ERROR-level advisor lints")[1]  # only the risky file
    assert _versions(supa_db) == [] and not _exists(supa_db, "public.a")  # the dry-run rolled back

    yes = ScriptedAsker({**ANSWERS, "confirm_batch": "yes"})
    applied = execute(parse("*up"), Session(db=supa_db.url, project_dir=project, asker=yes))
    assert applied.ok, applied.report and applied.report.error
    asked = [q.id for q in yes.asked]
    assert asked.count("confirm_batch") == 1 and "advisor_errors" not in asked
    # (the first run's dry-run of the batch passed and is on record: no dry_run_done question)
    assert "dry_run_done" not in asked
    gate = [d for d in applied.report.decisions if d["point"] == "advisor_errors"]
    assert gate == []  # accepted with the batch: nothing refused, nothing asked again
    assert _versions(supa_db) == ["20250101000000", "20250102000000", "20250103000000"]
