"""Resolve the target database, redact secrets, and connect with retry."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dbsage.tools.errors import ConnectionFailedError, PoolerError

if TYPE_CHECKING:
    import psycopg

APPLICATION_NAME = "dbsage"
TRANSACTION_POOLER_PORT = 6543

# user:password@ in a URL, and password=... in a key/value conninfo or a query string.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)")
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'[^']*'|[^\s&]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace every password in URLs or conninfo strings found in `text` with `***`."""

    def _url(m: re.Match[str]) -> str:
        return f"{m['pre']}***{m['at']}" if m["pw"] else m.group(0)

    text = _URL_PASSWORD.sub(_url, text)
    return _KV_PASSWORD.sub(lambda m: f"{m['pre']}***", text)


@dataclass(frozen=True)
class Target:
    """The database a command works on and where that choice came from."""

    url: str
    source: str  # "--db", "SUPABASE_DB_URL", "DATABASE_URL" or "embedded"

    @property
    def redacted(self) -> str:
        return redact(self.url)


def host_port(url: str) -> tuple[str, str]:
    """Host and port of a URL or conninfo string (defaults as libpq applies them)."""
    if "://" in url:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or ["localhost"])[0]
        try:
            port = str(parts.port or (query.get("port") or ["5432"])[0])
        except ValueError:
            port = "?"
        return host, port
    kv = dict(re.findall(r"(\w+)\s*=\s*('[^']*'|\S+)", url))
    return kv.get("host", "localhost").strip("'"), kv.get("port", "5432").strip("'")


# libpq's key/value conninfo: key = value, a value either bare or single-quoted with \\ escapes.
_KV = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def _kv_pairs(conninfo: str) -> list[tuple[str, str]] | None:
    """The pairs of a key/value conninfo, or None when it is not one."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(conninfo):
        if not conninfo[pos:].strip():
            break
        m = _KV.match(conninfo, pos)
        if m is None:
            return None
        value = m[2]
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((m[1], value))
        pos = m.end()
    return pairs


def _kv_quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# libpq's connection keywords (PostgreSQL 18's list); anything else libpq refuses.
LIBPQ_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "sslnegotiation", "requiressl", "sslcompression", "sslcert", "sslkey", "sslkeylogfile",
    "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version",
    "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
    "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id",
    "oauth_client_secret", "oauth_scope", "scram_client_key", "scram_server_key",
})
CONNINFO_FORMS = ("postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=require] or "
                  "'host=HOST port=PORT dbname=DBNAME user=USER'")


def conninfo_problem(value: str) -> str | None:
    """What is wrong with a connection string, or None when libpq could take it: a URL must
    be postgresql:// or postgres:// with known parameters; a key/value string must use
    libpq's keywords. The message never repeats a password."""
    import difflib

    text = value.strip()
    if not text:
        return "the connection string is empty"
    if "\x00" in text or "\n" in text:
        return "the connection string holds a control character"
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("postgresql", "postgres"):
            return (f"'{parts.scheme}://' is not a PostgreSQL URL (dbsage speaks to PostgreSQL "
                    "only)")
        keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            return "the URL's port is not a number"
    else:
        pairs = _kv_pairs(text)
        if pairs is None or not pairs:
            return "it is neither a postgresql:// URL nor 'key=value' pairs"
        keys = [k for k, _ in pairs]
    unknown = [k for k in keys if k not in LIBPQ_KEYWORDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], LIBPQ_KEYWORDS, n=1)
        return (f"unknown connection parameter '{unknown[0]}'"
                + (f" (did you mean '{close[0]}'?)" if close else ""))
    return None


