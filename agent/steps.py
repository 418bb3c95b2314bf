"""The step registry: every `steps[].id` of a task definition is one of these adapters.

A step takes the RunState, hands over to one tool function and keeps what it returns in the
state. No SQL, no file I/O and no printing here (tools/ does the first two, render the last).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dbsage.agent.modes import StopRun
from dbsage.agent.resources import (
    ensure_connected,
    ensure_parsed,
    ensure_paths,
    lock_retry_policy,
)
from dbsage.agent.state import Pending, RollbackPlan, RunState, StatementOutcome
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.apply import StatementResult
    from dbsage.tools.seed import SeedPlan, SeedResult

Step = Callable[[RunState], None]


def connect_target(state: RunState) -> None:
    """Make sure the run's session exists."""
    ensure_connected(state)


def acquire_lock(state: RunState) -> None:
    """Hold the migration advisory lock on this run's session until release_lock."""
    from dbsage.tools.lock import acquire_lock as take

    if not state.lock_held:
        take(ensure_connected(state))
        state.lock_held = True


def check_history(state: RunState) -> None:
    """After the lock: refuse an applied version; report drift. Choose the run's TS.

    The version is the file name's (the Supabase CLI's rule) or --version's: a file without
    one never gets this far (the is_a_migration pre-condition refuses it), and dbsage never
    invents one.
    """
    from dbsage.tools.errors import ConfigError
    from dbsage.tools.history import ensure_not_applied

    assert state.conn is not None
    m = ensure_parsed(state)
    ensure_paths(state)
    if m.version is None:  # only a definition without is_a_migration gets here
        raise ConfigError(f"{m.path} is not a migration (no <digits>_ version in its name); "
                          "nothing was applied.", path=str(m.path))
    ensure_not_applied(state.conn, m.version, m.checksum, [s.sql for s in m.statements],
                       str(m.path))


def take_snapshot_before(state: RunState) -> None:
    """The before-snapshot: the early one when it is still valid under the lock, else pg_dump
    now, into the reserved {TS}_before.sql."""
    from dbsage.tools.artifacts import release_reservation

    dest = ensure_paths(state).before
    early, state.early_snapshot = state.early_snapshot, None
    if early is not None:
        release_reservation(dest)
        if early.adopt(ensure_connected(state), dest) is not None:
            state.files["before"] = state.rel(dest)
            state.step_note = "started before the lock; no migration committed since: kept"
            return
        state.step_note = "the early snapshot could not be kept; dumped again under the lock"
    from dbsage.tools.snapshot import take_snapshot

    assert state.target is not None
    release_reservation(dest)
    take_snapshot(state.target.url, dest, state.server_major)
    state.files["before"] = state.rel(dest)


def take_snapshot_after(state: RunState) -> None:
    """Start pg_dump for {TS}_after.sql; it runs while the post-conditions are checked."""
    from dbsage.tools.snapshot import start_snapshot

    assert state.target is not None
    dest = ensure_paths(state).after
    running = start_snapshot(state.target.url, dest, state.server_major)

    def finish() -> None:
        running.finish(dest)
        state.files["after"] = state.rel(dest)

    state.pending.append(Pending("take_snapshot_after", finish, running.cancel))
    state.step_note = "pg_dump started; joined after the post-conditions"


def _record_statements(state: RunState, results: list[StatementResult] | list[Any]) -> None:
    for r in results:
        state.statements[r.index - 1].record(r.status, r.rows_affected, r.duration_ms)


