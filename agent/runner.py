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

from dbsage.agent.modes import ModePolicy, Question, StopRun
from dbsage.agent.report import RunReport
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.agent.definitions import (
        ChecklistItemSpec,
        CheckpointSpec,
        RetryPolicySpec,
        TaskSpec,
    )
    from dbsage.agent.modes import Asker
    from dbsage.tools.apply import ApplyResult, LockRetryPolicy
    from dbsage.tools.connection import Target
    from dbsage.tools.sqlfile import MigrationFile

SNAPSHOT_DIR = Path("supabase") / "snapshots"
PLAN_DIR = Path("supabase") / "plans"


@dataclass
class RunOptions:
    """What the user asked for, from flags or the chat."""

    mode: str = "interactive"
    db: str | None = None
    lock_timeout: str = "1s"
    statement_timeout: str | None = None
    lock_retry: LockRetryPolicy | None = None  # None: the task definition's policy
    project_dir: Path = field(default_factory=Path.cwd)
    asker: Asker | None = None  # None: ask on the console
    flags: dict[str, bool] = field(default_factory=dict)  # allow_destructive, force, ...
    exposed_schemas: tuple[str, ...] = ("public",)
    # Called once while the run waits for work left running (the after-snapshot): the CLI
    # loads its renderer then instead of after the run.
    while_waiting: Callable[[], None] | None = None


@dataclass
class Pending:
    """Work a step left running: `finish` waits for it, `cancel` stops it."""

    step: str
    finish: Callable[[], None]
    cancel: Callable[[], None] = lambda: None


@dataclass
class RunContext:
    """The state one run builds up, step by step."""

    report: RunReport
    options: RunOptions
    policy: ModePolicy
    definition: TaskSpec | None = None
    path: Path | None = None
    migration: MigrationFile | None = None
    target: Target | None = None
    conn: psycopg.Connection | None = None
    server_major: int = 0
    lock_held: bool = False
    ts: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    apply_result: ApplyResult | None = None
    analysis: Any = None
    lint: Any = None
    dry_run: Any = None
    plan: dict[str, Any] | None = None
    fingerprint_before: str | None = None
    rollback: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    smoke: Any = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    early_wanted: bool = False  # start the before-snapshot as soon as the target is known
    early_snapshot: Any = None  # tools.snapshot.EarlySnapshot until adopted or discarded
    # Work a step left running (the after-snapshot's pg_dump) and the steps waiting for it:
    # joined, in order, once the post-conditions and acceptance criteria have run.
    pending: list[Pending] = field(default_factory=list)
    step_note: str | None = None  # a step's one-line remark for the report's step entry
    data_targets: list[Any] = field(default_factory=list)  # what the migration destroys
    saved_data: list[Any] = field(default_factory=list)  # and what was saved of it

    def rel(self, p: Path) -> str:
        """A path as the user sees it: relative to the project when inside it."""
        try:
            return str(p.relative_to(self.options.project_dir))
        except ValueError:
            return str(p)

    def retry_policy(self, policy_id: str) -> RetryPolicySpec | None:
        """A retry policy of the task definition by id."""
        if self.definition is None:
            return None
        return next((r for r in self.definition.error_handling.retry if r.id == policy_id), None)


Step = Callable[[RunContext], None]


def ensure_parsed(ctx: RunContext) -> MigrationFile:
    """Read and parse the file once; nothing touches the database."""
    if ctx.migration is not None:
        return ctx.migration
    from dbsage.tools.sqlfile import read_migration

    assert ctx.path is not None
    m = ctx.migration = read_migration(ctx.path)
    ctx.report.version, ctx.report.name = m.version, m.name
    ctx.report.statements = [{"index": s.index, "line": s.line, "sql": s.summary,
                              "transactional": s.transactional, "status": "not_run",
                              "rows_affected": 0, "duration_ms": 0.0} for s in m.statements]
    return m


def ensure_connected(ctx: RunContext) -> psycopg.Connection:
    """Resolve --db / env / embedded, refuse a transaction pooler, connect (with retry) once."""
    if ctx.conn is not None:
        return ctx.conn
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
    if ctx.early_wanted and ctx.early_snapshot is None:
        start_early_snapshot(ctx)
    policy = ctx.retry_policy("connection")
    if policy:
        ctx.conn = connect(target.url, autocommit=True, attempts=policy.attempts,
                           first_wait=policy.initial_wait_seconds)
    else:
        ctx.conn = connect(target.url, autocommit=True)
    ctx.server_major = ctx.conn.info.server_version // 10000
    ctx.report.server_version = str(ctx.conn.info.parameter_status("server_version") or "")
    return ctx.conn


def connect_target(ctx: RunContext) -> None:
    """Step: make sure the run's session exists."""
    ensure_connected(ctx)


def acquire_lock(ctx: RunContext) -> None:
    """Hold the migration advisory lock on this run's session until release_lock."""
    from dbsage.tools.lock import acquire_lock as take

    if not ctx.lock_held:
        take(ensure_connected(ctx))
        ctx.lock_held = True


def check_history(ctx: RunContext) -> None:
    """After the lock: refuse an applied version; report drift. Choose the run's TS."""
    from dbsage.tools.history import ensure_not_applied

    assert ctx.conn is not None
    m = ensure_parsed(ctx)
    ensure_ts(ctx)
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


def start_early_snapshot(ctx: RunContext) -> None:
    """Start the before-snapshot now, ahead of the lock (see tools/snapshot.py)."""
    import os

    from dbsage.tools.snapshot import start_early_snapshot as start

    assert ctx.target is not None
    ctx.early_wanted = False
    tmp = ctx.options.project_dir / SNAPSHOT_DIR / f".early-{os.getpid()}.sql"
    ctx.early_snapshot = start(ctx.target.url, tmp)


def discard_early_snapshot(ctx: RunContext) -> None:
    """Stop and delete an early snapshot the run did not adopt."""
    early, ctx.early_snapshot = ctx.early_snapshot, None
    if early is not None:
        early.discard()


def take_snapshot_before(ctx: RunContext) -> None:
    """The before-snapshot: the early one when it is still valid under the lock, else pg_dump
    now, into the reserved {TS}_before.sql."""
    early, ctx.early_snapshot = ctx.early_snapshot, None
    if early is not None:
        dest = _snapshot_dest(ctx, "before")
        if early.adopt(ensure_connected(ctx), dest) is not None:
            ctx.report.files["before"] = ctx.rel(dest)
            ctx.step_note = "started before the lock; no migration committed since: kept"
            return
        ctx.step_note = "the early snapshot could not be kept; dumped again under the lock"
    _snapshot(ctx, "before")


