"""The before-snapshot started ahead of the lock (yolo), the after-snapshot taken in the
background, and pg_dump/psql command lines without passwords. Real servers, real pg_dump."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Db
from helpers import migration
from supabase_shaped import SupaDb

from dbsage.agent import resources
from dbsage.agent.runner import RunOptions, run_apply
from dbsage.tools.connection import connect, libpq_argv_env
from dbsage.tools.lock import acquire_lock
from dbsage.tools.snapshot import EarlySnapshot, dump_schema, start_dump, start_early_snapshot

SCHEMA = """
create table public.accounts (id bigint generated always as identity primary key, name text);
create index accounts_name_idx on public.accounts (name);
"""


def _yolo(db: Db, project: Path, **flags: bool) -> RunOptions:
    return RunOptions(mode="yolo", db=db.url, project_dir=project,
                      flags={"allow_destructive": True, **flags})


def _yolo_url(url: str, project: Path) -> RunOptions:
    return RunOptions(mode="yolo", db=url, project_dir=project,
                      flags={"allow_destructive": True})


def _step(report: Any, name: str) -> dict[str, Any]:
    return next(s for s in report.steps if s["step"] == name)


def test_yolo_keeps_the_early_snapshot_and_it_is_the_schema_before(db: Db, project: Path) -> None:
    db.execute(SCHEMA)
    expected, _ = dump_schema(db.url, db.server.major)
    path = migration(project, "20300101000000_notes.sql",
                     "create table public.notes (id int primary key, body text);\n")
    report = run_apply(path, _yolo(db, project))
    assert report.status == "applied", report.error
    assert "kept" in _step(report, "take_snapshot_before")["note"]
    before = (project / report.files["before"]).read_text()
    assert before == expected
    assert "public.notes" not in before
    assert "CREATE TABLE public.notes" in (project / report.files["after"]).read_text()
    assert "+CREATE TABLE public.notes" in (project / report.files["diff"]).read_text()
    snapshots = project / "supabase" / "snapshots"
    assert not [p.name for p in snapshots.iterdir() if p.name.startswith(".")]


def test_a_migration_committed_before_the_lock_makes_the_run_dump_again(
        db: Db, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another dbsage run commits between the early snapshot and this run's lock: the early
    snapshot misses its table, so it must not be kept."""
    db.execute(SCHEMA)
    other = migration(project, "20300101000000_other.sql", "create table public.other (id int);\n")
    mine = migration(project, "20300101000001_mine.sql", "create table public.mine (id int);\n")
    started = resources.start_early_snapshot

    def start_then_let_another_run_commit(ctx: resources.RunState,
                                          meanwhile: Callable[[], None] | None = None) -> None:
        started(ctx, meanwhile)
        assert ctx.early_snapshot is not None
        ctx.early_snapshot.wait_for_dump()  # the early dump predates the other migration
        monkeypatch.setattr(resources, "start_early_snapshot", started)
        assert run_apply(other, _yolo(db, project)).status == "applied"

    monkeypatch.setattr(resources, "start_early_snapshot", start_then_let_another_run_commit)
    report = run_apply(mine, _yolo(db, project))
    assert report.status == "applied", report.error
    assert "dumped again under the lock" in _step(report, "take_snapshot_before")["note"]
    before = (project / report.files["before"]).read_text()
    assert "CREATE TABLE public.other" in before
    assert "CREATE TABLE public.mine" not in before


def test_interactive_runs_take_the_snapshot_under_the_lock_only(db18: Db, project: Path) -> None:
    from dbsage.agent.modes import YesAsker

    path = migration(project, "20300101000000_t.sql", "create table public.t (id int);\n")
    opts = RunOptions(mode="interactive", db=db18.url, project_dir=project, asker=YesAsker(),
                      flags={"skip_dry_run": True})
    report = run_apply(path, opts)
    assert report.status == "applied", report.error
    assert "note" not in _step(report, "take_snapshot_before")


def test_adopt_compares_the_history_seen_by_the_exported_snapshot(db: Db, tmp_path: Path) -> None:
    db.execute(SCHEMA + "create schema dbsage; create table dbsage.migration_log "
               "(id bigserial primary key, ts text);")
    early = start_early_snapshot(db.url, tmp_path / "early.sql")
    assert isinstance(early, EarlySnapshot)
    with connect(db.url, autocommit=True) as conn:
        acquire_lock(conn)
        result = early.adopt(conn, tmp_path / "before.sql")
    assert result is not None
    assert result.path.read_text() == dump_schema(db.url, db.server.major)[0]
    assert early.exporter.poll() is not None  # the exporting session has ended
    assert not (tmp_path / "early.sql").exists()

    late = start_early_snapshot(db.url, tmp_path / "late.sql")
    assert late is not None
    late.wait_for_dump()
    db.execute("insert into dbsage.migration_log (ts) values ('x')")  # a run committed
    with connect(db.url, autocommit=True) as conn:
        assert late.adopt(conn, tmp_path / "late_before.sql") is None
    assert not (tmp_path / "late_before.sql").exists()
    assert not (tmp_path / "late.sql").exists()
    assert late.exporter.poll() is not None