def apply_migration(state: RunState) -> None:
    """Run the statements in one transaction together with the history rows."""
    from dbsage.tools.apply import apply_migration as run
    from dbsage.tools.errors import MigrationFailedError
    from dbsage.tools.history import HistoryRecord, record_applied

    assert state.conn is not None
    m = ensure_parsed(state)
    paths = ensure_paths(state)
    if state.plan is not None:
        check_plan_still_holds(state)
    started = datetime.now(UTC)

    def record(conn: psycopg.Connection, results: list[StatementResult]) -> None:
        record_applied(conn, HistoryRecord(
            ts=paths.ts, version=state.version or "", name=m.name, path=str(m.path),
            checksum=m.checksum, mode=state.options.mode, started_at=started,
            duration_ms=(datetime.now(UTC) - started).total_seconds() * 1000,
            rows_affected=sum(r.rows_affected for r in results),
            statements=[s.sql for s in m.statements],
            snapshot_before=state.files.get("before"),
            snapshot_after=state.rel(paths.after), diff_patch=state.rel(paths.diff)))

    def progress(r: StatementResult) -> None:
        _record_statements(state, [r])

    try:
        state.apply_result = run(state.conn, m, lock_timeout=state.options.lock_timeout,
                                 statement_timeout=state.options.statement_timeout,
                                 retry=lock_retry_policy(state), before_commit=record,
                                 on_statement=progress, before_statements=_data_saver(state),
                                 allow_transaction_control=bool(
                                     state.options.flags.get("allow_transaction_control")))
    except DbsageError as exc:  # a failed statement, or saving the data failed (rolled back)
        # With the connection gone (even during COMMIT) the outcome is unknown: keep the data.
        if getattr(exc, "rolled_back", True) and not (state.conn.broken or state.conn.closed):
            _keep_saved_data(state, committed=False)
        if not isinstance(exc, MigrationFailedError):
            raise
        for row in exc.data.get("statements") or []:
            state.statements[row["index"] - 1].record(row["status"], row["rows_affected"],
                                                      row["duration_ms"])
        if exc.rolled_back:
            state.notices.append("Everything was rolled back: the database is unchanged.")
        raise
    # Any other error (a broken connection, an interrupt) leaves the saved data alone: whether
    # the commit happened is not known here, and losing it would be worse than a stray folder.
    _keep_saved_data(state, committed=True)
    res = state.apply_result
    _record_statements(state, res.statements)
    state.records_affected = res.rows_affected
    state.apply_time = round(res.duration_s, 4)
    state.attempts = res.attempts
    state.status = "applied"
    if res.committed_parts:
        state.warnings.append(
            f"Run as written, its own transaction control allowed: committed {res.parts_text}; "
            "the history was recorded once every part had committed. The risk taken: had a "
            "statement failed after a COMMIT, the part before it would have stayed applied, "
            "with no history row.")
    if res.reset_settings:
        state.notices.append("Put back after the migration: the session settings it changed "
                             f"({', '.join(res.reset_settings)}).")
    state.warnings.extend(res.notes)
    if res.lock_timeouts:
        state.warnings.append(
            f"lock_timeout {state.options.lock_timeout} fired {res.lock_timeouts} time(s); the "
            f"transaction was rolled back and retried (attempt {res.attempts} succeeded).")


def check_plan_still_holds(state: RunState) -> None:
    """Pre-flight: stop before touching anything if the file or the schema moved."""
    from dbsage.tools.artifacts import file_sha256
    from dbsage.tools.catalog import schema_fingerprint

    assert state.plan is not None and state.path is not None and state.conn is not None
    if file_sha256(state.path) != state.plan["checksum"]:
        raise StopRun(f"{state.path} changed after the plan was made; nothing was applied.",
                      hint="Run the pre-flight again to plan the file as it is now.")
    if schema_fingerprint(state.conn) != state.plan["fingerprint"]:
        raise StopRun("The database schema changed after the plan was made; nothing was "
                      "applied.", hint="Run the pre-flight again against the current schema.")


def diff_snapshots(state: RunState) -> None:
    """Write the unified diff of the before and after snapshots (once both exist)."""
    from dbsage.tools.diff import diff_snapshots as diff

    paths = ensure_paths(state)

    def write() -> None:
        result = diff(paths.before, paths.after, paths.diff)
        state.files["diff"] = state.rel(result.path)
        if not result.changed:
            state.warnings.append("The migration did not change the schema (empty diff).")

    run_after_pending(state, "diff_snapshots", write)


def run_after_pending(state: RunState, step: str, work: Callable[[], None]) -> None:
    """Run `work` now, or queue it behind the work steps left running (it needs their files)."""
    if state.pending:
        state.pending.append(Pending(step, work))
        state.step_note = "waits for the after-snapshot"
    else:
        work()


