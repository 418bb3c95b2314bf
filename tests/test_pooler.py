"""Connection poolers: a real PgBouncer (Debian's /usr/sbin/pgbouncer) in front of the
Supabase-shaped servers (the embedded PostgreSQL 18 and Debian's 15), on a random port.

Through a transaction (or statement) pooler the run's session advisory lock is held by a
server connection that other clients get between transactions, so it excludes nobody:
every write command refuses it, on any port and any pool size, with exit 2 and before
anything changed. A session pooler keeps a server connection per client: accepted, and the
lock holds there as on a direct connection.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helpers import DBSAGE, migration, run_cli
from supabase_shaped import SupaDb

from dbsage.tools.errors import PoolerError

PGBOUNCER = Path("/usr/sbin/pgbouncer")
SERVER_USER = "embedded_postgres"  # tools/platform.py's server user when the tests run as root

_running: set[subprocess.Popen[bytes]] = set()  # PgBouncers started and not stopped yet
atexit.register(lambda: [_stop(p) for p in list(_running)])

pytestmark = pytest.mark.skipif(not PGBOUNCER.exists(),
                                reason="Debian's pgbouncer is not installed (.ci/run installs it)")


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: the URL of one database through it."""

    port: int
    password: str

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pgbouncer(db: SupaDb, mode: str, pool_size: int, *, extra: str = "") -> Iterator[Bouncer]:
    """PgBouncer in `mode` with `pool_size` server connections per database, in front of
    `db`'s server (its socket), md5 login with the postgres role's password. Run as the
    server's own unprivileged user when the tests run as root (PgBouncer refuses root, and
    only that user may open the server's socket folder); always stopped on exit."""
    cluster = db.server.cluster
    user = SERVER_USER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="dbsage-pgbouncer-"))
    os.chmod(root, 0o700)
    if user:
        shutil.chown(root, user, user)
    (root / "userlist.txt").write_text(f'"postgres" "{cluster.password}"\n')
    proc = None
    try:
        for _ in range(5):  # the free port may be taken in between: pick another
            port = _free_port()
            (root / "pgbouncer.ini").write_text(f"""[databases]
* = host={cluster.socket_dir} port={cluster.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {root / 'userlist.txt'}
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 50
query_wait_timeout = 120
{extra}
""")
            if user:
                for f in root.iterdir():
                    shutil.chown(f, user, user)
            log = open(root / "pgbouncer.log", "ab")  # noqa: SIM115 (closed below)
            proc = subprocess.Popen([str(PGBOUNCER), str(root / "pgbouncer.ini")], stdout=log,
                                    stderr=log, user=user, start_new_session=True)
            log.close()
            _running.add(proc)
            if _listening(proc, port):
                break
            _stop(proc)
            proc = None
        assert proc is not None, (root / "pgbouncer.log").read_text()
        yield Bouncer(port, cluster.password)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    _running.discard(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def _history(db: SupaDb) -> list[str]:
    """The versions in the Supabase CLI's history table (none when it does not exist yet)."""
    if db.scalar("SELECT to_regclass('supabase_migrations.schema_migrations')") is None:
        return []
    with db.connect() as conn:
        rows = conn.execute("SELECT version FROM supabase_migrations.schema_migrations "
                            "ORDER BY version").fetchall()
    return [r[0] for r in rows]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SUPABASE_DB_URL", "DATABASE_URL")}


@pytest.mark.parametrize("pool_size", [1, 3])
def test_a_transaction_pooler_on_any_port_is_refused_before_anything_changes(
        supa_db: SupaDb, project: Path, pool_size: int) -> None:
    """yolo apply (the early snapshot's psql and pg_dump in flight) through PgBouncer in
    transaction mode on a random port: exit 2 with what was seen and the session port to
    use; no table, no history row, no snapshot file, and it does not wait for the pool."""
    path = migration(project, "20250101000000_t.sql",
                     "create table t (id bigint);\nalter table t enable row level security;\n")
    with pgbouncer(supa_db, "transaction", pool_size) as bouncer:
        result = run_cli("apply", str(path), "--mode", "yolo", "--db", bouncer.url(supa_db.name),
                         cwd=project, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "pools by transaction" in out and f"127.0.0.1:{bouncer.port}" in out
    assert "session advisory lock" in out
    assert "5432" in out and "pool_mode = session" in out
    assert bouncer.password not in out
    assert supa_db.scalar("SELECT to_regclass('public.t')") is None
    assert _history(supa_db) == []
    assert not [p.name for p in (project / "supabase").rglob("*") if p.is_file()
                and "migrations" not in p.parts]


@pytest.mark.parametrize("command", ["dry-run", "up", "up --dry-run", "repair", "baseline",
                                     "rollback"])
def test_every_command_that_takes_the_lock_refuses_a_transaction_pooler(
        supa_db18: SupaDb, project: Path, command: str) -> None:
    path = migration(project, "20250101000000_t.sql",
                     "create table t (id bigint);\nalter table t enable row level security;\n")
    args = {"dry-run": ["dry-run", str(path)], "up": ["up", "--yes"],
            "up --dry-run": ["up", "--dry-run"],
            "repair": ["repair", "--status", "applied", "20250101000000"],
            "baseline": ["baseline", "--yes"], "rollback": ["rollback", "latest", "--yes"]}[command]
    with pgbouncer(supa_db18, "transaction", 1) as bouncer:
        result = run_cli(*args, "--db", bouncer.url(supa_db18.name), cwd=project, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "pools by transaction" in out, out
    assert supa_db18.scalar("SELECT to_regclass('public.t')") is None
    assert _history(supa_db18) == []


def test_a_session_pooler_is_accepted_and_the_lock_holds_there(supa_db: SupaDb,
                                                               project: Path) -> None:
    """Through PgBouncer in session mode an apply works; two concurrent applies: the second
    is refused as on a direct connection (exit 3), the first commits."""
    first = migration(project, "20250101000000_slow.sql",
                      "create table slow (id bigint);\nalter table slow enable row level security;\n"
                      "select pg_sleep(3);\n")
    with pgbouncer(supa_db, "session", 8) as bouncer:
        url = bouncer.url(supa_db.name)
        running = subprocess.Popen([DBSAGE, "apply", str(first), "--mode", "yolo", "--db", url],
                                   cwd=project, env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not supa_db.scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = hashtext('dbsage:migrate')"):
                assert running.poll() is None, running.communicate()
                assert time.monotonic() < deadline, "the first run never took the lock"
                time.sleep(0.05)
            second = migration(project, "20250101000001_other.sql",
                               "create table other (id bigint);\n"
                               "alter table other enable row level security;\n")
            refused = run_cli("apply", str(second), "--mode", "yolo", "--db", url, cwd=project)
            out, err = running.communicate(timeout=60)
        finally:
            if running.poll() is None:
                running.kill()
                running.wait()
        assert running.returncode == 0, out + err
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "Another migration is running" in refused.stdout
        assert supa_db.scalar("SELECT to_regclass('public.other')") is None
        assert _history(supa_db) == ["20250101000000"]

        done = run_cli("apply", str(second), "--mode", "yolo", "--db", url, cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        assert _history(supa_db) == ["20250101000000", "20250101000001"]


# The detection itself over PgBouncer's configurations: (mode, pool size, extra settings,
# server connections opened beforehand, refused?).
CASES = [
    ("transaction", 1, "", 0, True),
    ("transaction", 3, "", 0, True),
    ("transaction", 3, "", 3, True),
    ("transaction", 3, "server_round_robin = 1", 3, True),
    ("transaction", 2, "server_round_robin = 1", 2, True),
    ("statement", 2, "", 0, True),
    ("session", 3, "", 0, False),
    ("session", 3, "server_round_robin = 1", 3, False),
]


@pytest.mark.parametrize(("mode", "size", "extra", "warm", "refused"), CASES,
                         ids=[f"{m}-{s}{'-rr' if e else ''}{'-warm' if w else ''}"
                              for m, s, e, w, _ in CASES])
def test_the_check_tells_transaction_from_session_pooling(
        supa_db18: SupaDb, mode: str, size: int, extra: str, warm: int, refused: bool) -> None:
    """Each PgBouncer configuration, the server connections already open (`warm`) or made
    on demand, PgBouncer's LIFO or round-robin choice of server: refused exactly in
    transaction and statement mode."""
    from dbsage.tools.connection import check_write_session, connect

    with pgbouncer(supa_db18, mode, size, extra=extra) as bouncer:
        url = bouncer.url(supa_db18.name)
        with contextlib.ExitStack() as stack:  # open `warm` server connections at once
            for _ in range(warm):
                c = stack.enter_context(psycopg.connect(url))
                c.execute("SELECT 1")
        with connect(url, autocommit=True) as conn:
            if refused:
                with pytest.raises(PoolerError, match="pools by transaction"):
                    check_write_session(conn, url)
            else:
                facts = check_write_session(conn, url)
                assert facts.proxied  # a pooler answered, and it keeps the session's backend


def test_a_session_pool_of_one_is_refused_instead_of_waiting(supa_db18: SupaDb) -> None:
    """A session pool with one server connection can serve no second session (pg_dump,
    psql): refused after the bounded wait, not left to wait for query_wait_timeout."""
    from dbsage.tools.connection import check_write_session, connect

    with pgbouncer(supa_db18, "session", 1) as bouncer:
        url = bouncer.url(supa_db18.name)
        with connect(url, autocommit=True) as conn, \
                pytest.raises(PoolerError, match="gave a second session no server"):
            check_write_session(conn, url)


def test_a_direct_connection_is_not_taken_for_a_pooler(supa_db18: SupaDb) -> None:
    """The server's pid is the one the connection announced: no second session is opened."""
    from dbsage.tools.connection import check_write_session, connect

    with connect(supa_db18.url, autocommit=True) as conn:
        facts = check_write_session(conn, supa_db18.url)
        assert not facts.proxied and facts.server_pid == conn.info.backend_pid
        assert supa_db18.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name = 'dbsage'") == 1