def take_snapshot_after(ctx: RunContext) -> None:
    """Start pg_dump for {TS}_after.sql; it runs while the post-conditions are checked."""
    from dbsage.tools.snapshot import start_snapshot

    assert ctx.target is not None
    ensure_ts(ctx)
    dest = ctx.files["after"]
    running = start_snapshot(ctx.target.url, dest, ctx.server_major)

    def finish() -> None:
        running.finish(dest)
        ctx.report.files["after"] = ctx.rel(dest)

    ctx.pending.append(Pending("take_snapshot_after", finish, running.cancel))
    ctx.step_note = "pg_dump started; joined after the post-conditions"


def ensure_ts(ctx: RunContext) -> str:
    """This run's TS and its snapshot paths (reserved once)."""
    if ctx.ts is None:
        ctx.ts = reserve_ts(ctx.options.project_dir / SNAPSHOT_DIR)
        ctx.report.ts = ctx.ts
        ctx.files["before"] = ctx.options.project_dir / SNAPSHOT_DIR / f"{ctx.ts}_before.sql"
        ctx.files["after"] = ctx.files["before"].with_name(f"{ctx.ts}_after.sql")
        ctx.files["diff"] = ctx.files["before"].with_name(f"{ctx.ts}_diff.patch")
    return ctx.ts


def _snapshot_dest(ctx: RunContext, which: str) -> Path:
    ensure_ts(ctx)
    dest = ctx.files[which]
    if which == "before":
        dest.unlink(missing_ok=True)  # the empty reservation made by reserve_ts
    return dest


def _snapshot(ctx: RunContext, which: str) -> None:
    from dbsage.tools.snapshot import take_snapshot

    assert ctx.target is not None
    dest = _snapshot_dest(ctx, which)
    take_snapshot(ctx.target.url, dest, ctx.server_major)
    ctx.report.files[which] = ctx.rel(dest)


def apply_migration(ctx: RunContext) -> None:
    """Run the statements in one transaction together with the history rows."""
    from dbsage.tools.apply import apply_migration as run
    from dbsage.tools.errors import MigrationFailedError
    from dbsage.tools.history import HistoryRecord, record_applied

    assert ctx.conn is not None and ctx.ts is not None
    m = ensure_parsed(ctx)
    if ctx.plan is not None:
        check_plan_still_holds(ctx)
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

    def progress(r: Any) -> None:
        ctx.report.statements[r.index - 1].update(status=r.status, rows_affected=r.rows_affected,
                                                  duration_ms=round(r.duration_ms, 3))

    try:
        ctx.apply_result = run(ctx.conn, m, lock_timeout=ctx.options.lock_timeout,
                               statement_timeout=ctx.options.statement_timeout,
                               retry=lock_retry_policy(ctx), before_commit=record,
                               on_statement=progress, before_statements=_data_saver(ctx))
    except DbsageError as exc:  # a failed statement, or saving the data failed (rolled back)
        # With the connection gone (even during COMMIT) the outcome is unknown: keep the data.
        if getattr(exc, "rolled_back", True) and not (ctx.conn.broken or ctx.conn.closed):
            _report_saved_data(ctx, committed=False)
        if not isinstance(exc, MigrationFailedError):
            raise
        for row in exc.data.get("statements") or []:
            ctx.report.statements[row["index"] - 1].update(
                status=row["status"], rows_affected=row["rows_affected"],
                duration_ms=round(row["duration_ms"], 3))
        if exc.rolled_back:
            ctx.report.notices.append("Everything was rolled back: the database is unchanged.")
        raise
    # Any other error (a broken connection, an interrupt) leaves the saved data alone: whether
    # the commit happened is not known here, and losing it would be worse than a stray folder.
    _report_saved_data(ctx, committed=True)
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
    """Write the unified diff of the before and after snapshots (once both exist)."""
    from dbsage.tools.diff import diff_snapshots as diff

    def write() -> None:
        result = diff(ctx.files["before"], ctx.files["after"], ctx.files["diff"])
        ctx.report.files["diff"] = ctx.rel(result.path)
        if not result.changed:
            ctx.report.warnings.append("The migration did not change the schema (empty diff).")

    run_after_pending(ctx, "diff_snapshots", write)


def run_after_pending(ctx: RunContext, step: str, work: Callable[[], None]) -> None:
    """Run `work` now, or queue it behind the work steps left running (it needs their files)."""
    if ctx.pending:
        ctx.pending.append(Pending(step, work))
        ctx.step_note = "waits for the after-snapshot"
    else:
        work()


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


def dry_run_step(ctx: RunContext) -> None:
    """Step: run the migration in a transaction that is always rolled back; report it all."""
    from dbsage.tools.dryrun import dry_run_migration

    conn = ensure_connected(ctx)
    m = ensure_parsed(ctx)
    ctx.fingerprint_before = schema_fingerprint(conn)
    ctx.dry_run = r = dry_run_migration(conn, m, lock_timeout=ctx.options.lock_timeout,
                                        statement_timeout=ctx.options.statement_timeout,
                                        retry=lock_retry_policy(ctx))
    for st in r.statements:
        ctx.report.statements[st.index - 1].update(
            status=st.status, rows_affected=st.rows_affected, duration_ms=round(st.duration_ms, 3),
            locks=[f"{lk.relation}: {lk.mode}" for lk in st.locks])
    ctx.report.changes = [{"kind": c.kind, "action": c.action, "name": c.name,
                           "detail": c.detail, "ddl": c.ddl} for c in r.changes]
    ctx.report.ddl = r.ddl_script
    ctx.report.warnings.extend(r.warnings)
    ctx.report.apply_time = round(r.duration_s, 4)
    ctx.report.attempts = r.attempts
    ctx.report.records_affected = sum(st.rows_affected for st in r.statements)
    if r.passed:
        ctx.report.status = "passed"
        return
    f = r.failure
    ctx.report.status, ctx.report.exit_code = "failed", 1
    ctx.report.error = {"error": "DryRunFailed", "message": r.message or f.message,
                        "path": str(m.path), "line": f.line, "sqlstate": f.sqlstate,
                        "detail": f.detail, "hint": f.hint}
    ctx.report.notices.append("The dry-run transaction was rolled back: the database is "
                              "unchanged.")


