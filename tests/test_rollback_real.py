"""Rollback on real databases, as the role that applied (issue 11).

Every test runs as the NON-superuser postgres role on the Supabase-shaped databases of
tests/supabase_shaped.py (PostgreSQL 18 and 15), except the issue's reproduction, which is on
plain PostgreSQL with a role that owns nothing but what it creates.

The property (`test_apply_then_rollback_leaves_everything_as_before`): for each kind of
tests/rollback_kinds.py, apply the one-statement migration with dbsage, roll it back with
dbsage, and `pg_dump --schema-only -n public` is byte-identical to before, every table that
existed before has the same rows (checksums over every readable table of the user and
platform schemas), and applying the migration again succeeds.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Db
from realism.sets import SETS, RealismSet
from rollback_kinds import FIXTURE, IRREVERSIBLE, KINDS
from supabase_shaped import SupaDb, SupaServer

from dbsage.agent.modes import ScriptedAsker, YesAsker
from dbsage.agent.runner import RunOptions, prepare_rollback_only, run_apply, run_rollback_task
from dbsage.tools.platform import clone_database
from dbsage.tools.snapshot import dump_schema

VERSION = "20250101000000"
_TEMPLATES: dict[str, str] = {}  # server name -> its fixture template database


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(params=["supa18", "supa15"])
def rb_server(request: pytest.FixtureRequest) -> SupaServer:
    server: SupaServer = request.getfixturevalue(request.param)
    return server


def _fixture_template(server: SupaServer) -> str:
    """A template database: the Supabase-shaped one plus FIXTURE, made once per server."""
    name = _TEMPLATES.get(server.name)
    if name is not None:
        return name
    name = f"rb_fixture_{uuid.uuid4().hex[:8]}"
    clone_database(server.admin_url(), name, template=server.template)
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute(FIXTURE.encode())
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'
                     .encode())
    _TEMPLATES[server.name] = name
    return name


@pytest.fixture
def rb_db(rb_server: SupaServer) -> Iterator[SupaDb]:
    """A fresh database holding FIXTURE, on each server; connect as postgres with .url."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    clone_database(rb_server.admin_url(), name, template=_fixture_template(rb_server))
    try:
        yield SupaDb(rb_server, name)
    finally:
        with psycopg.connect(rb_server.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def clean_db(rb_server: SupaServer) -> Iterator[SupaDb]:
    """A fresh Supabase-shaped database without FIXTURE."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    clone_database(rb_server.admin_url(), name, template=rb_server.template)
    try:
        yield SupaDb(rb_server, name)
    finally:
        with psycopg.connect(rb_server.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _project(tmp_path: Path, name: str = "project") -> Path:
    root = tmp_path / name
    (root / "supabase" / "migrations").mkdir(parents=True)
    return root


# --- what must not change ----------------------------------------------------------------------


def _public_dump(db: SupaDb) -> str:
    """`pg_dump --schema-only -n public`, as postgres (the server's own pg_dump)."""
    out = subprocess.run([str(db.server.bin_dir / "pg_dump"), "--schema-only", "-n", "public",
                          "--restrict-key=dbsage", "-d", db.url],
                         capture_output=True, text=True, check=True)
    return out.stdout


_TABLES_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^pg_'
  AND n.nspname NOT IN ('information_schema', 'dbsage', 'supabase_migrations')
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


def _rows(db: SupaDb) -> dict[str, tuple[Any, ...]]:
    """A checksum and count of the rows of every table postgres may read."""
    out: dict[str, tuple[Any, ...]] = {}
    with db.connect() as conn:
        for (table,) in conn.execute(_TABLES_SQL).fetchall():
            row = conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), "
                               f"'')), count(*) FROM {table} x".encode()).fetchone()
            assert row is not None
            out[table] = tuple(row)
    return out


def _options(db: SupaDb, project: Path, **flags: bool) -> RunOptions:
    return RunOptions(mode="yolo", db=db.url, project_dir=project, asker=YesAsker(),
                      flags={"skip_dry_run": True, "allow_destructive": True, "force": True,
                             "allow_data_loss": True, **flags})


def _apply(db: SupaDb, project: Path, sql: str, version: str = VERSION,
           name: str = "kind") -> Any:
    path = project / "supabase" / "migrations" / f"{version}_{name}.sql"
    path.write_text(sql + "\n")
    report = run_apply(path, _options(db, project))
    assert report.status == "applied", report.error
    return report


def _rollback(db: SupaDb, project: Path, target: str = "latest", **flags: bool) -> Any:
    return run_rollback_task(target, _options(db, project, **flags))


