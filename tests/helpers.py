"""Small helpers shared by the DB tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Db

from dbsage.agent.report import RunReport
from dbsage.agent.runner import RunOptions, run_apply
from dbsage.tools.apply import LockRetryPolicy

DBSAGE = str(Path(sys.executable).parent / "dbsage")


def migration(project: Path, name: str, sql: str) -> Path:
    """Write supabase/migrations/<name> and return its path."""
    p = project / "supabase" / "migrations" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(sql)
    return p


def apply(db: Db, path: Path, project: Path, *, flags: dict[str, bool] | None = None,
          **kw: object) -> RunReport:
    """Run the apply pipeline in-process against the test database (yolo, and no automatic
    dry-run unless the test asks for one: these tests are about the apply transaction)."""
    opts = RunOptions(mode="yolo", db=db.url, project_dir=project,  # type: ignore[arg-type]
                      flags={"skip_dry_run": True, "allow_destructive": True,
                             "rollback_script": True, **(flags or {})},
                      **kw)
    return run_apply(path, opts)


def fast_retry(attempts: int = 10) -> LockRetryPolicy:
    return LockRetryPolicy(attempts=attempts, first_wait_s=0.05, max_wait_s=0.4)


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without the database variables (only --db chooses the
    target), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_DB_URL", "DATABASE_URL")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed `dbsage` command as a user would."""
    full_env = cli_env(**(env or {}))
    return subprocess.run([DBSAGE, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_cli_json(project: Path, *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    """`dbsage ARGS --json` in `project`: (exit code, the JSON report, stdout+stderr), and no
    traceback in either."""
    done = run_cli(*args, "--json", cwd=project)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    return done.returncode, json.loads(done.stdout), out


def user_tables(db: Db) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i') AND "
            "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE "
            "'pg_toast%' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def lock_is_free(db: Db) -> bool:
    with db.connect() as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext('dbsage:migrate'))").fetchone()
        assert row is not None
        if row[0]:
            conn.execute("SELECT pg_advisory_unlock(hashtext('dbsage:migrate'))")
        return bool(row[0])
