"""Clean deaths (issue 13): a real `dbsage` process on a real server, SIGKILLed or SIGTERMed in
each phase of a run (the before pg_dump, a long statement, right after the commit, a
rollback), leaves no child running, no temporary file after the next run, no scratch
database; `dbsage status` says what the run left, and the next run cleans up and proceeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from conftest import Db
from helpers import DBSAGE, cli_env, lock_is_free, migration, run_cli

from dbsage.tools.artifacts import host_name, sweep_leftovers, temp_path

SNAPS = Path("supabase") / "snapshots"


@pytest.fixture(params=["db18", "supa_db18"])
def target(request: pytest.FixtureRequest) -> Db:
    """A plain database (superuser owner) and a Supabase-shaped one (the non-superuser postgres)."""
    db: Db = request.getfixturevalue(request.param)
    return db


def _table(name: str) -> str:
    """A new table, with RLS on (Supabase's advisor refuses an exposed table without it)."""
    return (f"create table public.{name} (id int);\n"
            f"alter table public.{name} enable row level security;\n")


def _start(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([DBSAGE, *args], cwd=project, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _apply(db: Db, project: Path, path: Path, *extra: str) -> subprocess.Popen[str]:
    return _start(project, "apply", str(path.relative_to(project)), "--mode", "yolo", "--db",
                  db.url, "--no-dry-run", "--force", "--json", *extra)


def _wait_until(db: Db, sql: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not db.scalar(sql):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"dbsage ended (rc {proc.returncode}) before: {sql}\n{out}{err}")
        if time.monotonic() > deadline:
            with db.connect() as conn:
                seen = conn.execute("SELECT application_name, state, wait_event_type, "
                                    "left(query, 60) FROM pg_stat_activity WHERE datname = "
                                    "current_database()").fetchall()
            raise AssertionError(f"timed out waiting for: {sql}; sessions: {seen}")
        time.sleep(0.02)


def _clients(db: Db) -> list[psutil.Process]:
    """Every pg_dump or psql on this machine whose command line names the test's database."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.info["name"] in ("pg_dump", "psql") and _running(p) and any(
                    db.name in a for a in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _running(p: psutil.Process) -> bool:
    """Not gone, and not a zombie (a dead child that no init has reaped yet: not running)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(proc: subprocess.Popen[str], sig: int, db: Db) -> tuple[str, str, list[str]]:
    """Send `sig` to dbsage (only to it: its children are in their own groups), wait for it;
    then no child it started may still run (within a second: the kernel's parent-death signal
    or dbsage's own kill)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    names = [c.name() for c in children]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=1.0)
    alive = [p for p in alive if _running(p)]
    assert alive == [], f"children outlived dbsage: {[p.cmdline() for p in alive]}"
    assert _clients(db) == []
    return out, err, names


def _children(proc: subprocess.Popen[str]) -> list[str]:
    try:
        return [c.name() for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _markers(project: Path) -> list[Path]:
    return sorted((project / SNAPS).glob(".run-*"))


def _wait_for(ready: Callable[[], object], proc: subprocess.Popen[str],
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"dbsage ended (rc {proc.returncode}) too early\n{out}{err}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _leftovers(project: Path) -> list[str]:
    snaps = project / SNAPS
    return sorted(p.name for p in snaps.iterdir() if p.name.startswith(".")) \
        if snaps.is_dir() else []


def _status(db: Db, project: Path, *, text: bool = False) -> dict[str, Any]:
    """`dbsage status --json` (and, with `text`, what the plain `dbsage status` prints)."""
    done = run_cli("status", "--db", db.url, "--json", cwd=project)
    assert done.returncode in (0, 1), done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    if text:
        data["text"] = run_cli("status", "--db", db.url, cwd=project).stdout.replace("\n", " ")
    return data


def _databases(db: Db) -> set[str]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _next_apply_succeeds(db: Db, project: Path, name: str = "20300101000009_next.sql") -> dict:
    path = migration(project, name, _table("next_one"))
    done = run_cli("apply", str(path.relative_to(project)), "--mode", "yolo", "--db", db.url,
                   "--no-dry-run", "--json", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict = json.loads(done.stdout)
    assert db.scalar("SELECT to_regclass('public.next_one') IS NOT NULL") is True
    return report


@pytest.fixture
def blocker(target: Db) -> Iterator[Any]:
    """A session that takes locks for a test and always gives them back."""
    conn = target.connect(autocommit=False)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


PG_DUMP_WAITS = ("SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND query LIKE 'LOCK TABLE %public.busy%IN ACCESS SHARE MODE%'")  # pg_dump's
STATEMENT_RUNS = ("SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'dbsage' "
                  "AND state = 'active' AND query LIKE 'select pg_sleep%'")


# --- during the before pg_dump -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["yolo", "interactive"])  # early snapshot / dumped under the lock
def test_sigkill_during_the_before_pg_dump(target: Db, project: Path, blocker: Any,
                                           mode: str) -> None:
    path = migration(project, "20300101000000_t.sql", _table("t"))
    (project / SNAPS).mkdir(parents=True)
    if mode == "interactive":
        target.execute("create table public.busy (id int)")
        blocker.execute("LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
    proc = _apply(target, project, path, "--mode", mode, "--yes")
    if mode == "yolo":
        # The early snapshot's temporary name says who writes it. A FIFO there holds pg_dump in
        # open() with its file in place, as a kill in the middle of a large dump finds it.
        os.mkfifo(project / SNAPS / f".early-before.sql.{proc.pid}@{host_name()}.tmp")
    _wait_for(lambda: "pg_dump" in _children(proc) and _markers(project)
              and (mode == "yolo" or target.scalar(PG_DUMP_WAITS)), proc)
    _, _, children = _kill(proc, signal.SIGKILL, target)
    assert "pg_dump" in children
    if mode == "yolo":
        assert f".early-before.sql.{proc.pid}@{host_name()}.tmp" in _leftovers(project)
    blocker.rollback()
    status = _status(target, project, text=True)
    [run] = status["runs"]
    assert run["state"] == "interrupted_before_commit" and run["task"] == "apply-migration"
    assert f"Run {run['ts']} (apply-migration supabase/migrations/20300101000000_t.sql, pid " \
        f"{proc.pid}) was interrupted before commit: nothing applied; it left no " \
        "before-snapshot" in status["text"]
    assert target.scalar("SELECT to_regclass('public.t')") is None
    report = _next_apply_succeeds(target, project)
    assert f"Run {run['ts']} (apply-migration, pid {proc.pid}) was killed before its commit " \
        "(nothing was changed)" in " ".join(report["notices"])
    assert _leftovers(project) == []
    assert _status(target, project)["runs"] == []


def test_sigterm_during_the_before_pg_dump(target: Db, project: Path, blocker: Any) -> None:
    target.execute("create table public.busy (id int)")
    path = migration(project, "20300101000000_t.sql", _table("t"))
    blocker.execute("LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE")
    proc = _apply(target, project, path)
    _wait_until(target, PG_DUMP_WAITS, proc)
    out, _, _ = _kill(proc, signal.SIGTERM, target)
    assert proc.returncode == 143
    assert "Nothing was committed" in json.loads(out)["error"]["message"]
    assert _leftovers(project) == []  # a clean stop removes its own files
    blocker.rollback()
    assert _status(target, project)["runs"] == []
    _next_apply_succeeds(target, project)


# --- during a long statement -------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_during_a_long_statement(target: Db, project: Path, sig: int) -> None:
    target.execute("create table public.old (id int); insert into public.old values (1), (2)")
    path = migration(project, "20300101000000_slow.sql",
                     _table("t") + "drop table public.old;\nselect pg_sleep(30);\n")
    proc = _apply(target, project, path, "--allow-destructive")
    _wait_until(target, STATEMENT_RUNS, proc)
    [data] = (project / SNAPS).glob("*_data")  # the rows of public.old, saved in the transaction
    _kill(proc, sig, target)
    killed = time.monotonic()
    while not lock_is_free(target):  # client_connection_check_interval (tests/test_dead_client)
        assert time.monotonic() - killed < 3, "the killed run still holds the lock"
        time.sleep(0.05)
    assert target.scalar("SELECT to_regclass('public.t')") is None
    assert target.scalar("SELECT count(*) FROM public.old") == 2
    status = _status(target, project)
    if sig == signal.SIGKILL:
        [run] = status["runs"]
        assert run["state"] == "interrupted_before_commit"
        assert run["before_snapshot"] == f"supabase/snapshots/{run['ts']}_before.sql"
        assert (f"was interrupted before commit: nothing applied; its before-snapshot is kept "
                f"(supabase/snapshots/{run['ts']}_before.sql)") in run["described"]
        assert data.is_dir()  # rows nothing destroyed: the next run removes them
    else:
        assert status["runs"] == []
    report = _next_apply_succeeds(target, project)
    if sig == signal.SIGKILL:
        assert f"Run {run['ts']} (apply-migration, pid {proc.pid}) was killed before its " \
            "commit (nothing was changed)" in " ".join(report["notices"])
        assert not data.exists()
    # (a SIGTERM keeps the folder: agent/steps.apply_migration keeps saved data after any error
    # but a failed statement, "losing it would be worse than a stray folder")
    assert _leftovers(project) == []


def test_sigkill_in_a_file_run_outside_a_transaction(target: Db, project: Path,
                                                    blocker: Any) -> None:
    target.execute("create table public.a (x int); create table public.b (y int);")
    path = migration(project, "20300101000000_idx.sql",
                     "create index concurrently a_x_idx on public.a (x);\n"
                     "create index concurrently b_y_idx on public.b (y);\n")
    blocker.execute("LOCK TABLE public.b IN SHARE UPDATE EXCLUSIVE MODE")
    proc = _apply(target, project, path, "--lock-timeout", "0")
    _wait_until(target, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = "
                        "'dbsage' AND wait_event_type = 'Lock' AND query LIKE '%b_y_idx%'", proc)
    _kill(proc, signal.SIGKILL, target)
    blocker.rollback()
    assert target.scalar("SELECT to_regclass('public.a_x_idx') IS NOT NULL") is True
    [run] = _status(target, project)["runs"]
    assert run["state"] == "interrupted_outside_transaction"
    assert "so those that finished before the kill are committed" in run["described"]
    report = _next_apply_succeeds(target, project)
    assert "was killed before its history row" in " ".join(report["notices"])
    assert _leftovers(project) == []


# --- right after the commit -------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_right_after_the_commit(target: Db, project: Path, blocker: Any, sig: int) -> None:
    target.execute("create table public.busy (id int)")
    path = migration(project, "20300101000000_t.sql",
                     _table("t") + "select pg_sleep(0.3);\n")
    proc = _apply(target, project, path)
    _wait_until(target, STATEMENT_RUNS, proc)
    blocker.execute("LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE")  # the after-dump waits
    _wait_until(target, PG_DUMP_WAITS, proc)
    assert target.scalar("SELECT to_regclass('public.t') IS NOT NULL") is True  # committed
    out, _, _ = _kill(proc, sig, target)
    if sig == signal.SIGTERM:
        report = json.loads(out)
        assert report["status"] == "applied" and proc.returncode == 143
        assert "The migration is committed, but: Interrupted after the commit" in " ".join(
            report["warnings"])
    blocker.rollback()
    status = _status(target, project)
    version = "20300101000000"
    assert version in status["applied"][0]
    if sig == signal.SIGKILL:
        [run] = status["runs"]
        assert run["state"] == "interrupted_after_commit" and run["applied"] == [version]
        assert (f"was interrupted after commit: {version} applied; rollback available: "
                f"dbsage rollback {run['ts']}") in run["described"]
        ts = run["ts"]
    else:
        assert status["runs"] == []
        ts = status["migrations"][0]["ts"]
    report = _next_apply_succeeds(target, project)
    if sig == signal.SIGKILL:
        assert f"was killed after its commit ({version} applied)" in " ".join(report["notices"])
    assert _leftovers(project) == []
    # the newest run is the next one: undo it, then the killed run (issue 11: still possible)
    for what in ("latest", ts):
        done = run_cli("rollback", what, "--mode", "interactive", "--yes", "--db", target.url, "--json",
                       cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
    assert target.scalar("SELECT to_regclass('public.t')") is None


# --- during a rollback ------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_during_a_rollback(target: Db, project: Path, blocker: Any, sig: int) -> None:
    path = migration(project, "20300101000000_t.sql", _table("t"))
    done = run_cli("apply", str(path.relative_to(project)), "--mode", "yolo", "--db",
                   target.url, "--no-dry-run", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    databases = _databases(target)
    blocker.execute("SELECT * FROM public.t")  # ACCESS SHARE: the rollback's DROP waits
    proc = _start(project, "rollback", "latest", "--mode", "interactive", "--yes", "--db", target.url,
                  "--lock-timeout", "0", "--json")
    _wait_until(target, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = "
                        "'dbsage' AND wait_event_type = 'Lock'", proc)
    _kill(proc, sig, target)
    # no scratch database, ever (other tests' databases are t_* and s_*)
    assert {d for d in _databases(target) - databases if d.startswith("dbsage")} == set()
    blocker.rollback()
    killed = time.monotonic()
    while not lock_is_free(target):
        assert time.monotonic() - killed < 3, "the killed rollback still holds the lock"
        time.sleep(0.05)
    assert target.scalar("SELECT to_regclass('public.t') IS NOT NULL") is True  # not undone
    status = _status(target, project)
    if sig == signal.SIGKILL:
        [run] = status["runs"]
        assert run["task"] == "rollback" and run["state"] == "interrupted_before_commit"
        assert "(rollback latest, pid" in run["described"]
        assert "was interrupted before its commit: nothing was undone" in run["described"]
    else:
        assert status["runs"] == []
    done = run_cli("rollback", "latest", "--mode", "interactive", "--yes", "--db", target.url, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.scalar("SELECT to_regclass('public.t')") is None
    assert _leftovers(project) == []
    assert _status(target, project)["runs"] == []


def test_scratch_databases_an_older_dbsage_left_are_dropped_by_the_next_rollback(
        target: Db, project: Path) -> None:
    path = migration(project, "20300101000000_t.sql", _table("t"))
    done = run_cli("apply", str(path.relative_to(project)), "--mode", "yolo", "--db",
                   target.url, "--no-dry-run", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    stale, used = (f"dbsage_scratch_{uuid.uuid4().hex[:12]}" for _ in range(2))
    for name in (stale, used):
        target.execute(f'CREATE DATABASE "{name}"')
    user = psycopg.connect(target.url.replace(f"/{target.name}", f"/{used}", 1))
    try:
        status = _status(target, project, text=True)
        assert {stale, used} <= set(status["scratch_databases"])
        assert "Scratch databases a killed rollback of an older dbsage left: " in status["text"]
        done = run_cli("rollback", "latest", "--mode", "interactive", "--yes", "--db",
                       target.url, "--json", cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        assert any(stale in n for n in json.loads(done.stdout)["notices"])
        names = _databases(target)
        assert stale not in names and used in names  # a database in use is never dropped
    finally:
        user.close()
        target.execute(f'DROP DATABASE IF EXISTS "{used}" WITH (FORCE)')
        target.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')


# --- who may remove a temporary file ---------------------------------------------------------

def test_only_a_dead_writers_files_are_swept(tmp_path: Path) -> None:
    live = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        names = {
            f".x_before.sql.{live.pid}@{host_name()}.tmp": True,  # a running writer: kept
            f".x_before.sql.{dead.pid}@{host_name()}.tmp": False,
            f".x_after.sql.{dead.pid}@some-other-host.tmp": True,  # cannot tell: kept
            f".x_after.sql.{dead.pid}.tmp": False,  # dbsage before pid@host names
            f".early-{dead.pid}.sql": False,
            f".run-20300101000000.{dead.pid}@{host_name()}.json": False,
            f".run-20300101000001.{live.pid}@{host_name()}.json": True,
            "20300101000000_before.sql": True,  # not a temporary name
        }
        for name in names:
            (tmp_path / name).write_text("{}")
        assert temp_path(tmp_path / "a.sql").name == f".a.sql.{os.getpid()}@{host_name()}.tmp"
        left = sweep_leftovers(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            n for n, keep in names.items() if keep)
        assert [r.ts for r in left.runs] == ["20300101000000"]
    finally:
        live.kill()
        live.wait()
