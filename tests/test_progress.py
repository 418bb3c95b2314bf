"""Live progress on stderr (issue 15): on a terminal, a status line per step and, during a
lock wait, what the migration waits for and who blocks it; nothing of it when stderr is not
a terminal or with --json (and then no second connection either)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pexpect
import psycopg
from conftest import Db
from helpers import DBSAGE, migration
from supabase_shaped import SupaDb

ALTER = "alter table public.orders add column note text;\n"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SUPABASE_DB_URL", "DATABASE_URL")}


def _blocker(db: Db | SupaDb, url: str | None = None) -> tuple[psycopg.Connection, int]:
    """A session of application `api`, idle in a transaction that read public.orders (so it
    holds ACCESS SHARE on it until it ends)."""
    conn = psycopg.connect(url or db.url, application_name="api")
    conn.execute("select * from public.orders")
    return conn, conn.info.backend_pid


def _table(db: Db | SupaDb, project: Path) -> Path:
    db.execute("create table public.orders (id bigint primary key)")
    (project / ".git").mkdir()  # a work tree: the first run adds to .gitignore (a notice)
    (project / ".gitignore").write_text("node_modules/\n")
    return migration(project, "20250101000000_note.sql", ALTER).relative_to(project)


def _dbsage_backends(db: Db) -> int:
    return int(db.scalar("select count(*) from pg_stat_activity where datname = %s and "
                         "application_name = 'dbsage'", (db.name,)))


def _dbsage_waits(db: Db) -> bool:
    return bool(db.scalar("select count(*) from pg_locks l join pg_stat_activity a using (pid) "
                          "where not l.granted and a.application_name = 'dbsage' and "
                          "a.datname = %s", (db.name,)))


def test_a_lock_wait_shows_the_blocker_live_on_a_terminal(db: Db, project: Path) -> None:
    path = _table(db, project)
    blocker, pid = _blocker(db)
    child = pexpect.spawn(DBSAGE, ["apply", str(path), "--mode", "yolo", "--db", db.url,
                                   "--lock-timeout", "200ms"], cwd=str(project), env=_env(),
                          dimensions=(24, 250), encoding="utf-8", timeout=90)
    child.logfile_read = seen_all = io.StringIO()  # the whole screen, as it was drawn
    try:
        child.expect(r"waiting for ACCESS EXCLUSIVE on public\.orders \(attempt (\d+)/(\d+)\), "
                     r"blocked by pid (\d+) \(idle in transaction [0-9.]+ (s|min), app api\): "
                     r"select \* from public\.orders")
        attempt, attempts, seen = (int(child.match.group(i)) for i in (1, 2, 3))
        assert seen == pid and 2 <= attempt <= attempts
        blocker.rollback()  # the blocker ends: the next attempt gets its lock
        child.expect(pexpect.EOF)
    finally:
        blocker.close()
        child.close()
    screen = seen_all.getvalue()
    assert child.exitstatus == 0, screen
    assert "✅ Migration Applied Successfully" in screen
    # the notice came when it happened (before the last steps' status lines), once
    notice = screen.index("Added .dbsage/, supabase/snapshots/*_data/ to .gitignore")
    assert notice < screen.rindex("Release the migration advisory lock")
    assert screen.count("Added .dbsage/") == 1
    # the status lines are erased: the report is not interleaved with them
    report = screen[screen.index("✅ Migration Applied Successfully"):]
    assert "waiting for" not in report


def _run_while_blocked(db: Db, project: Path, args: list[str], *, stderr_tty: bool
                       ) -> tuple[subprocess.CompletedProcess[str], str, int]:
    """Run dbsage (stdout a pipe) while `api` blocks it for ~2 s; (the result, what reached
    stderr, the most dbsage sessions seen at once while it waited)."""
    path = _table(db, project)
    blocker, _ = _blocker(db)
    most = [0]
    done = threading.Event()

    def watch() -> None:
        waiting_since = None
        while not done.is_set():
            if waiting_since is None and _dbsage_waits(db):
                waiting_since = time.monotonic()
            if waiting_since and blocker.info.transaction_status:  # while it waits
                most[0] = max(most[0], _dbsage_backends(db))
            if waiting_since and time.monotonic() - waiting_since > 1.5 and \
                    blocker.info.transaction_status:
                blocker.rollback()  # it has waited (and retried): let it through
            time.sleep(0.05)

    master = slave = None
    if stderr_tty:
        master, slave = os.openpty()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        proc = subprocess.run([DBSAGE, "apply", str(path), "--mode", "yolo", "--db", db.url,
                               "--lock-timeout", "200ms", *args], cwd=project, env=_env(),
                              stdout=subprocess.PIPE, text=True, timeout=90,
                              stderr=slave if slave is not None else subprocess.PIPE,
                              stdin=slave if slave is not None else subprocess.DEVNULL)
    finally:
        done.set()
        watcher.join()
        blocker.close()
    err = proc.stderr or ""
    if master is not None and slave is not None:
        os.close(slave)
        chunks = []
        os.set_blocking(master, False)
        try:
            while chunk := os.read(master, 65536):
                chunks.append(chunk)
        except (BlockingIOError, OSError):
            pass
        os.close(master)
        err = b"".join(chunks).decode(errors="replace")
    return proc, err, most[0]


def test_no_progress_when_stderr_is_not_a_terminal(db18: Db, project: Path) -> None:
    proc, err, most = _run_while_blocked(db18, project, [], stderr_tty=False)
    assert proc.returncode == 0, proc.stdout + err
    assert re.search(r"attempt [2-9]\d* succeeded|attempts [2-9]", proc.stdout), proc.stdout
    assert "waiting for" not in err + proc.stdout
    assert "\x1b" not in err and "⠋" not in err  # no live line, no cursor movement
    assert err.count("Added .dbsage/, supabase/snapshots/*_data/ to .gitignore") == 1
    assert most == 1  # the run's own session only: no watcher connection


def test_json_on_a_terminal_prints_no_progress(db18: Db, project: Path) -> None:
    proc, err, most = _run_while_blocked(db18, project, ["--json"], stderr_tty=True)
    assert proc.returncode == 0, proc.stdout + err
    report = json.loads(proc.stdout)
    assert report["status"] == "applied" and report["attempts"] > 1
    assert "waiting for" not in err and "⠋" not in err, err
    assert most == 1


def _screen(args: list[str], project: Path) -> tuple[int | None, str]:
    child = pexpect.spawn(DBSAGE, args, cwd=str(project), env=_env(), dimensions=(24, 200),
                          encoding="utf-8", timeout=90)
    child.logfile_read = log = io.StringIO()
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    return child.exitstatus, log.getvalue()


def test_a_long_statement_and_a_batch_show_what_runs_with_elapsed_time(db18: Db,
                                                                      project: Path) -> None:
    long = migration(project, "20250101000000_slow.sql",
                     "create table public.a (id bigint primary key);\n"
                     "select pg_sleep(1.5);\n").relative_to(project)
    code, screen = _screen(["apply", str(long), "--mode", "yolo", "--db", db18.url], project)
    assert code == 0, screen
    # statement 2 named while it runs, its elapsed time counting up past a second
    assert re.search(r"statement 2 of 2, line 2: select pg_sleep\(1\.5\)  \[1\.\d s\]", screen)

    for name in ("20250102000000_b.sql", "20250103000000_c.sql"):
        migration(project, name, "select pg_sleep(0.8);\n")
    code, screen = _screen(["up", "--mode", "yolo", "--db", db18.url], project)
    assert code == 0, screen
    assert "file 1 of 2: 20250102000000_b.sql" in screen
    assert "file 2 of 2: 20250103000000_c.sql" in screen


def test_as_supabase_s_owner_role_the_blocker_of_another_role_is_named(
        supa_db18: SupaDb, project: Path) -> None:
    """dbsage connects as the non-superuser owner (postgres, as on the platform); the blocker
    is another role's session: its pid is always named, and whatever of it this role may not
    see is left out rather than shown wrong."""
    path = _table(supa_db18, project)
    blocker, pid = _blocker(supa_db18, supa_db18.admin_url)
    child = pexpect.spawn(DBSAGE, ["apply", str(path), "--mode", "yolo", "--db", supa_db18.url,
                                   "--lock-timeout", "200ms"], cwd=str(project), env=_env(),
                          dimensions=(24, 250), encoding="utf-8", timeout=90)
    try:
        child.expect(r"waiting for ACCESS EXCLUSIVE on public\.orders \(attempt \d+/\d+\), "
                     r"blocked by pid (\d+)([^\x1b]*)")
        assert int(child.match.group(1)) == pid
        rest = child.match.group(2)
        assert "None" not in rest and "insufficient" not in rest, rest
        blocker.rollback()
        child.expect(pexpect.EOF)
    finally:
        blocker.close()
        child.close()
    assert child.exitstatus == 0
