"""Resolve the target database, redact secrets, and connect with retry."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

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


def libpq_argv_env(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The URL for a libpq program's command line, and its environment.

    A password in a postgres:// URL moves to PGPASSWORD, so it never shows in `ps`.
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("PGAPPNAME", APPLICATION_NAME)
    if "://" not in url:
        return url, env
    parts = urlsplit(url)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), env


def resolve_target(db: str | None = None, environ: Mapping[str, str] | None = None) -> Target | None:
    """`--db` > SUPABASE_DB_URL > DATABASE_URL; None means: use the embedded server."""
    env = os.environ if environ is None else environ
    if db:
        return Target(db, "--db")
    for name in ("SUPABASE_DB_URL", "DATABASE_URL"):
        if env.get(name):
            return Target(env[name], name)
    return None


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
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential,
    )

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_wait, max=5),
        retry=retry_if_exception(_is_retryable),
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                return psycopg.connect(url, autocommit=autocommit,
                                       application_name=APPLICATION_NAME, connect_timeout=10)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise _connection_error(url, last, attempts) from None
    except psycopg.OperationalError as exc:
        raise _connection_error(url, exc, 1) from None
    raise AssertionError("unreachable")  # pragma: no cover


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
