"""A second run is refused while the first holds the lock: two real `dbsage` processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import Db
from helpers import DBSAGE, lock_is_free, migration, run_cli


def _lock_holder_app(db: Db) -> str | None:
    with db.connect() as conn:
        row = conn.execute(
            "select a.application_name from pg_locks l join pg_stat_activity a using (pid) "
            "where l.locktype = 'advisory' and l.granted and "
            "((l.classid::bigint << 32) | l.objid::bigint) = hashtext('dbsage:migrate')"
        ).fetchone()
    return row[0] if row else None


def test_second_run_is_refused_while_the_first_holds_the_lock(db: Db, project: Path) -> None:
    slow = migration(project, "20250101000000_slow.sql",
                     "create table slow (id int);\nselect pg_sleep(4);\n")
    other = migration(project, "20250101000001_other.sql", "create table other (id int);\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_DB_URL", "DATABASE_URL")}
    first = subprocess.Popen([DBSAGE, "apply", str(slow), "--mode", "yolo", "--db", db.url],
                             cwd=project, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while _lock_holder_app(db) is None:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "first run never took the lock"
            time.sleep(0.05)
        assert _lock_holder_app(db) == "dbsage"

        second = run_cli("apply", str(other), "--mode", "yolo", "--db", db.url, cwd=project)
        assert second.returncode == 3, second.stdout + second.stderr
        assert "Another migration is running" in second.stdout
        assert "application_name dbsage" in second.stdout
        assert f"pid {first.pid}" not in second.stdout  # server pid, not the client's
        assert "since" in second.stdout
        assert db.scalar("select to_regclass('public.other')") is None
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert db.scalar("select to_regclass('public.slow') is not null") is True
    assert lock_is_free(db)
    # Once the first run is done, the second one goes through.
    third = run_cli("apply", str(other), "--mode", "yolo", "--db", db.url, cwd=project)
    assert third.returncode == 0, third.stdout + third.stderr


def test_busy_lock_report_names_the_holder(db18: Db, project: Path) -> None:
    """The original `grep -q t` passed whatever the lock said (defect 1); dbsage reads the
    boolean and names who holds it."""
    path = migration(project, "20250101000000_x.sql", "create table x (id int);")
    with db18.connect() as holder:
        holder.execute("set application_name = 'psql-by-hand'")
        holder.execute("select pg_advisory_lock(hashtext('dbsage:migrate'))")
        pid = holder.info.backend_pid
        result = run_cli("apply", str(path), "--mode", "yolo", "--db", db18.url, "--json",
                         cwd=project)
    assert result.returncode == 3
    import json

    report = json.loads(result.stdout)
    assert report["status"] == "refused"
    assert report["error"]["holder_pid"] == pid
    assert report["error"]["holder_application_name"] == "psql-by-hand"
    assert report["error"]["holder_since"]
    assert db18.scalar("select to_regclass('public.x')") is None
    assert not list((project / "supabase").glob("snapshots/*_after.sql"))


def test_one_lock_predicate_for_the_holder_the_own_session_and_psql(db18: Db) -> None:
    """tools.lock's predicate, as find_lock_holder, holds_lock and the early snapshot's count
    use it, sees the lock whichever session holds it, and only that key."""
    from dbsage.tools.lock import (
        acquire_lock,
        find_lock_holder,
        holder_count_sql,
        holds_lock,
        release_lock,
    )

    with db18.connect() as mine, db18.connect() as other:
        assert not holds_lock(mine) and find_lock_holder(other) is None
        acquire_lock(mine)
        other.execute("select pg_advisory_lock(hashtext('dbsage:other'))")
        assert holds_lock(mine) and not holds_lock(other)
        holder = find_lock_holder(other)
        assert holder is not None and holder.pid == mine.info.backend_pid
        assert find_lock_holder(mine) is None  # its own lock is not "another migration"
        assert other.execute(f"select {holder_count_sql()}").fetchone() == (1,)  # type: ignore[arg-type]
        assert other.execute(f"select {holder_count_sql('dbsage:other')}").fetchone() == (1,)  # type: ignore[arg-type]
        release_lock(mine)
        assert not holds_lock(mine)
        assert other.execute(f"select {holder_count_sql()}").fetchone() == (0,)  # type: ignore[arg-type]


def test_the_default_lock_timeout_is_below_the_deadlock_timeout(db18: Db, tmp_path: Path) -> None:
    """In a deadlock between the migration and an application transaction, the side whose
    lock wait ends first yields: with lock_timeout at half of deadlock_timeout it is always the
    migration (which retries), never the application."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.resources import ensure_connected
    from dbsage.agent.runner import RunOptions, new_state

    for deadlock, expected in (("1s", "500ms"), ("300ms", "150ms"), ("10s", "1000ms")):
        db18.execute(f"alter database \"{db18.name}\" set deadlock_timeout = '{deadlock}'")
        state = new_state("dry-run", RunOptions(mode="yolo", db=db18.url, project_dir=tmp_path,
                                                asker=YesAsker()), path="x.sql")
        try:
            ensure_connected(state)
            assert state.options.lock_timeout == expected
        finally:
            assert state.conn is not None
            state.conn.close()
    state = new_state("dry-run", RunOptions(mode="yolo", db=db18.url, lock_timeout="0",
                                            project_dir=tmp_path, asker=YesAsker()), path="x.sql")
    ensure_connected(state)
    assert state.conn is not None
    state.conn.close()
    assert state.options.lock_timeout == "0" and "lock_timeout is off" in state.warnings[0]
