"""How long a migration waiting for its lock stalls other clients: naive psql against dbsage.

On a throw-away embedded PostgreSQL 18: `accounts` with rows; N client threads (own autocommit
connections) loop `UPDATE accounts SET balance = balance + 1 WHERE id = <random>` and record
every call's latency; a blocker transaction holds ACCESS SHARE on `accounts` (a SELECT) for
--hold seconds; 0.5 s into the hold `ALTER TABLE accounts ADD COLUMN note_<n> text` starts:
  A: `psql -1 -v ON_ERROR_STOP=1 -f file` (bundled psql): the ALTER queues for ACCESS
     EXCLUSIVE and every UPDATE queues behind it until the blocker ends;
  B: `dbsage apply file --mode yolo --db URL --lock-timeout 1s`: the ALTER gives up after
     lock_timeout, rolls back (the clients run again) and retries with backoff.
Prints figures; never fails on time.

    /work/venv/bin/python bench/lock_stall.py [--hold 6] [--clients 4] [--lock-timeout 1s]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from _server import BenchServer, clean_env, dbsage_exe, git_state, median, percentile, throwaway_server

ROWS = 10_000
START_AFTER_S = 0.5  # the migration starts this long into the hold
TAIL_S = 0.5  # clients keep running this long after everything ended
TARGET_SLACK_S = 0.2  # issue #2: dbsage's worst ≤ lock_timeout + 0.2 s


@dataclass
class Client:
    """One updating client: (start, latency) of each call, in perf_counter seconds."""

    calls: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    hold_start: float = 0.0
    hold_end: float = 0.0
    mig_start: float = 0.0
    mig_end: float = 0.0
    mig_rc: int | None = None
    mig_output: str = ""  # stdout
    mig_stderr: str = ""
    attempts: int | None = None
    column_exists: bool = False
    clients: list[Client] = field(default_factory=list)

    def blocked_s(self, start: float, end: float, slow: float = 0.1) -> float:
        """Seconds of [start, end] during which some client call had been stuck > `slow`."""
        spans = sorted((s + slow, s + lat) for c in self.clients for s, lat in c.calls if lat > slow)
        total, cur_a, cur_b = 0.0, None, None
        for a, b in [*spans, (float("inf"), float("inf"))]:
            if cur_b is not None and a <= cur_b:
                cur_b = max(cur_b, b)
                continue
            if cur_a is not None and cur_b is not None:
                total += max(0.0, min(cur_b, end) - max(cur_a, start))
            cur_a, cur_b = a, b
        return total

    def latencies(self, start: float, end: float) -> list[float]:
        """Latencies of the calls that overlap [start, end]."""
        return [lat for c in self.clients for s, lat in c.calls if s <= end and s + lat >= start]


def parse_interval(text: str) -> float:
    """A PostgreSQL interval such as 1s, 500ms, 2min (a bare number is ms) in seconds."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|min)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not an interval: {text!r} (use e.g. 1s, 500ms)")
    return float(m[1]) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 0.001}[m[2]]


def setup(srv: BenchServer) -> str:
    """A database with `accounts` (ROWS rows); its URL."""
    url = srv.create_database("lock_stall")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, "
                     "balance bigint NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO accounts (id, owner) SELECT i, 'owner ' || i "
                     "FROM generate_series(1, %s) i", (ROWS,))
        conn.execute("VACUUM ANALYZE accounts")
    return url


def client_loop(url: str, client: Client, stop: threading.Event, deadline: float) -> None:
    """UPDATE random rows until told to stop (or the deadline passes); record latencies."""
    rnd = random.Random()
    try:
        with psycopg.connect(url, autocommit=True, application_name="bench_client") as conn:
            conn.execute("SET statement_timeout = '60s'")
            while not stop.is_set() and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s",
                             (rnd.randint(1, ROWS),))
                client.calls.append((t0, time.perf_counter() - t0))
    except Exception as exc:  # reported, not raised: the thread must end
        client.error = repr(exc)