def run_smoke_checks(ctx: RunContext) -> None:
    """Step: the built-in smoke checks and the user's supabase/tests."""
    from dataclasses import asdict

    from dbsage.tools.smoke import run_smoke_test

    smoke = run_smoke_test(ensure_connected(ctx), ctx.options.project_dir,
                           exposed_schemas=ctx.options.exposed_schemas)
    ctx.smoke = smoke
    ctx.report.smoke = {"passed": smoke.passed, "checks": [asdict(c) for c in smoke.checks],
                        "user_tests": [asdict(t) for t in smoke.user_tests]}
    ctx.report.status = "passed" if smoke.passed else "failed"


ROLLBACK_DIR = Path("supabase") / "rollback"


def save_destroyed_data(ctx: RunContext) -> None:
    """Step (apply): find the data a destructive migration destroys; apply_migration saves it
    inside the migration's own transaction, so no write can slip in between."""
    from dbsage.tools.sqlfile import DATA_DESTROYING_KINDS

    m = ensure_parsed(ctx)
    if not any(s.kind in DATA_DESTROYING_KINDS for s in m.statements):
        return  # nothing to look at closer (and no need to load tools/rollback.py)
    from dbsage.tools.rollback import destructive_targets

    targets = destructive_targets(m)
    if targets:
        ctx.data_targets = targets
        ctx.step_note = (f"{len(targets)} target(s); saved inside the migration's transaction, "
                         "before its first statement")


def _data_saver(ctx: RunContext) -> Callable[[psycopg.Connection], None] | None:
    """The hook that saves the destroyed data in the migration's transaction (each attempt)."""
    if not ctx.data_targets:
        return None
    import shutil

    from dbsage.tools.rollback import lock_for_saving, save_data

    dest = _saved_data_dir(ctx)

    def save(conn: psycopg.Connection) -> None:
        shutil.rmtree(dest, ignore_errors=True)  # a rolled-back attempt of this run
        lock_for_saving(conn, ctx.data_targets)
        ctx.saved_data = save_data(conn, ctx.data_targets, dest)

    return save


def _saved_data_dir(ctx: RunContext) -> Path:
    return ctx.options.project_dir / SNAPSHOT_DIR / f"{ensure_ts(ctx)}_data"


def _report_saved_data(ctx: RunContext, committed: bool) -> None:
    """Keep the saved data with a committed migration; drop it with a rolled-back one."""
    import shutil

    if not ctx.data_targets or ctx.ts is None:
        return
    dest = _saved_data_dir(ctx)
    if not committed:
        shutil.rmtree(dest, ignore_errors=True)  # nothing was destroyed
        return
    if ctx.saved_data:
        ctx.report.files["data"] = ctx.rel(dest)
        ctx.report.notices.append(
            f"Saved {sum(x.rows for x in ctx.saved_data)} row(s) the migration destroys to "
            f"{ctx.rel(dest)} (for *rollback {ctx.ts}).")


def prepare_rollback_step(ctx: RunContext) -> None:
    """Step (apply): write supabase/rollback/{TS}_rollback.sql unless the user wrote one.

    The reverse DDL is a pure function of the two snapshots this run has just written, so by
    default it is derived when first needed (`dbsage rollback TS`, or `--prepare-only`): it
    costs two scratch restores and two full catalog inspections (about 14 s at 1,000 tables,
    against 0.25 s for the whole shell procedure). --rollback-script writes it now, e.g. to
    review it in the same pull request as the migration.
    """
    assert ctx.target is not None and ctx.ts is not None
    dest = ctx.options.project_dir / ROLLBACK_DIR / f"{ctx.ts}_rollback.sql"
    if not ctx.options.flags.get("rollback_script") and not dest.exists():
        ctx.report.notices.append(
            f"Rollback inputs kept ({ctx.rel(ctx.files['before'])}, "
            f"{ctx.rel(ctx.files['after'])}); the reverse script is derived from them by "
            f"`dbsage rollback {ctx.ts}` (preview: --prepare-only).")
        return
    run_after_pending(ctx, "prepare_rollback", lambda: _write_rollback_script(ctx, dest))


def _write_rollback_script(ctx: RunContext, dest: Path) -> None:
    from dbsage.tools.rollback import prepare_rollback

    assert ctx.target is not None
    try:
        result = prepare_rollback(ctx.target.url, ctx.files["before"], ctx.files["after"], dest,
                                  server_major=ctx.server_major)
    except DbsageError as exc:  # the migration is committed: say so, do not fail it
        ctx.report.warnings.append(f"No rollback script was written: {exc.message}")
        return
    ctx.report.files["rollback"] = ctx.rel(result.path)
    if result.user_written:
        ctx.report.notices.append(f"Kept your own rollback script {ctx.rel(result.path)}.")


def resolve_rollback(ctx: RunContext) -> dict[str, Any]:
    """The apply run to undo (TS, `latest`, or a *_before.sql snapshot) and its reverse script."""
    if ctx.rollback is not None:
        return ctx.rollback
    from dbsage.tools import rollback as rb

    conn = ensure_connected(ctx)
    value = str(ctx.inputs.get("migration", ""))
    if value.endswith("_before.sql") and Path(value).is_file():
        script = rb.plan_from_snapshot(ctx.target.url if ctx.target else "", Path(value),
                                       server_major=ctx.server_major)
        applied_ts = Path(value).name.removesuffix("_before.sql")
        source = value
    else:
        applied_ts = rb.validate_ts(value, conn)
        path = ctx.options.project_dir / ROLLBACK_DIR / f"{applied_ts}_rollback.sql"
        if not path.exists():
            # Derive it from that run's own two snapshots (not from the live schema, which
            # would also undo every later migration), and keep it for review.
            snaps = ctx.options.project_dir / SNAPSHOT_DIR
            before, after = snaps / f"{applied_ts}_before.sql", snaps / f"{applied_ts}_after.sql"
            if not (before.exists() and after.exists()):
                raise DbsageError(f"Neither {ctx.rel(path)} nor the snapshots {ctx.rel(before)} "
                                  f"and {ctx.rel(after)} exist: dbsage cannot know what to undo.",
                                  hint=f"Write the reverse DDL to {ctx.rel(path)}.")
            assert ctx.target is not None
            rb.prepare_rollback(ctx.target.url, before, after, path,
                                server_major=ctx.server_major)
            ctx.report.notices.append(f"Reverse script derived from the run's snapshots: "
                                      f"{ctx.rel(path)}")
        script, source = rb.read_rollback_script(path), ctx.rel(path)
    row = conn.execute("SELECT version, name, path FROM dbsage.migration_log WHERE ts = %s AND "
                       "event = 'apply' ORDER BY id DESC LIMIT 1", (applied_ts,)).fetchone()
    if row is None:
        raise DbsageError(f"No apply run {applied_ts} in dbsage.migration_log.",
                          hint="See *status for what is applied.")
    data_dir = ctx.options.project_dir / SNAPSHOT_DIR / f"{applied_ts}_data"
    ctx.rollback = {"applied_ts": applied_ts, "version": row[0], "name": row[1],
                    "path": row[2], "script": script, "source": source,
                    "saved": rb.load_saved_data(data_dir)}
    ctx.report.version, ctx.report.name = row[0], row[1]
    ctx.report.statements = [{"index": i, "line": st.line, "sql": st.summary,
                              "transactional": True, "status": "not_run", "rows_affected": 0,
                              "duration_ms": 0.0}
                             for i, st in enumerate(script.all_statements, 1)]
    ctx.report.files["rollback"] = source
    return ctx.rollback


