"""`dbsage smoke-test` as a user runs it: what the text report names, how test files are run
(pgTAP by their content, not by what the server has), and how it fails."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Db
from helpers import run_cli

PGTAP_FILE = """begin;
select plan(2);
select ok(true, 'fine');
select is(1 + 1, 2, 'arithmetic');
select * from finish();
rollback;
"""


def _tests(project: Path, **files: str) -> None:
    folder = project / "supabase" / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / f"{name}.sql").write_text(sql)


def test_the_text_report_names_each_foreign_key_without_an_index(db: Db, project: Path) -> None:
    db.execute("create table users (id int primary key);"
               "create table todos (id int primary key, owner int, "
               "constraint todos_owner_fk foreign key (owner) references users);"
               "alter table users enable row level security;"
               "alter table todos enable row level security")
    _tests(project, plain="select count(*) from todos;\n")
    out = run_cli("smoke-test", "--db", db.url, cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 foreign key(s) without an index" in out.stdout
    assert ("- todos (owner) → users, constraint todos_owner_fk: CREATE INDEX ON todos (owner)"
            in out.stdout)
    # A plain-SQL file is plain SQL, on 15 (which has pgTAP) as on 18 (which has not).
    assert "✓ supabase/tests/plain.sql (plain, 1 test(s))" in out.stdout
    report = json.loads(run_cli("smoke-test", "--db", db.url, "--json", cwd=project).stdout)
    assert report["mode"] is None  # a smoke test asks nothing: no `mode: yolo`
    assert [t["mode"] for t in report["smoke"]["user_tests"]] == ["plain"]


def test_a_pgtap_file_without_pgtap_on_the_server_is_a_clear_exit_2(db18: Db,
                                                                    project: Path) -> None:
    _tests(project, a_plain="select 1;\n", b_tap=PGTAP_FILE)
    out = run_cli("smoke-test", "--db", db18.url, cwd=project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert ("supabase/tests/b_tap.sql:2: a pgTAP test (it calls plan(), ok(), is(), finish()), "
            "but this PostgreSQL 18 server has no pgTAP extension") in out.stdout
    assert "apt-get install postgresql-18-pgtap" in out.stdout
    assert "function plan(integer) does not exist" not in out.stdout
    assert "Tables and views" not in out.stdout  # nothing ran
    assert "Migration" not in out.stdout
    assert out.stdout.startswith("❌ Smoke test could not run")


def test_a_pgtap_file_runs_with_pgtap_where_the_server_has_it(db15: Db, project: Path) -> None:
    _tests(project, a_plain="select 1;\n", b_tap=PGTAP_FILE)
    out = run_cli("smoke-test", "--db", db15.url, cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ supabase/tests/a_plain.sql (plain, 1 test(s))" in out.stdout
    assert "✓ supabase/tests/b_tap.sql (pgtap, 2 test(s))" in out.stdout
    with db15.connect() as conn:  # created for the test only, rolled back with it
        assert conn.execute("select count(*) from pg_extension where extname = 'pgtap'"
                            ).fetchone() == (0,)


def test_a_connection_failure_is_not_a_refused_migration(project: Path) -> None:
    out = run_cli("smoke-test", "--db", "postgresql://u@127.0.0.1:1/x", cwd=project)
    assert out.returncode == 2
    assert out.stdout.startswith("❌ Smoke test could not run")
    assert "Migration" not in out.stdout
    assert "Cannot connect to PostgreSQL at host 127.0.0.1, port 1" in out.stdout