def run_scenario(name: str, url: str, cmd: list[str], cwd: Path, column: str,
                 args: argparse.Namespace) -> Outcome:
    """Clients, a blocker for args.hold s, the migration `cmd` START_AFTER_S into the hold."""
    out = Outcome(name, clients=[Client() for _ in range(args.clients)])
    stop = threading.Event()
    deadline = time.perf_counter() + args.hold + 90  # hard bound on the client loops
    threads = [threading.Thread(target=client_loop, args=(url, c, stop, deadline), daemon=True)
               for c in out.clients]
    proc: subprocess.Popen[str] | None = None
    blocker = psycopg.connect(url, application_name="bench_blocker")  # a transaction
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)  # the clients' steady state before the hold
        blocker.execute("SELECT * FROM accounts LIMIT 1")  # ACCESS SHARE until commit
        out.hold_start = time.perf_counter()
        time.sleep(START_AFTER_S)
        out.mig_start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        waiter = threading.Thread(target=_wait_for, args=(proc, out), daemon=True)
        waiter.start()
        time.sleep(max(0.0, out.hold_start + args.hold - time.perf_counter()))
        blocker.commit()
        out.hold_end = time.perf_counter()
        waiter.join(timeout=args.hold + 60)
        if waiter.is_alive():
            raise RuntimeError(f"{name}: the migration did not finish within {args.hold + 60}s")
        time.sleep(TAIL_S)
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        blocker.close()
        for t in threads:
            t.join(timeout=70)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                           "'accounts' AND column_name = %s", (column,)).fetchone()
        out.column_exists = bool(row and row[0])
    return out


def _wait_for(proc: subprocess.Popen[str], out: Outcome) -> None:
    stdout, stderr = proc.communicate()
    out.mig_end = time.perf_counter()
    out.mig_rc, out.mig_output, out.mig_stderr = proc.returncode, stdout, stderr


def dbsage_report(output: str) -> dict:
    """dbsage's --json report (stdout; notices go to stderr), {} when unreadable."""
    start = output.find("{")
    try:
        return json.loads(output[start:]) if start >= 0 else {}
    except ValueError:
        return {}


def print_outcome(o: Outcome, lock_timeout_s: float, hold: float) -> None:
    """One scenario's figures."""
    window_end = max(o.hold_end, o.mig_end) + 0.2
    lat = o.latencies(o.hold_start, window_end)
    before = [lat for c in o.clients for s, lat in c.calls if s + lat < o.hold_start]
    worst = max(lat, default=float("nan"))
    print(f"\n== {o.name}")
    print(f"  client calls in the window:  {len(lat)} (window {window_end - o.hold_start:.2f}s from "
          "the blocker's start)")
    print(f"  client latency before hold:  median {median(before) * 1000:.1f} ms")
    print(f"  client latency in window:    worst {worst:.3f}s  p99 {percentile(lat, 99) * 1000:.1f} ms  "
          f"median {median(lat) * 1000:.1f} ms")
    span = o.hold_end - o.mig_start
    blocked = o.blocked_s(o.mig_start, o.hold_end)
    print(f"  clients blocked (>100 ms):   {blocked:.2f}s of the {span:.2f}s from migration start to "
          f"blocker end ({blocked / span:.0%})")
    slow = [x for x in lat if x > 0.1]
    print(f"  calls slower than 100 ms:    {len(slow)} (sum {sum(slow):.2f}s over {len(o.clients)} "
          f"clients); throughput {len(lat) / (window_end - o.hold_start):.0f} updates/s")
    attempts = f", {o.attempts} apply attempt(s)" if o.attempts is not None else ""
    print(f"  migration:                   {o.mig_end - o.mig_start:.2f}s, exit {o.mig_rc}{attempts}"
          f" (blocker released {o.hold_end - o.mig_start:.2f}s after it started)")
    print(f"  column exists at the end:    {'yes' if o.column_exists else 'NO'}")
    for i, c in enumerate(o.clients):
        if c.error:
            print(f"  client {i} error: {c.error}")
    if o.mig_rc != 0:
        text = (o.mig_output + o.mig_stderr).strip()
        print("  migration output:\n    " + text.replace("\n", "\n    "))
    if o.name.startswith("B"):
        limit = lock_timeout_s + TARGET_SLACK_S
        print(f"  target: worst ≤ lock_timeout + {TARGET_SLACK_S}s = {limit:.2f}s -> "
              f"{'met' if worst <= limit else 'NOT met'}")
    else:
        stall = hold - START_AFTER_S
        print(f"  expected: clients stall for the rest of the hold (~{stall:.1f}s) -> "
              f"{'yes' if worst >= 0.9 * stall else 'no'}")


