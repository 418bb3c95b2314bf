"""`dbsage rollback` end to end: the acceptance example of issue 4 through the whole pipeline,
addressing (VERSION, TS, latest, --to) and the order rule."""

from __future__ import annotations

from pathlib import Path

from conftest import Db
from helpers import apply, lock_is_free, migration, run_cli

from dbsage.agent.modes import ScriptedAsker
from dbsage.agent.runner import RunOptions, run_rollback_task
from dbsage.tools.snapshot import dump_schema

DROP_NICKNAME = """alter table public.profiles drop column nickname;
create table public.badges (id int primary key, profile_id int references public.profiles (id));
"""


def _profiles(db: Db) -> None:
    db.execute("create table public.profiles (id int primary key, username text not null, "
               "nickname text); insert into public.profiles select g, 'user' || g, 'nick' || g "
               "from generate_series(1, 100) g")


def _nicknames(db: Db) -> dict[int, str]:
    with db.connect() as conn:
        return dict(conn.execute("select id, nickname from public.profiles").fetchall())


def rollback(db: Db, project: Path, ts: str, mode: str = "yolo", to: str | None = None,  # type: ignore[no-untyped-def]
             **flags: bool):
    asker = ScriptedAsker({"confirm_database": "yes", "confirm_rollback": "yes",
                           "override_no_data_loss": "yes"})
    opts = RunOptions(mode=mode, db=db.url, project_dir=project, asker=asker, flags=dict(flags))
    return run_rollback_task(ts, opts, to=to), asker


def test_rollback_restores_the_dropped_column_and_drops_the_new_table(db: Db,
                                                                      project: Path) -> None:
    _profiles(db)
    before_values = _nicknames(db)
    path = migration(project, "20250101000000_drop_nickname.sql", DROP_NICKNAME)
    applied = apply(db, path, project)
    assert applied.status == "applied", applied.error
    ts = applied.ts
    assert applied.files["rollback"] == f"supabase/rollback/{ts}_rollback.sql"
    assert applied.files["data"] == f"supabase/snapshots/{ts}_data"
    before_snapshot = (project / applied.files["before"]).read_text()

    report, _ = rollback(db, project, str(ts), allow_data_loss=True)
    assert report.status == "rolled_back", report.error
    assert report.exit_code == 0
    assert _nicknames(db) == before_values and len(before_values) == 100
    assert db.scalar("select to_regclass('public.badges')") is None
    assert dump_schema(db.url, db.server.major)[0] == before_snapshot
    assert db.scalar("select count(*) from supabase_migrations.schema_migrations") == 0
    with db.connect() as conn:
        events = conn.execute("select event, version from dbsage.migration_log order by id"
                              ).fetchall()
    assert events == [("apply", "20250101000000"), ("rollback", "20250101000000")]
    assert lock_is_free(db)
    # The rollback went through the same pipeline: its own snapshots and checks.
    assert report.files["before"].endswith("_before.sql") and report.ts != ts
    assert {c["id"] for c in report.checks} >= {"rollback_recorded", "no_data_loss"}


def test_yolo_refuses_a_rollback_that_loses_rows_without_the_flag(db18: Db,
                                                                  project: Path) -> None:
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);")
    applied = apply(db18, path, project)
    db18.execute("insert into public.t select generate_series(1, 12)")
    report, _ = rollback(db18, project, str(applied.ts))
    assert report.status == "refused"
    assert "public.t" in report.error["message"] and "12" in report.error["message"]
    assert db18.scalar("select count(*) from public.t") == 12
    assert lock_is_free(db18)
    # Interactive mode asks, with the counts, instead.
    report2, asker = rollback(db18, project, "latest", mode="interactive")
    assert report2.status == "rolled_back", report2.error
    override = next(q for q in asker.asked if q.id == "override_no_data_loss")
    assert "12" in override.detail  # what is at stake, shown in full
    assert db18.scalar("select to_regclass('public.t')") is None


def test_the_users_own_rollback_script_wins(db18: Db, project: Path) -> None:
    ts_file = project / "supabase" / "rollback"
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);")
    applied = apply(db18, path, project)
    mine = ts_file / f"{applied.ts}_rollback.sql"
    assert mine.exists()
    mine.write_text("drop table public.t;\ncreate table public.kept_by_user (id int);\n")
    report, _ = rollback(db18, project, str(applied.ts))
    assert report.status == "rolled_back", report.error
    assert db18.scalar("select to_regclass('public.kept_by_user') is not null") is True


def test_path_like_ts_is_refused_and_changes_nothing(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);")
    apply(db18, path, project)
    for bad in ("../../etc/passwd", "/tmp/x", "2025", "20250101000000.sql"):
        out = run_cli("rollback", bad, "--mode", "yolo", "--db", db18.url, cwd=project)
        assert out.returncode == 2, (bad, out.stdout)
    assert db18.scalar("select to_regclass('public.t') is not null") is True


def test_the_plan_is_kept_at_apply_time_and_only_the_newest_run_is_undone(
        db18: Db, project: Path) -> None:
    """Apply writes the plan (script and JSON) and keeps it in the database; `rollback` of an
    older run is refused while a later one is applied; --to undoes every later run."""
    first = migration(project, "20250101000000_a.sql", "create table public.a (id int);")
    second = migration(project, "20250102000000_b.sql", "create table public.b (id int);")
    ra = apply(db18, first, project, flags={"rollback_script": False})
    script = project / "supabase" / "rollback" / f"{ra.ts}_rollback.sql"
    assert ra.files["rollback"] == f"supabase/rollback/{ra.ts}_rollback.sql"
    assert "DROP TABLE public.a" in script.read_text()
    assert any("dbsage rollback 20250101000000" in n for n in ra.notices)
    rb = apply(db18, second, project)

    files = sorted(p.name for p in (project / "supabase").rglob("*"))
    plan = run_cli("rollback", "20250102000000", "--prepare-only", "--db", db18.url,
                   cwd=project)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "DROP TABLE public.b" in plan.stdout
    assert sorted(p.name for p in (project / "supabase").rglob("*")) == files  # writes nothing
    assert db18.scalar("select to_regclass('public.b') is not null") is True  # nothing ran

    older, _ = rollback(db18, project, "20250101000000")
    assert older.status == "refused" and older.exit_code == 6
    assert "20250102000000" in older.error["message"] and "--to" in older.error["hint"]
    assert db18.scalar("select to_regclass('public.a') is not null") is True

    report, _ = rollback(db18, project, "", to="20250101000000")
    assert report.status == "rolled_back", report.error
    assert db18.scalar("select to_regclass('public.b')") is None
    assert db18.scalar("select to_regclass('public.a') is not null") is True
    report, _ = rollback(db18, project, str(ra.ts))
    assert report.status == "rolled_back", report.error
    assert db18.scalar("select to_regclass('public.a')") is None
    del rb


def test_cancelling_leaves_no_file(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);")
    apply(db18, path, project)
    files = sorted(p.name for p in (project / "supabase").rglob("*"))
    asker = ScriptedAsker({"confirm_database": "yes", "confirm_rollback": "no"})
    opts = RunOptions(mode="interactive", db=db18.url, project_dir=project, asker=asker)
    report = run_rollback_task("latest", opts)
    assert report.status == "refused" and report.exit_code == 6
    assert sorted(p.name for p in (project / "supabase").rglob("*")) == files
    assert db18.scalar("select to_regclass('public.t') is not null") is True
    assert lock_is_free(db18)