def rollback_migration(ctx: RunContext) -> None:
    """Step (rollback): reverse DDL + saved data + history, in one transaction."""
    from dbsage.tools.rollback import apply_rollback

    plan = resolve_rollback(ctx)
    ensure_ts(ctx)
    result = apply_rollback(
        ensure_connected(ctx), plan["script"], plan["saved"], plan["version"], ts=ctx.ts or "",
        mode=ctx.options.mode, path=plan["path"], snapshot_before=ctx.report.files.get("before"),
        snapshot_after=ctx.rel(ctx.files["after"]), diff_patch=ctx.rel(ctx.files["diff"]),
        lock_timeout=ctx.options.lock_timeout, statement_timeout=ctx.options.statement_timeout)
    for entry in ctx.report.statements:
        entry["status"] = "ok"
    ctx.report.records_affected = result.rows_restored
    ctx.report.apply_time = round(result.duration_s, 4)
    ctx.report.status = "rolled_back"


STEPS: dict[str, Step] = {
    "save_destroyed_data": save_destroyed_data,
    "prepare_rollback": prepare_rollback_step,
    "rollback_migration": rollback_migration,
    "dry_run_migration": dry_run_step,
    "run_smoke_checks": run_smoke_checks,
    "connect_target": connect_target,
    "acquire_lock": acquire_lock,
    "check_history": check_history,
    "take_snapshot_before": take_snapshot_before,
    "apply_migration": apply_migration,
    "take_snapshot_after": take_snapshot_after,
    "diff_snapshots": diff_snapshots,
    "release_lock": release_lock,
}


def lock_retry_policy(ctx: RunContext) -> LockRetryPolicy:
    """--lock-retry from the caller, else the definition's `lock_timeout` retry policy."""
    from dbsage.tools.apply import LockRetryPolicy

    if ctx.options.lock_retry is not None:
        return ctx.options.lock_retry
    p = ctx.retry_policy("lock_timeout")
    if p is None:
        return LockRetryPolicy()
    return LockRetryPolicy(p.attempts, p.initial_wait_seconds, p.max_wait_seconds)


# --- checklists -------------------------------------------------------------------------------

class ChecklistFailed(DbsageError):
    """A blocking checklist item failed."""

    exit_code = 6


def run_checklist(ctx: RunContext, phase: str, items: list[ChecklistItemSpec]) -> list[str]:
    """Run every item and report it; return the failed blockers' messages (after-commit phases)
    or raise ChecklistFailed at the first failed blocker (pre-conditions)."""
    from dbsage.agent.checklists import run_check

    failed: list[str] = []
    for item in items:
        result = run_check(item.check, ctx)
        entry = {"phase": phase, "id": item.id, "text": item.text, "status": result.status,
                 "detail": result.detail, "blocker": item.blocker,
                 "duration_ms": result.duration_ms}
        ctx.report.checks.append(entry)
        if result.status != "fail":
            if result.status == "warn":
                ctx.report.warnings.append(f"{item.text}: {result.detail}")
            continue
        if not item.blocker:
            ctx.report.warnings.append(f"{item.error_message}: {result.detail}")
            continue
        if item.override and _overridden(ctx, item, result.detail):
            entry["overridden"] = True
            continue
        message = f"{item.error_message}: {result.detail}"
        if phase == "pre_conditions":
            if result.error is not None:  # keep the error's own kind and exit code
                result.error.message = message
                result.error.data["check"] = item.id
                raise result.error
            raise ChecklistFailed(message, hint=_hint_for(item.id), check=item.id)
        failed.append(message)
    return failed


def _hint_for(check_id: str) -> str | None:
    return {
        "migration_order": "Rename the file with a newer timestamp, or pass "
                           "--allow-out-of-order if applying it late is intended.",
        "no_destructive_statements": "Review what is lost; pass --allow-destructive to proceed "
                                     "(data is saved first for *rollback).",
        "lint_clean": "Fix what squawk reports, or pass --force to apply anyway.",
        "not_applied_yet": "Nothing to do; see *status.",
    }.get(check_id)


def _overridden(ctx: RunContext, item: ChecklistItemSpec, detail: str) -> bool:
    q = Question(f"override_{item.id}", f"{item.error_message}. Continue anyway?",
                 explanation=detail, choices=("yes", "no"), default="no")
    return ctx.policy.override(q, item.override)


# --- checkpoints ------------------------------------------------------------------------------

def _values(ctx: RunContext) -> dict[str, str]:
    files = ctx.report.files
    return {"path": str(ctx.path or ""), "target": ctx.report.target or "(not resolved yet)",
            "migration": str(ctx.inputs.get("migration", "")),
            "statements_run": str(sum(s["status"] == "ok" for s in ctx.report.statements)),
            "checks_run": str(len((ctx.report.smoke or {}).get("checks", []))),
            "rollback_script": files.get("rollback", ""),
            "ts": ctx.ts or "{ts}", "snapshot_before": files.get("before", ""),
            "snapshot_after": files.get("after", ""), "snapshot_diff": files.get("diff", "")}


def _format(text: str, values: dict[str, str]) -> str:
    try:
        return text.format(**values)
    except (KeyError, IndexError):
        return text


def run_checkpoints(ctx: RunContext, step: str, position: str) -> None:
    """Ask (or decide) every checkpoint placed before/after `step` for this mode."""
    assert ctx.definition is not None
    for cp in ctx.definition.checkpoints:
        if cp.step != step or (cp.before_step is None) == (position == "before"):
            continue
        if not _applies(ctx, cp) and cp.id not in SPECIAL_CHECKPOINTS:
            continue
        handler = SPECIAL_CHECKPOINTS.get(cp.id, _ask_checkpoint)
        handler(ctx, cp)


