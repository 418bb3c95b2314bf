"""The Supabase CLI's statement split, reproduced by tools/cli_split.py: pure vectors, no database.

Vectors marked "CLI state_test.go" / "CLI token_test.go" restate the cases of the CLI's own Go
tests (apps/cli-go/pkg/parser/*_test.go at supabase/cli 1d1e7191, v2.104.0): the Go test joins
the parts, runs ``parser.Split`` and expects the parts back, so those vectors check the raw split
and, derived from them, the trimmed one. Every expectation here, the CLI-derived ones and ours,
was also checked against the CLI's Go parser built from that commit.
"""

from __future__ import annotations

import pytest

from dbsage.tools.cli_split import (
    CLI_COMMIT,
    MAX_SCANNER_CAPACITY,
    ScannerTokenTooLong,
    matches_cli_history,
    split_like_cli,
    split_raw_like_cli,
    statements_for_history,
    trim_like_cli,
)

# --- from the CLI's state_test.go: (name, raw parts); input is "".join(parts) ----------------

CLI_RAW_VECTORS: list[tuple[str, list[str]]] = [
    ("line comment after separator", ["END;", "-- comment"]),
    ("line comment before separator", ["SELECT --; 1"]),
    ("line comment not started", ["- ;", "END"]),
    ("line comment between lines", ["-- /* \n;", " */ END"]),
    ("block comment contains separator", ["SELECT /* ; */ 1;"]),
    ("nested block comment", ["SELECT /*; /*;*/ ;*/ 1"]),
    ("block comment not started", ["/ * ;", " */ END"]),
    ("separator without spaces", [";", "END;", ";"]),
    ("separator between spaces", ["BEGIN   ;", "  END"]),
    ("backslash escaped separator", ["\\;;", "\\;"]),
    ("named dollar tag", ["$tag$ any ; string$tag$"]),
    ("anonymous dollar tag", ["$$\"Dane's horse\"$$"]),
    ("dollar not started", ["SELECT \"$\";", " $$"]),
    ("single quote escapes separator", ["SELECT ';' 1"]),
    ("doubled single quote", ["SELECT ';'';' 1"]),
    ("backslash is literal in quotes", ["SELECT '\\';", " 1'"]),
    ("double quote escapes separator", ['CREATE POLICY "cats;dogs" on cats_dogs;', " END"]),
    ("single quote inside double quotes", ["CREATE POLICY \"cat's and dog's\" on cats_dogs;", " END"]),
    ("doubled double quote", ['CREATE POLICY "pet""name" on pets;', " END"]),
    ("CREATE RULE body in parentheses",
     ['CREATE RULE notify_me AS ON UPDATE TO mytable DO (NOTIFY mytable; SELECT "1");', "SELECT 1"]),
    ("parentheses ignore literals and comments",
     ["CREATE RULE notify_me AS ON UPDATE TO mytable DO (-- )\nSELECT ')';\n-- )\n)\n"]),
    ("BEGIN ATOMIC inline body",
     ["CREATE FUNCTION add(a integer, b integer) RETURNS integer\nLANGUAGE SQL\n"
      "IMMUTABLE STRICT PARALLEL SAFE\nRETURNS NULL ON NULL INPUT\nBEGIN ATOMIC\n"
      "\tSELECT 'add';\n\tSELECT a + b;\nEND;"]),
    ("BEGIN ATOMIC case-insensitive", ["begin atomic; select 'end'; end"]),
    ("BEGIN ATOMIC ignores comments", ["CREATE FUNCTION test() BEGIN\nATOMIC-- END;\n-- END;\nEND\n;"]),
    *[(f"atomic inside identifier {name}",
       [f"CREATE OR REPLACE FUNCTION {name}()\nRETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  NULL;\n"
        "END;\n$$;", "\nSELECT 1;"])
      for name in ("fn_atomic", "atomic_fn", "my_atomic_thing", "xatomicx", "fn_ATomiC")],
    ("schema-qualified atomic_ function",
     ["CREATE OR REPLACE FUNCTION public.atomic_example()\nRETURNS INTEGER\nLANGUAGE plpgsql\nAS $$\n"
      "BEGIN\n  RETURN 1;\nEND;\n$$;",
      "\nGRANT EXECUTE ON FUNCTION public.atomic_example() TO authenticated;"]),
]