def libpq_argv_env(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The connection string for a libpq program's command line, and its environment.

    A password -- in a postgres:// URL's user part, in its `?password=` parameter, or in a
    key/value conninfo (`host=... password=...`) -- moves to PGPASSWORD, so it never shows in
    `ps` (every local user can read a process's command line). Hand-written rather than
    psycopg.conninfo: importing psycopg costs about 40 ms, and this runs before it on the
    early-snapshot path.
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("PGAPPNAME", APPLICATION_NAME)
    if "://" not in url:
        pairs = _kv_pairs(url)
        if pairs is None or not any(k == "password" for k, _ in pairs):
            return url, env
        env["PGPASSWORD"] = next(v for k, v in reversed(pairs) if k == "password")
        return " ".join(f"{k}={_kv_quote(v)}" for k, v in pairs if k != "password"), env
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = next((v for k, v in reversed(query) if k == "password"), None)
    if parts.password is not None:
        password = unquote(parts.password)
    if password is None:
        return url, env
    env["PGPASSWORD"] = password
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}@{host}" if user else host
    rest = urlencode([(k, v) for k, v in query if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=rest)), env


def resolve_target(db: str | None = None, environ: Mapping[str, str] | None = None) -> Target | None:
    """`--db` > SUPABASE_DB_URL > DATABASE_URL; None means: use the embedded server."""
    env = os.environ if environ is None else environ
    if db:
        return Target(db, "--db")
    for name in ("SUPABASE_DB_URL", "DATABASE_URL"):
        if env.get(name):
            return Target(env[name], name)
    return None


def check_target(target: Target) -> None:
    """A connection string from the environment gets the same check as one given with --db."""
    problem = conninfo_problem(target.url)
    if problem:
        from dbsage.tools.errors import ConfigError

        raise ConfigError(f"{target.source} is not a PostgreSQL connection string: {problem}.",
                          hint=f"Expected {CONNINFO_FORMS}.")


@dataclass(frozen=True)
class SessionFacts:
    """What the first query of a write command's session found out about it."""

    server_pid: int  # pg_backend_pid(): the server process that answered
    client_pid: int  # the pid the connection's BackendKeyData announced

    @property
    def proxied(self) -> bool:
        """A pooler or proxy stands between dbsage and the server: PgBouncer, Supavisor,
        pgcat and Odyssey announce a key of their own (a plain TCP forwarder does not)."""
        return self.server_pid != self.client_pid


def inspect_session(conn: psycopg.Connection) -> SessionFacts:
    """Refuse a read-only session (default_transaction_read_only, a hot standby): nothing
    could be applied, and the first write would fail halfway through the checks. The same
    round trip reads the server's pid for the pooler check (`check_session_pooling`)."""
    row = conn.execute("SELECT current_setting('transaction_read_only'), "
                       "pg_is_in_recovery(), pg_backend_pid()").fetchone()
    assert row is not None
    if row[0] == "on" or row[1]:
        from dbsage.tools.errors import ConfigError

        why = "the server is a standby in recovery" if row[1] else (
            "transaction_read_only is on (e.g. options=-c default_transaction_read_only=on in "
            "the connection string, or the role's or database's default)")
        raise ConfigError(f"The session is read-only: {why}.",
                          hint="Connect to the primary with a session that can write.")
    return SessionFacts(server_pid=int(row[2]), client_pid=conn.info.backend_pid)


#: How long the pooler check waits for the pooler to give its second session a server.
POOLER_PROBE_TIMEOUT_S = 3.0
_POOLER_HINT = (
    "Connect through the session port instead: on Supabase the direct connection "
    "(db.<project-ref>.supabase.co:5432) or the session pooler (port 5432, not 6543); with "
    "your own PgBouncer a database or port with pool_mode = session (and room for 3 server "
    "connections: the run's session, psql and pg_dump).")


def check_session_pooling(conn: psycopg.Connection, url: str, facts: SessionFacts, *,
                          timeout_s: float = POOLER_PROBE_TIMEOUT_S) -> None:
    """PoolerError unless the proxied session `conn` (autocommit, idle) keeps its own server
    backend from one transaction to the next, as a session pooler does; a transaction (or
    statement) pooler hands the backend to other clients between transactions, so a session
    advisory lock taken on it excludes nobody.

    A second, short session asks which backend serves it: the one `conn` just used means two
    clients share it (a pool of 1 always does; PgBouncer hands out the most recently used
    server first). Otherwise `conn` asks twice more whether it still runs on its backend (a
    round-robin pool moves it). Every wait is bounded by `timeout_s`: a pool that gives no
    second session in time (a pool of 1 in session mode, every server busy) is refused too,
    since pg_dump and psql would wait there without end. Only called when `facts.proxied`:
    a direct connection pays nothing.
    """
    host, port = host_port(url)
    where = f"The pooler at {host}:{port}"
    other = now = None
    probe = _probe_session(url, timeout_s)
    if probe is not None:
        try:
            other = now = _bounded_pid(probe, timeout_s)
            if other is not None and other != facts.server_pid:
                for _ in range(2):
                    now = _bounded_pid(conn.pgconn, timeout_s)
                    if now != facts.server_pid:
                        break
        finally:
            probe.finish()
    if other is None or now is None:
        whom = "a second session" if other is None else "dbsage's own session"
        raise PoolerError(
            f"{where} (a connection pooler: the backend pid it announced is not the "
            f"server's) gave {whom} no server within {timeout_s:g} s: a pool of a single "
            "server connection, or every one busy. dbsage's snapshots need two more sessions "
            "there, and it cannot tell whether its advisory lock would hold.",
            hint=_POOLER_HINT, host=host, port=port)
    if other == facts.server_pid:
        seen = (f"a second session was served by the same server backend (pid "
                f"{facts.server_pid}) as dbsage's own")
    elif now != facts.server_pid:
        seen = (f"dbsage's session moved from server backend {facts.server_pid} to {now} "
                "between two transactions")
    else:
        return
    raise PoolerError(
        f"{where} pools by transaction: {seen}. The migration's session advisory "
        "lock would be held by a server connection that other clients use between "
        "transactions, so it would not keep a second migration out.",
        hint=_POOLER_HINT, host=host, port=port)


def check_write_session(conn: psycopg.Connection, url: str) -> SessionFacts:
    """`inspect_session`, then `check_session_pooling` when a pooler answers."""
    facts = inspect_session(conn)
    if facts.proxied:
        check_session_pooling(conn, url, facts)
    return facts


def _probe_session(url: str, timeout_s: float) -> psycopg.pq.abc.PGconn | None:
    """A second session on `url` (libpq, no psycopg wrapper), or None when not logged in
    within `timeout_s`."""
    import selectors

    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    info = make_conninfo(url, application_name=APPLICATION_NAME)
    pgconn = pq.PGconn.connect_start(info.encode())
    deadline = _now() + timeout_s
    status = pq.PollingStatus.WRITING
    with selectors.DefaultSelector() as sel:
        while status not in (pq.PollingStatus.OK, pq.PollingStatus.FAILED):
            left = deadline - _now()
            event = selectors.EVENT_READ if status == pq.PollingStatus.READING else \
                selectors.EVENT_WRITE
            sel.register(pgconn.socket, event)
            ready = sel.select(max(0.0, left)) if left > 0 else []
            sel.unregister(pgconn.socket)
            if not ready:
                pgconn.finish()
                return None
            status = pq.PollingStatus(pgconn.connect_poll())
    if status != pq.PollingStatus.OK:
        message = pgconn.get_error_message()
        pgconn.finish()
        raise _connection_error(url, ConnectionError(message), 1)
    return pgconn


def _bounded_pid(pgconn: psycopg.pq.abc.PGconn, timeout_s: float) -> int | None:
    """`SELECT pg_backend_pid()` on a libpq connection in autocommit, or None when it failed
    or no answer came within `timeout_s` (the pooler found no server for it)."""
    import select

    from psycopg import pq

    pgconn.send_query(b"SELECT pg_backend_pid()")
    while pgconn.flush():  # pragma: no cover (a 23-byte query fits any socket buffer)
        select.select([], [pgconn.socket], [], timeout_s)
    deadline = _now() + timeout_s
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        left = deadline - _now()
        if left <= 0 or not select.select([pgconn.socket], [], [], left)[0]:
            return None
    pid = None
    while (res := pgconn.get_result()) is not None:
        if res.status == pq.ExecStatus.TUPLES_OK and res.ntuples == 1:
            value = res.get_value(0, 0)
            pid = int(value) if value is not None else None
    return pid


def _now() -> float:
    import time

    return time.monotonic()


def check_not_transaction_pooler(url: str) -> None:
    """Refuse Supabase's transaction pooler: it hands each transaction to another backend."""
    _, port = host_port(url)
    if port == str(TRANSACTION_POOLER_PORT):
        raise PoolerError(
            f"{redact(url)} uses port {TRANSACTION_POOLER_PORT}, the transaction pooler: "
            "a session advisory lock cannot be held there, so concurrent migrations "
            "could not be excluded.",
            hint="Use the direct connection or the session pooler (port 5432).",
        )


def _is_retryable(exc: BaseException) -> bool:
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    # Wrong credentials or a missing database will not fix themselves.
    return not any(s in text for s in ("password", "authentication", "does not exist",
                                       "no pg_hba.conf entry", "role"))


def connect(url: str, *, autocommit: bool = False, attempts: int = 3,
            first_wait: float = 0.2) -> psycopg.Connection:
    """Connect as application `dbsage`, retrying with exponential backoff.

    Raises ConnectionFailedError naming host and port (password redacted) after `attempts`.
    """
    import psycopg

    from dbsage.tools.execute import with_retry

    tried = 0

    def once() -> psycopg.Connection:
        nonlocal tried
        tried += 1
        conn = psycopg.connect(url, autocommit=autocommit, application_name=APPLICATION_NAME,
                               connect_timeout=10)
        _notice_a_dead_client(conn)
        return conn

    try:
        conn, _ = with_retry(once, attempts=attempts, first_wait_s=first_wait, max_wait_s=5,
                             retry_if=_is_retryable)
    except psycopg.OperationalError as exc:
        raise _connection_error(url, exc, tried) from None
    return conn


def _notice_a_dead_client(conn: psycopg.Connection) -> None:
    """PostgreSQL 14+: have the server check every second that dbsage is still there, so a
    killed dbsage's advisory lock (and open transaction) is freed within a second instead of
    when the next write to the dead socket fails (seconds to minutes)."""
    if conn.info.server_version < 140000:
        return
    conn.execute("SELECT set_config('client_connection_check_interval', '1s', false)")
    if not conn.autocommit:
        conn.commit()


def _connection_error(url: str, exc: BaseException | None, attempts: int) -> ConnectionFailedError:
    host, port = host_port(url)
    reason = redact(str(exc).strip()) if exc else "unknown error"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return ConnectionFailedError(
        f"Cannot connect to PostgreSQL at host {host}, port {port}{tries}: {reason}",
        hint="Check that the server is running and that the URL is right.",
        host=host,
        port=port,
    )
