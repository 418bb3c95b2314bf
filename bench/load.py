"""20 migrations under an 8-client write load: client latency and errors, dbsage beside psql.

The scenario is tests/load_scenario.py (also run by tests/test_load.py, which asserts): a shop
(customers, orders, line_items) with N client threads looping short write transactions that
touch the tables in varied orders, while 20 typical files are applied one after another by
  psql      `psql -X -v ON_ERROR_STOP=1 -1 -f FILE` per file (without -1 for a CONCURRENTLY
            file): no lock_timeout, no retry; a failed file is run again (as an operator
            would), up to --psql-tries times, and each failure is counted;
  up        one `dbsage up --mode yolo --json`;
  apply     `dbsage apply FILE --mode yolo --json` per file.
Each scenario gets a fresh database on one throw-away embedded PostgreSQL 18. Prints, per
scenario: client transactions, client errors by SQLSTATE, client latency (median, p99, worst)
over the whole run (at least --window seconds, so that a quick scenario is not measured over
a shorter stretch), transactions slower than 100 ms, the migrations' wall time, failures and
retries, whether every file's effect is there and whether what the clients committed is all
in the tables. Never fails on time.

    .venv/bin/python bench/load.py [--clients 8] [--think 20] [--rounds 1] [--only psql ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _server import BenchServer, clean_env, dbsage_exe, git_state, median, percentile, throwaway_server

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from load_scenario import (  # noqa: E402
    Load,
    advisory_locks,
    applied_versions,
    check_nothing_lost,
    create_schema,
    invalid_indexes,
    schema_after,
    versions,
    write_migrations,
)

WARMUP_S = 1.0  # the clients run this long before the first migration
TAIL_S = 0.5  # and this long after the last one
SLOW_S = 0.1  # a client transaction slower than this counts as stalled
SCENARIOS = ("psql", "up", "apply")


@dataclass
class Outcome:
    """What one scenario run measured."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    committed: int = 0
    wall_s: float = 0.0
    failures: int = 0  # psql: failed file runs; dbsage: runs that exited non-zero
    retries: int = 0  # dbsage: attempts beyond the first, from the reports
    most_attempts: int = 0  # dbsage: the most attempts one file took
    applied: bool = False
    lost: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    locks_left: int = 0
    note: str = ""


def run_psql(srv: BenchServer, url: str, paths: list[Path], tries: int, out: Outcome) -> None:
    env = clean_env()
    for path in paths:
        single = [] if "concurrently" in path.read_text().lower() else ["-1"]
        for _ in range(tries):
            proc = subprocess.run([srv.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *single,
                                   "-f", str(path), url], env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=600)
            if proc.returncode == 0:
                break
            out.failures += 1
            lines = proc.stderr.strip().splitlines()
            error = next((x for x in lines if "ERROR:" in x), lines[-1] if lines else "")
            out.note = out.note or f"{path.name}: {error.strip()}"
            if not single:  # a failed CREATE INDEX CONCURRENTLY leaves an INVALID index
                subprocess.run([srv.bin("psql"), "-X", "-q", "-c", _drop_invalid_sql(), url],
                               env=env, capture_output=True, text=True, timeout=60)


def _drop_invalid_sql() -> str:
    return ("DO $$DECLARE r record; BEGIN FOR r IN SELECT indexrelid::regclass AS i FROM pg_index "
            "WHERE NOT indisvalid LOOP EXECUTE 'DROP INDEX ' || r.i; END LOOP; END $$")


def run_dbsage(url: str, project: Path, paths: list[Path], name: str, out: Outcome) -> None:
    exe = dbsage_exe()
    runs = ([["up", "--mode", "yolo", "--db", url, "--json"]] if name == "up" else
            [["apply", str(p), "--mode", "yolo", "--db", url, "--json"] for p in paths])
    for args in runs:
        proc = subprocess.run([exe, *args], cwd=project, env=clean_env(), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=900)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            report = {}
        for f in report.get("batch") or [report]:
            out.retries += max(0, int(f.get("attempts") or 1) - 1)
            out.most_attempts = max(out.most_attempts, int(f.get("attempts") or 1))
        if proc.returncode != 0:
            out.failures += 1
            exhausted = int((report.get("error") or {}).get("attempts") or 0)  # not in the batch
            out.retries += max(0, exhausted - 1)
            out.most_attempts = max(out.most_attempts, exhausted)
            err = (report.get("error") or {}).get("message") or proc.stderr.strip()[-300:]
            out.note = out.note or f"exit {proc.returncode}: {err}"
            if name == "up":
                break


