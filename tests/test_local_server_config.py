"""supabase/config.toml's [db] port and major_version, honoured by the local server (issue 12).

Real servers in the test's own project folder (.dbsage/pgdata), started through the `dbsage`
command as a user does and always stopped at the end.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import migration, run_cli

from dbsage.tools.binaries import SYSTEM_POSTGRES
from dbsage.tools.embedded import embedded_status, stop_embedded


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project whose local server is always stopped at the end. Not under pytest's tmp_path:
    as root the server runs as another user, who must reach its folder, and a concurrent
    pytest session resets /tmp/pytest-of-root to 0700."""
    import shutil
    import tempfile

    project = Path(tempfile.mkdtemp(prefix="dbsage-cfg-"))
    (project / "supabase" / "migrations").mkdir(parents=True)
    monkeypatch.chdir(project)
    for var in ("SUPABASE_DB_URL", "DATABASE_URL", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield project
    finally:
        try:
            stop_embedded(project)
        finally:
            shutil.rmtree(project, ignore_errors=True)


def free_port() -> int:
    """A free port below the ephemeral range (32768-60999), which clients' own ends of
    connections use: a port picked there may be taken by one a moment later."""
    import random

    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def config(project: Path, port: int | None, major: int | None) -> None:
    lines = ['project_id = "t"', "", "[db]"]
    lines += [f"port = {port}"] if port is not None else []
    lines += [f"major_version = {major}"] if major is not None else []
    (project / "supabase" / "config.toml").write_text("\n".join(lines) + "\n")


def server_major(port: int) -> int:
    url = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.info.server_version // 10000


def not_installed_major() -> int:
    return next(m for m in range(16, 99) if not (SYSTEM_POSTGRES / str(m) / "bin").exists())


def test_port_is_honoured_and_a_missing_major_warns_and_runs_the_embedded_18(local: Path) -> None:
    project = local
    port, missing = free_port(), not_installed_major()
    config(project, port, missing)
    path = migration(project, "20250101000000_t.sql", "create table t (id int);\n"
                     "alter table t enable row level security;")
    out = run_cli("up", "--mode", "yolo", cwd=project, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if "major_version" in ln]
    assert len(warnings) == 1, out.stderr  # said once
    assert (f"supabase/config.toml:5: [db] major_version = {missing}, but PostgreSQL {missing} "
            "is not installed") in warnings[0]
    assert "runs the embedded PostgreSQL 18" in warnings[0]
    assert server_major(port) == 18  # listening on the file's port, over TCP
    assert path.exists()
    again = run_cli("status", cwd=project)  # the server runs: no second warning
    assert again.returncode == 0 and "major_version" not in again.stdout + again.stderr

    # A changed port: the running server says it needs a restart, then moves.
    moved = free_port()
    config(project, moved, None)
    running = run_cli("db", "start", cwd=project)
    assert running.returncode == 0
    assert (f"supabase/config.toml:4: [db] port = {moved}, but the running local server "
            f"listens on 127.0.0.1:{port}") in running.stderr
    assert run_cli("db", "stop", cwd=project).returncode == 0
    restarted = run_cli("db", "start", cwd=project)
    assert restarted.returncode == 0, restarted.stderr
    assert f"Listening on 127.0.0.1:{moved}" in restarted.stdout
    assert restarted.stderr == ""
    assert server_major(moved) == 18

    # An existing 18 server never changes major: it says so and keeps running 18.
    if (SYSTEM_POSTGRES / "15" / "bin" / "initdb").exists():
        assert run_cli("db", "stop", cwd=project).returncode == 0
        config(project, moved, 15)
        kept = run_cli("db", "start", cwd=project)
        assert kept.returncode == 0, kept.stderr
        assert ("[db] major_version = 15, but the local server in" in kept.stderr
                and "keeps running 18" in kept.stderr)
        assert server_major(moved) == 18


def test_a_port_in_use_is_refused_before_anything_is_made(local: Path) -> None:
    project = local
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config(project, port, None)
        out = run_cli("db", "start", cwd=project)
        applied = run_cli("up", "--mode", "yolo", cwd=project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert (f"supabase/config.toml:4: [db] port = {port}, but 127.0.0.1:{port} is already in "
            "use") in out.stderr
    assert "set another [db] port" in out.stderr
    assert applied.returncode == 2 and f"[db] port = {port}" in applied.stdout + applied.stderr
    assert not (project / ".dbsage" / "pgdata").exists()  # nothing was made
    assert not embedded_status(project).running


def test_without_a_port_key_the_server_listens_on_its_socket_only(local: Path) -> None:
    project = local
    config(project, None, None)
    out = run_cli("db", "start", cwd=project)
    assert out.returncode == 0, out.stderr
    status = embedded_status(project)
    assert status.running and status.tcp is None and "Listening" not in out.stdout


@pytest.mark.skipif(not (SYSTEM_POSTGRES / "15" / "bin" / "initdb").exists(),
                    reason="PostgreSQL 15 binaries not installed (/usr/lib/postgresql/15/bin)")
def test_major_version_15_uses_the_installed_debian_15(local: Path) -> None:
    project = local
    port = free_port()
    config(project, port, 15)
    out = run_cli("db", "start", cwd=project, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "local PostgreSQL 15" in out.stdout and out.stderr == ""
    assert (project / ".dbsage" / "pgdata" / "PG_VERSION").read_text().strip() == "15"
    assert server_major(port) == 15
    path = migration(project, "20250101000000_t.sql", "create table t (id int);\n"
                     "alter table t enable row level security;")
    applied = run_cli("apply", str(path), "--mode", "yolo", cwd=project, timeout=240)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "local PostgreSQL 15" in applied.stderr
