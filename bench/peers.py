"""dbsage against its peers: the same N migrations, identical databases, one run, side by side.

On a throw-away embedded PostgreSQL 18, a template database `base` with T tables is built
once; every timed run gets its own copy (`CREATE DATABASE ... TEMPLATE base`, untimed) and
applies the same N migrations (each: a new table, an index on it, a column added to an
existing table) with one tool:
  psql -1 -f per file (the floor: no history, no lock, no snapshot),
  dbmate up (with its schema dump, and with --no-dump-schema),
  sqitch deploy (and sqitch deploy --verify),
  dbsage apply --mode yolo per file, dbsage up and dbsage up --atomic (where this build has
  them).
The tools' order rotates every round; the median of --rounds is reported. Each run is
checked (exit code, then the tables and columns it must have made); a tool that fails prints
its error and "failed". Prints figures; never fails on time.

    .venv/bin/python bench/peers.py                      # N=20, T=1,000, 2 rounds
    .venv/bin/python bench/peers.py --n 1000 --tables 0 --rounds 2
    .venv/bin/python bench/peers.py --only psql --only dbsage-up

dbmate is installed with `npm install --prefix <cache dir> dbmate` and sqitch with
`apt-get install -y --no-install-recommends sqitch libdbd-pg-perl` (as root) when missing;
`--no-install` turns that off (a missing tool then prints "n/a").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from _server import (
    BenchServer,
    clean_env,
    dbsage_exe,
    git_state,
    interpreter_speed,
    median,
    throwaway_server,
)
from apply_overhead import build_schema, compile_bytecode

# The two targets for `dbsage up`: (n, tables) -> (reference tool key, max ratio).
TARGETS: dict[tuple[int, int], tuple[str, float]] = {
    (20, 1000): ("dbmate", 1.5),
    (1000, 0): ("psql", 1.0),
}
PER_FILE_DBSAGE_MAX_N = 200  # `dbsage apply` per file above this N only with --only dbsage-apply
FIRST_VERSION = datetime(2030, 1, 1)
PLANNER = "Peers Bench <peers-bench@example.invalid>"
ERROR_LINES = 15  # of a failing tool's output

MIGRATION_SQL = """-- peers benchmark migration {i}
CREATE TABLE public.peer_{i} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peer_{i}_name_idx ON public.peer_{i} (name);
"""
ADD_COLUMN_SQL = "ALTER TABLE public.{table} ADD COLUMN peer_col_{i} text;\n"
REVERT_SQL = "DROP TABLE public.peer_{i};\n"
DROP_COLUMN_SQL = "ALTER TABLE public.{table} DROP COLUMN peer_col_{i};\n"

CHECK_SQL = """
SELECT
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'peer\\_%'),
  (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND a.attname LIKE 'peer\\_col\\_%' AND NOT a.attisdropped)
"""


class ToolFailed(Exception):
    """A tool's run did not do what it must (exit code, timeout, or the resulting schema)."""


@dataclass
class Migration:
    """One migration: its version, name, forward SQL and how to undo and verify it."""

    i: int
    version: str
    name: str
    sql: str
    revert: str
    verify: str


def make_migrations(n: int, tables: int) -> list[Migration]:
    """N migrations: a table and its index; a column on t_<k> (or on the previous new table)."""
    out = []
    for i in range(1, n + 1):
        version = (FIRST_VERSION + timedelta(seconds=i)).strftime("%Y%m%d%H%M%S")
        sql, revert = MIGRATION_SQL.format(i=i), ""
        verify = f"SELECT id, name, created_at FROM public.peer_{i} WHERE false;\n"
        target = f"t_{(i - 1) % tables + 1}" if tables else (f"peer_{i - 1}" if i > 1 else None)
        if target:
            sql += ADD_COLUMN_SQL.format(table=target, i=i)
            revert = DROP_COLUMN_SQL.format(table=target, i=i)
            verify += f"SELECT peer_col_{i} FROM public.{target} WHERE false;\n"
        revert += REVERT_SQL.format(i=i)
        out.append(Migration(i, version, f"peer_{i:04d}", sql, revert, verify))
    return out