def release_lock(state: RunState) -> None:
    """Release the advisory lock and close the session (always runs)."""
    from dbsage.tools.lock import release_lock as release

    if state.conn is None:
        return
    try:
        if state.lock_held:
            release(state.conn)
            state.lock_held = False
    finally:
        state.conn.close()


def dry_run_step(state: RunState) -> None:
    """Run the migration in a transaction that is always rolled back; report it all."""
    from dbsage.tools.catalog import schema_fingerprint
    from dbsage.tools.dryrun import dry_run_migration

    conn = ensure_connected(state)
    m = ensure_parsed(state)
    state.fingerprint_before = schema_fingerprint(conn)
    state.dry_run = r = dry_run_migration(conn, m, lock_timeout=state.options.lock_timeout,
                                          statement_timeout=state.options.statement_timeout,
                                          retry=lock_retry_policy(state))
    for st in r.statements:
        out = state.statements[st.index - 1]
        out.record(st.status, st.rows_affected, st.duration_ms)
        out.locks = [f"{lk.relation}: {lk.mode}" for lk in st.locks]
    state.changes = [{"kind": c.kind, "action": c.action, "name": c.name,
                      "detail": c.detail, "ddl": c.ddl} for c in r.changes]
    state.ddl = r.ddl_script
    state.warnings.extend(r.warnings)
    state.apply_time = round(r.duration_s, 4)
    state.attempts = r.attempts
    state.records_affected = sum(st.rows_affected for st in r.statements)
    if r.passed:
        state.status = "passed"
        return
    f = r.failure
    assert f is not None
    state.status, state.exit_code = "failed", 1
    state.error = {"error": "DryRunFailed", "message": r.message or f.message,
                   "path": str(m.path), "line": f.line, "sqlstate": f.sqlstate,
                   "detail": f.detail, "hint": f.hint}
    state.notices.append("The dry-run transaction was rolled back: the database is unchanged.")


def run_gate_dry_run(state: RunState) -> None:
    """Run the migration in a transaction that is rolled back; stop if it fails."""
    from dbsage.tools.dryrun import dry_run_migration

    acquire_lock(state)
    state.dry_run = result = dry_run_migration(
        ensure_connected(state), ensure_parsed(state), lock_timeout=state.options.lock_timeout,
        statement_timeout=state.options.statement_timeout, retry=lock_retry_policy(state),
        describe_changes=False, observe=False)  # a gate: pass or fail is all it needs
    if not result.passed:
        f = result.failure
        assert f is not None
        raise StopRun(f"The dry-run failed at {state.path}:{f.line}: {f.message} "
                      f"[SQLSTATE {f.sqlstate}]. Nothing was applied.", hint=f.hint,
                      line=f.line, sqlstate=f.sqlstate)


def run_smoke_checks(state: RunState) -> None:
    """The built-in smoke checks and the user's supabase/tests."""
    from dataclasses import asdict

    from dbsage.tools.smoke import run_smoke_test

    smoke = run_smoke_test(ensure_connected(state), state.options.project_dir,
                           exposed_schemas=state.options.exposed_schemas)
    state.smoke = smoke
    state.smoke_out = {"passed": smoke.passed, "checks": [asdict(c) for c in smoke.checks],
                       "user_tests": [asdict(t) for t in smoke.user_tests]}
    state.status = "passed" if smoke.passed else "failed"


def save_destroyed_data(state: RunState) -> None:
    """Find the data a destructive migration destroys; apply_migration saves it inside the
    migration's own transaction, so no write can slip in between."""
    from dbsage.tools.sqlfile import DATA_DESTROYING_KINDS

    m = ensure_parsed(state)
    if not any(s.kind in DATA_DESTROYING_KINDS for s in m.statements):
        return  # nothing to look at closer (and no need to load tools/rollback.py)
    from dbsage.tools.rollback import destructive_targets

    targets = destructive_targets(m)
    if targets:
        state.data_targets = targets
        state.step_note = (f"{len(targets)} target(s); saved inside the migration's "
                           "transaction, before its first statement")


