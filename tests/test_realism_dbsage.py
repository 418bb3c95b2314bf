"""The realism suite, end to end: every Supabase-shaped set applied file by file by dbsage and by
`psql -1 -f`, as the non-superuser postgres role, on PostgreSQL 18 and 15.

The bar (issue 10): every file psql applies, dbsage applies (a flag only for truly
destructive statements); both end with the same schema and the same rows (ids included);
no false drift, no exit 7 caused by an earlier file; the dry-run of each file agrees with its
apply and changes nothing; the smoke test passes at the end.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from realism.sets import SETS, RealismSet, psql_command
from supabase_shaped import SupaServer, _new_database

from dbsage.agent.modes import YesAsker
from dbsage.agent.runner import RunOptions, run_apply, run_dry_run_task, run_smoke_task


def _dump(url: str, server: SupaServer) -> str:
    out = subprocess.run([str(server.bin_dir / "pg_dump"), "--schema-only", "--no-owner",
                          "-n", "public", "--restrict-key=x", "-d", url],
                         capture_output=True, text=True, check=True)
    return out.stdout


def _rows(db: object) -> dict[str, str]:
    """A checksum of every public table's rows, clock columns left out (they differ per run)."""
    tables = db.connect().execute(  # type: ignore[attr-defined]
        "select format('%I.%I', table_schema, table_name), string_agg(format('%I', "
        "column_name), ', ' order by ordinal_position) from information_schema.columns where "
        "table_schema = 'public' and data_type not like 'timestamp%' and data_type not in "
        "('date', 'time without time zone', 'time with time zone') and (table_schema, "
        "table_name) in (select schemaname, tablename from pg_tables) group by 1 order by 1"
    ).fetchall()
    return {t: db.scalar(f"select md5(coalesce(string_agg(x::text, ',' order by x::text), ''))"  # type: ignore[attr-defined]
                         f" from (select {cols} from {t}) x") for t, cols in tables}


@pytest.mark.parametrize("realism", SETS, ids=lambda s: s.name)
def test_dbsage_applies_what_psql_applies_with_the_same_result(
        realism: RealismSet, supa_server: SupaServer, tmp_path: Path) -> None:
    gen_psql, gen_dbsage = _new_database(supa_server), _new_database(supa_server)
    by_psql, by_dbsage = next(gen_psql), next(gen_dbsage)
    try:
        psql = str(supa_server.bin_dir / "psql")
        for path in realism.migrations:
            cmd = psql_command(by_psql.url, path)
            cmd[0] = psql
            assert subprocess.run(cmd, capture_output=True).returncode == 0, path.name

        project = tmp_path / realism.name
        shutil.copytree(realism.root, project)
        flagged = []
        for path in realism.migrations:
            rel = path.relative_to(realism.root)
            before = _dump(by_dbsage.url, supa_server)
            dry = run_dry_run_task(project / rel, RunOptions(
                mode="yolo", db=by_dbsage.url, project_dir=project, asker=YesAsker()))
            if path not in realism.concurrent_migrations:
                assert dry.status == "passed", (path.name, dry.error)
            assert _dump(by_dbsage.url, supa_server) == before, f"the dry-run of {path.name} " \
                "changed the schema"
            opts = RunOptions(mode="yolo", db=by_dbsage.url, project_dir=project)
            report = run_apply(project / rel, opts)
            if report.exit_code == 6 and "destroys data" in str(report.error):
                flagged.append(path.name)  # truly destructive: what a user then allows
                opts.flags["allow_destructive"] = True
                report = run_apply(project / rel, opts)
            assert report.exit_code == 0, (path.name, report.error)  # no drift, no exit 7
        assert _dump(by_psql.url, supa_server) == _dump(by_dbsage.url, supa_server)
        assert _rows(by_psql) == _rows(by_dbsage)  # ids equal to psql's
        assert all("drop" in (p.read_text().lower()) for p in realism.migrations
                   if p.name in flagged)  # a flag only where the file really drops something
        smoke = run_smoke_task(RunOptions(mode="yolo", db=by_dbsage.url, project_dir=project,
                                          asker=YesAsker()))
        failing = [c for c in (smoke.smoke or {}).get("checks", []) if c["status"] == "fail"]
        assert failing == [], failing
    finally:
        for gen in (gen_psql, gen_dbsage):
            gen.close()