def _applies(ctx: RunContext, cp: CheckpointSpec) -> bool:
    # yolo meets every checkpoint too: its rules decide, and each decision is logged.
    return ctx.policy.name == "yolo" or ctx.policy.name in cp.modes


def _question(ctx: RunContext, cp: CheckpointSpec, detail: str = "") -> Question:
    values = _values(ctx)
    if cp.kind == "choice":
        labels = tuple(str(i) for i in range(1, len(cp.options) + 1))
        menu = "\n".join(f"  {i}. {o.label}" + (f"  ({o.command})" if o.command else "")
                         for i, o in enumerate(cp.options, 1))
        return Question(cp.id, _format(cp.question, values), cp.explanation,
                        "\n".join(x for x in (detail, menu) if x), labels, labels[-1])
    text = _format(cp.question, values)
    if cp.kind == "notice":
        text += " Continue?"
    return Question(cp.id, text, _format(cp.explanation, values), detail, ("yes", "no"), "yes")


def _ask_checkpoint(ctx: RunContext, cp: CheckpointSpec, detail: str = "") -> str:
    answer = ctx.policy.checkpoint(_question(ctx, cp, detail))
    if cp.kind != "choice" and answer == "no":
        raise StopRun(_format(cp.stop_message or f"Stopped at checkpoint {cp.id}.",
                              _values(ctx)), checkpoint=cp.id)
    return answer


def _statements_with_locks(ctx: RunContext) -> str:
    from dbsage.agent.checklists import _analysis

    analysis = _analysis(ctx)
    return "\n".join(f"  line {a.statement.line:<4} {a.lock_level or 'no table lock':<22} "
                     f"{a.statement.summary}" for a in analysis.statements)


def confirm_apply_checkpoint(ctx: RunContext, cp: CheckpointSpec) -> None:
    """The apply confirmation shows every statement with the lock level it takes."""
    if _applies(ctx, cp):
        _ask_checkpoint(ctx, cp, _statements_with_locks(ctx))


def dry_run_checkpoint(ctx: RunContext, cp: CheckpointSpec) -> None:
    """Ask only when dbsage has no record of a passing dry-run of this exact file."""
    if ctx.options.flags.get("skip_dry_run"):
        ctx.policy.log(cp.id, "skipped", "--no-dry-run: the user chose to apply without one")
        return
    record = _passing_dry_run(ctx)
    if record is not None:
        ctx.policy.log(cp.id, "yes", f"a passing dry-run of this checksum is on record "
                       f"({record.ran_at:%Y-%m-%d %H:%M:%S})", "record")
        return
    if ctx.policy.name == "yolo":
        ctx.policy.log(cp.id, "run", "yolo: no dry-run on record, so one runs first (pass or "
                       "fail only; nextval() calls in it leave gaps in sequences)")
        run_dry_run(ctx)
        return
    _ask_checkpoint(ctx, cp)


def _passing_dry_run(ctx: RunContext) -> Any:
    from dbsage.tools.dryrun import find_passing_dry_run

    return find_passing_dry_run(ensure_connected(ctx), ensure_parsed(ctx).checksum)


# Statements whose locks the analysis cannot see: they may take anything.
_OPAQUE_KINDS = frozenset({"DoStmt", "CallStmt", "SelectStmt", "ExecuteStmt"})


def let_early_snapshot_finish_if_in_the_way(ctx: RunContext) -> None:
    """The early pg_dump holds ACCESS SHARE on every table until it ends. A statement that
    needs ACCESS EXCLUSIVE on an existing table (or may, unseen) would queue behind it, so
    such a dry-run waits for pg_dump first; any other runs alongside it."""
    from dbsage.agent.checklists import _analysis

    if ctx.early_snapshot is None:
        return
    analysis = _analysis(ctx)
    if analysis.strongest_lock == "ACCESS EXCLUSIVE" or any(
            a.statement.kind in _OPAQUE_KINDS for a in analysis.statements):
        ctx.early_snapshot.wait_for_dump()


def run_dry_run(ctx: RunContext) -> None:
    """Run the migration in a transaction that is rolled back; stop if it fails."""
    from dbsage.tools.dryrun import dry_run_migration

    acquire_lock(ctx)
    let_early_snapshot_finish_if_in_the_way(ctx)
    ctx.dry_run = result = dry_run_migration(
        ensure_connected(ctx), ensure_parsed(ctx), lock_timeout=ctx.options.lock_timeout,
        statement_timeout=ctx.options.statement_timeout, retry=lock_retry_policy(ctx),
        describe_changes=False, observe=False)  # a gate: pass or fail is all it needs
    if not result.passed:
        f = result.failure
        raise StopRun(f"The dry-run failed at {ctx.path}:{f.line}: {f.message} "
                      f"[SQLSTATE {f.sqlstate}]. Nothing was applied.", hint=f.hint,
                      line=f.line, sqlstate=f.sqlstate)


def post_menu_checkpoint(ctx: RunContext, cp: CheckpointSpec) -> None:
    """After success: offer the next commands; run the chosen follow-up."""
    if ctx.report.status != "applied" or not _applies(ctx, cp):
        return
    answer = _ask_checkpoint(ctx, cp)
    choice = cp.options[int(answer) - 1]
    ctx.report.follow_up = choice.command
    if choice.command in FOLLOW_UPS:
        FOLLOW_UPS[choice.command](ctx)


def _follow_up_smoke(ctx: RunContext) -> None:
    from dbsage.tools.connection import connect
    from dbsage.tools.smoke import run_smoke_test

    assert ctx.target is not None
    with connect(ctx.target.url, autocommit=True) as conn:
        smoke = run_smoke_test(conn, ctx.options.project_dir,
                               exposed_schemas=ctx.options.exposed_schemas)
    ctx.report.follow_up_result = {
        "passed": smoke.passed,
        "checks": [{"id": c.id, "status": c.status, "detail": c.detail} for c in smoke.checks]}


def _follow_up_rls(ctx: RunContext) -> None:
    from dbsage.tools.connection import connect
    from dbsage.tools.smoke import check_rls_enabled

    assert ctx.target is not None
    with connect(ctx.target.url, autocommit=True) as conn:
        out = check_rls_enabled(conn, ctx.options.exposed_schemas)
    ctx.report.follow_up_result = {"passed": out.status != "fail", "checks": [
        {"id": out.id, "status": out.status, "detail": out.detail}]}