@pytest.mark.parametrize(("name", "parts"), CLI_RAW_VECTORS, ids=[v[0] for v in CLI_RAW_VECTORS])
def test_raw_split_matches_cli_go_tests(name: str, parts: list[str]) -> None:
    assert split_raw_like_cli("".join(parts)) == parts


@pytest.mark.parametrize(("name", "parts"), CLI_RAW_VECTORS, ids=[v[0] for v in CLI_RAW_VECTORS])
def test_trimmed_split_is_trim_of_raw(name: str, parts: list[str]) -> None:
    expected = [t for t in (trim_like_cli(p) for p in parts) if t]
    assert split_like_cli("".join(parts)) == expected


def test_cli_go_trimmed_examples() -> None:
    # the trimmed (SplitAndTrim) form of some CLI vectors, spelled out
    assert split_like_cli("END;-- comment") == ["END", "-- comment"]
    assert split_like_cli(";END;;") == ["END"]
    assert split_like_cli("BEGIN   ;  END") == ["BEGIN", "END"]
    # TrimRight(";") cuts the escaped ";" as well
    assert split_like_cli("\\;;\\;") == ["\\", "\\"]
    assert split_like_cli("SELECT '\\'; 1'") == ["SELECT '\\'", "1'"]


def test_scanner_buffer_overflow_like_cli_token_test() -> None:
    # CLI token_test.go TestSplitAndTrim: the statement before the over-long token survives
    with pytest.raises(ScannerTokenTooLong) as info:
        split_like_cli("\tBEGIN; " + "a" * MAX_SCANNER_CAPACITY, scanner_capacity=MAX_SCANNER_CAPACITY)
    assert info.value.statements == ["BEGIN"]


# --- our vectors: (name, file text, exact statements the CLI records) ------------------------

PG_DUMP_HEADER = """--
-- PostgreSQL database dump
--

-- Dumped from database version 15.1
-- Dumped by pg_dump version 15.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

COMMENT ON SCHEMA "public" IS 'standard public schema';

CREATE TABLE IF NOT EXISTS "public"."notes" (
    "id" bigint NOT NULL,
    "body" "text" DEFAULT ''::"text"
);

ALTER TABLE "public"."notes" OWNER TO "postgres";

--
-- PostgreSQL database dump complete
--

"""

PG_DUMP_EXPECTED = [
    "--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.1\n"
    "-- Dumped by pg_dump version 15.6\n\nSET statement_timeout = 0",
    "SET lock_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    "SET client_encoding = 'UTF8'",
    "SET standard_conforming_strings = on",
    "SELECT pg_catalog.set_config('search_path', '', false)",
    "SET check_function_bodies = false",
    "SET xmloption = content",
    "SET client_min_messages = warning",
    "SET row_security = off",
    "COMMENT ON SCHEMA \"public\" IS 'standard public schema'",
    'CREATE TABLE IF NOT EXISTS "public"."notes" (\n    "id" bigint NOT NULL,\n'
    '    "body" "text" DEFAULT \'\'::"text"\n)',
    'ALTER TABLE "public"."notes" OWNER TO "postgres"',
    "--\n-- PostgreSQL database dump complete\n--",
]