def expected_counts(n: int, tables: int) -> tuple[int, int]:
    """(new tables, new columns) that applying all N migrations leaves."""
    return n, (n if tables else max(0, n - 1))


def write_project(root: Path, migs: list[Migration], psql: str) -> None:
    """The inputs of every tool, laid out under `root`.

    root/project: a Supabase project (`supabase/config.toml`, `supabase/migrations/`);
    root/dbmate/migrations: the same files with `-- migrate:up` / `-- migrate:down`;
    root/sqitch: sqitch.conf, sqitch.plan, deploy/, revert/, verify/.
    """
    sup = root / "project" / "supabase"
    (sup / "migrations").mkdir(parents=True)
    (sup / "config.toml").write_text('project_id = "peers-bench"\n')
    dbm = root / "dbmate" / "migrations"
    dbm.mkdir(parents=True)
    sq = root / "sqitch"
    for d in ("deploy", "revert", "verify"):
        (sq / d).mkdir(parents=True)
    (sq / "sqitch.conf").write_text(
        "[core]\n\tengine = pg\n\tplan_file = sqitch.plan\n\ttop_dir = .\n"
        f'[engine "pg"]\n\tclient = {psql}\n')
    plan = ["%syntax-version=1.0.0", "%project=peers_bench", ""]
    for m in migs:
        (sup / "migrations" / f"{m.version}_{m.name}.sql").write_text(m.sql)
        (dbm / f"{m.version}_{m.name}.sql").write_text(
            f"-- migrate:up\n{m.sql}\n-- migrate:down\n{m.revert}")
        (sq / "deploy" / f"{m.name}.sql").write_text(f"BEGIN;\n{m.sql}COMMIT;\n")
        (sq / "revert" / f"{m.name}.sql").write_text(f"BEGIN;\n{m.revert}COMMIT;\n")
        (sq / "verify" / f"{m.name}.sql").write_text(m.verify)
        stamp = (FIRST_VERSION + timedelta(seconds=m.i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        plan.append(f"{m.name} {stamp} {PLANNER} # migration {m.i}")
    (sq / "sqitch.plan").write_text("\n".join(plan) + "\n")


# --- finding and installing the peers ---------------------------------------------------------


def cache_dir(arg: str | None) -> Path:
    """Where dbmate is npm-installed: --cache-dir, else $XDG_CACHE_HOME/dbsage-bench."""
    if arg:
        return Path(arg).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dbsage-bench"


def find_dbmate(cache: Path, install: bool) -> tuple[str | None, str]:
    """(path of dbmate or None, a note): the cached npm install, else PATH, else npm install."""
    cached = cache / "node_modules" / ".bin" / "dbmate"
    if cached.exists():
        return str(cached), f"{cached}"
    on_path = shutil.which("dbmate")
    if on_path:
        return on_path, on_path
    if not install:
        return None, "not installed; --no-install"
    npm = shutil.which("npm")
    if not npm:
        return None, "not installed and npm is missing"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing dbmate: npm install --prefix {cache} dbmate", flush=True)
    proc = subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                           "dbmate"], capture_output=True, text=True)
    if proc.returncode != 0 or not cached.exists():
        return None, f"npm install failed: {tail(proc.stdout + proc.stderr)}"
    return str(cached), f"{cached} (installed now)"


def _has_dbd_pg() -> bool:
    return subprocess.run(["perl", "-MDBD::Pg", "-e1"], capture_output=True).returncode == 0


