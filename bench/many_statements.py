"""One migration of many statements: `dbsage apply --mode yolo` against `psql -1 -f`.

    python bench/many_statements.py [--statements 10000] [--runs 3]

Each run applies the same file to a fresh copy of the same database (CREATE DATABASE ...
TEMPLATE), alternating the order of the two tools; the median of each and the ratio are
printed. Target (issue 10): dbsage ≤ 1.15× psql -1 -f at 10,000 statements.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import throwaway_server

DBSAGE = str(Path(sys.executable).parent / "dbsage")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--statements", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with throwaway_server() as srv, tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "supabase" / "migrations").mkdir(parents=True)
        path = project / "supabase" / "migrations" / "20250101000000_many.sql"
        body = ["create table public.items (id int primary key, name text);"]
        body += [f"insert into public.items values ({i}, 'item {i}');"
                 for i in range(args.statements - 1)]
        path.write_text("\n".join(body) + "\n")
        with psycopg.connect(srv.url("postgres"), autocommit=True) as conn:
            conn.execute("create database many_template")
        times: dict[str, list[float]] = {"psql -1 -f": [], "dbsage apply --mode yolo": []}
        for run in range(args.runs):
            order = list(times) if run % 2 == 0 else list(reversed(times))
            for tool in order:
                name = f"m_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(srv.url("postgres"), autocommit=True) as conn:
                    conn.execute(f'create database "{name}" template many_template')
                url = srv.url(name)
                if tool.startswith("psql"):
                    cmd = [srv.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-1", "-d", url, "-f", str(path)]
                else:
                    cmd = [DBSAGE, "apply", str(path), "--mode", "yolo", "--db", url]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
                elapsed = time.perf_counter() - t0
                if done.returncode != 0:
                    print(f"{tool} failed: {done.stdout[-400:]}{done.stderr[-400:]}")
                    return 1
                times[tool].append(elapsed)
        psql = statistics.median(times["psql -1 -f"])
        dbsage = statistics.median(times["dbsage apply --mode yolo"])
        print(f"{args.statements} statements, {args.runs} run(s), medians:")
        print("| tool | seconds | ratio | target |\n|---|---:|---:|---|")
        print(f"| psql -1 -f | {psql:.2f} | 1.00× | |")
        print(f"| dbsage apply --mode yolo | {dbsage:.2f} | {dbsage / psql:.2f}× | ≤ 1.15× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