FOLLOW_UPS: dict[str, Callable[[RunContext], None]] = {
    "*smoke-test": _follow_up_smoke,
    "*rls-audit": _follow_up_rls,
}
def confirm_rollback_checkpoint(ctx: RunContext, cp: CheckpointSpec) -> None:
    """The rollback confirmation shows the reverse script that will run."""
    if _applies(ctx, cp):
        _ask_checkpoint(ctx, cp, resolve_rollback(ctx)["script"].render())


SPECIAL_CHECKPOINTS: dict[str, Callable[[RunContext, CheckpointSpec], Any]] = {
    "confirm_rollback": confirm_rollback_checkpoint,
    "dry_run_done": dry_run_checkpoint,
    "confirm_apply": confirm_apply_checkpoint,
    "post_migration_menu": post_menu_checkpoint,
}


# --- pre-flight -------------------------------------------------------------------------------

def schema_fingerprint(conn: psycopg.Connection) -> str:
    """md5 over the user schemas' relations, columns, constraints, indexes, policies, functions."""
    from dbsage.agent.checklists import USER_SCHEMA_FILTER

    row = conn.execute(f"""
        SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
          SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' ||
                 c.relrowsecurity::text || ':' || coalesce((SELECT string_agg(a.attname || ' ' ||
                 format_type(a.atttypid, a.atttypmod) || a.attnotnull::text, ',' ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT
                 a.attisdropped), '') AS x
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT co.conname || pg_get_constraintdef(co.oid) FROM pg_constraint co
            JOIN pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT pol.polname || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
            FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON
            n.oid = c.relnamespace WHERE {USER_SCHEMA_FILTER}
          UNION ALL SELECT p.proname || md5(coalesce(p.prosrc, '')) FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMA_FILTER}
        ) s""").fetchone()
    return str(row[0]) if row else ""


def build_plan(ctx: RunContext) -> dict[str, Any]:
    """The pre-flight analysis: locks, sizes, rewrites, destructive ops, lint, dry-run."""
    from dbsage.agent.checklists import _analysis
    from dbsage.tools.analyze import count_rows_at_stake, missing_objects, table_sizes

    m = ensure_parsed(ctx)
    conn = ensure_connected(ctx)
    analysis = _analysis(ctx)
    tables = sorted({t for a in analysis.statements for t in a.tables})
    sizes = table_sizes(conn, tables)
    at_stake = count_rows_at_stake(conn, analysis.destructive)
    missing = missing_objects(conn, analysis)
    if ctx.lint is None:
        from dbsage.agent.checklists import run_check

        run_check("lint_clean", ctx)
    if not m.transactional:
        ctx.report.warnings.append("Non-transactional file: the pre-flight dry-run validates it "
                                   "by parsing only.")
    run_dry_run(ctx)
    plan = {
        "path": str(m.path), "checksum": m.checksum, "version": m.version,
        "fingerprint": schema_fingerprint(conn), "target": ctx.report.target,
        "transactional": m.transactional, "strongest_lock": analysis.strongest_lock,
        "statements": [{"index": a.statement.index, "line": a.statement.line,
                        "sql": a.statement.summary, "lock_level": a.lock_level,
                        "tables": list(a.tables), "rewrites_table": a.rewrites_table,
                        "transactional": a.statement.transactional,
                        "destructive": [o.kind for o in a.destructive_ops]}
                       for a in analysis.statements],
        "tables": {t: {"exists": s.exists, "bytes": s.bytes, "estimated_rows": s.estimated_rows}
                   for t, s in sizes.items()},
        "destructive": [{"kind": o.kind, "table": o.table, "columns": list(o.columns),
                         "line": o.line,
                         "rows_at_stake": at_stake[o].rows if o in at_stake else None}
                        for o in analysis.destructive],
        "missing_objects": [{"name": x.name, "kind": x.kind, "line": x.line,
                             "reason": x.reason} for x in missing],
        "lint": [{"rule": f.rule, "level": f.level, "line": f.line, "message": f.message}
                 for f in ctx.lint or []],
        "dry_run": {"passed": ctx.dry_run.passed, "duration_s": round(ctx.dry_run.duration_s, 4)},
    }
    return plan


def write_plan(ctx: RunContext, plan: dict[str, Any]) -> tuple[Path, Path]:
    """supabase/plans/{TS}_plan.json and .md."""
    import json

    plan_dir = ctx.options.project_dir / PLAN_DIR
    plan_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    json_path, md_path = plan_dir / f"{stamp}_plan.json", plan_dir / f"{stamp}_plan.md"
    json_path.write_text(json.dumps(plan, indent=2, default=str))
    md_path.write_text(render_plan_markdown(plan))
    ctx.report.files["plan_json"], ctx.report.files["plan_md"] = ctx.rel(json_path), ctx.rel(md_path)
    return json_path, md_path


def render_plan_markdown(plan: dict[str, Any]) -> str:
    """A plan a reviewer can read in a pull request."""
    lines = [f"# Pre-flight plan: {plan['path']}", "",
             f"- Target: {plan['target']}", f"- Checksum: `{plan['checksum']}`",
             f"- Schema fingerprint: `{plan['fingerprint']}`",
             f"- Runs {'in one transaction' if plan['transactional'] else 'one by one'}; "
             f"strongest lock: {plan['strongest_lock'] or 'none'}",
             f"- Dry-run: {'passed' if plan['dry_run']['passed'] else 'FAILED'}", "",
             "| line | lock | rewrite | statement |", "|---|---|---|---|"]
    for s in plan["statements"]:
        lines.append(f"| {s['line']} | {s['lock_level'] or '-'} | "
                     f"{'yes' if s['rewrites_table'] else ''} | `{s['sql']}` |")
    for title, key in (("Destructive operations", "destructive"),
                       ("Missing objects", "missing_objects"), ("squawk", "lint")):
        if plan[key]:
            lines += ["", f"## {title}", *[f"- {x}" for x in plan[key]]]
    return "\n".join(lines) + "\n"


