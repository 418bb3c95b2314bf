"""Every bad input is a message with exit 2, before anything runs: a table of more than 100
cases through the real CLI (in-process with typer's runner), each asserting the exit code,
the message and that neither the database nor the project folder changed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Db, Server, _new_database
from typer.testing import CliRunner

from dbsage.agent.cli import app

BAD_DURATIONS = [("", "duration"), ("-1", "not a duration"), ("abc", "not a duration"),
                 ("10", "needs a unit"), ("1.5s", "not a duration"), ("5m", "unknown unit"),
                 ("25d", "longer than PostgreSQL allows"), ("1 s s", "not a duration"),
                 ("∞", "not a duration")]
LOCK_COMMANDS = [["apply", "x.sql", "--mode", "yolo"], ["dry-run", "x.sql"], ["plan", "x.sql"],
                 ["rollback", "latest", "--mode", "yolo"]]
STATEMENT_COMMANDS = [["apply", "x.sql", "--mode", "yolo"], ["dry-run", "x.sql"],
                      ["rollback", "latest", "--mode", "yolo"]]
BAD_URLS = [("", "empty"), ("localhost:5432", "neither a postgresql:// URL"),
            ("mysql://u@h/d", "'mysql://' is not a PostgreSQL URL"),
            ("http://example.com", "'http://' is not a PostgreSQL URL"),
            ("garbage here", "neither a postgresql:// URL"),
            ("postgresql://u@h/d?foo=1", "unknown connection parameter 'foo'"),
            ("postgresql://u@h/d?sslmod=require", "did you mean 'sslmode'"),
            ("host=/tmp dbnam=x", "did you mean 'dbname'"),
            ("postgresql://u@h:54x/d", "port is not a number")]
URL_COMMANDS = [["apply", "x.sql", "--mode", "yolo"], ["dry-run", "x.sql"], ["status"],
                ["smoke-test"]]

CASES: list[tuple[list[str], str]] = []
CASES += [([*cmd, "--lock-timeout", v], m) for cmd in LOCK_COMMANDS for v, m in BAD_DURATIONS]
CASES += [([*cmd, "--statement-timeout", v], m) for cmd in STATEMENT_COMMANDS
          for v, m in BAD_DURATIONS]
CASES += [([*cmd, "--db", v], m) for cmd in URL_COMMANDS for v, m in BAD_URLS]
CASES += [(["apply", "x.sql", "--mode", v], "unknown mode") for v in ("fast", "YOLO!", "")]
CASES += [(["rollback", "latest", "--mode", v], "unknown mode") for v in ("fast", "batch")]
CASES += [(["rollback", v], m) for v, m in (("../20250101000000", "not a path"),
                                           ("supabase/migrations/x.sql", "not a path"),
                                           ("abc", "expected a version or run TS"),
                                           ("2025-01-01", "expected a version or run TS"))]
CASES += [(["smoke-test", "--exposed-schemas", v], "schema names") for v in ("a b", "1x", ",")]
CASES += [(["apply", "x.sql", "--bogus"], "No such option"),
          (["dry-run"], "Missing argument"), (["status", "extra"], "unexpected extra")]


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _catalog(db: Db) -> tuple[object, ...]:
    return (db.scalar("select count(*) from pg_class c join pg_namespace n on n.oid = "
                      "c.relnamespace where n.nspname not in ('pg_catalog', "
                      "'information_schema', 'pg_toast')"),
            db.scalar("select count(*) from pg_namespace"))


@pytest.fixture(scope="module")
def shared_db(pg18: Server) -> Iterator[Db]:
    """One database for the whole table: every case must leave it as it was anyway."""
    yield from _new_database(pg18)


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SUPABASE_DB_URL", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c) or "-" for c, _ in CASES])
def test_bad_input_is_a_message_with_exit_2_and_changes_nothing(
        argv: list[str], message: str, shared_db: Db, project: Path, quiet_env: None) -> None:
    db18 = shared_db
    if "--db" not in argv:
        argv = [*argv, "--db", db18.url]
    before_files, before_db = _snapshot(project), _catalog(db18)
    result = CliRunner().invoke(app, argv)
    text = result.output
    assert result.exit_code == 2, text
    assert message.lower() in text.lower(), text
    assert "Traceback" not in text
    assert _snapshot(project) == before_files  # nothing written
    assert _catalog(db18) == before_db  # nothing created in the database


BAD_FILES = [
    ("20250101000000_missing.sql", None, "no such file"),
    ("20250101000000_empty.sql", b"", "empty"),
    ("20250101000000_latin1.sql", "select 'é';".encode("latin-1"), "UTF-8"),
    ("20250101000000_nul.sql", b"select 1;\x00select 2;", "NUL"),
    ("20250101000000_meta.sql", b"\\i other.sql\n", "psql meta-command"),
    ("20250101000000_syntax.sql", b"create tabel t (id int);\n", "syntax error"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_is_refused_before_the_database_is_touched(
        name: str, content: bytes | None, message: str, db18: Db, project: Path,
        quiet_env: None) -> None:
    path = project / "supabase" / "migrations" / name
    if content is not None:
        path.write_bytes(content)
    before_files, before_db = _snapshot(project), _catalog(db18)
    result = CliRunner().invoke(app, ["apply", str(path), "--mode", "yolo", "--db", db18.url])
    text = result.output
    assert result.exit_code == 2, text
    assert message.lower() in text.lower(), text
    assert _snapshot(project) == before_files and _catalog(db18) == before_db


def test_a_url_from_the_environment_gets_the_same_check(project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:hunter2@h/d")
    monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "DATABASE_URL is not a PostgreSQL connection string" in result.output
    assert "hunter2" not in result.output
    assert not (project / ".dbsage").exists()  # no local server was started instead


def test_a_read_only_session_is_refused(db18: Db, project: Path, quiet_env: None) -> None:
    path = project / "supabase" / "migrations" / "20250101000000_t.sql"
    path.write_text("create table public.t (id int);\n")
    url = f"{db18.url}&options=-c%20default_transaction_read_only%3Don"
    before = _catalog(db18)
    result = CliRunner().invoke(app, ["apply", str(path), "--mode", "yolo", "--db", url])
    assert result.exit_code == 2, result.output
    assert "read-only" in result.output and "Traceback" not in result.output
    assert _catalog(db18) == before
    assert os.path.exists(path)
