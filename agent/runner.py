"""Run a task as named steps over a RunContext; cleanup steps always run.

The apply-migration steps are the tool functions in order; the YAML task definitions name
the same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbsage.agent.report import RunReport
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.apply import ApplyResult, LockRetryPolicy
    from dbsage.tools.connection import Target
    from dbsage.tools.sqlfile import MigrationFile

SNAPSHOT_DIR = Path("supabase") / "snapshots"


@dataclass
class RunOptions:
    """What the user asked for, from flags or the chat."""

    mode: str = "interactive"
    db: str | None = None
    lock_timeout: str = "1s"
    statement_timeout: str | None = None
    lock_retry: LockRetryPolicy | None = None
    project_dir: Path = field(default_factory=Path.cwd)
    confirm: Callable[[str], bool] | None = None  # None: no confirmation asked


@dataclass
class RunContext:
    """The state one run builds up, step by step."""

    report: RunReport
    options: RunOptions
    path: Path | None = None
    migration: MigrationFile | None = None
    target: Target | None = None
    conn: psycopg.Connection | None = None
    server_major: int = 0
    lock_held: bool = False
    ts: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    apply_result: ApplyResult | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def rel(self, p: Path) -> str:
        """A path as the user sees it: relative to the project when inside it."""
        try:
            return str(p.relative_to(self.options.project_dir))
        except ValueError:
            return str(p)


Step = Callable[[RunContext], None]


def read_migration_step(ctx: RunContext) -> None:
    """Read and parse the file; nothing touches the database."""
    from dbsage.tools.sqlfile import read_migration

    assert ctx.path is not None
    ctx.migration = read_migration(ctx.path)
    m = ctx.migration
    ctx.report.version, ctx.report.name = m.version, m.name
    ctx.report.statements = [{"index": s.index, "line": s.line, "sql": s.summary,
                              "transactional": s.transactional, "status": "not_run",
                              "rows_affected": 0, "duration_ms": 0.0} for s in m.statements]


def connect_target(ctx: RunContext) -> None:
    """Resolve --db / env / embedded, refuse a transaction pooler, connect with retry."""
    from dbsage.tools.connection import Target, check_not_transaction_pooler, connect, resolve_target

    target = resolve_target(ctx.options.db)
    if target is None:
        from dbsage.tools.embedded import start_embedded

        status = start_embedded(ctx.options.project_dir)
        assert status.url is not None
        target = Target(status.url, "embedded")
        ctx.report.notices.append(
            f"Using the embedded PostgreSQL in {ctx.rel(status.pgdata)} (no --db, "
            "SUPABASE_DB_URL or DATABASE_URL set); stop it with `dbsage db stop`.")
    ctx.target = target
    ctx.report.target = target.redacted
    check_not_transaction_pooler(target.url)
    ctx.conn = connect(target.url, autocommit=True)
    ctx.server_major = ctx.conn.info.server_version // 10000
    ctx.report.server_version = str(ctx.conn.info.parameter_status("server_version") or "")


def acquire_lock(ctx: RunContext) -> None:
    """Hold the migration advisory lock on this run's session until release_lock."""
    from dbsage.tools.lock import acquire_lock as take

    assert ctx.conn is not None
    take(ctx.conn)
    ctx.lock_held = True


def check_history(ctx: RunContext) -> None:
    """After the lock: refuse an applied version; report drift. Choose the run's TS."""
    from dbsage.tools.history import ensure_not_applied

    assert ctx.conn is not None and ctx.migration is not None
    m = ctx.migration
    ctx.ts = reserve_ts(ctx.options.project_dir / SNAPSHOT_DIR)
    ctx.report.ts = ctx.ts
    ctx.files["before"] = ctx.options.project_dir / SNAPSHOT_DIR / f"{ctx.ts}_before.sql"
    ctx.files["after"] = ctx.files["before"].with_name(f"{ctx.ts}_after.sql")
    ctx.files["diff"] = ctx.files["before"].with_name(f"{ctx.ts}_diff.patch")
    if m.version is None:
        ctx.report.version = ctx.ts
        ctx.report.warnings.append(
            f"{m.path.name} has no leading version digits; recorded as version {ctx.ts}. "
            "Name migrations <YYYYMMDDHHMMSS>_<name>.sql.")
    ensure_not_applied(ctx.conn, ctx.report.version or ctx.ts, m.checksum,
                       [s.sql for s in m.statements], str(m.path))


