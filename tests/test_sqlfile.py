"""Reading and splitting migration files: nothing here touches a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbsage.tools.errors import MigrationFileError, TransactionShapeError
from dbsage.tools.sqlfile import parse_statements, read_migration, split_version_name


def write(tmp_path: Path, text: str | bytes, name: str = "20250101000000_x.sql") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_statements_keep_their_file_lines_across_comments_and_dollar_quotes() -> None:
    sql = (
        "-- header comment\n"
        "\n"
        "create table a (\n"
        "  id int primary key\n"
        ");\n"
        "/* block\n   comment */ create function f() returns int language sql as $$\n"
        "  select 1; select 2;\n"
        "$$;\n"
        "insert into a values (1); insert into a values (2);\n"
    )
    stmts, wrapped = parse_statements(sql)
    assert not wrapped
    assert [(s.index, s.line, s.kind) for s in stmts] == [
        (1, 3, "CreateStmt"), (2, 7, "CreateFunctionStmt"), (3, 10, "InsertStmt"),
        (4, 10, "InsertStmt")]
    assert stmts[1].sql.endswith("$$")
    assert stmts[0].end_line == 5


def test_utf8_text_before_a_statement_does_not_shift_lines() -> None:
    stmts, _ = parse_statements("-- ünïcödé ✓\nselect 'é';\nselect 2;")
    assert [s.line for s in stmts] == [2, 3]
    assert stmts[0].sql == "select 'é'"


def test_outer_begin_commit_is_accepted_and_stripped() -> None:
    stmts, wrapped = parse_statements("BEGIN;\ncreate table a (id int);\nCOMMIT;\n")
    assert wrapped
    assert [s.kind for s in stmts] == ["CreateStmt"]


@pytest.mark.parametrize("sql, line, needle", [
    ("create table a (id int);\ncommit;\ncreate table b (id int);", 2, "COMMIT"),
    ("create table a (id int);\nrollback;\n", 2, "ROLLBACK"),
    ("begin;\ncreate table a (id int);\nbegin;\ncreate table b (id int);\ncommit;", 3, "BEGIN"),
    ("begin;\ncreate table a (id int);\n", 1, "does not end with COMMIT"),
])
def test_transaction_control_in_the_middle_is_refused(sql: str, line: int, needle: str) -> None:
    with pytest.raises(TransactionShapeError) as e:
        parse_statements(sql, "m.sql")
    assert e.value.line == line
    assert needle in e.value.message
    assert e.value.hint


def test_savepoints_are_allowed_inside_the_migration() -> None:
    stmts, _ = parse_statements("create table a (id int);\nsavepoint s;\nrelease savepoint s;")
    assert len(stmts) == 3


@pytest.mark.parametrize("sql", [
    "create index concurrently i on a (id)",
    "drop index concurrently i",
    "vacuum a",
    "vacuum full a",
    "reindex table concurrently a",
    "reindex database d",
    "alter system set work_mem = '8MB'",
    "create database d",
    "drop database d",
    "alter table p detach partition c concurrently",
])
def test_non_transactional_statements_are_recognised(sql: str) -> None:
    stmts, _ = parse_statements(sql)
    assert stmts[0].transactional is False


@pytest.mark.parametrize("sql", ["analyze a", "create index i on a (id)", "drop index i",
                                 "reindex table a", "alter table p detach partition c"])
def test_their_transactional_cousins_are_not_flagged(sql: str) -> None:
    stmts, _ = parse_statements(sql)
    assert stmts[0].transactional is True


def test_a_file_mixing_both_kinds_is_refused_with_advice_to_split() -> None:
    sql = "create table a (id int);\n\ncreate index concurrently a_id on a (id);\n"
    with pytest.raises(TransactionShapeError) as e:
        parse_statements(sql, "m.sql")
    assert e.value.line == 3
    assert "line 3: create index concurrently" in e.value.message
    assert "own" in (e.value.hint or "")


def test_syntax_error_names_line_column_and_suggests_the_keyword(tmp_path: Path) -> None:
    p = write(tmp_path, "create table a (id int);\ncreate tabel b (id int);\n")
    with pytest.raises(MigrationFileError) as e:
        read_migration(p)
    err = e.value
    assert (err.line, err.column) == (2, 8)
    assert err.message.startswith(f"{p}:2:8: syntax error at or near \"tabel\"")
    assert err.source_line == "create tabel b (id int);"
    assert err.hint == "Did you mean `table` instead of `tabel`?"


def test_syntax_error_at_end_of_input_points_at_the_last_line(tmp_path: Path) -> None:
    p = write(tmp_path, "create table a (id int);\ncreate table b (id int\n")
    with pytest.raises(MigrationFileError) as e:
        read_migration(p)
    assert "end of input" in e.value.message
    assert e.value.line == 2


@pytest.mark.parametrize("meta", ["\\i other.sql", "\\set ON_ERROR_STOP on", "\\connect prod",
                                  "  \\c prod"])
def test_psql_meta_commands_get_a_clear_error(tmp_path: Path, meta: str) -> None:
    p = write(tmp_path, f"create table a (id int);\n{meta}\ncreate table b (id int);\n")
    with pytest.raises(MigrationFileError) as e:
        read_migration(p)
    assert e.value.line == 2
    assert "psql meta-command" in e.value.message
    assert "\\" + meta.strip()[1:].split()[0] in e.value.message


@pytest.mark.parametrize("text", ["", "   \n\n", "-- just a comment\n/* and another */\n"])
def test_empty_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(MigrationFileError, match="no SQL statements"):
        read_migration(write(tmp_path, text))


def test_non_utf8_file_names_the_byte_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "select 1;\nselect 'caf\xe9';\n".encode("latin-1"))
    with pytest.raises(MigrationFileError) as e:
        read_migration(p)
    assert (e.value.line, e.value.column) == (2, 12)
    assert "not valid UTF-8" in e.value.message
    assert "iconv" in (e.value.hint or "")


def test_a_utf8_bom_is_ignored(tmp_path: Path) -> None:
    m = read_migration(write(tmp_path, "\ufeffselect 1;"))
    assert m.statements[0].sql == "select 1"


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="no such file"):
        read_migration(tmp_path / "nope.sql")
    with pytest.raises(MigrationFileError, match="not a regular file"):
        read_migration(tmp_path)


def test_version_name_checksum(tmp_path: Path) -> None:
    import hashlib

    p = write(tmp_path, "select 1;", "20250101000000_create_todos.sql")
    m = read_migration(p)
    assert (m.version, m.name) == ("20250101000000", "create_todos")
    assert m.checksum == hashlib.sha256(b"select 1;").hexdigest()
    assert split_version_name(Path("no_digits.sql")) == (None, "no_digits")


def test_the_version_follows_the_supabase_cli_rule() -> None:
    """`^([0-9]+)_(.*)\\.sql$`: a file the CLI skips has no version for dbsage either."""
    assert split_version_name(Path("20250101000000.sql")) == (None, "20250101000000")
    assert split_version_name(Path("20250101000000_.sql")) == ("20250101000000", "")
    assert split_version_name(Path("20250101000000_a.b.sql")) == ("20250101000000", "a.b")
    assert split_version_name(Path("2025_notes.txt")) == (None, "2025_notes")