VECTORS: list[tuple[str, str, list[str]]] = [
    ("line comment stays with the next statement",
     "-- create the table\nCREATE TABLE t (id int);\n",
     ["-- create the table\nCREATE TABLE t (id int)"]),
    ("block comment stays with the next statement",
     "/* header\n   ; not a separator */\nSELECT 1;\n",
     ["/* header\n   ; not a separator */\nSELECT 1"]),
    ("comment at the end of a statement line",
     "SELECT 1; -- first\nSELECT 2; -- second\n",
     ["SELECT 1", "-- first\nSELECT 2", "-- second"]),
    ("BEGIN and COMMIT are statements of their own",
     "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
     ["BEGIN", "CREATE TABLE a (id int)", "COMMIT"]),
    ("trailing comment after the last ;",
     "SELECT 1;\n\n-- done\n",
     ["SELECT 1", "-- done"]),
    ("last statement without ;",
     "SELECT 1;\nSELECT 2\n",
     ["SELECT 1", "SELECT 2"]),
    ("single statement without ; ending in a comment",
     "SELECT 1 -- no semicolon",
     ["SELECT 1 -- no semicolon"]),
    ("empty statements and white space vanish",
     "SELECT 1;;\n;  ;\t\nSELECT 2;\n\n",
     ["SELECT 1", "SELECT 2"]),
    ("space before ; is trimmed",
     "SELECT 1 ;\n",
     ["SELECT 1"]),
    ("CRLF line ends are kept inside statements",
     "CREATE TABLE a (\r\n  id int\r\n);\r\n-- c\r\nSELECT 1;\r\n",
     ["CREATE TABLE a (\r\n  id int\r\n)", "-- c\r\nSELECT 1"]),
    ("pg_dump header with SET lines and set_config", PG_DUMP_HEADER, PG_DUMP_EXPECTED),
    ("plpgsql function body with ; inside $$",
     "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\n  RETURN 1;\n"
     "END;\n$$;\nSELECT f();\n",
     ["CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\n  RETURN 1;\n"
      "END;\n$$", "SELECT f()"]),
    ("nested dollar tags",
     "DO $outer$\nBEGIN\n  EXECUTE $q$SELECT 1; SELECT 2$q$;\n  RAISE NOTICE $$a;b$$;\nEND\n$outer$;\n"
     "SELECT 3;",
     ["DO $outer$\nBEGIN\n  EXECUTE $q$SELECT 1; SELECT 2$q$;\n  RAISE NOTICE $$a;b$$;\nEND\n$outer$",
      "SELECT 3"]),
    ("$$ inside a named tag",
     "CREATE FUNCTION g() RETURNS text AS $fn$ SELECT $$a;b$$ $fn$ LANGUAGE sql;SELECT 1",
     ["CREATE FUNCTION g() RETURNS text AS $fn$ SELECT $$a;b$$ $fn$ LANGUAGE sql", "SELECT 1"]),
    ("quoted identifiers with ;",
     'CREATE TABLE "we;ird" ("c;ol" int);SELECT "x""y;z" FROM "we;ird";',
     ['CREATE TABLE "we;ird" ("c;ol" int)', 'SELECT "x""y;z" FROM "we;ird"']),
    ("E'' string with an escaped backslash",
     "SELECT E'a\\\\b'; SELECT 1;",
     ["SELECT E'a\\\\b'", "SELECT 1"]),
    ("E'' string with doubled quote",
     "SELECT E'it''s'; SELECT 1;",
     ["SELECT E'it''s'", "SELECT 1"]),
    # the CLI ends the literal at \' and opens a new one at the next ': the rest is one token,
    # and its last ; survives because ";" is trimmed before the white space
    ("E'' string with backslash-quote (CLI quirk)",
     "SELECT E'it\\'s';\nSELECT 2;\n",
     ["SELECT E'it\\'s';\nSELECT 2;"]),
    ("SQL-standard BEGIN ATOMIC body",
     "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\nSELECT one();",
     ["CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND", "SELECT one()"]),
    # END is matched anywhere in the text, so "legend" ends the body early
    ("BEGIN ATOMIC closed by an identifier ending in end (CLI quirk)",
     "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC\n  SELECT legend FROM t;\n  SELECT 2;\nEND;",
     ["CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC\n  SELECT legend FROM t", "SELECT 2", "END"]),
    ("BEGIN; ATOMIC does not open a body",
     "BEGIN; ATOMIC; END;",
     ["BEGIN", "ATOMIC", "END"]),
    ("nested parentheses in CREATE TABLE",
     "CREATE TABLE t (a int CHECK (a > 0), b text DEFAULT ';');SELECT 1",
     ["CREATE TABLE t (a int CHECK (a > 0), b text DEFAULT ';')", "SELECT 1"]),
    # one ")" closes both groups, so the ; after (1) splits the rule
    ("CREATE RULE with nested parentheses (CLI quirk)",
     "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO log VALUES (1); NOTIFY t);",
     ["CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO log VALUES (1)", "NOTIFY t)"]),
    ("positional parameters and $ in identifiers",
     "SELECT $1, a$b FROM t; SELECT 2;",
     ["SELECT $1, a$b FROM t", "SELECT 2"]),
    ("a$b$c opens a dollar quote (CLI quirk)",
     "SELECT 1 AS a$b$c; SELECT 2;",
     ["SELECT 1 AS a$b$c; SELECT 2"]),
    ("dollar tag overlapping its own close (CLI quirk)",
     "SELECT $a$a$; SELECT 1;",
     ["SELECT $a$a$", "SELECT 1"]),
    ("non-ASCII letter ends a dollar tag (CLI quirk)",
     "SELECT $é$;$é$;",
     ["SELECT $é$", "$é$"]),
    ("/*/ opens and closes a block comment (CLI quirk)",
     "/*/ SELECT 1; */ SELECT 2;",
     ["/*/ SELECT 1", "*/ SELECT 2"]),
    ("unterminated dollar quote runs to end of file",
     "SELECT 1;\nDO $$ BEGIN; RAISE NOTICE 'x';",
     ["SELECT 1", "DO $$ BEGIN; RAISE NOTICE 'x'"]),
    ("psql meta-command is glued to the next statement",
     "\\set ON_ERROR_STOP on\nSELECT 1;\n",
     ["\\set ON_ERROR_STOP on\nSELECT 1"]),
    ("COPY data is not special",
     "COPY t (a) FROM stdin;\n1\n2\n\\.\nSELECT 1;",
     ["COPY t (a) FROM stdin", "1\n2\n\\.\nSELECT 1"]),
    ("Go TrimSpace: NBSP and U+2003 trimmed, U+001C kept",
     "SELECT 1;\u00a0\u2003\nSELECT 2;\x1c",
     ["SELECT 1", "SELECT 2", "\x1c"]),
    ("non-ASCII inside quotes",
     'SELECT "é;", \'中;文\'; SELECT 2',
     ['SELECT "é;", \'中;文\'', "SELECT 2"]),
    ("comment-only file", "-- nothing here\n", ["-- nothing here"]),
    ("white-space-only file", " \n\t\r\n", []),
    ("empty file", "", []),
]