def test_no_early_snapshot_when_nothing_answers(tmp_path: Path) -> None:
    url = f"postgresql://nobody@/postgres?host={tmp_path}&port=1"  # no server there
    assert start_early_snapshot(url, tmp_path / "x.sql", timeout_s=5) is None
    assert not (tmp_path / "x.sql").exists()


def test_passwords_go_to_the_environment_not_the_command_line(db18: Db, tmp_path: Path) -> None:
    url = db18.url.replace("postgres@", "postgres:Sekr3t%21@")  # trust auth ignores it
    argv_url, env = libpq_argv_env(url, {})
    assert "Sekr3t" not in argv_url
    assert env["PGPASSWORD"] == "Sekr3t!"
    running = start_dump(url, tmp_path / "d.sql", db18.server.major)
    assert not any("Sekr3t" in str(a) for a in running.proc.args)  # type: ignore[union-attr]
    result = running.finish(tmp_path / "snap.sql")
    assert "PostgreSQL database dump" in result.path.read_text()
    assert not (tmp_path / "d.sql").exists()


def test_a_failed_after_snapshot_is_reported_and_the_lock_still_released(
        db18: Db, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The after-dump runs in the background: its failure must still reach the report."""
    real = tmp_path / "real_pg_dump"
    from dbsage.tools.snapshot import find_pg_dump

    real.symlink_to(find_pg_dump(18).path)
    fake = tmp_path / "pg_dump"
    counter = tmp_path / "calls"
    # pg_dump that works for the version probe and the first dump, then fails.
    fake.write_text(f"""#!/bin/sh
case "$1" in --version) exec {real} --version;; esac
n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}
[ "$n" -ge 1 ] && {{ echo "pg_dump: error: disk full" >&2; exit 1; }}
exec {real} "$@"
""")
    fake.chmod(0o755)
    monkeypatch.setenv("DBSAGE_PG_DUMP", str(fake))
    path = migration(project, "20300101000000_t.sql", "create table public.t (id int);\n")
    report = run_apply(path, _yolo(db18, project, skip_dry_run=True))
    assert report.status == "applied"
    assert any("committed, but" in w and "disk full" in w for w in report.warnings)
    assert "after" not in report.files
    with db18.connect() as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(hashtext('dbsage:migrate'))"
                            ).fetchone() == (True,)
    snapshots = project / "supabase" / "snapshots"
    assert not [p.name for p in snapshots.iterdir() if p.name.startswith(".")]


def test_no_early_snapshot_while_another_migration_holds_the_lock(db18: Db, tmp_path: Path
                                                                  ) -> None:
    """Its statements must not queue behind this run's pg_dump; this run stops at the lock."""
    with connect(db18.url, autocommit=True) as other:
        acquire_lock(other)
        assert start_early_snapshot(db18.url, tmp_path / "x.sql") is None
    assert not (tmp_path / "x.sql").exists()
    early = start_early_snapshot(db18.url, tmp_path / "y.sql")  # lock free again
    assert early is not None
    early.discard()
    assert not (tmp_path / "y.sql").exists()


@pytest.mark.parametrize("sql", [
    "alter table public.accounts add column note text;\n",  # ACCESS EXCLUSIVE
    "do $$ begin perform 1; end $$;\n",  # locks unseen by the analysis
    "create table public.other (id int);\n",
])
def test_yolo_never_waits_for_the_early_dump(db18: Db, project: Path,
                                             monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    """yolo runs no separate dry-run (the apply runs every statement once), so nothing of it
    can queue behind the early pg_dump's ACCESS SHARE locks, and the dump is kept."""
    db18.execute(SCHEMA)
    calls: list[str] = []
    wait = EarlySnapshot.wait_for_dump

    def recorded(self: EarlySnapshot) -> None:
        calls.append("wait")
        wait(self)

    monkeypatch.setattr(EarlySnapshot, "wait_for_dump", recorded)
    report = run_apply(migration(project, "20300101000000_m.sql", sql), _yolo(db18, project))
    assert report.status == "applied", report.error
    assert calls == []
    assert "kept" in _step(report, "take_snapshot_before")["note"]


# --- the migration runs while the before-snapshot is still being written ----------------------

def _history_before(url: str, version: str) -> str | None:
    with connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT snapshot_before FROM dbsage.migration_log WHERE version = %s",
                           (version,)).fetchone()
    return row[0] if row else None