# --- the property ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_apply_then_rollback_leaves_everything_as_before(rb_db: SupaDb, tmp_path: Path,
                                                         kind: str) -> None:
    project = _project(tmp_path)
    schema, rows = _public_dump(rb_db), _rows(rb_db)

    applied = _apply(rb_db, project, KINDS[kind])
    undone = _rollback(rb_db, project)

    assert undone.status == "rolled_back", (undone.error, (project / applied.files["rollback"])
                                            .read_text())
    assert _public_dump(rb_db) == schema
    after = _rows(rb_db)
    assert {t: v for t, v in after.items() if t in rows} == rows
    assert set(after) == set(rows)  # and no table the migration made is left
    again = _apply(rb_db, project, KINDS[kind])  # re-applying after a rollback succeeds
    assert again.status == "applied"


@pytest.mark.parametrize("kind", list(IRREVERSIBLE))
def test_what_cannot_be_undone_is_refused_up_front_with_the_reason(rb_db: SupaDb,
                                                                   tmp_path: Path,
                                                                   kind: str) -> None:
    sql, reason = IRREVERSIBLE[kind]
    project = _project(tmp_path)
    applied = _apply(rb_db, project, sql)
    assert any("cannot roll this migration back" in w for w in applied.warnings), applied.warnings
    schema, rows = _public_dump(rb_db), _rows(rb_db)
    files = sorted(p.name for p in (project / "supabase").rglob("*"))

    plan = prepare_rollback_only("latest", _options(rb_db, project))
    assert plan.status == "refused" and plan.exit_code == 6, plan.error
    assert reason in plan.error["message"]
    report = _rollback(rb_db, project)
    assert report.status == "refused" and reason in report.error["message"]
    assert _public_dump(rb_db) == schema and _rows(rb_db) == rows  # nothing changed
    assert sorted(p.name for p in (project / "supabase").rglob("*")) == files
    if kind == "create_role":
        with psycopg.connect(rb_db.admin_url, autocommit=True) as conn:
            conn.execute("drop role rb_new_role")


def test_plan_says_up_front_what_cannot_be_rolled_back(rb_db: SupaDb, tmp_path: Path) -> None:
    from dbsage.agent.runner import run_plan

    project = _project(tmp_path)
    path = project / "supabase" / "migrations" / f"{VERSION}_role.sql"
    path.write_text("create table public.t (id int primary key);\n"
                    + IRREVERSIBLE["create_role"][0] + "\n")
    report = run_plan(path, RunOptions(mode="preflight", db=rb_db.url, project_dir=project,
                                       asker=YesAsker()))
    assert report.status == "planned", report.error
    assert any("will not be able to roll back line 2: creates a role" in w
               for w in report.warnings), report.warnings
    assert rb_db.scalar("select count(*) from pg_roles where rolname = 'rb_new_role'") == 0


def test_an_enum_value_in_use_is_refused_with_the_rows_that_use_it(rb_db: SupaDb,
                                                                   tmp_path: Path) -> None:
    project = _project(tmp_path)
    _apply(rb_db, project, "alter type public.mood add value 'ecstatic';")
    rb_db.execute("update public.accounts set mood = 'ecstatic' where id = 1")
    report = prepare_rollback_only("latest", _options(rb_db, project))
    assert report.status == "refused", report.error
    assert "1 row(s) of public.accounts.mood use the value(s) ecstatic" in report.error["message"]
    rb_db.execute("update public.accounts set mood = 'ok' where id = 1")
    assert _rollback(rb_db, project).status == "rolled_back"
    assert rb_db.scalar("select enum_range(null::public.mood)::text") == "{sad,ok,happy}"


def test_rollback_works_from_another_checkout_without_any_file(rb_db: SupaDb,
                                                               tmp_path: Path) -> None:
    here, there = _project(tmp_path, "mine"), _project(tmp_path, "teammate")
    schema, rows = _public_dump(rb_db), _rows(rb_db)
    _apply(rb_db, here, "alter table public.accounts rename column note to remark;\n"
                        "delete from public.posts where id = 2;\n"
                        "insert into storage.buckets (id, name) values ('docs', 'docs');")
    plan = prepare_rollback_only(VERSION, _options(rb_db, there))
    assert plan.status == "prepared", plan.error
    assert "RENAME COLUMN remark TO note" in plan.ddl
    assert "insert again 1 row(s) the migration deleted from public.posts" in plan.ddl
    assert not list((there / "supabase").rglob("*.sql"))  # --prepare-only writes nothing

    report = _rollback(rb_db, there, VERSION)
    assert report.status == "rolled_back", report.error
    assert report.files["rollback"].startswith("dbsage.rollback_plan")
    assert _public_dump(rb_db) == schema and _rows(rb_db) == rows