def reserve_ts(snapshot_dir: Path) -> str:
    """A YYYYMMDDHHMMSS (UTC) no earlier run used: its before-snapshot file is created empty."""
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(3600):
        ts = (now + timedelta(seconds=i)).strftime("%Y%m%d%H%M%S")
        try:
            (snapshot_dir / f"{ts}_before.sql").open("x").close()
            return ts
        except FileExistsError:
            continue
    raise DbsageError(f"No free timestamp in {snapshot_dir} within an hour of {now:%Y%m%d%H%M%S}.")


def take_snapshot_before(ctx: RunContext) -> None:
    """pg_dump the schema into the reserved {TS}_before.sql."""
    _snapshot(ctx, "before")


def take_snapshot_after(ctx: RunContext) -> None:
    """pg_dump the schema into {TS}_after.sql."""
    _snapshot(ctx, "after")


def _snapshot(ctx: RunContext, which: str) -> None:
    from dbsage.tools.snapshot import take_snapshot

    assert ctx.target is not None
    dest = ctx.files[which]
    if which == "before":
        dest.unlink()  # the empty reservation made by reserve_ts
    take_snapshot(ctx.target.url, dest, ctx.server_major)
    ctx.report.files[which] = ctx.rel(dest)


def confirm_apply(ctx: RunContext) -> None:
    """Interactive mode: one confirmation with the statements (the full checkpoints come with
    the task engine)."""
    if ctx.options.confirm is None or ctx.options.mode == "yolo":
        return
    assert ctx.migration is not None
    lines = "\n".join(f"  line {s.line}: {s.summary}" for s in ctx.migration.statements)
    question = (f"Apply {len(ctx.migration.statements)} statement(s) from {ctx.migration.path} "
                f"to {ctx.report.target}?\n{lines}\n")
    if not ctx.options.confirm(question):
        raise DbsageError("Not applied: you declined at the confirmation.", refused=True)


def apply_migration(ctx: RunContext) -> None:
    """Run the statements in one transaction together with the history rows."""
    from dbsage.tools.apply import apply_migration as run
    from dbsage.tools.errors import MigrationFailedError
    from dbsage.tools.history import HistoryRecord, record_applied

    assert ctx.conn is not None and ctx.migration is not None and ctx.ts is not None
    m = ctx.migration
    started = datetime.now(UTC)

    def record(conn: psycopg.Connection, results: list[Any]) -> None:
        record_applied(conn, HistoryRecord(
            ts=ctx.ts or "", version=ctx.report.version or "", name=m.name, path=str(m.path),
            checksum=m.checksum, mode=ctx.options.mode, started_at=started,
            duration_ms=(datetime.now(UTC) - started).total_seconds() * 1000,
            rows_affected=sum(r.rows_affected for r in results),
            statements=[s.sql for s in m.statements],
            snapshot_before=ctx.report.files.get("before"),
            snapshot_after=ctx.rel(ctx.files["after"]), diff_patch=ctx.rel(ctx.files["diff"])))

    try:
        ctx.apply_result = run(ctx.conn, m, lock_timeout=ctx.options.lock_timeout,
                               statement_timeout=ctx.options.statement_timeout,
                               retry=ctx.options.lock_retry, before_commit=record)
    except MigrationFailedError as exc:
        for row in exc.data.get("statements") or []:
            ctx.report.statements[row["index"] - 1].update(
                status=row["status"], rows_affected=row["rows_affected"],
                duration_ms=round(row["duration_ms"], 3))
        if exc.rolled_back:
            ctx.report.notices.append("Everything was rolled back: the database is unchanged.")
        raise
    res = ctx.apply_result
    for r in res.statements:
        ctx.report.statements[r.index - 1].update(status=r.status, rows_affected=r.rows_affected,
                                                  duration_ms=round(r.duration_ms, 3))
    ctx.report.records_affected = res.rows_affected
    ctx.report.apply_time = round(res.duration_s, 4)
    ctx.report.attempts = res.attempts
    ctx.report.status = "applied"
    if res.lock_timeouts:
        ctx.report.warnings.append(
            f"lock_timeout {ctx.options.lock_timeout} fired {res.lock_timeouts} time(s); the "
            f"transaction was rolled back and retried (attempt {res.attempts} succeeded).")