def _data_saver(state: RunState) -> Callable[[psycopg.Connection], None] | None:
    """The hook that saves the destroyed data in the migration's transaction (each attempt)."""
    if not state.data_targets:
        return None
    from dbsage.tools.artifacts import remove_tree
    from dbsage.tools.rollback import lock_for_saving, save_data

    dest = ensure_paths(state).data

    def save(conn: psycopg.Connection) -> None:
        remove_tree(dest)  # a rolled-back attempt of this run
        lock_for_saving(conn, state.data_targets)
        state.saved_data = save_data(conn, state.data_targets, dest)

    return save


def _keep_saved_data(state: RunState, committed: bool) -> None:
    """Keep the saved data with a committed migration; drop it with a rolled-back one."""
    from dbsage.tools.artifacts import remove_tree

    if not state.data_targets or state.paths is None:
        return
    dest = state.paths.data
    if not committed:
        remove_tree(dest)  # nothing was destroyed
        return
    if state.saved_data:
        state.files["data"] = state.rel(dest)
        state.notices.append(
            f"Saved {sum(x.rows for x in state.saved_data)} row(s) the migration destroys to "
            f"{state.rel(dest)} (for *rollback {state.ts}).")


def prepare_rollback_step(state: RunState) -> None:
    """Write supabase/rollback/{TS}_rollback.sql unless the user wrote one.

    The reverse DDL is a pure function of the two snapshots this run has just written, so by
    default it is derived when first needed (`dbsage rollback TS`, or `--prepare-only`): it
    costs two scratch restores and two full catalog inspections (about 14 s at 1,000 tables,
    against 0.25 s for the whole shell procedure). --rollback-script writes it now, e.g. to
    review it in the same pull request as the migration.
    """
    paths = ensure_paths(state)
    dest = paths.rollback
    if not state.options.flags.get("rollback_script") and not dest.exists():
        state.notices.append(
            f"Rollback inputs kept ({state.rel(paths.before)}, {state.rel(paths.after)}); the "
            f"reverse script is derived from them by `dbsage rollback {paths.ts}` (preview: "
            "--prepare-only).")
        return
    run_after_pending(state, "prepare_rollback", lambda: _write_rollback_script(state))


def _write_rollback_script(state: RunState) -> None:
    from dbsage.tools.rollback import prepare_rollback

    assert state.target is not None
    paths = ensure_paths(state)
    try:
        result = prepare_rollback(state.target.url, paths.before, paths.after, paths.rollback,
                                  server_major=state.server_major)
    except DbsageError as exc:  # the migration is committed: say so, do not fail it
        state.warnings.append(f"No rollback script was written: {exc.message}")
        return
    state.files["rollback"] = state.rel(result.path)
    if result.user_written:
        state.notices.append(f"Kept your own rollback script {state.rel(result.path)}.")


def resolve_rollback(state: RunState) -> RollbackPlan:
    """The apply run to undo (TS, `latest`, or a *_before.sql snapshot) and its reverse script."""
    if state.rollback is not None:
        return state.rollback
    from pathlib import Path

    from dbsage.agent.state import RunPaths
    from dbsage.tools import rollback as rb
    from dbsage.tools.history import find_apply_run

    conn = ensure_connected(state)
    value = str(state.inputs.get("migration", ""))
    if value.endswith("_before.sql") and Path(value).is_file():
        script = rb.plan_from_snapshot(state.target.url if state.target else "", Path(value),
                                       server_major=state.server_major)
        applied_ts = Path(value).name.removesuffix("_before.sql")
        source = value
        applied = RunPaths.of(state.options.project_dir, applied_ts)
    else:
        applied_ts = rb.validate_ts(value, conn)
        applied = RunPaths.of(state.options.project_dir, applied_ts)
        path = applied.rollback
        if not path.exists():
            # Derive it from that run's own two snapshots (not from the live schema, which
            # would also undo every later migration), and keep it for review.
            if not (applied.before.exists() and applied.after.exists()):
                raise DbsageError(
                    f"Neither {state.rel(path)} nor the snapshots {state.rel(applied.before)} "
                    f"and {state.rel(applied.after)} exist: dbsage cannot know what to undo.",
                    hint=f"Write the reverse DDL to {state.rel(path)}.")
            assert state.target is not None
            rb.prepare_rollback(state.target.url, applied.before, applied.after, path,
                                server_major=state.server_major)
            state.notices.append(f"Reverse script derived from the run's snapshots: "
                                 f"{state.rel(path)}")
        script, source = rb.read_rollback_script(path), state.rel(path)
    run = find_apply_run(conn, applied_ts)
    if run is None:
        raise DbsageError(f"No apply run {applied_ts} in dbsage.migration_log.",
                          hint="See *status for what is applied.")
    state.rollback = RollbackPlan(applied_ts, run.version, run.name, run.path, script, source,
                                  rb.load_saved_data(applied.data))
    state.version, state.name = run.version, run.name
    state.statements = [StatementOutcome(i, st.line, st.summary)
                        for i, st in enumerate(script.all_statements, 1)]
    state.files["rollback"] = source
    return state.rollback