@pytest.mark.parametrize(("name", "text", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_split_like_cli(name: str, text: str, expected: list[str]) -> None:
    assert split_like_cli(text) == expected


@pytest.mark.parametrize(("name", "text", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_raw_tokens_cover_the_text(name: str, text: str, expected: list[str]) -> None:
    raw = split_raw_like_cli(text)
    assert "".join(raw) == text
    assert [t for t in map(trim_like_cli, raw) if t] == expected


# --- BEGIN ATOMIC rule before v2.91.1 ---------------------------------------------------------

def test_legacy_atomic_rule_swallows_the_rest_after_an_atomic_identifier() -> None:
    text = "ALTER TABLE t ADD COLUMN is_atomic bool;\nSELECT 1;"
    assert split_like_cli(text) == ["ALTER TABLE t ADD COLUMN is_atomic bool", "SELECT 1"]
    assert split_like_cli(text, legacy_begin_atomic=True) == [
        "ALTER TABLE t ADD COLUMN is_atomic bool;\nSELECT 1"]


def test_legacy_atomic_rule_on_cli_go_vector() -> None:
    # the case the v2.91.1 fix added to state_test.go: one statement for older CLIs
    text = ("CREATE OR REPLACE FUNCTION fn_atomic()\nRETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
            "  NULL;\nEND;\n$$;\nSELECT 1;")
    assert len(split_like_cli(text)) == 2
    assert split_like_cli(text, legacy_begin_atomic=True) == [text[:-1]]


def test_legacy_rule_agrees_on_real_begin_atomic() -> None:
    text = "CREATE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2;"
    assert split_like_cli(text, legacy_begin_atomic=True) == split_like_cli(text) == [
        "CREATE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", "SELECT 2"]


# --- scanner capacity (bufio.Scanner) ---------------------------------------------------------

def test_capacity_terminated_token_may_fill_the_buffer() -> None:
    text = "a" * 4999 + ";"
    assert split_raw_like_cli(text, scanner_capacity=5000) == [text]
    with pytest.raises(ScannerTokenTooLong):
        split_raw_like_cli("a" * 5000 + ";", scanner_capacity=5000)


def test_capacity_final_token_must_be_shorter_than_the_buffer() -> None:
    assert split_raw_like_cli("x;" + "a" * 4999, scanner_capacity=5000) == ["x;", "a" * 4999]
    with pytest.raises(ScannerTokenTooLong) as info:
        split_raw_like_cli("x;" + "a" * 5000, scanner_capacity=5000)
    assert info.value.statements == ["x;"]


def test_capacity_counts_utf8_bytes_and_never_below_4096() -> None:
    with pytest.raises(ScannerTokenTooLong):
        split_raw_like_cli("é" * 2500, scanner_capacity=5000)  # 5000 bytes
    assert split_raw_like_cli("a" * 4095, scanner_capacity=100) == ["a" * 4095]
    with pytest.raises(ScannerTokenTooLong):
        split_raw_like_cli("a" * 4096, scanner_capacity=100)


def test_no_capacity_no_limit() -> None:
    assert split_like_cli("SELECT '" + "x" * (MAX_SCANNER_CAPACITY + 1) + "'") != []


# --- history rows -----------------------------------------------------------------------------

def test_trim_like_cli_order() -> None:
    assert trim_like_cli("\n  SELECT 1;") == "SELECT 1"
    assert trim_like_cli("SELECT 1;\n") == "SELECT 1;"  # ";" is cut before the white space
    assert trim_like_cli(" ;;") == ""


def test_statements_for_history_is_null_for_no_statements() -> None:
    assert statements_for_history(";\n  ;\n") is None
    assert statements_for_history("SELECT 1;\n-- end") == ["SELECT 1", "-- end"]


def test_matches_cli_history() -> None:
    text = "BEGIN;\n-- add a column\nALTER TABLE t ADD COLUMN is_atomic bool;\nCOMMIT;\n"
    current = ["BEGIN", "-- add a column\nALTER TABLE t ADD COLUMN is_atomic bool", "COMMIT"]
    # the legacy rule opens a body at "is_atomic" that no END closes; the final token ends
    # in "\n", so its ";" is kept
    legacy = ["BEGIN", "-- add a column\nALTER TABLE t ADD COLUMN is_atomic bool;\nCOMMIT;"]
    assert split_like_cli(text) == current
    assert split_like_cli(text, legacy_begin_atomic=True) == legacy
    assert matches_cli_history(text, current)
    assert matches_cli_history(text, tuple(legacy))
    assert not matches_cli_history(text, ["ALTER TABLE t ADD COLUMN is_atomic bool"])  # pglast's view
    assert not matches_cli_history(text, None)
    assert matches_cli_history("  \n", None)  # CLI >= v1.149.0
    assert matches_cli_history("  \n", [])  # CLI v1.67.0 .. v1.148.x
    assert not matches_cli_history("SELECT 1;", [])


def test_module_names_the_cli_commit() -> None:
    import dbsage.tools.cli_split as mod

    assert len(CLI_COMMIT) == 40
    assert CLI_COMMIT in (mod.__doc__ or "")
