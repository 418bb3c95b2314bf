"""Target resolution, redaction and connection retry."""

from __future__ import annotations

import time

import pytest

from dbsage.tools.connection import connect, host_port, redact, resolve_target
from dbsage.tools.errors import ConnectionFailedError


@pytest.mark.parametrize("text, secret", [
    ("postgresql://user:s3cr3t@db.example.com:5432/postgres", "s3cr3t"),
    ("postgres://postgres.abc:p%40ss@aws-0-eu.pooler.supabase.com:6543/postgres", "p%40ss"),
    ("host=h port=5432 password=hunter2 dbname=x", "hunter2"),
    ("host=h password='two words' dbname=x", "two words"),
    ("postgresql://u@h/db?sslmode=require&password=qwerty", "qwerty"),
    ("error while connecting to postgresql://a:b1b2@h/db: timeout", "b1b2"),
])
def test_redact_removes_every_password(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_keeps_urls_without_password_intact() -> None:
    url = "postgresql://postgres@/postgres?host=/tmp/x"
    assert redact(url) == url


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SUPABASE_DB_URL": "postgresql://s@h/s", "DATABASE_URL": "postgresql://d@h/d"}
    flag = resolve_target("postgresql://f@h/f", env)
    assert flag and (flag.source, flag.url) == ("--db", "postgresql://f@h/f")
    supa = resolve_target(None, env)
    assert supa and supa.source == "SUPABASE_DB_URL"
    dburl = resolve_target(None, {"DATABASE_URL": "postgresql://d@h/d"})
    assert dburl and dburl.source == "DATABASE_URL"
    assert resolve_target(None, {}) is None


def test_host_port_of_urls_and_conninfo() -> None:
    assert host_port("postgresql://u:p@db.x:6543/d") == ("db.x", "6543")
    assert host_port("postgresql://u@/d?host=/tmp/s") == ("/tmp/s", "5432")
    assert host_port("host=a port=7 dbname=x") == ("a", "7")


def test_unreachable_server_is_retried_three_times_then_named() -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailedError) as e:
        connect("postgresql://u:topsecret@127.0.0.1:1/db", first_wait=0.1)
    elapsed = time.monotonic() - t0
    msg = e.value.message
    assert "host 127.0.0.1, port 1 after 3 attempts" in msg
    assert "topsecret" not in msg
    assert elapsed >= 0.25  # two backoff waits: 0.1 s then 0.2 s
    assert e.value.exit_code == 2


def test_wrong_database_is_not_retried(db18: object) -> None:
    url = db18.server.url("no_such_database_here")  # type: ignore[attr-defined]
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailedError) as e:
        connect(url, first_wait=1.0)
    assert time.monotonic() - t0 < 0.9
    assert "after 3 attempts" not in e.value.message
    assert "does not exist" in e.value.message


def test_connections_are_named_dbsage(db18: object) -> None:
    with connect(db18.url) as conn:  # type: ignore[attr-defined]
        assert conn.execute("show application_name").fetchone() == ("dbsage",)