def rollback_migration(state: RunState) -> None:
    """Reverse DDL + saved data + history, in one transaction."""
    from dbsage.tools.rollback import apply_rollback

    plan = resolve_rollback(state)
    paths = ensure_paths(state)
    result = apply_rollback(
        ensure_connected(state), plan.script, plan.saved, plan.version, ts=paths.ts,
        mode=state.options.mode, path=plan.path, snapshot_before=state.files.get("before"),
        snapshot_after=state.rel(paths.after), diff_patch=state.rel(paths.diff),
        lock_timeout=state.options.lock_timeout, statement_timeout=state.options.statement_timeout)
    for entry in state.statements:
        entry.status = "ok"
    state.records_affected = result.rows_restored
    state.apply_time = round(result.duration_s, 4)
    state.status = "rolled_back"


# --- seeds ------------------------------------------------------------------------------------
# RunState has no field for a seed run yet (agent/state.py is shared); its parsed files and
# result live in `state.inputs` under these keys, read and written only through the two
# accessors below, which check their type.
_SEED_PLAN, _SEED_RESULT = "seed_plan", "seed_result"


def ensure_seed_plan(state: RunState) -> SeedPlan:
    """Find and parse the project's seed files once; nothing touches the database."""
    from dbsage.tools.seed import SeedPlan, load_seed

    plan = state.inputs.get(_SEED_PLAN)
    if isinstance(plan, SeedPlan):
        return plan
    plan = load_seed(state.options.project_dir)
    state.inputs[_SEED_PLAN] = plan
    state.name = "seed"
    state.statements = [StatementOutcome(i, s.line, f"{f.path}: {s.summary}")
                        for i, (f, s) in enumerate(plan.statements, 1)]
    return plan


def seed_result(state: RunState) -> SeedResult | None:
    """What run_seed committed, if it did."""
    from dbsage.tools.seed import SeedResult

    result = state.inputs.get(_SEED_RESULT)
    return result if isinstance(result, SeedResult) else None


def run_seed(state: RunState) -> None:
    """Run every seed file in one transaction; record nothing in any history."""
    from dbsage.tools.errors import MigrationFailedError
    from dbsage.tools.seed import run_seed as run

    plan = ensure_seed_plan(state)

    def progress(r: StatementResult) -> None:
        _record_statements(state, [r])

    try:
        result = run(ensure_connected(state), plan, lock_timeout=state.options.lock_timeout,
                     statement_timeout=state.options.statement_timeout,
                     retry=lock_retry_policy(state), on_statement=progress)
    except MigrationFailedError as exc:
        for row in exc.data.get("statements") or []:
            state.statements[row["index"] - 1].record(row["status"], row["rows_affected"],
                                                      row["duration_ms"])
        state.notices.append("Everything was rolled back: no seed file left any row.")
        raise
    state.inputs[_SEED_RESULT] = result
    _record_statements(state, list(result.statements))
    state.records_affected = result.rows_affected
    state.apply_time = round(result.duration_s, 4)
    state.attempts = result.attempts
    state.status = "applied"
    state.step_note = (f"{len(plan.files)} file(s), {len(result.statements)} statement(s); "
                       "nothing recorded in supabase_migrations")
    if result.lock_timeouts:
        state.warnings.append(
            f"lock_timeout {state.options.lock_timeout} fired {result.lock_timeouts} time(s); "
            f"the transaction was rolled back and retried (attempt {result.attempts} "
            "succeeded).")


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
    "run_seed": run_seed,
}