def diff_snapshots(ctx: RunContext) -> None:
    """Write the unified diff of the before and after snapshots."""
    from dbsage.tools.diff import diff_snapshots as diff

    result = diff(ctx.files["before"], ctx.files["after"], ctx.files["diff"])
    ctx.report.files["diff"] = ctx.rel(result.path)
    if not result.changed:
        ctx.report.warnings.append("The migration did not change the schema (empty diff).")


def release_lock(ctx: RunContext) -> None:
    """Release the advisory lock and close the session (always runs)."""
    from dbsage.tools.lock import release_lock as release

    if ctx.conn is None:
        return
    try:
        if ctx.lock_held:
            release(ctx.conn)
            ctx.lock_held = False
    finally:
        ctx.conn.close()


STEPS: dict[str, Step] = {
    "read_migration": read_migration_step,
    "connect_target": connect_target,
    "acquire_lock": acquire_lock,
    "check_history": check_history,
    "take_snapshot_before": take_snapshot_before,
    "confirm_apply": confirm_apply,
    "apply_migration": apply_migration,
    "take_snapshot_after": take_snapshot_after,
    "diff_snapshots": diff_snapshots,
    "release_lock": release_lock,
}

APPLY_STEPS = ("read_migration", "connect_target", "acquire_lock", "check_history",
               "take_snapshot_before", "confirm_apply", "apply_migration",
               "take_snapshot_after", "diff_snapshots")
APPLY_ALWAYS = ("release_lock",)


def run_steps(ctx: RunContext, steps: tuple[str, ...], always: tuple[str, ...]) -> RunReport:
    """Run steps in order; stop at the first error; then run the `always` steps."""
    started = time.perf_counter()
    try:
        for name in steps:
            _timed(ctx, name)
    except DbsageError as exc:
        _fail(ctx, exc)
    finally:
        for name in always:
            try:
                _timed(ctx, name)
            except Exception as exc:  # cleanup must not hide the run's own outcome
                ctx.report.warnings.append(f"{name} failed: {exc}")
        ctx.report.execution_time = round(time.perf_counter() - started, 4)
    return ctx.report


def _timed(ctx: RunContext, name: str) -> None:
    t0 = time.perf_counter()
    try:
        STEPS[name](ctx)
        status = "ok"
    except BaseException:
        status = "failed"
        raise
    finally:
        ctx.report.steps.append({"step": name, "status": status,
                                 "duration_ms": round((time.perf_counter() - t0) * 1000, 2)})


def _fail(ctx: RunContext, exc: DbsageError) -> None:
    from dbsage.tools.connection import redact

    if ctx.report.status == "applied":
        # Committed already: a later step (snapshot, diff) failed. Say so plainly.
        ctx.report.warnings.append(f"The migration is committed, but: {redact(exc.message)}")
        return
    ctx.report.status = "failed" if _ran_sql(ctx) else "refused"
    ctx.report.error = {k: (redact(v) if isinstance(v, str) else v)
                        for k, v in exc.to_dict().items() if k != "statements"}
    ctx.report.exit_code = exc.exit_code


def _ran_sql(ctx: RunContext) -> bool:
    return any(s["status"] != "not_run" for s in ctx.report.statements)


def run_apply(path: str | Path, options: RunOptions | None = None) -> RunReport:
    """Apply one migration file safely; never raises DbsageError (the report carries it)."""
    opts = options or RunOptions()
    ctx = RunContext(RunReport(task="apply-migration", mode=opts.mode), opts, path=Path(path))
    ctx.report.path = str(path)
    return run_steps(ctx, APPLY_STEPS, APPLY_ALWAYS)
