"""Supabase-shaped PostgreSQL for the tests (a pytest plugin, registered in conftest.py).

Fixtures:
  supa18, supa15   session-scoped clusters built with tools/platform.py: the embedded
                   PostgreSQL 18 (SQL stand-ins for uuid-ossp/pgcrypto) and Debian's
                   PostgreSQL 15 (real contrib; skipped only when /usr/lib/postgresql/15/bin
                   is absent). Each has the platform installed in a template database and
                   in its `postgres` database, listens on a private socket and on
                   127.0.0.1:<free port> (password auth), and is stopped at session end.
  supa_server      parametrised over both (ids supa18, supa15).
  supa_db          a fresh database per test, cloned from the template (CREATE DATABASE ...
                   TEMPLATE: fast), dropped afterwards; on each server via supa_server.
  supa_db18/15     the same on one server only.

A SupaDb has .url (the NON-superuser postgres role, as migrations run on Supabase),
.admin_url (supabase_admin), .name, .server (.major, .socket_dir, .bin_dir, .cluster),
.connect(), .scalar(), .execute(): a drop-in for conftest's Db.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbsage.tools.platform import (
    Cluster,
    PlatformError,
    clone_database,
    init_cluster,
    install_platform,
    start_cluster,
    stop_cluster,
)

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
TEMPLATE = "supa_template"
_running: dict[Path, Cluster] = {}  # clusters this session started and has not stopped yet


@dataclass(frozen=True)
class SupaServer:
    """A running Supabase-shaped cluster and its template database."""

    name: str
    cluster: Cluster
    template: str = TEMPLATE

    @property
    def major(self) -> int:
        return self.cluster.major

    @property
    def socket_dir(self) -> Path:
        return self.cluster.socket_dir

    @property
    def bin_dir(self) -> Path:
        return self.cluster.bin_dir

    def url(self, dbname: str = "postgres") -> str:
        """As the developer's role postgres (not a superuser), over the socket."""
        return self.cluster.database_url(dbname, tcp=False)

    def admin_url(self, dbname: str = "postgres") -> str:
        """As supabase_admin, the cluster superuser."""
        return self.cluster.database_url(dbname, admin=True, tcp=False)

    def tcp_url(self, dbname: str = "postgres", *, admin: bool = False) -> str:
        """Over 127.0.0.1 with the password, as a Supabase connection string looks."""
        return self.cluster.database_url(dbname, admin=admin, tcp=True)


@dataclass(frozen=True)
class SupaDb:
    """One test's own Supabase-shaped database."""

    server: SupaServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def admin_url(self) -> str:
        return self.server.admin_url(self.name)

    def connect(self, autocommit: bool = True, *, admin: bool = False) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url if admin else self.url, autocommit=autocommit)

    def scalar(self, query: str, params: tuple[Any, ...] | None = None, *, admin: bool = False) -> Any:
        with self.connect(admin=admin) as conn:
            row = conn.execute(query.encode(), params).fetchone()
            return None if row is None else row[0]

    def execute(self, query: str, *, admin: bool = False) -> None:
        with self.connect(admin=admin) as conn:
            conn.execute(query.encode())


def _stop_leftovers() -> None:
    # Only if a session ended without running its finalizers (e.g. killed pytest internals).
    for pgdata in list(_running):
        with contextlib.suppress(PlatformError):
            stop_cluster(pgdata, mode="immediate")
        _running.pop(pgdata, None)


atexit.register(_stop_leftovers)


def _supabase_cluster(name: str, bin_dir: Path) -> Iterator[SupaServer]:
    root = Path(tempfile.mkdtemp(prefix=f"dbsage-{name}-"))
    os.chmod(root, 0o755)  # the server may run as another user (root runs it unprivileged)
    pgdata = root / "data"
    try:
        cluster = init_cluster(pgdata, bin_dir=bin_dir, port=0, tcp=True, fast=True,
                               settings={"max_connections": "60"})
        try:
            cluster = start_cluster(pgdata)
        except PlatformError:  # the free port was taken in between: pick another
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            os.chmod(root, 0o755)
            cluster = init_cluster(pgdata, bin_dir=bin_dir, port=0, tcp=True, fast=True,
                                   settings={"max_connections": "60"})
            cluster = start_cluster(pgdata)
        _running[pgdata] = cluster
        with psycopg.connect(cluster.database_url(tcp=False, admin=True), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        install_platform(cluster.database_url(TEMPLATE, admin=True, tcp=False), server_major=cluster.major)
        install_platform(cluster.database_url(admin=True, tcp=False), server_major=cluster.major)
        with psycopg.connect(cluster.database_url(tcp=False, admin=True), autocommit=True) as conn:
            # nobody may connect to the template by accident: that would block every clone
            conn.execute(f'ALTER DATABASE "{TEMPLATE}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        yield SupaServer(name, cluster)
    finally:
        if pgdata in _running:
            stop_cluster(pgdata, mode="immediate")
            _running.pop(pgdata, None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def supa18() -> Iterator[SupaServer]:
    """The embedded PostgreSQL 18, Supabase-shaped (uuid-ossp/pgcrypto are SQL stand-ins)."""
    from dbsage.tools.embedded import bin_dir

    yield from _supabase_cluster("supa18", bin_dir())


@pytest.fixture(scope="session")
def supa15() -> Iterator[SupaServer]:
    """Debian's PostgreSQL 15, Supabase-shaped (real contrib extensions)."""
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed (/usr/lib/postgresql/15/bin)")
    yield from _supabase_cluster("supa15", PG15_BIN)


@pytest.fixture(params=["supa18", "supa15"])
def supa_server(request: pytest.FixtureRequest) -> SupaServer:
    """Each Supabase-shaped test runs on every available server."""
    server: SupaServer = request.getfixturevalue(request.param)
    return server


def _new_database(server: SupaServer) -> Iterator[SupaDb]:
    name = f"s_{uuid.uuid4().hex[:12]}"
    clone_database(server.admin_url(), name, template=server.template)
    try:
        yield SupaDb(server, name)
    finally:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def supa_db(supa_server: SupaServer) -> Iterator[SupaDb]:
    """A fresh Supabase-shaped database on each server; connect as postgres with .url."""
    yield from _new_database(supa_server)


@pytest.fixture
def supa_db18(supa18: SupaServer) -> Iterator[SupaDb]:
    """A fresh Supabase-shaped database on the embedded 18 only."""
    yield from _new_database(supa18)


@pytest.fixture
def supa_db15(supa15: SupaServer) -> Iterator[SupaDb]:
    """A fresh Supabase-shaped database on PostgreSQL 15 only."""
    yield from _new_database(supa15)