def find_sqitch(install: bool) -> tuple[str | None, str]:
    """(path of sqitch or None, a note); apt-get installs sqitch and DBD::Pg when root."""
    found = shutil.which("sqitch")
    if found and shutil.which("perl") and _has_dbd_pg():
        return found, found
    packages = ["sqitch", "libdbd-pg-perl"]
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if not install:
        return None, "not installed; --no-install"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, f"not installed; as root: {' '.join(cmd)}"
    print(f"installing sqitch: {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # no package lists yet: update once, then try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = shutil.which("sqitch")
    if proc.returncode != 0 or not found or not _has_dbd_pg():
        return None, f"apt-get install failed: {tail(proc.stdout + proc.stderr)}"
    return found, f"{found} (installed now)"


def version_of(cmd: list[str]) -> str:
    """First line of `cmd`'s output, or '?'."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError:
        return "?"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else "?"


def tail(text: str, lines: int = ERROR_LINES) -> str:
    """The last lines of a tool's output, without Python's import-time noise."""
    kept = [x for x in text.strip().splitlines() if x.strip() and not x.startswith("import time:")]
    return "\n".join(kept[-lines:])


# --- the runs ---------------------------------------------------------------------------------


@dataclass
class Tool:
    """One peer: a key for --only/--skip, its label, and how to run it on a database URL."""

    key: str
    label: str
    run: Callable[[str, Path], None] | None  # (database URL, scratch folder) -> None or raises
    note: str = ""  # why it is not run (n/a), shown instead of a figure
    exe: str | None = None  # its binary, for --version and the warm-up
    seconds: list[float] = field(default_factory=list)
    error: str = ""


class Peers:
    """The server, the generated inputs and the commands of every tool."""

    def __init__(self, srv: BenchServer, work: Path, migs: list[Migration], timeout: float) -> None:
        self.srv, self.work, self.migs, self.timeout = srv, work, migs, timeout
        self.env = clean_env()
        # dbmate (pg_dump) and anything else that looks on PATH gets the server's own version 18
        self.env["PATH"] = f"{srv.bin_dir}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.update(SQITCH_FULLNAME="Peers Bench", SQITCH_EMAIL="peers-bench@example.invalid",
                        SQITCH_PAGER="cat")
        self.project = work / "project"
        self.files = sorted((self.project / "supabase" / "migrations").glob("*.sql"))
        self.setup_s = 0.0  # untimed: copying, checkpointing and dropping the databases

    def call(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
             what: str | None = None) -> None:
        """Run one command; ToolFailed (with its output) on a non-zero exit or a timeout."""
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env or self.env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            raise ToolFailed(f"{what or cmd[0]}: timed out after {self.timeout:.0f}s") from e
        if proc.returncode != 0:
            raise ToolFailed(f"{what or ' '.join(cmd[:3])}: exit {proc.returncode}\n"
                             f"{tail(proc.stdout + chr(10) + proc.stderr)}")

    def fresh_project(self, scratch: Path) -> Path:
        """A copy of the Supabase project for one run (dbsage writes its snapshots there)."""
        dest = scratch / "project"
        shutil.copytree(self.project, dest)
        return dest

    # Each runner takes (url, scratch) and does everything the user would type; untimed set-up
    # (copying the project folder) happens in prepare().

    def psql_loop(self, url: str, scratch: Path) -> None:
        psql = self.srv.bin("psql")
        for f in self.files:
            self.call([psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(f), url],
                      scratch, what=f"psql -1 -f {f.name}")

    def dbmate(self, exe: str, dump: bool) -> Callable[[str, Path], None]:
        def run(url: str, scratch: Path) -> None:
            env = {**self.env, "DATABASE_URL": f"{url}&sslmode=disable"}
            cmd = [exe, "--migrations-dir", str(self.work / "dbmate" / "migrations"),
                   "--schema-file", str(scratch / "schema.sql")]
            self.call([*cmd, "up"] if dump else [*cmd, "--no-dump-schema", "up"], scratch, env,
                      what="dbmate up")
            if dump and not (scratch / "schema.sql").exists():
                raise ToolFailed("dbmate up: no schema dump was written")
        return run

    def sqitch(self, exe: str, verify: bool) -> Callable[[str, Path], None]:
        def run(url: str, scratch: Path) -> None:
            # postgresql://postgres:@/db?host=/socket -> db:pg://postgres@/db?host=/socket
            dbname, query = url.split("@/", 1)[1].split("?", 1)
            target = f"db:pg://postgres@/{dbname}?{query}"
            cmd = [exe, "deploy", "--target", target] + (["--verify"] if verify else [])
            self.call(cmd, self.work / "sqitch", what="sqitch deploy")
        return run

    def dbsage_apply(self, exe: str) -> Callable[[str, Path], None]:
        def run(url: str, scratch: Path) -> None:
            project = scratch / "project"
            for f in self.files:
                rel = f"supabase/migrations/{f.name}"
                self.call([exe, "apply", rel, "--mode", "yolo", "--db", url], project,
                          what=f"dbsage apply {f.name}")
        return run

    def dbsage_up(self, exe: str, extra: list[str]) -> Callable[[str, Path], None]:
        def run(url: str, scratch: Path) -> None:
            self.call([exe, "up", *extra, "--db", url], scratch / "project",
                      what=" ".join(["dbsage up", *extra]))
        return run

    def prepare(self, tool: Tool, scratch: Path) -> None:
        if tool.key.startswith("dbsage"):
            self.fresh_project(scratch)


def dbsage_up_args(exe: str, env: dict[str, str]) -> tuple[list[str] | None, str]:
    """Arguments for `dbsage up` in this build (None: no such command) and its --help text."""
    proc = subprocess.run([exe, "up", "--help"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None, ""
    text = proc.stdout
    args = ["--mode", "yolo"] if "--mode" in text else []
    return args, text


def build_tools(peers: Peers, args: argparse.Namespace) -> list[Tool]:
    """Every peer in table order, each runnable or with the reason it is n/a."""
    install = not args.no_install

    def wanted(*keys: str) -> bool:
        return any((not args.only or k in args.only) and k not in args.skip for k in keys)

    dbmate, dbmate_note = (find_dbmate(cache_dir(args.cache_dir), install)
                           if wanted("dbmate", "dbmate-nodump") else (None, ""))
    sqitch, sqitch_note = find_sqitch(install) if wanted("sqitch", "sqitch-verify") else (None, "")
    dbsage = args.dbsage
    up_args, up_help = dbsage_up_args(dbsage, peers.env)
    up_args = None if up_args is None else up_args + args.up_arg
    na_up = "n/a (not available in this build)"
    tools = [
        Tool("psql", "psql -1 -f (per file)", peers.psql_loop),
        Tool("dbmate", "dbmate up", peers.dbmate(dbmate, True) if dbmate else None,
             f"n/a ({dbmate_note})", exe=dbmate),
        Tool("dbmate-nodump", "dbmate up --no-dump-schema",
             peers.dbmate(dbmate, False) if dbmate else None, f"n/a ({dbmate_note})", exe=dbmate),
        Tool("sqitch", "sqitch deploy", peers.sqitch(sqitch, False) if sqitch else None,
             f"n/a ({sqitch_note})", exe=sqitch),
        Tool("sqitch-verify", "sqitch deploy --verify",
             peers.sqitch(sqitch, True) if sqitch else None, f"n/a ({sqitch_note})", exe=sqitch),
        Tool("dbsage-apply", "dbsage apply --mode yolo (per file)", peers.dbsage_apply(dbsage)),
        Tool("dbsage-up", "dbsage up", None if up_args is None else peers.dbsage_up(dbsage, up_args),
             na_up),
        Tool("dbsage-up-atomic", "dbsage up --atomic",
             peers.dbsage_up(dbsage, [*up_args, "--atomic"])
             if up_args is not None and "--atomic" in up_help else None, na_up),
    ]
    for t in tools:
        if t.run is not None:
            t.note = ""
        if (args.only and t.key not in args.only) or t.key in args.skip:
            t.run, t.note = None, "skipped (--only/--skip)"
        elif (t.key == "dbsage-apply" and args.n > PER_FILE_DBSAGE_MAX_N
              and "dbsage-apply" not in args.only):
            t.run, t.note = None, (f"skipped at N > {PER_FILE_DBSAGE_MAX_N} (a process, a dry-run "
                                   "and two pg_dumps a file); `--only dbsage-apply` runs it")
    return tools


def check_result(url: str, n: int, tables: int) -> None:
    """ToolFailed unless the database has exactly the tables and columns the N migrations make."""
    with psycopg.connect(url) as conn:
        row = conn.execute(CHECK_SQL).fetchone()
    got = (int(row[0]), int(row[1])) if row else (0, 0)
    want = expected_counts(n, tables)
    if got != want:
        raise ToolFailed(f"exit 0, but the database has {got[0]} new tables and {got[1]} new "
                         f"columns (expected {want[0]} and {want[1]})")


def one_run(srv: BenchServer, peers: Peers, tool: Tool, dbname: str, n: int, tables: int) -> float:
    """A fresh copy of `base`, the tool's run on it (timed), the check; the copy is dropped."""
    assert tool.run is not None
    t_setup = time.perf_counter()
    with psycopg.connect(srv.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE base')
        conn.execute("CHECKPOINT")  # the copy's writes are flushed before the clock starts
    url = srv.url(dbname)
    try:
        with tempfile.TemporaryDirectory(prefix=f"peers-{tool.key}-", dir=peers.work) as tmp:
            scratch = Path(tmp)
            peers.prepare(tool, scratch)
            t0 = time.perf_counter()
            peers.setup_s += t0 - t_setup
            tool.run(url, scratch)
            seconds = time.perf_counter() - t0
            check_result(url, n, tables)
            return seconds
    finally:
        t1 = time.perf_counter()
        with psycopg.connect(srv.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        peers.setup_s += time.perf_counter() - t1


def warm_up(peers: Peers, tools: list[Tool], dbsage: str) -> None:
    """Load every binary once (page cache), untimed: psql, dbmate, sqitch's perl, dbsage."""
    cmds = [[peers.srv.bin("psql"), "--version"], [dbsage, "--help"]]
    cmds += [[t.exe, "--version"] for t in tools if t.run is not None and t.exe
             and t.key in ("dbmate", "sqitch")]
    for cmd in cmds:
        subprocess.run(cmd, capture_output=True, env=peers.env)


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


def report(tools: list[Tool], n: int, tables: int, rounds: int) -> None:
    """The markdown table: tool | seconds (median) | vs psql loop | target."""
    by_key = {t.key: t for t in tools}
    psql = by_key["psql"]
    base = median(psql.seconds) if psql.seconds and not psql.error else None
    target = TARGETS.get((n, tables))
    print(f"\n### N={n:,} migrations, T={tables:,} tables ({rounds} round(s), median)\n")
    print("| tool | seconds (median) | vs psql loop | target |")
    print("|---|---:|---:|---|")
    for t in tools:
        if t.error:
            secs, ratio = "failed", "-"
        elif not t.seconds:
            secs, ratio = t.note or "n/a", "-"
        else:
            m = median(t.seconds)
            secs = f"{m:.3f}" if len(t.seconds) < 2 else f"{m:.3f} (min {min(t.seconds):.3f})"
            ratio = fmt_ratio(m / base) if base else "-"
        cell = "-"
        if t.key == "dbsage-up":
            if target is None:
                cell = "- (the issue's targets: N=20/T=1,000 and N=1,000/T=0)"
            else:
                ref_key, limit = target
                ref = by_key[ref_key]
                ref_label = "dbmate up (with dump)" if ref_key == "dbmate" else "psql loop"
                cell = f"≤ {limit}× {ref_label}"
                if ref.seconds and not ref.error:
                    cell += f" (≤ {limit * median(ref.seconds):.3f} s)"
                    if t.seconds and not t.error:
                        r = median(t.seconds) / median(ref.seconds)
                        cell += f": {fmt_ratio(r)}, {'met' if r <= limit else 'NOT met'}"
                    else:
                        cell += ": not measured"
                else:
                    cell += f": not measured ({ref.label} has no figure)"
        print(f"| {t.label} | {secs} | {ratio} | {cell} |")
    errors = [t for t in tools if t.error]
    for t in errors:
        print(f"\n{t.label} failed:\n{t.error}")


def main() -> None:
    """Parse arguments, install what is missing, run the rounds, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="migrations (default 20)")
    ap.add_argument("--tables", type=int, default=1000, help="tables in the database (default 1000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the median is reported (default 2)")
    ap.add_argument("--only", action="append", default=[], metavar="KEY",
                    help="run only these tools (repeatable): psql dbmate dbmate-nodump sqitch "
                         "sqitch-verify dbsage-apply dbsage-up dbsage-up-atomic")
    ap.add_argument("--skip", action="append", default=[], metavar="KEY", help="skip a tool (repeatable)")
    ap.add_argument("--up-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every `dbsage up`")
    ap.add_argument("--dbsage", metavar="EXE",
                    help="the dbsage to measure (default: this interpreter's environment's)")
    ap.add_argument("--cache-dir", help="where dbmate is npm-installed (default ~/.cache/dbsage-bench)")
    ap.add_argument("--no-install", action="store_true", help="never install a missing peer")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per command (default 900)")
    args = ap.parse_args()
    if args.n < 1 or args.tables < 0 or args.rounds < 1:
        ap.error("--n and --rounds must be ≥ 1, --tables ≥ 0")
    args.dbsage = str(Path(args.dbsage).resolve()) if args.dbsage else dbsage_exe()

    print(f"dbsage vs peers — {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} "
          f"({interpreter_speed()}), "
          f"{git_state()} (this checkout); dbsage measured: {args.dbsage}")
    print(compile_bytecode())
    migs = make_migrations(args.n, args.tables)
    started = time.perf_counter()
    with throwaway_server() as srv, tempfile.TemporaryDirectory(prefix="dbsage-peers-") as tmp:
        work = Path(tmp)
        write_project(work, migs, srv.bin("psql"))
        peers = Peers(srv, work, migs, args.timeout)
        tools = build_tools(peers, args)
        versions = [version_of([srv.bin("psql"), "--version"])]
        versions += [version_of([t.exe, "--version"]) for t in tools
                     if t.run is not None and t.exe and t.key in ("dbmate", "sqitch")]
        print("peers: " + "; ".join(versions))
        for t in tools:
            if t.run is None:
                print(f"  {t.label}: {t.note}")
        base = srv.url("base")
        srv.create_database("base")
        build_s = build_schema(base, args.tables) if args.tables else 0.0
        print(f"server {srv.base_url}; base: {args.tables:,} tables built in {build_s:.1f}s; "
              f"{args.n:,} migrations in {work / 'project' / 'supabase' / 'migrations'}", flush=True)
        warm_up(peers, tools, args.dbsage)
        runnable = [t for t in tools if t.run is not None]
        for r in range(args.rounds):
            k = r % len(runnable) if runnable else 0
            order = runnable[k:] + runnable[:k]  # rotate so no tool is always first
            cells = []
            for t in order:
                if t.error:
                    continue
                try:
                    t.seconds.append(one_run(srv, peers, t, f"run_{r}_{t.key}", args.n, args.tables))
                    cells.append(f"{t.key} {t.seconds[-1]:.3f}s")
                except ToolFailed as e:
                    t.error = str(e)
                    cells.append(f"{t.key} FAILED")
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(cells), flush=True)
    report(tools, args.n, args.tables, args.rounds)
    print(f"\nwall time {time.perf_counter() - started:.0f} s, of which {peers.setup_s:.0f} s "
          "(untimed) copying, checkpointing and dropping the databases")


if __name__ == "__main__":
    main()