def test_only_the_newest_run_is_undone_and_to_undoes_the_later_ones(rb_db: SupaDb,
                                                                    tmp_path: Path) -> None:
    project = _project(tmp_path)
    schema = _public_dump(rb_db)
    _apply(rb_db, project, "create table public.orgs (id bigint primary key);", name="a")
    middle = _public_dump(rb_db)
    _apply(rb_db, project, "alter table public.accounts add column org_id bigint "
                           "references public.orgs (id);", version="20250102000000", name="b")
    _apply(rb_db, project, "insert into public.orgs values (1);", version="20250103000000",
           name="c")

    refused = _rollback(rb_db, project, VERSION)
    assert refused.status == "refused" and refused.exit_code == 6
    assert "20250102000000" in refused.error["message"]
    assert "20250103000000" in refused.error["message"]

    undone = run_rollback_task("", _options(rb_db, project), to=VERSION)
    assert undone.status == "rolled_back", undone.error
    assert _public_dump(rb_db) == middle
    assert _rollback(rb_db, project, VERSION).status == "rolled_back"
    assert _public_dump(rb_db) == schema


def test_a_cancelled_rollback_leaves_no_file_and_changes_nothing(rb_db: SupaDb,
                                                                 tmp_path: Path) -> None:
    project = _project(tmp_path)
    _apply(rb_db, project, "create table public.t (id int primary key);")
    files = sorted(p.name for p in (project / "supabase").rglob("*"))
    asker = ScriptedAsker({"confirm_database": "yes", "confirm_rollback": "no"})
    report = run_rollback_task(VERSION, RunOptions(mode="interactive", db=rb_db.url,
                                                   project_dir=project, asker=asker))
    assert report.status == "refused"
    assert sorted(p.name for p in (project / "supabase").rglob("*")) == files
    assert rb_db.scalar("select to_regclass('public.t') is not null") is True


# --- the issue's reproduction: plain PostgreSQL, a table owned by another role ------------------


def test_the_issue_reproduction_as_a_role_that_owns_nothing_else(db: Db, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    owner, app = f"owner_role_{suffix}", f"app_{suffix}"
    db.execute(f"create role {owner}; create role {app} login createdb;"
               f"grant create on schema public to {app};"
               f"grant create on database \"{db.name}\" to {app};"
               "create table public.legacy (id int);"
               f"alter table public.legacy owner to {owner};"
               # pg_dump (the snapshots) locks every table it dumps: app may read legacy, but
               # it is not its owner (restoring the snapshot needed SET ROLE owner_role).
               f"grant select on public.legacy to {app};")
    url = db.url.replace("postgresql://postgres@", f"postgresql://{app}@")
    project = _project(tmp_path)
    path = project / "supabase" / "migrations" / f"{VERSION}_create_widgets.sql"
    path.write_text("create table public.widgets (id bigint primary key, name text);\n"
                    "insert into public.widgets values (1, 'a');\n")
    before = dump_schema(db.url, db.server.major)[0]
    try:
        opts = RunOptions(mode="yolo", db=url, project_dir=project, asker=YesAsker(),
                          flags={"skip_dry_run": True, "force": True})
        applied = run_apply(path, opts)
        assert applied.status == "applied", applied.error
        report = run_rollback_task("latest", opts)
        assert report.status == "rolled_back", report.error
        assert db.scalar("select to_regclass('public.widgets')") is None
        assert dump_schema(db.url, db.server.major)[0] == before
        assert run_apply(path, opts).status == "applied"  # and again
    finally:
        db.execute(f"drop owned by {app} cascade; drop table public.legacy;"
                   f"drop role {app}; drop role {owner};")


# --- the realism sets: roll back the last file of each -------------------------------------------


@pytest.mark.parametrize("rs", SETS, ids=[s.name for s in SETS])
def test_rolling_back_the_last_file_of_a_realism_set(clean_db: SupaDb, tmp_path: Path,
                                                     rs: RealismSet) -> None:
    project = _project(tmp_path)
    opts = _options(clean_db, project, allow_transaction_control=True)
    major = clean_db.server.major
    before = ""
    for i, source in enumerate(rs.migrations):
        path = project / "supabase" / "migrations" / source.name
        path.write_text(source.read_text())
        if i == len(rs.migrations) - 1:
            before = dump_schema(clean_db.url, major)[0]
            rows = _rows(clean_db)
        report = run_apply(path, opts)
        assert report.status == "applied", (source.name, report.error)
    undone = run_rollback_task("latest", opts)
    assert undone.status == "rolled_back", (rs.migrations[-1].name, undone.error)
    assert dump_schema(clean_db.url, major)[0] == before
    assert _rows(clean_db) == rows
