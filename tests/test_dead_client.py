"""A killed dbsage frees its lock within about a second: the server checks the client every
second (client_connection_check_interval), instead of noticing only when the statement
ends and it writes to the dead socket."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from conftest import Db
from helpers import DBSAGE, cli_env, lock_is_free, migration


def test_sigkill_during_a_long_statement_frees_the_lock_within_two_seconds(
        db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_slow.sql",
                     "create table public.t (id int);\nselect pg_sleep(60);\n")
    proc = subprocess.Popen([DBSAGE, "apply", str(path), "--mode", "yolo", "--no-dry-run",
                             "--force", "--db", db.url], cwd=project, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not db.scalar("select count(*) from pg_stat_activity where query like "
                            "'select pg_sleep(60)%%' and state = 'active'"):
            assert time.monotonic() < deadline, "the statement never started"
            assert proc.poll() is None, "dbsage ended before the statement ran"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while not lock_is_free(db):
            assert time.monotonic() - killed < 2.0, "the dead run still holds the lock"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert db.scalar("select to_regclass('public.t')") is None  # the transaction rolled back