def test_a_migration_pg_dump_does_not_block_runs_while_the_snapshot_is_written(
        supa_db: SupaDb, project: Path) -> None:
    """CREATE TABLE and CREATE INDEX take no lock pg_dump's ACCESS SHARE blocks: the run does
    not wait for the early dump before its statements, only before its commit, and the
    before-snapshot is still exactly the schema before (as the non-superuser postgres)."""
    supa_db.execute(SCHEMA)
    expected, _ = dump_schema(supa_db.url, supa_db.server.major)
    path = migration(project, "20300101000000_notes.sql",
                     "create table public.notes (id int primary key, body text);\n"
                     "alter table public.notes enable row level security;\n"
                     "create index accounts_name2_idx on public.accounts (name, id);\n")
    report = run_apply(path, _yolo_url(supa_db.url, project))
    assert report.status == "applied", report.error
    assert "ends while the migration runs" in _step(report, "take_snapshot_before")["note"]
    before = (project / report.files["before"]).read_text()
    assert before == expected
    assert "accounts_name2_idx" not in before and "public.notes" not in before
    assert _history_before(supa_db.url, "20300101000000") == report.files["before"]
    snapshots = project / "supabase" / "snapshots"
    assert not [p.name for p in snapshots.iterdir() if p.name.startswith(".")]


def test_a_migration_that_takes_access_exclusive_waits_for_the_dump_first(
        db: Db, project: Path) -> None:
    db.execute(SCHEMA)
    path = migration(project, "20300101000000_col.sql",
                     "alter table public.accounts add column note text;\n")
    report = run_apply(path, _yolo(db, project))
    assert report.status == "applied", report.error
    note = _step(report, "take_snapshot_before")["note"]
    assert "kept" in note and "while the migration runs" not in note
    assert "note text" not in (project / report.files["before"]).read_text()


def test_a_failed_migration_still_keeps_its_before_snapshot(db: Db, project: Path) -> None:
    db.execute(SCHEMA)
    path = migration(project, "20300101000000_bad.sql",
                     "create table public.t (id int);\nselect 1/0;\n")
    report = run_apply(path, _yolo(db, project))
    assert report.status != "applied"
    assert db.scalar("select to_regclass('public.t')") is None
    before = project / report.files["before"]
    assert before.exists() and "CREATE TABLE public.accounts" in before.read_text()


def test_the_commit_never_waits_for_a_dump_its_own_locks_block(db: Db, tmp_path: Path) -> None:
    """What analysis cannot see (a trigger, a function) may take ACCESS EXCLUSIVE after all;
    pg_dump then waits for the migration's transaction, which waits for pg_dump: that is
    noticed and ends in a SnapshotError instead of a hang."""
    from dbsage.tools.errors import SnapshotError

    db.execute(SCHEMA)
    conn = connect(db.url, autocommit=True)
    try:
        with (pytest.raises(SnapshotError, match="waits for a lock the migration took"),
              conn.transaction()):
            conn.execute("LOCK TABLE public.accounts IN ACCESS EXCLUSIVE MODE")
            early = start_early_snapshot(db.url, tmp_path / "early.sql")
            assert early is not None
            early.finish_while(conn, tmp_path / "before.sql")  # raises instead of waiting
        assert not (tmp_path / "before.sql").exists() and not (tmp_path / "early.sql").exists()
        assert early.dump.done and early.exporter.poll() is not None
    finally:
        conn.close()


@pytest.mark.parametrize("sql", [
    "alter view public.v set (security_invoker = true);",
    "alter table public.v set (security_invoker = true);",  # ALTER TABLE works on a view too
    "create or replace view public.v as select id, name from public.accounts;",
])
def test_a_view_change_waits_for_the_dump_first(db: Db, project: Path, sql: str) -> None:
    """A view's ALTER takes ACCESS EXCLUSIVE where the same ALTER on a table would not, and
    pg_dump reads every view's definition under ACCESS SHARE: the run waits for the dump (it
    failed with the self-deadlock guard's error before the relation kinds were checked)."""
    db.execute(SCHEMA + "create view public.v as select id from public.accounts;\n")
    path = migration(project, "20300101000000_v.sql", sql + "\n")
    report = run_apply(path, _yolo(db, project))
    assert report.status == "applied", report.error
    note = _step(report, "take_snapshot_before")["note"]
    assert "kept" in note and "while the migration runs" not in note


def test_the_wait_for_the_dump_wakes_when_it_ends_and_not_before(tmp_path: Path) -> None:
    """finish_while waits for pg_dump in slices (checking for a lock wait in between): a slice
    ends with False while the child runs, with True (and the child reaped) once it exited."""
    import subprocess
    import sys

    from dbsage.tools.snapshot import _exited_within

    flag = tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n")])
    try:
        assert _exited_within(child, 0.05) is False
        assert child.returncode is None
        flag.touch()
        assert _exited_within(child, 60) is True
        assert child.returncode == 0
        assert _exited_within(child, 60) is True  # and again, once reaped
    finally:
        child.kill()
        child.wait()
