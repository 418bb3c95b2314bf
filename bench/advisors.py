"""The advisors' cost on a large schema (issue 14): `dbsage rls-audit` and the advisor delta
that `dbsage plan` adds, on a Supabase-shaped database of N tables (tools/platform.py, the
embedded PostgreSQL 18, as the non-superuser postgres role).

    python bench/advisors.py [--tables 1000] [--runs 5]

Prints, as medians (and min) over --runs:
- `*rls-audit --json` run in-process (connect, audit, lints, report), and its two steps;
- `dbsage rls-audit --json` as a subprocess (what a user waits for, interpreter start-up and
  imports included);
- `*rls-audit --as anon,authenticated` in-process (the impersonation matrix: four statements
  per table and role, one DO block per role, so it grows with N; not part of the 1 s target),
  then with service_role too, in-process and as a subprocess;
- `*plan` of a small migration with and without the advisor delta (the lints before the
  dry-run and inside its transaction), and the difference: the delta's extra cost;
- the yolo apply gate's own cost (the ERROR-level lints twice inside the transaction).
Targets (issue 14): rls-audit <= 1 s and the delta in plan <= 0.5 s extra at 1,000 tables.
Not a test: the machine (and whatever else runs on it) decides the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from _server import clean_env, dbsage_exe, git_state  # noqa: E402

from dbsage.tools.embedded import bin_dir  # noqa: E402
from dbsage.tools.platform import (  # noqa: E402
    init_cluster,
    install_platform,
    start_cluster,
    stop_cluster,
)


@contextmanager
def supabase_server() -> Iterator[Any]:
    """A throw-away Supabase-shaped cluster (stopped and deleted on exit)."""
    root = Path(tempfile.mkdtemp(prefix="dbsage-bench-advisors-"))
    os.chmod(root, 0o755)
    pgdata = root / "data"
    cluster = None
    try:
        init_cluster(pgdata, bin_dir=bin_dir(), port=0, fast=True)
        cluster = start_cluster(pgdata)
        install_platform(cluster.database_url(admin=True), server_major=cluster.major)
        yield cluster
    finally:
        if cluster is not None:
            stop_cluster(pgdata, mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def build(url: str, n: int) -> None:
    """N tables in public, 200 per transaction: RLS on with an owner policy (every 7th calls
    auth.uid() per row), every 50th with RLS off, every 10th with an unindexed FK."""
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, n, 200):
            parts = []
            for i in range(start, min(n, start + 200)):
                fk = f", parent_id bigint references public.t{i - 1} (id)" if i % 10 == 9 else ""
                uid = "auth.uid()" if i % 7 == 0 else "(select auth.uid())"
                parts.append(
                    f"create table public.t{i} (id bigint generated always as identity primary "
                    f"key, user_id uuid not null default auth.uid(), name text{fk});")
                if i % 50 != 49:
                    parts.append(f"alter table public.t{i} enable row level security;"
                                 f"create policy \"t{i}: owner\" on public.t{i} for all to "
                                 f"authenticated using ({uid} = user_id) "
                                 f"with check ((select auth.uid()) = user_id);")
            conn.execute("begin;" + "".join(parts) + "commit;")  # type: ignore[arg-type]
        conn.execute("analyze")


def timed(work: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    work()  # warm-up: imports, catalog caches
    for _ in range(runs):
        t0 = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - t0)
    return times, result


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):6.3f} s   min {min(times):6.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from dbsage.agent import steps
    from dbsage.agent.commands import Session, execute, parse
    from dbsage.tools.advisors import LINTS, run_advisors

    print(f"# bench/advisors.py — {git_state()}, {args.tables} tables, {args.runs} runs, "
          f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}")
    with supabase_server() as cluster:
        url = cluster.database_url()
        t0 = time.perf_counter()
        build(url, args.tables)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        project = Path(tempfile.mkdtemp(prefix="dbsage-bench-project-"))
        (project / "supabase" / "migrations").mkdir(parents=True)
        try:
            session = Session(db=url, project_dir=project, interactive=False)

            def audit(line: str = "*rls-audit --json") -> Any:
                return execute(parse(line), session)

            times, out = timed(audit, args.runs)
            step_ms = {s["step"]: s["duration_ms"] for s in out.report.steps}
            print(f"rls-audit, in-process              {fmt(times)}   (audit_rls "
                  f"{step_ms['audit_rls']:.0f} ms, lints {step_ms['run_exposure_lints']:.0f} ms; "
                  f"exit {out.exit_code}, {len(out.report.details['lints']['findings'])} "
                  "findings)")
            cli = [dbsage_exe(), "rls-audit", "--json", "--db", url]
            times, _ = timed(lambda: subprocess.run(cli, cwd=project, env=clean_env(),
                                                    capture_output=True), args.runs)
            print(f"dbsage rls-audit, subprocess       {fmt(times)}   target <= 1 s")
            probe_runs = max(1, args.runs // 2)
            times, _ = timed(lambda: audit("*rls-audit --json --as anon,authenticated"),
                             probe_runs)
            print(f"rls-audit --as anon,authenticated  {fmt(times)}   (impersonation matrix, "
                  f"{2 * args.tables} table x role cells)")
            times, _ = timed(lambda: audit("*rls-audit --json --as anon,authenticated,"
                                           "service_role"), probe_runs)
            print(f"  ... --as anon,authenticated,service_role  {fmt(times)}   "
                  f"({3 * args.tables} cells)")
            cli_as = [*cli, "--as", "anon,authenticated,service_role"]
            times, _ = timed(lambda: subprocess.run(cli_as, cwd=project, env=clean_env(),
                                                    capture_output=True), probe_runs)
            print(f"  ... the same as a subprocess     {fmt(times)}")

            path = project / "supabase" / "migrations" / "20250101000000_bench.sql"
            path.write_text("create table public.bench_new (id bigint primary key, "
                            "t0_id bigint references public.t0 (id));\n"
                            "create index on public.t9 (parent_id);\n")

            def plan() -> Any:
                return execute(parse(f"*plan {path} --json"), session)

            hook, note = steps.advisor_delta_hook, steps.note_advisor_delta
            spent: list[float] = []

            def timed_hook(state: Any) -> Any:  # the delta's own time: lints and plans, twice
                t0 = time.perf_counter()
                inner = hook(state)
                spent.append(time.perf_counter() - t0)
                if inner is None:
                    return None

                def after(conn: Any) -> None:
                    t1 = time.perf_counter()
                    inner(conn)
                    spent.append(time.perf_counter() - t1)

                return after

            def timed_note(state: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return note(state)
                finally:
                    spent.append(time.perf_counter() - t0)

            def plan_with() -> Any:
                steps.advisor_delta_hook, steps.note_advisor_delta = timed_hook, timed_note
                try:
                    return plan()
                finally:
                    steps.advisor_delta_hook, steps.note_advisor_delta = hook, note

            def plan_without() -> Any:
                steps.advisor_delta_hook = lambda state: None  # type: ignore[assignment]
                steps.note_advisor_delta = lambda state: None  # type: ignore[assignment]
                try:
                    return plan()
                finally:
                    steps.advisor_delta_hook, steps.note_advisor_delta = hook, note

            plan_with(), plan_without()  # warm-up
            with_delta, without, own = [], [], []
            planned = None
            for _ in range(args.runs):  # alternating, so that the load hits both alike
                spent.clear()
                t0 = time.perf_counter()
                planned = plan_with()
                with_delta.append(time.perf_counter() - t0)
                own.append(sum(spent))
                t0 = time.perf_counter()
                plan_without()
                without.append(time.perf_counter() - t0)
            summary = planned.report.details["advisors"]["summary"]
            print(f"plan with the advisor delta        {fmt(with_delta)}   ({summary[:60]}...)")
            print(f"plan without it                    {fmt(without)}")
            extra = statistics.median(with_delta) - statistics.median(without)
            print(f"the delta's extra cost in plan     median {extra:6.3f} s   (difference of the "
                  "medians) target <= 0.5 s")
            print(f"  ... its own time (lints before, lints and plans inside, the section) "
                  f"{fmt(own)}")

            errors = {name for name, rule in LINTS.items() if rule.level == "ERROR"}
            with psycopg.connect(url, autocommit=True) as conn:
                times, _ = timed(lambda: (run_advisors(conn, ["public"], only=errors),
                                          run_advisors(conn, ["public"], only=errors)),
                                 args.runs)
                every, found = timed(lambda: run_advisors(conn, ["public"]), args.runs)
            print(f"yolo apply gate (ERROR lints x2)   {fmt(times)}")
            print(f"run_advisors, every lint, once     {fmt(every)}   ({len(found)} findings)")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