def check_plan_still_holds(ctx: RunContext) -> None:
    """Pre-flight: stop before touching anything if the file or the schema moved."""
    import hashlib

    assert ctx.plan is not None and ctx.path is not None and ctx.conn is not None
    if hashlib.sha256(ctx.path.read_bytes()).hexdigest() != ctx.plan["checksum"]:
        raise StopRun(f"{ctx.path} changed after the plan was made; nothing was applied.",
                      hint="Run the pre-flight again to plan the file as it is now.")
    if schema_fingerprint(ctx.conn) != ctx.plan["fingerprint"]:
        raise StopRun("The database schema changed after the plan was made; nothing was "
                      "applied.", hint="Run the pre-flight again against the current schema.")


def preflight_phase(ctx: RunContext) -> None:
    """Analyse everything, write the plan, then ask every question in one batch."""
    from dbsage.agent.modes import PreflightPolicy

    assert ctx.definition is not None and isinstance(ctx.policy, PreflightPolicy)
    ctx.plan = build_plan(ctx)
    write_plan(ctx, ctx.plan)
    questions = []
    overrides = [c for c in ctx.report.checks if c.get("overridden")]
    for cp in ctx.definition.checkpoints:
        if "preflight" in cp.modes and cp.kind != "choice":
            detail = _statements_with_locks(ctx) if cp.id == "confirm_apply" else ""
            questions.append(_question(ctx, cp, detail))
    ctx.report.notices.append(f"Pre-flight plan written to {ctx.report.files['plan_md']} "
                              f"({len(questions) + len(overrides)} question(s)).")
    for q, answer in zip(questions, ctx.policy.ask_batch(questions).values(), strict=True):
        if answer == "no":
            raise StopRun(f"Stopped: '{q.text}' was answered no in the plan review.")


# --- the engine -------------------------------------------------------------------------------

def known_checks() -> frozenset[str]:
    from dbsage.agent.checklists import CHECKS

    return frozenset(CHECKS)


def load_definition(task: str) -> TaskSpec:
    """A shipped task definition, validated once per content (agent/definitions.py)."""
    from dbsage.agent.definitions import load_spec

    return load_spec(task, known_checks=known_checks(), known_steps=frozenset(STEPS))


def run_task(ctx: RunContext) -> RunReport:
    """pre-conditions → steps (with checkpoints) → post-conditions → acceptance criteria.

    Steps marked `always` run whatever happened. A step may leave work running (the
    after-snapshot's pg_dump): the post-conditions and acceptance criteria are checked while
    it runs, then it is joined, before the `always` steps release the lock. The report carries
    every item's result, every decision and the error, if any; DbsageError never escapes.
    """
    assert ctx.definition is not None
    d = ctx.definition
    started = time.perf_counter()
    main = [s.id for s in d.steps if not s.always]
    always = [s.id for s in d.steps if s.always]
    # Nobody is asked anything before the snapshot in yolo, so it can start at once.
    ctx.early_wanted = ctx.policy.name == "yolo" and "take_snapshot_before" in main
    completed = False
    try:
        run_checklist(ctx, "pre_conditions", d.pre_conditions)
        if ctx.policy.name == "preflight" and d.task == "apply-migration":
            preflight_phase(ctx)
        for name in main:
            run_checkpoints(ctx, name, "before")
            _timed(ctx, name)
            run_checkpoints(ctx, name, "after")
        completed = True
        _after_steps(ctx, d)
        _join_pending(ctx)
    except DbsageError as exc:
        _fail(ctx, exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the CLI raises Terminated)
        from dbsage.tools.errors import Terminated

        error = _interrupted(ctx)
        error.exit_code = 143 if isinstance(exc, Terminated) else 130
        _fail(ctx, error)
        ctx.report.exit_code = error.exit_code  # also after a commit: the run did not finish
    finally:
        _cancel_pending(ctx)
        discard_early_snapshot(ctx)
        for name in always:
            try:
                _timed(ctx, name)
            except Exception as exc:  # cleanup must not hide the run's own outcome
                ctx.report.warnings.append(f"{name} failed: {exc}")
    if completed:
        try:
            for name in always:
                run_checkpoints(ctx, name, "after")
        except DbsageError as exc:
            ctx.report.warnings.append(exc.message)
    _finish(ctx, started)
    return ctx.report


def _join_pending(ctx: RunContext) -> None:
    """Wait for the work steps left running, in order; a failure stops the rest."""
    idle, ctx.options.while_waiting = ctx.options.while_waiting, None
    if ctx.pending and idle is not None:
        try:
            idle()
        except Exception as exc:  # only ever a head start for the caller: never fail the run
            ctx.report.warnings.append(f"while waiting: {type(exc).__name__}: {exc}")
    while ctx.pending:
        work = ctx.pending[0]
        t0 = time.perf_counter()
        status = "failed"
        try:
            work.finish()
            status = "ok"
        finally:
            ctx.pending.pop(0)
            ctx.report.steps.append({"step": f"{work.step} (joined)", "status": status,
                                     "duration_ms": round((time.perf_counter() - t0) * 1000, 2)})


def _cancel_pending(ctx: RunContext) -> None:
    """After a failure nothing waits for the work left running: stop it."""
    while ctx.pending:
        ctx.pending.pop(0).cancel()


def _after_steps(ctx: RunContext, d: TaskSpec) -> None:
    """Post-conditions and acceptance criteria, on the run's own session."""
    if not (d.post_conditions or d.acceptance_criteria):
        return
    failed = (run_checklist(ctx, "post_conditions", d.post_conditions)
              + run_checklist(ctx, "acceptance_criteria", d.acceptance_criteria))
    if not failed:
        return
    if d.task == "apply-migration":
        ctx.report.exit_code = 7
        ctx.report.error = {
            "error": "CommittedButChecksFailed",
            "message": "The migration is committed, but " + "; ".join(failed),
            "hint": f"Inspect it, then undo it if needed: *rollback {ctx.ts}"}
    elif ctx.report.error is None:
        ctx.report.status, ctx.report.exit_code = "failed", 1
        ctx.report.error = {"error": "ChecklistFailed", "message": "; ".join(failed)}


def _finish(ctx: RunContext, started: float) -> None:
    import json

    d = ctx.definition
    if d is not None and ctx.report.exit_code == 0 and ctx.report.error is None:
        values = _values(ctx)
        ctx.report.success_text = _format(d.success_output, values)
        ctx.report.next_steps = [(_format(n.command, values), n.description)
                                 for n in d.next_steps]
    ctx.report.execution_time = round(time.perf_counter() - started, 4)
    ctx.report.decisions = ctx.policy.decisions_json()
    ctx.report.prompts = ctx.policy.prompts
    if ctx.ts:
        path = ctx.options.project_dir / SNAPSHOT_DIR / f"{ctx.ts}_decisions.json"
        path.write_text(json.dumps({"ts": ctx.ts, "mode": ctx.policy.name,
                                    "decisions": ctx.report.decisions}, indent=2))
        ctx.report.files["decisions"] = ctx.rel(path)