def run_scenario(srv: BenchServer, name: str, args: argparse.Namespace, n: int) -> Outcome:
    out = Outcome(name)
    url = srv.create_database(f"load_{name}_{n}")
    create_schema(url)
    with tempfile.TemporaryDirectory(prefix="dbsage-load-") as tmp:
        project = Path(tmp)
        paths = write_migrations(project)
        load = Load(url, clients=args.clients, think_s=args.think / 1000)
        load.start()
        try:
            time.sleep(WARMUP_S)
            t0 = time.perf_counter()
            if name == "psql":
                run_psql(srv, url, paths, args.psql_tries, out)
            else:
                run_dbsage(url, project, paths, name, out)
            out.wall_s = time.perf_counter() - t0
            # the same stretch of time for every scenario (a quick one is not diluted less)
            time.sleep(max(TAIL_S, args.window - WARMUP_S - out.wall_s))
        finally:
            load.stop()
    out.latencies = load.latencies
    out.errors = Counter(e.sqlstate or "?" for e in load.errors)
    out.crashes = load.crashes
    out.committed = load.committed
    effects = schema_after(url)
    out.applied = all(effects.values()) and (name == "psql" or applied_versions(url) == versions())
    if not out.applied:
        out.note = out.note or f"missing: {[k for k, v in effects.items() if not v]}"
    out.lost = check_nothing_lost(url, load)
    out.invalid = invalid_indexes(url)
    out.locks_left = advisory_locks(url)
    return out


def print_outcome(o: Outcome) -> None:
    lat = o.latencies
    errs = ", ".join(f"{k} x{v}" for k, v in sorted(o.errors.items())) or "none"
    print(f"\n== {o.name}")
    print(f"  client transactions:  {o.committed} committed, {len(lat)} in all")
    print(f"  client errors:        {sum(o.errors.values())} ({errs})")
    print(f"  client latency:       median {median(lat) * 1000:.1f} ms, p99 "
          f"{percentile(lat, 99) * 1000:.1f} ms, worst {max(lat, default=float('nan')) * 1000:.0f} ms")
    slow = [x for x in lat if x > SLOW_S]
    print(f"  slower than {SLOW_S * 1000:.0f} ms:     {len(slow)} transactions, {sum(slow):.1f} s in all")
    print(f"  migrations:           {o.wall_s:.2f} s wall, {o.failures} failed run(s), "
          f"{o.retries} retried attempt(s)"
          + (f", at most {o.most_attempts} for one file" if o.most_attempts > 1 else ""))
    print(f"  every file's effect:  {'yes' if o.applied else 'NO'}; INVALID indexes: "
          f"{o.invalid or 'none'}; advisory locks left: {o.locks_left}")
    print(f"  nothing lost:         {'yes' if not o.lost else o.lost}")
    if o.crashes:
        print(f"  client crashes:       {o.crashes}")
    if o.note:
        print(f"  first failure:        {o.note[:300]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="each scenario this many times")
    ap.add_argument("--think", type=float, default=20.0,
                    help="mean pause between a client's transactions, ms (uniform 0..2x)")
    ap.add_argument("--window", type=float, default=30.0,
                    help="the clients run at least this long (s), however soon the files are done")
    ap.add_argument("--psql-tries", type=int, default=5, help="runs of a failing file by psql")
    ap.add_argument("--only", action="append", choices=SCENARIOS, help="(repeatable)")
    args = ap.parse_args()
    names = args.only or list(SCENARIOS)
    print(f"load — {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {os.cpu_count()} cores; "
          f"{git_state()}; {args.clients} clients (think {args.think:g} ms), 20 migrations, "
          f"{args.rounds} round(s)")
    outcomes: list[Outcome] = []
    with throwaway_server() as srv:
        for r in range(args.rounds):
            for k in range(len(names)):
                name = names[(k + r) % len(names)]  # rotate the order each round
                o = run_scenario(srv, name, args, r)
                print_outcome(o)
                outcomes.append(o)
    print("\n== summary (all rounds)")
    print(f"{'scenario':<10} {'txns':>7} {'errors':>7} {'median':>8} {'p99':>8} {'worst':>8} "
          f"{'>100ms':>7} {'migrations':>11} {'failed':>7} {'retried':>8} {'applied':>8} "
          f"{'lost':>5}")
    for name in names:
        mine = [o for o in outcomes if o.name == name]
        lat = [x for o in mine for x in o.latencies]
        print(f"{name:<10} {sum(o.committed for o in mine):>7} "
              f"{sum(sum(o.errors.values()) for o in mine):>7} {median(lat) * 1000:>6.1f}ms "
              f"{percentile(lat, 99) * 1000:>6.1f}ms {max(lat, default=float('nan')) * 1000:>6.0f}ms "
              f"{sum(x > SLOW_S for x in lat):>7} {median([o.wall_s for o in mine]):>10.2f}s "
              f"{sum(o.failures for o in mine):>7} "
              f"{sum(o.retries for o in mine):>8} {sum(o.applied for o in mine):>4}/{len(mine):<3} "
              f"{sum(bool(o.lost) for o in mine):>5}")


if __name__ == "__main__":
    main()
