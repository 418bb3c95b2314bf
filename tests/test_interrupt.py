"""Ctrl-C or SIGTERM in the middle of `dbsage apply` (a real process, a real server): the run
stops cleanly, says what was committed, releases the lock and leaves no temporary files."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
from conftest import Db
from helpers import DBSAGE, cli_env, migration


def _start(db: Db, project: Path, path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DBSAGE, "apply", str(path.relative_to(project)), "--mode", "yolo", "--db", db.url,
         "--no-dry-run", "--json", *extra],
        cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env() -> dict[str, str]:
    return cli_env(PYTHONFAULTHANDLER="1")  # a SIGABRT prints every thread's stack (_ended)


def _ended(proc: subprocess.Popen[str], children: list[psutil.Process]) -> tuple[str, str]:
    """proc's output once it has ended after a signal. One that has not within 60 s (a few
    seconds on a quiet machine) fails with where each of its threads stood, from
    faulthandler, or with the children that keep its output open."""
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGABRT)
        holders = [(p.pid, p.cmdline()) for p in children if _running(p)]
        for p in children:
            if _running(p):
                p.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"not ended 60 s after the signal (dbsage alive: {alive}; "
                             f"children left: {holders}); stdout: {out!r}; stderr:\n{err}"
                             ) from None


def _wait_until(db: Db, sql: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.scalar(sql):
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[dict, str]:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(sig)
    out, err = _ended(proc, children)
    assert proc.returncode == 128 + sig, (proc.returncode, out, err)  # 143 TERM, 130 INT
    # its children (in their own process groups, so the signal reached only dbsage) went too
    _, alive = psutil.wait_procs(children, timeout=1.0)
    assert [p for p in alive if _running(p)] == []
    return json.loads(out), err


def _clean_afterwards(db: Db, project: Path) -> None:
    _wait_until(db, "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'dbsage'")
    assert db.scalar("SELECT pg_try_advisory_lock(hashtext('dbsage:migrate'))") is True
    snapshots = project / "supabase" / "snapshots"
    leftovers = [p.name for p in snapshots.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_sigterm_inside_the_transaction_rolls_everything_back(db: Db, project: Path) -> None:
    path = migration(project, "20300101000000_slow.sql",
                     "create table public.t1 (id int);\nselect pg_sleep(30);\n")
    proc = _start(db, project, path)
    _wait_until(db, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = "
                    "'dbsage' AND state = 'active' AND query LIKE 'select pg_sleep%'")
    report, _ = _stop(proc, signal.SIGTERM)
    assert report["status"] == "failed"
    assert [s["status"] for s in report["statements"]] == ["ok", "interrupted"]
    assert report["error"]["error"] == "RunInterrupted"
    assert "Nothing was committed" in report["error"]["message"]
    assert db.scalar("SELECT to_regclass('public.t1') IS NULL") is True
    # The history tables were created in the same transaction: they are gone with it.
    assert db.scalar("SELECT to_regclass('supabase_migrations.schema_migrations')") is None
    _clean_afterwards(db, project)


def test_ctrl_c_in_a_non_transactional_file_says_which_statements_are_committed(
        db18: Db, project: Path) -> None:
    db18.execute("create table public.a (x int); create table public.b (y int);")
    path = migration(project, "20300101000000_idx.sql",
                     "create index concurrently a_x_idx on public.a (x);\n"
                     "create index concurrently b_y_idx on public.b (y);\n")
    with db18.connect(autocommit=False) as blocker:
        blocker.execute("LOCK TABLE public.b IN SHARE UPDATE EXCLUSIVE MODE")
        proc = _start(db18, project, path, "--lock-timeout", "0")
        _wait_until(db18, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = "
                          "'dbsage' AND wait_event_type = 'Lock' AND query LIKE '%b_y_idx%'")
        report, _ = _stop(proc, signal.SIGINT)
        blocker.rollback()
    assert report["error"]["error"] == "RunInterrupted"
    assert "line(s) 1 are committed" in report["error"]["message"]
    assert "DROP INDEX CONCURRENTLY" in report["error"]["hint"]
    assert [s["status"] for s in report["statements"]] == ["ok", "interrupted"]
    assert db18.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                       "'public.a_x_idx'::regclass") is True
    assert db18.scalar("SELECT to_regclass('public.b_y_idx') IS NULL") is True
    _clean_afterwards(db18, project)


def test_sigterm_during_a_chat_script_run_ends_the_chat_cleanly(db18: Db, project: Path) -> None:
    path = migration(project, "20300101000000_slow.sql",
                     "create table public.t1 (id int);\nselect pg_sleep(30);\n")
    script = project / "script.txt"
    script.write_text(f"*apply-migration {path.relative_to(project)} --mode yolo\n*exit\n")
    proc = subprocess.Popen([DBSAGE, "chat", "--db", db18.url, "--script", str(script)],
                            cwd=project, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_until(db18, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = "
                      "'dbsage' AND state = 'active' AND query LIKE 'select pg_sleep%'")
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    out, err = _ended(proc, children)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err
    assert "Interrupted" in out + err
    assert db18.scalar("SELECT to_regclass('public.t1')") is None
    _clean_afterwards(db18, project)
