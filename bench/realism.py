"""The realism suite, side by side: each set applied file by file by `psql -1 -f` and by
`dbsage apply --mode yolo`, as Supabase's non-superuser `postgres` role, on a Supabase-shaped
database (tools/platform.py). Prints one row a set: files applied by each, whether the final
schemas are equal (pg_dump --schema-only of the user's schemas), false drift, exit 7s,
lookup ids equal to psql's, and the seconds each took.

    python bench/realism.py [--major 18|15] [--sets 01,07]

Not a test: a figure for the closing note (the pass/fail versions live in tests/).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from realism.sets import SETS, psql_command  # noqa: E402

from dbsage.tools.embedded import bin_dir  # noqa: E402
from dbsage.tools.platform import (  # noqa: E402
    clone_database,
    init_cluster,
    install_platform,
    start_cluster,
    stop_cluster,
)

DBSAGE = str(Path(sys.executable).parent / "dbsage")
USER_SCHEMAS = ["public"]


def dump(url: str, tool: Path) -> str:
    out = subprocess.run([str(tool), "--schema-only", "--no-owner", "-n", "public",
                          "--restrict-key=x", "-d", url], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else f"ERROR {out.stderr}"


def ids(url: str) -> str:
    """Every row of every table of public, in a stable order, without the columns whose value
    is the clock's (timestamps: they differ between any two runs): the ids the files made."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "select format('%I.%I', table_schema, table_name), string_agg(format('%I', "
            "column_name), ', ' order by ordinal_position) from information_schema.columns "
            "where table_schema = 'public' and data_type not like 'timestamp%' and data_type "
            "not in ('date', 'time without time zone', 'time with time zone') and (table_schema,"
            " table_name) in (select schemaname, tablename from pg_tables) group by 1 order by 1"
        ).fetchall()
        rows = []
        for table, columns in tables:
            n = conn.execute(f"select md5(coalesce(string_agg(x::text, ',' order by x::text), "
                             f"'')) from (select {columns} from {table}) x").fetchone()
            rows.append(f"{table}={n[0] if n else ''}")
    return ";".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--major", type=int, default=18)
    p.add_argument("--sets", default="")
    args = p.parse_args()
    bins = bin_dir() if args.major == 18 else Path(f"/usr/lib/postgresql/{args.major}/bin")
    root = Path(tempfile.mkdtemp(prefix="dbsage-realism-"))
    root.chmod(0o755)  # the server runs as an unprivileged user when we are root
    init_cluster(root / "pgdata", bin_dir=bins, port=0, fast=True)
    cluster = start_cluster(root / "pgdata")
    try:
        install_platform(cluster.admin_url, server_major=cluster.major)
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("create database realism_template")
        install_platform(cluster.database_url("realism_template", admin=True),
                         server_major=cluster.major)
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("alter database realism_template with is_template true "
                         "allow_connections false")
        wanted = {x.strip() for x in args.sets.split(",") if x.strip()}
        print(f"PostgreSQL {cluster.major}, as postgres (not a superuser)\n")
        print("| set | files | psql ok | dbsage ok | --allow-destructive | schema equal "
              "| rows equal | false drift | exit 7 | psql s | dbsage s | first dbsage failure |")
        print("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|")
        for s in SETS:
            if wanted and not any(s.name.startswith(w) for w in wanted):
                continue
            a, b = f"r_{uuid.uuid4().hex[:8]}", f"r_{uuid.uuid4().hex[:8]}"
            for name in (a, b):
                clone_database(cluster.admin_url, name, template="realism_template")
            url_a, url_b = cluster.database_url(a), cluster.database_url(b)
            t0 = time.perf_counter()
            psql_ok = 0
            for path in s.migrations:
                cmd = psql_command(url_a, path)
                cmd[0] = str(bins / "psql")
                if subprocess.run(cmd, capture_output=True).returncode == 0:
                    psql_ok += 1
            t_psql = time.perf_counter() - t0
            project = root / f"proj_{b}"
            shutil.copytree(s.root, project)
            t0 = time.perf_counter()
            ok = drift = exit7 = flagged = 0
            first = ""
            for path in s.migrations:
                rel = path.relative_to(s.root)
                cmd = [DBSAGE, "apply", str(rel), "--mode", "yolo", "--db", url_b]
                done = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
                if done.returncode == 6 and "destroys data" in done.stdout + done.stderr:
                    flagged += 1  # refused as destructive: what a user then does
                    done = subprocess.run([*cmd, "--allow-destructive"], cwd=project,
                                          capture_output=True, text=True)
                if done.returncode == 0:
                    ok += 1
                    continue
                drift += done.returncode == 5
                exit7 += done.returncode == 7
                if not first:
                    text = (done.stdout + done.stderr).strip().splitlines()
                    msg = next((x for x in text if "❌" in x or "Error" in x), text[-1] if text else "")
                    first = f"{path.name[:20]}… rc={done.returncode}: {msg[:90]}"
            t_dbsage = time.perf_counter() - t0
            pg_dump = bins / "pg_dump"
            equal = dump(url_a, pg_dump) == dump(url_b, pg_dump)
            rows = ids(url_a) == ids(url_b)
            print(f"| {s.name} | {len(s.migrations)} | {psql_ok} | {ok} | {flagged} "
                  f"| {'yes' if equal else 'NO'} "
                  f"| {'yes' if rows else 'NO'} | {drift} | {exit7} | {t_psql:.2f} | {t_dbsage:.2f} "
                  f"| {first.replace('|', '/')} |", flush=True)
    finally:
        stop_cluster(root / "pgdata", mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
