"""Snapshots: byte-stable, free of pg_dump noise, and restorable on their own server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import Db, _new_database

from dbsage.tools.binaries import bundled_bin_dir, find_pg_dump
from dbsage.tools.errors import SnapshotError
from dbsage.tools.snapshot import dump_schema, normalise_dump, take_snapshot

SCHEMA = """
create table public.parent (id bigint generated always as identity primary key, name text);
create table public.child (id int primary key, parent_id bigint references public.parent(id));
create index child_parent_idx on public.child (parent_id);
create view public.v as select p.name, c.id from public.parent p join public.child c on
  c.parent_id = p.id;
create function public.f(x int) returns int language sql immutable as $$ select x + 1 $$;
alter table public.child enable row level security;
create policy child_read on public.child for select using (true);
create schema app;
create type app.mood as enum ('happy', 'sad');
create table app.t (m app.mood);
"""


def test_two_dumps_of_one_schema_are_identical_bytes(db: Db) -> None:
    db.execute(SCHEMA)
    a, tool = dump_schema(db.url, db.server.major)
    b, _ = dump_schema(db.url, db.server.major)
    assert a == b
    assert "CREATE TABLE public.child" in a
    if tool.has_restrict_key:
        assert "\\restrict dbsage\n" in a
    if db.server.major < 17:
        assert "transaction_timeout" not in a


def test_server_major_pg_dump_is_preferred(db: Db) -> None:
    tool = find_pg_dump(db.server.major)
    if db.server.major == 15:
        assert tool.path == Path("/usr/lib/postgresql/15/bin/pg_dump")
    assert tool.major == db.server.major


def test_normalise_removes_random_restrict_keys_and_new_settings() -> None:
    raw = "\\restrict Zx81kQ\nSET transaction_timeout = 0;\nSELECT 1;\n\\unrestrict Zx81kQ\n"
    assert normalise_dump(raw, 15) == "\\restrict dbsage\nSELECT 1;\n\\unrestrict dbsage\n"
    assert "transaction_timeout" in normalise_dump(raw, 17)


def test_normalise_drops_the_internal_pg_attver_column_option() -> None:
    """PostgreSQL 15.20 keeps pg_attver=<n> in every column's attoptions; pg_dump 18 writes it
    out (the server's own pg_dump does not), with a value the server assigns anew."""
    raw = ("CREATE TABLE public.t (\n    a integer,\n    b text\n);\n"
           "ALTER TABLE ONLY public.t ALTER COLUMN a SET (pg_attver=30922408);\n"
           "ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=5, pg_attver=30922408);\n"
           "\n\nALTER TABLE public.t OWNER TO postgres;\n")
    assert normalise_dump(raw, 15) == (
        "CREATE TABLE public.t (\n    a integer,\n    b text\n);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=5);\n"
        "\n\nALTER TABLE public.t OWNER TO postgres;\n")


def test_bundled_pg_dump_18_snapshot_restores_on_pg15(pg15: object, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_dump 18 writes SET transaction_timeout; PostgreSQL 15 rejects it unless normalised."""
    monkeypatch.setenv("DBSAGE_PG_DUMP", str(bundled_bin_dir() / "pg_dump"))
    gen = _new_database(pg15)  # type: ignore[arg-type]
    src = next(gen)
    gen2 = _new_database(pg15)  # type: ignore[arg-type]
    dst = next(gen2)
    try:
        src.execute(SCHEMA)
        snap = take_snapshot(src.url, tmp_path / "s.sql", 15)
        assert snap.pg_dump.major == 18
        _restore(dst, snap.path)
        assert dump_schema(dst.url, 15)[0] == dump_schema(src.url, 15)[0]
    finally:
        for g in (gen, gen2):
            next(g, None)


def _restore(db: Db, path: Path) -> None:
    psql = db.server.bin_dir / "psql"
    out = subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.url, "-f",
                          str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_before_snapshot_restores_into_an_empty_database(db: Db, tmp_path: Path) -> None:
    db.execute(SCHEMA)
    snap = take_snapshot(db.url, tmp_path / "before.sql", db.server.major)
    gen = _new_database(db.server)
    empty = next(gen)
    try:
        _restore(empty, snap.path)
        assert dump_schema(empty.url, db.server.major)[0] == snap.path.read_text()
        with psycopg.connect(empty.url) as conn:
            assert conn.execute("select public.f(1)").fetchone() == (2,)
    finally:
        next(gen, None)


def test_bookkeeping_schemas_stay_out_of_snapshots(db18: Db, tmp_path: Path) -> None:
    db18.execute("create schema dbsage; create table dbsage.x (id int); create schema "
                 "supabase_migrations; create table supabase_migrations.schema_migrations "
                 "(version text)")
    text, _ = dump_schema(db18.url, 18)
    assert "dbsage.x" not in text and "schema_migrations" not in text


def test_a_snapshot_is_never_overwritten(db18: Db, tmp_path: Path) -> None:
    dest = tmp_path / "s.sql"
    dest.write_text("precious")
    with pytest.raises(SnapshotError, match="never overwrites"):
        take_snapshot(db18.url, dest, 18)
    assert dest.read_text() == "precious"


def test_pg_dump_failure_is_reported_with_the_password_redacted(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError) as e:
        take_snapshot("postgresql://u:hunter2@127.0.0.1:1/x", tmp_path / "s.sql", 18)
    assert "pg_dump failed" in e.value.message
    assert "hunter2" not in e.value.message
    assert not (tmp_path / "s.sql").exists()