def _timed(ctx: RunContext, name: str) -> None:
    t0 = time.perf_counter()
    try:
        STEPS[name](ctx)
        status = "ok"
    except BaseException:
        status = "failed"
        raise
    finally:
        entry: dict[str, Any] = {"step": name, "status": status,
                                 "duration_ms": round((time.perf_counter() - t0) * 1000, 2)}
        if ctx.step_note:
            entry["note"], ctx.step_note = ctx.step_note, None
        ctx.report.steps.append(entry)


def _fail(ctx: RunContext, exc: DbsageError) -> None:
    from dbsage.tools.connection import redact

    if ctx.report.status in ("applied", "rolled_back"):
        # Committed already: a later step (snapshot, diff) failed. Say so plainly.
        ctx.report.warnings.append(f"The migration is committed, but: {redact(exc.message)}")
        return
    ctx.report.status = "failed" if _ran_sql(ctx) else "refused"
    ctx.report.error = {k: (redact(v) if isinstance(v, str) else v)
                        for k, v in exc.to_dict().items() if k != "statements"}
    ctx.report.exit_code = exc.exit_code


def _interrupted(ctx: RunContext) -> DbsageError:
    """What an interrupt left behind (an open transaction has been rolled back by then)."""
    from dbsage.tools.errors import RunInterrupted

    if ctx.report.status in ("applied", "rolled_back"):
        return RunInterrupted("Interrupted after the commit; the steps after it did not finish.")
    steps = ctx.report.steps
    if steps and steps[-1]["step"] == "apply_migration":  # stopped while a statement ran
        running = next((s for s in ctx.report.statements if s["status"] == "not_run"), None)
        if running is not None:
            running["status"] = "interrupted"
    m = ctx.migration
    if m is None or m.transactional or ctx.report.task != "apply-migration":
        return RunInterrupted("Interrupted. Nothing was committed: the database is unchanged.")
    ran = [str(s["line"]) for s in ctx.report.statements if s["status"] == "ok"]
    done = f"the statements at line(s) {', '.join(ran)} are committed" if ran else "none of them "\
        "finished"
    return RunInterrupted(
        f"Interrupted. This file runs outside a transaction: {done}; the rest did not run.",
        hint="An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: *smoke-test "
             "finds it; DROP INDEX CONCURRENTLY it, then apply the remaining statements.")


def _ran_sql(ctx: RunContext) -> bool:
    return any(s["status"] != "not_run" for s in ctx.report.statements)


def new_context(task: str, options: RunOptions, **inputs: Any) -> RunContext:
    """A RunContext for one run of `task` in the options' mode."""
    from dbsage.agent.modes import ConsoleAsker, make_policy

    policy = make_policy(options.mode, options.asker or ConsoleAsker(), options.flags)
    ctx = RunContext(RunReport(task=task, mode=options.mode), options, policy)
    ctx.definition = load_definition(task)
    ctx.inputs = dict(inputs)
    path = inputs.get("path")
    if path is not None:
        ctx.path = Path(path)
        ctx.report.path = str(path)
    return ctx


def run_named(task: str, options: RunOptions | None = None, **inputs: Any) -> RunReport:
    """Run a shipped task; never raises DbsageError (the report carries it)."""
    opts = options or RunOptions()
    try:
        ctx = new_context(task, opts, **inputs)
    except DbsageError as exc:
        report = RunReport(task=task, mode=opts.mode, path=str(inputs.get("path") or "") or None)
        report.status, report.error, report.exit_code = "refused", exc.to_dict(), exc.exit_code
        return report
    return run_task(ctx)


def run_apply(path: str | Path, options: RunOptions | None = None) -> RunReport:
    """Apply one migration file safely."""
    return run_named("apply-migration", options, path=path)


def run_dry_run_task(path: str | Path, options: RunOptions | None = None) -> RunReport:
    """Dry-run one migration file: everything apply does, then roll back."""
    return run_named("dry-run", options, path=path)


def run_rollback_task(migration: str, options: RunOptions | None = None) -> RunReport:
    """Undo an applied migration run (TS, `latest`, or a *_before.sql snapshot) safely."""
    return run_named("rollback", options, migration=migration)


def prepare_rollback_only(migration: str, options: RunOptions) -> RunReport:
    """`dbsage rollback TS --prepare-only`: write and show the reverse script and what it
    would lose; change nothing."""
    from dbsage.agent.modes import YesAsker
    from dbsage.tools.rollback import rows_at_stake

    options.asker = options.asker or YesAsker()
    try:
        ctx = new_context("rollback", options, migration=migration)
        ctx.report.task = "rollback-plan"
        try:
            plan = resolve_rollback(ctx)
            losses = [x.describe() for x in rows_at_stake(ensure_connected(ctx), plan["script"])
                      if x.rows]
            ctx.report.ddl = plan["script"].render()
            ctx.report.warnings += [f"would lose: {x}" for x in losses]
            ctx.report.status = "prepared"
        finally:
            release_lock(ctx)
    except DbsageError as exc:
        report = ctx.report if "ctx" in locals() else RunReport(task="rollback-plan")
        report.status, report.exit_code, report.error = "refused", exc.exit_code, exc.to_dict()
        return report
    return ctx.report


def run_smoke_task(options: RunOptions | None = None) -> RunReport:
    """Smoke-test the target database and run the user's supabase/tests."""
    return run_named("smoke-test", options)


def run_plan(path: str | Path, options: RunOptions) -> RunReport:
    """`dbsage plan`: the pre-flight analysis alone; writes the plan, changes nothing."""
    from dbsage.agent.modes import YesAsker

    options.asker = options.asker or YesAsker()
    try:
        ctx = new_context("apply-migration", options, path=path)
        ctx.report.task = "plan"
        assert ctx.definition is not None
        try:
            run_checklist(ctx, "pre_conditions", ctx.definition.pre_conditions)
            ctx.plan = build_plan(ctx)
            write_plan(ctx, ctx.plan)
            ctx.report.status = "planned"
        finally:
            release_lock(ctx)
    except DbsageError as exc:
        report = ctx.report if "ctx" in locals() else RunReport(task="plan", path=str(path))
        report.status, report.exit_code = "refused", exc.exit_code
        report.error = exc.to_dict()
        return report
    return ctx.report