def main() -> None:
    """Run scenario A (naive psql -1) then B (dbsage) and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hold", type=float, default=6.0, help="seconds the blocker holds the table")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--lock-timeout", default="1s", help="passed to dbsage (e.g. 1s, 500ms)")
    args = ap.parse_args()
    lock_timeout_s = parse_interval(args.lock_timeout)
    print(f"lock stall — {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {os.cpu_count()} cores; "
          f"{git_state()}\nhold {args.hold}s, {args.clients} clients, migration {START_AFTER_S}s into the "
          f"hold, dbsage --lock-timeout {args.lock_timeout}")
    tag = f"{os.getpid()}"
    with throwaway_server() as srv, tempfile.TemporaryDirectory(prefix="dbsage-stall-") as tmp:
        url = setup(srv)
        project = Path(tmp)
        (project / "supabase" / "migrations").mkdir(parents=True)
        col_a, col_b = f"note_a{tag}", f"note_b{tag}"
        naive = project / "naive.sql"
        naive.write_text(f"ALTER TABLE accounts ADD COLUMN {col_a} text;\n")
        mig = project / "supabase" / "migrations" / f"20300101000001_add_{col_b}.sql"
        mig.write_text(f"ALTER TABLE accounts ADD COLUMN {col_b} text;\n")
        a = run_scenario("A: naive psql -1 -f", url,
                         [srv.bin("psql"), url, "-1", "-v", "ON_ERROR_STOP=1", "-f", str(naive)],
                         project, col_a, args)
        print_outcome(a, lock_timeout_s, args.hold)
        b = run_scenario(f"B: dbsage apply --lock-timeout {args.lock_timeout}", url,
                         [dbsage_exe(), "apply", str(mig.relative_to(project)), "--mode", "yolo",
                          "--db", url, "--lock-timeout", args.lock_timeout, "--json"],
                         project, col_b, args)
        rep = dbsage_report(b.mig_output)
        b.attempts = rep.get("attempts")
        print_outcome(b, lock_timeout_s, args.hold)
        if rep:
            steps = {x["step"]: x["duration_ms"] for x in rep.get("steps") or []}
            checks = sum(c.get("duration_ms") or 0 for c in rep.get("checks") or [])
            run_ms = rep.get("execution_time", 0) * 1000
            slow = ", ".join(f"{k} {v / 1000:.2f}s" for k, v in steps.items() if v > 100)
            print(f"  dbsage report: run {run_ms / 1000:.2f}s; steps > 0.1 s: {slow or 'none'}; "
                  f"checks {checks / 1000:.2f}s; outside steps/checks (e.g. the yolo dry-run) "
                  f"{(run_ms - sum(steps.values()) - checks) / 1000:.2f}s")
        for w in rep.get("warnings") or []:
            if "lock" in w.lower():
                print(f"  dbsage warning: {w}")
        print("\n== summary")
        print(f"{'scenario':<36} {'worst':>8} {'p99':>9} {'blocked':>8} {'migration':>10} {'column':>7}")
        for o in (a, b):
            lat = o.latencies(o.hold_start, max(o.hold_end, o.mig_end) + 0.2)
            blocked = o.blocked_s(o.mig_start, o.hold_end) / (o.hold_end - o.mig_start)
            print(f"{o.name:<36} {max(lat, default=float('nan')):7.3f}s "
                  f"{percentile(lat, 99) * 1000:6.1f} ms {blocked:8.0%} "
                  f"{o.mig_end - o.mig_start:9.2f}s {'yes' if o.column_exists else 'NO':>7}")


if __name__ == "__main__":
    main()
