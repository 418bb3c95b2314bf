"""The step registry: every `steps[].id` of a task definition is one of these adapters.

A step takes the RunState, hands over to one tool function and keeps what it returns in the
state. No SQL, no file I/O and no printing here (tools/ does the first two, render the last).
"""

from __future__ import annotations

import contextlib
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
from dbsage.agent.state import BatchFile, Pending, RollbackPlan, RunState, StatementOutcome
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from dbsage.tools.advisors import AdvisorDelta, LintFinding
    from dbsage.tools.apply import StatementResult
    from dbsage.tools.history import BookkeepingMark
    from dbsage.tools.hotpaths import Finding as HotFinding
    from dbsage.tools.hotpaths import HotpathsReport, QueryPlan
    from dbsage.tools.rls import AccessMatrix, RlsAudit
    from dbsage.tools.rollback import Capture, ReverseScript
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

    if _empty_batch(state):
        return
    dest = ensure_paths(state).before
    early, state.early_snapshot = state.early_snapshot, None
    if early is not None:
        release_reservation(dest)
        if _may_overlap_the_dump(state):
            if early.still_valid(ensure_connected(state)):
                state.before_dump = early  # apply_migration moves it into place
                state.step_note = ("started before the lock; no migration committed since: "
                                   "kept; it ends while the migration runs, before its commit")
                return
        elif early.adopt(ensure_connected(state), dest) is not None:
            state.files["before"] = state.rel(dest)
            state.step_note = "started before the lock; no migration committed since: kept"
            return
        state.step_note = "the early snapshot could not be kept; dumped again under the lock"
    from dbsage.tools.snapshot import dump_scope, take_snapshot

    assert state.target is not None
    release_reservation(dest)
    take_snapshot(state.target.url, dest, state.server_major,
                  scope=dump_scope(ensure_connected(state)))
    state.files["before"] = state.rel(dest)


def _may_overlap_the_dump(state: RunState) -> bool:
    """Whether the migration may run while the before-snapshot's pg_dump still does: one file
    applied by apply_migration in one transaction (its commit waits for the dump), none of
    whose statements wants a lock pg_dump's ACCESS SHARE blocks (tools/analyze.py)."""
    from dbsage.agent.resources import analysis_of
    from dbsage.tools.analyze import compatible_with_a_dump
    from dbsage.tools.catalog import non_tables

    if not any(s.id == "apply_migration" for s in state.definition.steps):
        return False
    m = ensure_parsed(state)
    analysis = analysis_of(state)
    return (m.transactional and compatible_with_a_dump(analysis)
            and not non_tables(ensure_connected(state), analysis.tables))


def _finish_before(state: RunState, conn: psycopg.Connection) -> None:
    """The kept early snapshot into {TS}_before.sql, once its pg_dump has ended."""
    early, state.before_dump = state.before_dump, None
    if early is not None:
        dest = ensure_paths(state).before
        early.finish_while(conn, dest)
        state.files["before"] = state.rel(dest)


def take_snapshot_after(state: RunState) -> None:
    """Start pg_dump for {TS}_after.sql; it runs while the post-conditions are checked."""
    from dbsage.tools.snapshot import dump_scope, start_snapshot

    if _empty_batch(state):
        return
    assert state.target is not None
    dest = ensure_paths(state).after
    running = start_snapshot(state.target.url, dest, state.server_major,
                             scope=dump_scope(ensure_connected(state)))

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
            snapshot_before=state.files.get("before") or (
                state.rel(paths.before) if state.before_dump is not None else None),
            snapshot_after=state.rel(paths.after), diff_patch=state.rel(paths.diff)))

    def progress(r: StatementResult) -> None:
        _record_statements(state, [r])
        shown.statement_done(state, r.index)

    from dbsage.agent.progress import current

    shown = current()
    shown.statement_done(state, 0)  # statement 1 runs next
    gate = _gate_commit(state, _rollback_recorder(state, record))

    def before_commit(conn: psycopg.Connection, results: list[StatementResult]) -> None:
        gate(conn, results)
        # Last: the early before-snapshot, if its pg_dump still runs, ends now, while the
        # history rows (which name it) are already written; a failed dump rolls all back.
        _finish_before(state, conn)

    try:
        state.apply_result = run(state.conn, m, lock_timeout=state.options.lock_timeout,
                                 statement_timeout=state.options.statement_timeout,
                                 retry=lock_retry_policy(state),
                                 before_commit=before_commit,
                                 on_statement=progress,
                                 before_statements=_gate_baseline(state, _data_saver(state)),
                                 allow_transaction_control=bool(
                                     state.options.flags.get("allow_transaction_control")))
    except DbsageError as exc:  # a failed statement, or saving the data failed (rolled back)
        # With the connection gone (even during COMMIT) the outcome is unknown: keep the data.
        if getattr(exc, "rolled_back", True) and not (state.conn.broken or state.conn.closed):
            _keep_saved_data(state, committed=False)
            if state.before_dump is not None:  # a failed run keeps its before-snapshot too
                with contextlib.suppress(DbsageError):  # the run's own error is reported
                    _finish_before(state, state.conn)
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
    from dbsage.tools.diff import Side, read_side
    from dbsage.tools.diff import diff_snapshots as diff

    if _empty_batch(state):
        return
    paths = ensure_paths(state)
    before: Path | Side = paths.before
    if state.pending and "before" in state.files and paths.before.exists():
        # now, while the after-snapshot's pg_dump runs: read, stripped and written for diff
        before = read_side(paths.before, paths.diff)

    def write() -> None:
        result = diff(before, paths.after, paths.diff)
        state.files["diff"] = state.rel(result.path)
        if not result.changed and _data_only(state):
            state.notices.append("No schema change (data only): the diff patch is empty.")
        elif not result.changed:
            state.warnings.append("The migration did not change the schema (empty diff).")

    run_after_pending(state, "diff_snapshots", write,
                      cancel=before.discard if isinstance(before, Side) else None)


# Statements that read or write rows and change no schema object.
_DATA_KINDS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "SelectStmt",
                         "CopyStmt", "VariableSetStmt", "TransactionStmt"})


def _data_only(state: RunState) -> bool:
    """Every statement of the run's file (or batch) only reads or writes rows."""
    files = ([f.migration for f in state.batch.pending if f.migration is not None]
             if state.batch is not None else
             [state.migration] if state.migration is not None else [])
    return bool(files) and all(s.kind in _DATA_KINDS for m in files for s in m.statements)


def run_after_pending(state: RunState, step: str, work: Callable[[], None], *,
                      cancel: Callable[[], None] | None = None) -> None:
    """Run `work` now, or queue it behind the work steps left running (it needs their files);
    `cancel` undoes what was prepared for it when it will not run."""
    if state.pending:
        state.pending.append(Pending(step, work, cancel or (lambda: None)))
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
                                          retry=lock_retry_policy(state),
                                          inside=advisor_delta_hook(state))
    note_advisor_delta(state)
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
        describe_changes=False, observe=False,  # a gate: pass or fail is all it needs
        inside=advisor_delta_hook(state))  # ... and the advisor lints' delta
    state.warnings.extend(a.not_run_message for a in result.not_run_on_server)
    if not result.passed:
        f = result.failure
        assert f is not None
        # The failure the apply would have had, with its exit code (1) and error kind: a lock
        # timeout or a failed statement exits the same whether the gate's dry-run or the apply
        # met it (a refusal, 6, is a decision, not a failure).
        from dbsage.tools.errors import LockTimeoutExhaustedError, MigrationFailedError

        lock = f.sqlstate == "55P03" and result.attempts > 1
        error = (LockTimeoutExhaustedError if lock else MigrationFailedError)(
            f"The dry-run failed at {state.path}:{f.line}: {f.message} [SQLSTATE "
            f"{f.sqlstate}]. Nothing was applied.", failure=f, path=str(state.path),
            hint=f.hint)
        if lock:
            error.data.update(lock_timeout=state.options.lock_timeout, attempts=result.attempts)
        raise error


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
    """Find the data a destructive migration destroys; apply_migration saves it, with what a
    rollback needs, inside the migration's own transaction, so no write can slip in between.
    What dbsage will not be able to undo is said now, before anything runs."""
    from dbsage.tools.rollback_state import references
    from dbsage.tools.sqlfile import DATA_DESTROYING_KINDS

    m = ensure_parsed(state)
    for line, why in references(m).irreversible:
        state.warnings.append(f"dbsage will not be able to roll back line {line}: {why}.")
    if not any(s.kind in DATA_DESTROYING_KINDS for s in m.statements):
        return  # nothing to look at closer
    from dbsage.tools.rollback import destructive_targets

    targets = destructive_targets(m)
    if targets:
        state.data_targets = targets
        state.step_note = (f"{len(targets)} target(s); saved inside the migration's "
                           "transaction, before its first statement")


# The rollback capture of a run lives in `state.inputs` under these keys (RunState has no
# field for it; agent/state.py is shared), read through `_rollback_capture` and
# `captured_plan`, which check their type.
_CAPTURE, _PLAN, _PLAN_ROWS = "rollback_capture", "rollback_plan", "rollback_plan_rows"


def _data_saver(state: RunState) -> Callable[[psycopg.Connection], None] | None:
    """apply's before_statements: inside the migration's transaction, before its first
    statement (again on each retry), capture what a rollback needs (tools/rollback.py) and
    save the data the migration destroys."""
    from dbsage.tools.artifacts import remove_tree
    from dbsage.tools.rollback import capture_before

    m = ensure_parsed(state)
    dest = ensure_paths(state).data

    def save(conn: psycopg.Connection) -> None:
        remove_tree(dest)  # a rolled-back attempt of this run
        capture = capture_before(conn, m, state.data_targets, dest)
        state.inputs[_CAPTURE] = capture
        state.saved_data = list(capture.saved)

    return save


def _rollback_capture(state: RunState) -> Capture | None:
    from dbsage.tools.rollback import Capture

    found = state.inputs.get(_CAPTURE)
    return found if isinstance(found, Capture) else None


def captured_plan(state: RunState) -> ReverseScript | None:
    """The rollback plan this apply run captured in its transaction, if it did."""
    from dbsage.tools.rollback import ReverseScript

    found = state.inputs.get(_PLAN)
    return found if isinstance(found, ReverseScript) else None


def _rollback_recorder(state: RunState,
                       record: Callable[[psycopg.Connection, list[StatementResult]], None]
                       ) -> Callable[[psycopg.Connection, list[StatementResult]], None]:
    """apply's before_commit: the history rows, then the rollback plan derived from what the
    transaction changed, stored with them (the same commit)."""
    from dbsage.tools.rollback import capture_after, pending_rows

    m = ensure_parsed(state)
    paths = ensure_paths(state)

    def commit(conn: psycopg.Connection, results: list[StatementResult]) -> None:
        record(conn, results)
        capture = _rollback_capture(state)
        if capture is None:
            return
        split = ("the file ran as several transactions (its own COMMITs)"
                 if m.transaction_control else None)
        plan = capture_after(conn, capture, paths.ts, state.version or "", refusal=split)
        state.inputs[_PLAN] = plan
        if not plan.stored:
            state.inputs[_PLAN_ROWS] = pending_rows(conn)

    return commit


def _keep_saved_data(state: RunState, committed: bool) -> None:
    """Keep the saved data with a committed migration; drop it with a rolled-back one."""
    from dbsage.tools.artifacts import remove_tree

    if state.paths is None:
        return
    dest = state.paths.data
    if not committed:
        remove_tree(dest)  # nothing was destroyed
        state.inputs.pop(_PLAN, None)
        return
    if state.saved_data:
        state.files["data"] = state.rel(dest)
        state.notices.append(
            f"Saved {sum(x.rows for x in state.saved_data)} row(s) the migration destroys to "
            f"{state.rel(dest)} (for *rollback {state.version or state.ts}).")


def prepare_rollback_step(state: RunState) -> None:
    """Keep the rollback plan captured in the migration's transaction on disk too:
    supabase/rollback/{TS}_rollback.sql (never over the user's own) and {TS}_rollback.json,
    and the rows it restores under {TS}_data/. The database holds the same plan
    (dbsage.rollback_plan), so `dbsage rollback` also works where these files are not."""
    plan = captured_plan(state)
    paths = ensure_paths(state)
    if plan is None:
        state.step_note = "no rollback plan was captured (nothing was committed)"
        return
    _write_rollback_script(state)
    where = "dbsage.rollback_plan and " if plan.stored else ""
    if plan.refusals:
        state.warnings.append(
            f"dbsage cannot roll this migration back: {'; '.join(plan.refusals)}.")
    else:
        state.notices.append(
            f"Rollback plan kept in {where}{state.rel(paths.rollback)}: `dbsage rollback "
            f"{state.version or paths.ts}` undoes it (from any checkout that reaches this "
            "database); --prepare-only shows it first.")
    state.warnings.extend(f"Rollback: {w}" for w in plan.warnings)
    state.warnings.extend(f"Rollback: {n}" for n in plan.notes)


def _write_rollback_script(state: RunState) -> None:
    """The plan's files: the script, the plan as JSON, the rows of its data sets."""
    from dbsage.tools.rollback import stored_rows, write_plan_files, write_saved_rows

    plan = captured_plan(state)
    paths = ensure_paths(state)
    if plan is None:
        return
    if plan.stored:
        rows = stored_rows(ensure_connected(state), paths.ts, plan.version)
    else:
        found = state.inputs.get(_PLAN_ROWS)
        rows = list(found) if isinstance(found, list) else []
    written = write_plan_files(plan, paths.rollback, paths.rollback.with_suffix(".json"), rows)
    if rows and write_saved_rows(paths.data, plan, rows):
        state.files["data"] = state.rel(paths.data)
    state.files["rollback"] = state.rel(paths.rollback)
    if not written:
        state.notices.append(f"Kept your own rollback script {state.rel(paths.rollback)}.")


_CHAIN = "rollback_chain"


def rollback_chain(state: RunState) -> list[tuple[RollbackPlan, list[Any] | None]]:
    """Every run this rollback undoes, newest first, with the rows of a plan read from disk."""
    resolve_rollback(state)
    found = state.inputs.get(_CHAIN)
    if isinstance(found, list) and all(isinstance(p, tuple) and isinstance(p[0], RollbackPlan)
                                       for p in found):
        return found
    assert state.rollback is not None
    return [(state.rollback, None)]


def _rollback_target(state: RunState) -> tuple[str | None, str | None]:
    target = str(state.inputs.get("migration") or "").strip() or None
    to = str(state.inputs.get("to") or "").strip() or None
    return target, to


def resolve_rollback(state: RunState) -> RollbackPlan:
    """The apply run(s) to undo (VERSION, TS or latest; or every run after --to VERSION) and
    their plans: the newest first. A run that cannot be undone, or that is not the newest,
    is refused with the reason."""
    if state.rollback is not None:
        return state.rollback
    from pathlib import Path

    from dbsage.agent.state import RunPaths
    from dbsage.tools import rollback as rb

    conn = ensure_connected(state)
    target, to = _rollback_target(state)
    chain: list[tuple[RollbackPlan, list[Any] | None]] = []
    for run in rb.resolve_runs(conn, target, to):
        applied = RunPaths.of(state.options.project_dir, run.ts)
        script, source, rows = rb.load_plan(conn, run, applied.rollback,
                                            applied.rollback.with_suffix(".json"))
        rb.refuse_irreversible(script, run)
        rb.check_guards(conn, script)
        saved = [] if script.data else rb.load_saved_data(applied.data)
        chain.append((RollbackPlan(run.ts, run.version, run.name, run.path, script,
                                   state.rel(Path(source)) if "/" in source else source, saved),
                      rows))
    state.inputs[_CHAIN] = chain
    first = chain[0][0]
    state.rollback = first
    state.version, state.name = first.version, first.name
    state.statements = [StatementOutcome(i, st.line, st.summary) for i, st in enumerate(
        (s for plan, _ in chain for s in plan.script.all_statements), 1)]
    state.files["rollback"] = first.source
    if len(chain) > 1:
        state.notices.append("Undoes, newest first: " + ", ".join(
            f"{p.version} (run {p.applied_ts})" for p, _ in chain))
    return first


def _drop_stale_scratch_databases(state: RunState, conn: psycopg.Connection) -> None:
    """What killed rollbacks of an older dbsage left on the server (tools/catalog.py)."""
    from dbsage.tools.catalog import drop_stale_scratch_databases

    dropped = drop_stale_scratch_databases(conn)
    if dropped:
        state.notices.append(f"Dropped {len(dropped)} scratch database(s) a killed rollback of "
                             f"an older dbsage left: {', '.join(dropped)}.")


def rollback_migration(state: RunState) -> None:
    """Reverse DDL + saved data + verification + history, in one transaction, for the run(s)
    resolved again under the lock: a run that committed since they were planned stops it."""
    from dbsage.tools.rollback import RollbackRefusedError, RunToUndo, apply_rollbacks, resolve_runs

    chain = rollback_chain(state)
    conn = ensure_connected(state)
    target, to = _rollback_target(state)
    now = [(r.ts, r.version) for r in resolve_runs(conn, target, to)]
    planned = [(p.applied_ts, p.version) for p, _ in chain]
    if now != planned:
        raise RollbackRefusedError(
            f"The history changed since the rollback was planned ({planned} then, {now} under "
            "the lock: a migration committed or was rolled back meanwhile); nothing was rolled "
            "back.", hint="Run the rollback again to plan it afresh.")
    paths = ensure_paths(state)
    _drop_stale_scratch_databases(state, conn)
    result = apply_rollbacks(
        conn, [RunToUndo(p.applied_ts, p.version, p.script, p.saved, rows, p.path)
               for p, rows in chain],
        ts=paths.ts, mode=state.options.mode, snapshot_before=state.files.get("before"),
        snapshot_after=state.rel(paths.after), diff_patch=state.rel(paths.diff),
        lock_timeout=state.options.lock_timeout, statement_timeout=state.options.statement_timeout,
        retry=lock_retry_policy(state),
        accept_difference=bool(state.options.flags.get("accept_difference")))
    for entry in state.statements:
        entry.status = "ok"
    state.records_affected = result.rows_restored
    state.apply_time = round(result.duration_s, 4)
    state.attempts = result.attempts
    state.status = "rolled_back"
    state.step_note = (f"verified: the touched objects match their state before the "
                       f"migration{'s' if len(chain) > 1 else ''}")
    if result.accepted_differences:
        state.step_note = "committed with differences accepted (--accept-difference)"
        state.warnings.append("Committed although the result differs from the state before "
                              "the migration (accepted, logged in dbsage.rollback_plan): "
                              + "; ".join(result.accepted_differences))


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


# --- RLS audit, advisors, hot paths (issue 14) ------------------------------------------------
# RunState has no typed fields for these results (agent/state.py is shared): the tools' own
# frozen results live in `state.inputs` under these keys, written here and read only through
# the accessors below, which check their type. What the report shows goes to `state.details`,
# one JSON-ready section each ("rls", "lints", "access", "advisors", "hotpaths").
_AUDIT, _LINTS, _ACCESS, _HOTPATHS = "rls_audit", "lint_findings", "access_matrix", "hotpaths"
_BASELINE, _DELTA, _API_ROLES = "advisor_baseline", "advisor_delta", "api_roles"
_GATE_BEFORE, _ACCEPTED, _CREATE_EXTENSION = "gate_baseline", "accepted_lints", "create_extension"
_AUDITED_HERE = "audited_on_this_session"  # audit_rls_step's audit, for run_exposure_lints
DOCS_DIR = ("supabase", "docs")  # where the performance analysis is written
# The advisor lints an RLS audit runs: those about what the API exposes (issue 14's list).
EXPOSURE_LINTS: tuple[str, ...] = (
    "rls_disabled_in_public", "policy_exists_rls_disabled", "rls_enabled_no_policy",
    "rls_policy_always_true", "rls_references_user_metadata", "auth_rls_initplan",
    "multiple_permissive_policies", "security_definer_view", "auth_users_exposed",
    "function_search_path_mutable", "anon_security_definer_function_executable",
    "authenticated_security_definer_function_executable", "sensitive_columns_exposed",
    "public_bucket_allows_listing", "extension_in_public")
ADVISOR_GATE = "advisor_errors"  # the decision point (checkpoint id) of introduced ERROR lints


def _section(state: RunState, name: str, value: Any) -> None:
    """Put a section in the report, exactly as --json will show it (lists, not tuples)."""
    import json

    state.details = {**(state.details or {}), name: json.loads(json.dumps(value, default=str))}


def rls_audit_of(state: RunState) -> RlsAudit | None:
    """The audit audit_rls_step made, if it ran."""
    from dbsage.tools.rls import RlsAudit

    value = state.inputs.get(_AUDIT)
    return value if isinstance(value, RlsAudit) else None


def lint_findings_of(state: RunState) -> list[LintFinding] | None:
    """The findings run_exposure_lints made, if it ran."""
    from dbsage.tools.advisors import LintFinding

    value = state.inputs.get(_LINTS)
    if isinstance(value, list) and all(isinstance(f, LintFinding) for f in value):
        return value
    return None


def access_of(state: RunState) -> AccessMatrix | None:
    """The impersonation matrix probe_access_step made, if any role was probed."""
    from dbsage.tools.rls import AccessMatrix

    value = state.inputs.get(_ACCESS)
    return value if isinstance(value, AccessMatrix) else None


def hotpaths_of(state: RunState) -> HotpathsReport | None:
    """The analysis analyze_hotpaths_step made, if it ran."""
    from dbsage.tools.hotpaths import HotpathsReport

    value = state.inputs.get(_HOTPATHS)
    return value if isinstance(value, HotpathsReport) else None


def advisor_delta_of(state: RunState) -> AdvisorDelta | None:
    """What the migration's statements did to the advisor lints, from a dry-run, if known."""
    from dbsage.tools.advisors import AdvisorDelta

    value = state.inputs.get(_DELTA)
    return value if isinstance(value, AdvisorDelta) else None


def finding_doc(f: LintFinding) -> dict[str, Any]:
    """One lint finding for the report (with the lint's documentation page)."""
    from dbsage.tools.advisors import LINTS

    rule = LINTS.get(f.name)
    return {"name": f.name, "title": f.title, "level": f.level, "categories": list(f.categories),
            "object": f.object, "object_type": f.object_type, "item": f.item,
            "detail": f.detail, "why": f.why, "fix": f.fix, "docs": rule.docs if rule else ""}


def lints_doc(findings: list[LintFinding]) -> dict[str, Any]:
    """The lints section: counts by level, then every finding (ERROR first)."""
    order = {"ERROR": 0, "WARN": 1, "INFO": 2}
    ranked = sorted(findings, key=lambda f: order.get(f.level, 3))
    return {"counts": {level: sum(f.level == level for f in findings) for level in order},
            "findings": [finding_doc(f) for f in ranked]}


def _policy_doc(p: Any) -> dict[str, Any]:
    """One PolicyInfo, as dataclasses.asdict gives it (written out: asdict deep-copies each)."""
    return {"name": p.name, "command": p.command, "permissive": p.permissive,
            "roles": list(p.roles), "using": p.using, "with_check": p.with_check}


def audit_doc(audit: RlsAudit) -> dict[str, Any]:
    """The rls section: per table RLS, FORCE, policies, coverage and flags; summary counts."""
    from dataclasses import asdict

    tables = [{"table": t.qualified, "owner": t.owner, "rls_enabled": t.rls_enabled,
               "rls_forced": t.rls_forced, "extension": t.extension,
               "policies": [_policy_doc(p) for p in t.policies], "covered": list(t.covered),
               "uncovered": list(t.uncovered), "flags": list(t.flags)} for t in audit.tables]
    return {"schemas": list(audit.schemas), "summary": asdict(audit.summary), "tables": tables,
            "uncovered_tables": uncovered_tables(audit)}


def uncovered_tables(audit: RlsAudit) -> list[str]:
    """Exposed tables no permissive policy opens to anyone, or without RLS at all (tables an
    extension owns are the extension's business)."""
    return [t.qualified for t in audit.tables if t.extension is None
            and ("rls_off" in t.flags or "rls_on_no_policy" in t.flags)]


def access_doc(matrix: AccessMatrix) -> dict[str, Any]:
    """The access section: tables x roles x commands, and the rows the connecting role sees."""
    from dataclasses import asdict

    return {"schemas": list(matrix.schemas), "roles": list(matrix.roles),
            "tables": list(matrix.tables), "total_rows": dict(matrix.total_rows),
            "cells": [asdict(c) for c in matrix.cells]}


def store_audit(state: RunState, audit: RlsAudit, findings: list[LintFinding]) -> None:
    """Keep an audit and its lints for the checks (a follow-up made them on its own session)."""
    state.inputs[_AUDIT], state.inputs[_LINTS] = audit, findings


def store_hotpaths(state: RunState, report: HotpathsReport) -> None:
    """Keep an analysis for the checks (a follow-up made it on its own session)."""
    state.inputs[_HOTPATHS] = report


def want_extensions(state: RunState) -> None:
    """The user said yes: the analysis may create pg_stat_statements (and hypopg)."""
    state.inputs[_CREATE_EXTENSION] = True


def project_exposed_schemas(project_dir: Path) -> tuple[str, ...] | None:
    """`[api] schemas` of the project's supabase/config.toml, or None when it has none."""
    try:
        from dbsage.tools.project import read_project_config
    except ImportError:  # pragma: no cover - a tree without tools/project.py
        return None
    config = read_project_config(project_dir)
    return tuple(config.api.schemas) if config.path is not None else None


def audit_rls_step(state: RunState) -> None:
    """Row level security of every table of the exposed schemas (the catalog only)."""
    from dbsage.tools.rls import audit_rls

    audit = audit_rls(ensure_connected(state), state.options.exposed_schemas)
    state.inputs[_AUDIT] = state.inputs[_AUDITED_HERE] = audit
    _section(state, "rls", audit_doc(audit))
    s = audit.summary
    state.step_note = (f"{s.tables} table(s) in {', '.join(audit.schemas)}: {s.rls_enabled} "
                       f"with RLS, {s.policies} policy(ies)")
    state.status = "passed"


def run_exposure_lints(state: RunState) -> None:
    """The advisor lints about what the API exposes (the catalog only)."""
    from dbsage.tools.advisors import run_advisors
    from dbsage.tools.rls import deparsed_policies

    # the policies audit_rls_step deparsed on this run's session are not deparsed again
    audit = state.inputs.pop(_AUDITED_HERE, None)
    findings = run_advisors(ensure_connected(state), state.options.exposed_schemas,
                            only=set(EXPOSURE_LINTS),
                            deparsed=deparsed_policies(audit) if audit is not None else None)
    state.inputs[_LINTS] = findings
    doc = lints_doc(findings)
    _section(state, "lints", doc)
    state.step_note = ", ".join(f"{n} {level}" for level, n in doc["counts"].items())


def probe_access_step(state: RunState) -> None:
    """Impersonate the roles of --as on every exposed table, in a transaction that is always
    rolled back: who can SELECT, INSERT, UPDATE and DELETE what."""
    import json

    from dbsage.tools.rls import RoleProbe, probe_access

    roles = [str(r) for r in state.inputs.get("roles") or []]
    if not roles:
        state.step_note = "no role to impersonate (none asked for)"
        return
    claims = state.inputs.get("claims")
    parsed = json.loads(claims) if isinstance(claims, str) and claims else None
    makers = {"anon": RoleProbe.anon, "service_role": RoleProbe.service_role,
              "authenticated": lambda: RoleProbe.authenticated(claims=parsed)}
    probes = [makers[r]() for r in roles]
    matrix = probe_access(ensure_connected(state), state.options.exposed_schemas, probes,
                          lock_timeout=state.options.lock_timeout)
    state.inputs[_ACCESS] = matrix
    _section(state, "access", access_doc(matrix))
    state.step_note = (f"{len(matrix.roles)} role(s) x {len(matrix.tables)} table(s), in a "
                       "transaction that was rolled back")


# --- hot paths --------------------------------------------------------------------------------

def _plan_doc(plan: QueryPlan) -> dict[str, Any]:
    from dbsage.tools.hotpaths import plan_outline

    return {"explain": plan.explain, "analyzed": plan.analyzed, "read_only": plan.read_only,
            "write_reason": plan.write_reason, "generic": plan.generic,
            "total_cost": plan.total_cost, "planning_ms": plan.planning_ms,
            "execution_ms": plan.execution_ms, "notes": list(plan.notes),
            "outline": plan_outline(plan)}


def _hot_finding_doc(f: HotFinding) -> dict[str, Any]:
    return {"kind": f.kind, "severity": f.severity, "title": f.title, "evidence": f.evidence,
            "suggestion": f.suggestion, "relation": f.relation, "columns": list(f.columns),
            "node": f.node}


def hotpaths_doc(report: HotpathsReport, now: datetime | None = None) -> dict[str, Any]:
    """The hotpaths section: statistics, per statement its plan and findings, catalog
    findings, recommended indexes (each with the migration file to put it in)."""
    from datetime import timedelta

    hot = report.hot
    number = {(q.stat.queryid, q.stat.query): q.number for q in report.queries}
    queries = [{"number": q.number, "query": q.stat.query, "calls": q.stat.calls,
                "total_ms": q.stat.total_ms, "mean_ms": q.stat.mean_ms, "max_ms": q.stat.max_ms,
                "rows": q.stat.rows, "share": q.stat.share,
                "plan": _plan_doc(q.plan) if q.plan else None, "error": q.error,
                "findings": [_hot_finding_doc(f) for f in q.findings]} for q in report.queries]
    start = now or datetime.now(UTC)
    advice = []
    for i, a in enumerate(report.indexes.advice):
        version = (start + timedelta(seconds=i + 1)).strftime("%Y%m%d%H%M%S")
        stem = "_".join(["add", a.table, *a.columns, "index"])
        advice.append({"relation": a.relation, "columns": list(a.columns), "sql": a.sql,
                       "reason": a.reason, "verified": a.verified,
                       "verification": a.verification, "cost_before": a.cost_before,
                       "cost_after": a.cost_after, "improvement": a.improvement,
                       "helps": [number[k] for k in number if k[1] in a.queries],
                       "migration": f"supabase/migrations/{version}_{stem}.sql"})
    return {
        "database": report.database, "server_version": report.server_version,
        "statistics": {"status": hot.status, "message": hot.message,
                       "how_to_enable": list(hot.how_to_enable), "entries": hot.entries,
                       "excluded": hot.excluded, "hidden": hot.hidden,
                       "stats_since": hot.stats_since.isoformat() if hot.stats_since else None,
                       "extension_created": hot.extension_created},
        "by_total": [number.get((s.queryid, s.query)) for s in hot.by_total],
        "by_mean": [number.get((s.queryid, s.query)) for s in hot.by_mean],
        "queries": queries,
        "schema_findings": [_hot_finding_doc(f) for f in report.schema_findings],
        "indexes": {"hypopg": report.indexes.hypopg, "note": report.indexes.note,
                    "advice": advice, "skipped": list(report.indexes.skipped)},
        "next_steps": list(report.next_steps)}


def analyze_hotpaths_step(state: RunState) -> None:
    """The top statements of pg_stat_statements, their plans, findings and index advice;
    changes no data (tools/hotpaths.py). An extension is created only with
    --create-extension or the user's yes at the create_extension checkpoint."""
    from dbsage.tools.hotpaths import analyze_hotpaths

    top = state.inputs.get("top")
    create = (bool(state.options.flags.get("create_extension"))
              or state.inputs.get(_CREATE_EXTENSION) is True)
    report = analyze_hotpaths(ensure_connected(state), top if isinstance(top, int) else 10,
                              create_extension=create,
                              statement_timeout=state.options.statement_timeout or "10s")
    state.inputs[_HOTPATHS] = report
    _section(state, "hotpaths", hotpaths_doc(report))
    planned = sum(1 for q in report.queries if q.plan)
    state.step_note = (f"{len(report.queries)} statement(s), {planned} planned, "
                       f"{len(report.findings)} finding(s), {len(report.indexes.advice)} index(es)")
    state.status = "passed"


def write_hotpaths_report(state: RunState) -> None:
    """supabase/docs/performance-analysis-{TS}.md."""
    from dbsage.tools.hotpaths import write_report

    report = hotpaths_of(state)
    if report is None:
        raise DbsageError("There is no analysis to write (analyze_hotpaths did not run).")
    path = write_report(report, state.options.project_dir.joinpath(*DOCS_DIR))
    state.files["report"] = state.rel(path)


# --- advisor deltas: the lints before the migration and inside its dry-run ----------------------

def api_roles_of(state: RunState) -> tuple[str, ...]:
    """Supabase's API roles the target has (none: plain PostgreSQL), looked up once."""
    value = state.inputs.get(_API_ROLES)
    if isinstance(value, tuple):
        return value
    from dbsage.tools.catalog import api_roles

    found = api_roles(ensure_connected(state))
    state.inputs[_API_ROLES] = found
    return found


def advisor_delta_hook(state: RunState) -> Callable[[psycopg.Connection], None] | None:
    """Evaluate every advisor lint now (before the migration), and return the hook that a
    dry-run calls inside its transaction, after the statements, to evaluate them again: the
    difference is the migration's delta (advisor_delta_of). None for a file that runs outside
    a transaction (nothing can be looked at before it commits)."""
    from dbsage.tools.advisors import compare_findings, run_advisors

    if not ensure_parsed(state).transactional:
        return None
    exposed = state.options.exposed_schemas
    before = run_advisors(ensure_connected(state), exposed)
    plans = _hot_plans(ensure_connected(state), None)
    state.inputs.pop(_DELTA, None)
    state.inputs.pop(_PLAN_CHANGES, None)

    def after(conn: psycopg.Connection) -> None:
        try:
            found = run_advisors(conn, exposed)
        except Exception as exc:  # a look, never a reason to fail the dry-run (savepoint)
            state.warnings.append(f"The advisor lints could not run after the statements: {exc}")
            return
        state.inputs[_DELTA] = compare_findings(before, found)
        if plans:
            state.inputs[_PLAN_CHANGES] = plan_changes(plans, _hot_plans(conn, list(plans)))

    return after


# The hot queries whose plans a dry-run compares: the top statements of pg_stat_statements.
HOT_QUERIES = 5
COST_GROWTH = 1.5  # a plan whose cost grows by this factor is reported
_PLAN_CHANGES = "plan_changes"


def _hot_plans(conn: psycopg.Connection, queries: list[str] | None
               ) -> dict[str, QueryPlan | str]:
    """The plan (plain EXPLAIN, estimates only: nothing runs) of each of `queries`, or of the
    top statements of pg_stat_statements when None; a query that cannot be planned maps to
    why. Empty when there are no statistics."""
    from dbsage.tools.hotpaths import explain_query, top_queries

    if queries is None:
        try:
            hot = top_queries(conn, HOT_QUERIES)
        except Exception:  # no statistics to read: nothing to compare, never a failure
            return {}
        if not hot.available:
            return {}
        queries = [s.query for s in hot.statements][:HOT_QUERIES]
    plans: dict[str, QueryPlan | str] = {}
    for query in queries:
        try:
            plans[query] = explain_query(conn, query, analyze=False)
        except DbsageError as exc:
            plans[query] = exc.message
        except Exception as exc:  # in a savepoint: the dry-run's transaction goes on
            plans[query] = f"{type(exc).__name__}: {exc}"
    return plans


def _index_scans(plan: QueryPlan) -> set[str]:
    return {str(node["Index Name"]) for node, _, _ in plan.nodes() if node.get("Index Name")}


def plan_changes(before: dict[str, QueryPlan | str], after: dict[str, QueryPlan | str]
                 ) -> dict[str, Any]:
    """The hot queries whose plan the migration makes more expensive (cost x COST_GROWTH or
    more), that lose an index scan, or that it leaves unplannable."""
    from dbsage.tools.hotpaths import QueryPlan

    changes = []
    for query, old in before.items():
        new = after.get(query, "not planned")
        if not isinstance(old, QueryPlan):
            continue
        if not isinstance(new, QueryPlan):
            changes.append({"query": query, "cost_before": old.total_cost, "cost_after": None,
                            "ratio": None, "lost_index_scans": sorted(_index_scans(old)),
                            "error": new})
            continue
        ratio = new.total_cost / old.total_cost if old.total_cost > 0 else None
        lost = sorted(_index_scans(old) - _index_scans(new))
        if lost or (ratio is not None and ratio >= COST_GROWTH):
            changes.append({"query": query, "cost_before": old.total_cost,
                            "cost_after": new.total_cost, "ratio": ratio,
                            "lost_index_scans": lost, "error": None})
    planned = sum(isinstance(p, QueryPlan) for p in before.values())
    return {"checked": planned, "changes": changes}


def _plan_change_text(c: dict[str, Any]) -> str:
    query = " ".join(c["query"].split())
    query = query if len(query) <= 80 else query[:79] + "…"
    if c["error"]:
        return f"{query}: no longer plans ({c['error']})"
    parts = []
    if c["ratio"] is not None and c["ratio"] >= COST_GROWTH:
        parts.append(f"cost {c['cost_before']:,.2f} → {c['cost_after']:,.2f} "
                     f"(x{c['ratio']:.1f})")
    if c["lost_index_scans"]:
        parts.append(f"no longer uses {', '.join(c['lost_index_scans'])}")
    return f"{query}: {'; '.join(parts)}"


def delta_summary(delta: AdvisorDelta) -> str:
    """"introduces rls_disabled_in_public on public.todos; fixes unindexed_foreign_keys on
    public.orders" (or that nothing changed)."""

    def listed(findings: tuple[LintFinding, ...]) -> str:
        by_lint: dict[str, list[str]] = {}
        for f in findings:
            by_lint.setdefault(f.name, []).append(f.object + (f" ({f.item})" if f.item else ""))
        return ", ".join(f"{name} on {', '.join(objects)}" for name, objects in by_lint.items())

    parts = []
    if delta.introduced:
        parts.append(f"introduces {listed(delta.introduced)}")
    if delta.fixed:
        parts.append(f"fixes {listed(delta.fixed)}")
    return "; ".join(parts) or "changes no advisor finding"


def delta_doc(delta: AdvisorDelta, exposed: tuple[str, ...]) -> dict[str, Any]:
    """The advisors section of a dry-run or a plan."""
    return {"exposed_schemas": list(exposed), "summary": delta_summary(delta),
            "introduced": [finding_doc(f) for f in delta.introduced],
            "fixed": [finding_doc(f) for f in delta.fixed], "unchanged": len(delta.unchanged),
            "introduced_errors": [f"{f.name} on {f.object}" for f in delta.introduced
                                  if f.level == "ERROR"]}


def note_advisor_delta(state: RunState) -> dict[str, Any] | None:
    """After a dry-run with advisor_delta_hook: the advisors section, and a warning for each
    ERROR-level finding the migration introduces. None when there is no delta (the dry-run
    failed, or the file runs outside a transaction)."""
    delta = advisor_delta_of(state)
    if delta is None:
        m = ensure_parsed(state)
        if not m.transactional:
            state.notices.append("Advisor lints: not compared (the file runs outside a "
                                 "transaction, so nothing can be looked at before it commits).")
        return None
    doc = delta_doc(delta, state.options.exposed_schemas)
    hot = state.inputs.get(_PLAN_CHANGES)
    if isinstance(hot, dict):
        doc["hot_queries"] = {**hot, "lines": [_plan_change_text(c) for c in hot["changes"]]}
        for line in doc["hot_queries"]["lines"]:
            state.warnings.append(f"Hot query plan change: {line}")
    _section(state, "advisors", doc)
    errors = doc["introduced_errors"]
    if errors:
        gate = (" Applying it stops on them (yolo and pre-flight: unless --force is given; "
                "interactive: unless you accept them)." if api_roles_of(state) else "")
        state.warnings.append(f"Advisors: this migration introduces ERROR-level lint(s): "
                              f"{'; '.join(errors)}.{gate}")
    return doc


# --- the apply gate: an ERROR-level lint the migration introduces -------------------------------

def advisor_gate_applies(state: RunState) -> bool:
    """Whether the apply judges the ERROR-level lints its statements introduce: a file that
    runs in one transaction, on a database with Supabase's API roles (on plain PostgreSQL no
    Data API serves the exposed schemas: dry-run and plan still show the delta)."""
    m = ensure_parsed(state)
    # a file run as written (its own BEGIN/COMMIT) has committed by the time it could be judged
    as_written = bool(getattr(m, "transaction_control", ()))
    return m.transactional and not as_written and bool(api_roles_of(state))


def error_lints() -> set[str]:
    from dbsage.tools.advisors import LINTS

    return {name for name, rule in LINTS.items() if rule.level == "ERROR"}


def accept_introduced_lints(state: RunState, keys: list[tuple[str, str, str]]) -> None:
    """The user accepted these introduced findings at the checkpoint: the gate lets them pass."""
    state.inputs[_ACCEPTED] = list(keys)


def _gate_baseline(state: RunState, inner: Callable[[psycopg.Connection], None] | None
                   ) -> Callable[[psycopg.Connection], None] | None:
    """apply's before_statements: the ERROR-level lints inside the migration's transaction,
    before its first statement (again on each retry), then `inner` (saving destroyed data)."""
    if not advisor_gate_applies(state):
        return inner
    from dbsage.tools.advisors import run_advisors

    def before(conn: psycopg.Connection) -> None:
        state.inputs[_GATE_BEFORE] = run_advisors(conn, state.options.exposed_schemas,
                                                  only=error_lints())
        if inner is not None:
            inner(conn)

    return before


def _gate_commit(state: RunState, record: Callable[[psycopg.Connection, list[StatementResult]],
                                                   None]
                 ) -> Callable[[psycopg.Connection, list[StatementResult]], None]:
    """apply's before_commit: the ERROR-level lints again after the statements; one the
    migration introduces stops it (the transaction rolls back) unless accepted: --force in
    yolo and pre-flight (logged), the user's yes at the checkpoint in interactive mode."""
    if not advisor_gate_applies(state):
        return record
    from dbsage.tools.advisors import LintFinding, compare_findings, run_advisors

    def gate(conn: psycopg.Connection, results: list[StatementResult]) -> None:
        before = state.inputs.get(_GATE_BEFORE)
        if isinstance(before, list) and all(isinstance(f, LintFinding) for f in before):
            after = run_advisors(conn, state.options.exposed_schemas, only=error_lints())
            introduced = [f for f in compare_findings(before, after).introduced
                          if f.level == "ERROR"]
            if introduced:
                _judge_introduced(state, introduced)
        record(conn, results)

    return gate


def _judge_introduced(state: RunState, introduced: list[LintFinding],
                      file: str | None = None) -> None:
    """Let the introduced ERROR-level findings pass (logged), or stop: StopRun rolls back
    (`file`: the batch's file whose own transaction it is)."""
    from dbsage.agent.modes import Question

    listed = "; ".join(f"{f.name} on {f.object}" + (f" ({f.item})" if f.item else "")
                       for f in introduced)
    if file is not None:
        listed = f"{file}: {listed}"
    accepted = state.inputs.get(_ACCEPTED)
    mode = state.policy.name
    if mode == "yolo":
        q = Question(ADVISOR_GATE, f"The migration introduces ERROR-level lint(s): {listed}")
        allowed = state.policy.override(q, "force")
    elif mode == "preflight":
        allowed = bool(state.options.flags.get("force"))
        state.policy.log(ADVISOR_GATE, "yes" if allowed else "no",
                         f"pre-flight: ERROR-level lint(s) introduced: {listed} — "
                         + ("accepted by --force" if allowed else "refused (--force not given)"),
                         "plan")
    else:
        allowed = isinstance(accepted, list) and all(f.key in accepted for f in introduced)
        if not allowed:
            state.policy.log(ADVISOR_GATE, "no", f"ERROR-level lint(s) introduced that were not "
                             f"shown at the checkpoint: {listed}")
    if allowed:
        state.warnings.append(f"Applied although it introduces ERROR-level lint(s): {listed} "
                              "(accepted; see the decision log).")
        return
    lints = [finding_doc(f) for f in introduced]
    if file is not None:  # tools/batch.py says what committed before it
        raise StopRun(f"The migration introduces ERROR-level advisor lint(s): {listed}.",
                      hint="`dbsage up --dry-run` and `dbsage dry-run FILE` list each one with "
                           "its fix; fix the migration, or accept them with --force.",
                      lints=lints)
    state.notices.append("Everything was rolled back: the database is unchanged.")
    raise StopRun(
        f"The migration introduces ERROR-level advisor lint(s): {listed}. Nothing was applied "
        "(the transaction was rolled back).",
        hint=f"`*dry-run {state.path}` lists each one with its fix; fix the migration, or "
             "accept them with --force.",
        lints=lints)


def _file_gated(state: RunState, m: Any) -> bool:
    """advisor_gate_applies for one file of a batch (atomic: every file is in the batch's
    transaction, so each is judged)."""
    atomic = bool(state.options.flags.get("atomic"))
    as_written = bool(getattr(m, "transaction_control", ()))
    return (m.transactional or atomic) and not as_written and bool(api_roles_of(state))


class _BatchGate:
    """The apply gate per file of a batch: the ERROR-level lints before a file's statements
    and after them, in that file's own transaction; an introduced one stops the file (its
    transaction rolls back, the files before it stay committed) unless accepted, exactly as
    for `apply`. The lints after file i are those before file i+1 (same session, under the
    lock), so a batch of N files looks N+1 times, not 2N."""

    def __init__(self, state: RunState, migrations: list[Any]) -> None:
        self.state = state
        self.gated = [_file_gated(state, m) for m in migrations]
        self.before_of: dict[int, list[LintFinding]] = {}
        self.after_of: dict[int, list[LintFinding]] = {}
        self.deparsed: dict[Any, Any] = {}  # policies deparsed once for the whole batch

    def _lints(self, conn: psycopg.Connection) -> list[LintFinding]:
        from dbsage.tools.advisors import run_advisors

        return run_advisors(conn, self.state.options.exposed_schemas, only=error_lints(),
                            deparsed=self.deparsed)

    def before(self, conn: psycopg.Connection, i: int) -> None:
        if self.gated[i]:
            self.after_of.pop(i, None)
            known = self.after_of.get(i - 1)
            self.before_of[i] = known if known is not None else self._lints(conn)

    def judge(self, conn: psycopg.Connection, i: int, file: str) -> None:
        from dbsage.tools.advisors import compare_findings

        before = self.before_of.get(i)
        if not self.gated[i] or before is None:
            return
        after = self._lints(conn)
        introduced = [f for f in compare_findings(before, after).introduced
                      if f.level == "ERROR"]
        if introduced:
            _judge_introduced(self.state, introduced, file=file)  # StopRun: rolled back
        self.after_of[i] = after  # the next file's baseline


def batch_introduced_errors(state: RunState) -> list[tuple[str, LintFinding]]:
    """interactive `up`, before its one batch question: the ERROR-level lints each pending
    file introduces, from a dry-run of the batch (one rolled-back transaction) with the lints
    looked at before it and after each file. Empty when the gate does not apply (plain
    PostgreSQL, no file in a transaction) or the dry-run fails (the apply will say why)."""
    from dbsage.agent.batch import ensure_pending
    from dbsage.tools.advisors import compare_findings, run_advisors
    from dbsage.tools.batch import dry_run_batch

    pending = [f for f in ensure_pending(state) if f.migration is not None]
    migrations = [f.migration for f in pending]
    gated = [_file_gated(state, m) for m in migrations]
    if not any(gated):
        return []
    acquire_lock(state)
    conn = ensure_connected(state)
    exposed = state.options.exposed_schemas
    deparsed: dict[Any, Any] = {}  # each policy deparsed once for all the looks
    baseline = run_advisors(conn, exposed, only=error_lints(), deparsed=deparsed)
    after: dict[int, list[LintFinding]] = {}

    def look(c: psycopg.Connection, k: int) -> None:
        if gated[k]:
            try:
                after[k] = run_advisors(c, exposed, only=error_lints(), deparsed=deparsed)
            except Exception as exc:  # a look (in its own savepoint), never a dry-run failure
                state.warnings.append(f"The advisor lints could not run after {pending[k].name}: "
                                      f"{exc}")

    dry = dry_run_batch(conn, migrations, lock_timeout=state.options.lock_timeout,
                        statement_timeout=state.options.statement_timeout,
                        retry=lock_retry_policy(state), after_file=look)
    found: list[tuple[str, LintFinding]] = []
    previous = baseline
    for k, f in enumerate(pending):
        if dry.files[k].status != "passed":
            break
        if k in after:
            found += [(f.name, x) for x in compare_findings(previous, after[k]).introduced
                      if x.level == "ERROR"]
            previous = after[k]
    return found


STEPS.update({
    "audit_rls": audit_rls_step,
    "run_exposure_lints": run_exposure_lints,
    "probe_access": probe_access_step,
    "analyze_hotpaths": analyze_hotpaths_step,
    "write_hotpaths_report": write_hotpaths_report,
})


# --- `up`: the batch of pending migrations (agent/batch.py, tools/batch.py) ------------------

def _empty_batch(state: RunState) -> bool:
    """`up` with nothing pending: the snapshot steps have nothing to record."""
    from dbsage.agent.batch import nothing_to_apply

    if nothing_to_apply(state):
        state.step_note = "nothing to apply"
        return True
    return False


def check_batch_history(state: RunState) -> None:
    """Under the lock: read the history again. A file another session applied meanwhile
    leaves the batch; any other change stops the run (what was checked no longer holds).
    Reserves the run's TS when there is something to apply."""
    from dbsage.agent.batch import ensure_pending, read_history

    assert state.batch is not None
    checked = [f.name for f in state.batch.pending]
    plan = read_history(state).plan
    assert plan is not None
    now = [m.path.name for m in plan.pending]
    if now != checked:
        if not set(now) <= set(checked) or plan.missing:
            raise StopRun("The migration history changed after it was checked (another session "
                          "recorded or removed versions); nothing was applied.",
                          hint="Run it again: the pending files are listed afresh.")
        gone = [n for n in checked if n not in now]
        state.notices.append(f"Applied meanwhile by another session, left out: {', '.join(gone)}")
    pending = ensure_pending(state)
    if pending:
        ensure_paths(state)
        _split_for_history(pending)
    state.step_note = f"{len(pending)} file(s) pending under the lock"


def _split_for_history(pending: list[BatchFile]) -> None:
    """The Supabase CLI's split of each pending file, made now (while the early snapshot's
    pg_dump still runs) rather than in each file's transaction, where record_batch_file
    needs it for the history's `statements`."""
    from dbsage.tools.history import cli_split_of

    for f in pending:
        if f.migration is not None and f.cli_split is None:
            f.cli_split = cli_split_of(f.migration.text, f.migration.checksum)


def save_batch_data(state: RunState) -> None:
    """Find the data each pending file destroys; apply_batch saves it inside that file's own
    transaction, before its first statement."""
    from dbsage.agent.batch import ensure_pending
    from dbsage.tools.batch import may_destroy_data

    found = 0
    for f in ensure_pending(state):
        m = f.migration
        # Only files that may destroy data are looked at closer (and tools/rollback.py,
        # a heavy import, loaded for them).
        if m is None or not may_destroy_data(m):
            continue
        from dbsage.tools.rollback import destructive_targets

        f.data_targets = destructive_targets(m)
        found += len(f.data_targets)
    if found:
        state.step_note = (f"{found} target(s); each saved inside its file's transaction, before "
                           "its first statement")


def apply_batch(state: RunState) -> None:
    """Every pending file in order, each in its own transaction with its history rows (or all
    in one with --atomic); stops at the first failure, saying which files committed."""
    from dbsage.agent.batch import ensure_pending, names
    from dbsage.tools.artifacts import remove_tree
    from dbsage.tools.batch import BatchFailedError, FileResult
    from dbsage.tools.batch import apply_batch as run
    from dbsage.tools.history import HistoryRecord, record_batch_file

    assert state.conn is not None and state.batch is not None
    pending = ensure_pending(state)
    if not pending:
        state.status = "passed"
        state.step_note = "nothing to apply"
        return
    if state.plan is not None:
        check_batch_plan_still_holds(state)
    paths = ensure_paths(state)
    atomic = bool(state.options.flags.get("atomic"))
    # A rollback plan per file, as apply keeps one (--rollback-plans): its catalog captures
    # cost about 0.1 s a file on a 1,000-table database, so a batch keeps them when asked.
    plans = bool(state.options.flags.get("rollback_plans"))
    started: dict[int, datetime] = {}
    gate = _BatchGate(state, [f.migration for f in pending])
    marks: dict[int, BookkeepingMark | None] = {}  # atomic: the history as file i left it

    def before(conn: psycopg.Connection, i: int, m: Any) -> None:
        started[i] = datetime.now(UTC)
        gate.before(conn, i)
        f = pending[i]
        dest = paths.data / f"{m.version}_{m.name}"
        if f.data_targets:
            remove_tree(dest)  # a rolled-back attempt
        if atomic or not plans:  # no plan per file (see _rollback_notes)
            if f.data_targets:
                from dbsage.tools.rollback import lock_for_saving, save_data

                lock_for_saving(conn, f.data_targets)
                f.saved_data = save_data(conn, f.data_targets, dest)
            return
        # As apply does: what a rollback of this file needs, captured in its own transaction
        # (the data it destroys saved with it), the plan stored with its history rows.
        from dbsage.tools.rollback import capture_before

        f.capture = capture_before(conn, m, f.data_targets, dest)
        f.saved_data = list(f.capture.saved)

    def record(conn: psycopg.Connection, i: int, m: Any, results: list[StatementResult]) -> None:
        gate.judge(conn, i, pending[i].name)
        t0 = started.get(i, datetime.now(UTC))
        marks[i] = record_batch_file(conn, HistoryRecord(
            ts=paths.ts, version=m.version or "", name=m.name, path=str(m.path),
            checksum=m.checksum, mode=state.options.mode, started_at=t0,
            duration_ms=(datetime.now(UTC) - t0).total_seconds() * 1000,
            rows_affected=sum(r.rows_affected for r in results),
            statements=[s.sql for s in m.statements],
            snapshot_before=state.files.get("before"), snapshot_after=state.rel(paths.after),
            diff_patch=state.rel(paths.diff)), check_tables=i == 0,
            since=marks.get(i - 1) if atomic and i else None,
            mark=atomic and i + 1 < len(pending), split=pending[i].cli_split)
        f = pending[i]
        if f.capture is not None:
            from dbsage.tools.rollback import capture_after

            f.rollback_plan = capture_after(conn, f.capture, paths.ts, m.version or "")

    def progress(i: int, r: StatementResult) -> None:
        state.statements[pending[i].first_statement + r.index - 1].record(
            r.status, r.rows_affected, r.duration_ms)

    def done(fr: FileResult) -> None:
        if fr.index + 1 < len(pending):
            shown.file_started(fr.index + 2, len(pending), pending[fr.index + 1].name)
        f = pending[fr.index]
        f.status, f.attempts, f.rows_affected = fr.status, fr.attempts, fr.rows_affected
        f.duration_ms = fr.duration_s * 1000
        for r in fr.statements:
            progress(fr.index, r)

    from dbsage.agent.progress import current

    shown = current()
    if pending:
        shown.file_started(1, len(pending), pending[0].name)
    try:
        result = run(state.conn, [f.migration for f in pending if f.migration is not None],
                     atomic=atomic, lock_timeout=state.options.lock_timeout,
                     statement_timeout=state.options.statement_timeout,
                     retry=lock_retry_policy(state), record=record, before=before,
                     on_statement=progress, on_file=done)
    except BatchFailedError as exc:
        state.batch.result = exc.result
        for fr in exc.result.files:
            done(fr)
        failed = next((f for f in pending if f.status == "failed"), None)
        if failed is not None:
            failed.message = exc.cause.message
        _keep_batch_data(state)
        committed = [f for f in pending if f.status == "applied"]
        if committed:
            state.notices.append(f"Committed before the failure, and applied: {names(committed)}"
                                 f" ({len(committed)} of {len(pending)}).")
            _snapshot_partial_batch(state)
        elif getattr(exc.cause, "rolled_back", True):
            state.notices.append("Everything was rolled back: the database is unchanged.")
        raise
    state.batch.result = result
    _keep_batch_data(state)
    _rollback_notes(state, atomic, plans)
    state.records_affected = result.rows_affected
    state.apply_time = round(result.duration_s, 4)
    state.attempts = max((f.attempts for f in result.files), default=1)
    state.status = "applied"
    state.step_note = (f"{len(result.files)} file(s) " + ("in one transaction" if atomic else
                                                         "each in its own transaction"))
    if result.lock_timeouts:
        state.warnings.append(
            f"lock_timeout {state.options.lock_timeout} fired {result.lock_timeouts} time(s); "
            "each time the transaction was rolled back and retried.")


def _rollback_notes(state: RunState, atomic: bool, plans: bool) -> None:
    """How the batch can be undone: file by file from the plans kept with each file's history
    (`dbsage rollback --to VERSION`), or not at all when it ran as one transaction."""
    assert state.batch is not None
    done = [f for f in state.batch.pending if f.status == "applied"]
    if atomic:
        state.notices.append("The batch ran as one transaction: no rollback plan per file was "
                             "kept (`dbsage rollback` refuses its files).")
        return
    if not plans:
        state.notices.append("No rollback plan was kept for the batch's files (`dbsage up "
                             "--rollback-plans` keeps one per file, as apply does, for "
                             "`dbsage rollback`); the snapshots and saved data are kept.")
        return
    kept = [f for f in done if f.rollback_plan is not None and not f.rollback_plan.refusals]
    refused = [f"{f.name}: {'; '.join(f.rollback_plan.refusals)}" for f in done
               if f.rollback_plan is not None and f.rollback_plan.refusals]
    unstored = [f.name for f in kept if not f.rollback_plan.stored]
    if kept:
        before = state.batch.plan.latest_applied if state.batch.plan else None
        undo = (f"`dbsage rollback --to {before}` undoes the whole batch, newest first; "
                if before else "")
        state.notices.append(f"Rollback plans kept for {len(kept)} file(s) in "
                             f"dbsage.rollback_plan: {undo}`dbsage rollback latest` undoes "
                             "its last file.")
    if refused:
        state.warnings.append("dbsage cannot roll these back: " + "; ".join(refused))
    if unstored:
        state.warnings.append("No rollback plan could be kept in the database for: "
                              + ", ".join(unstored))


def _keep_batch_data(state: RunState) -> None:
    """Keep the data saved for committed files; drop what rolled-back attempts saved."""
    from dbsage.tools.artifacts import remove_tree

    assert state.batch is not None and state.paths is not None
    kept = 0
    for f in state.batch.pending:
        if not f.data_targets:
            continue
        dest = state.paths.data / f"{f.version}_{f.local.migration.name}"
        if f.status != "applied":
            remove_tree(dest)
            f.saved_data = []
        else:
            kept += sum(x.rows for x in f.saved_data)
    if kept:
        state.files["data"] = state.rel(state.paths.data)
        state.notices.append(f"Saved {kept} row(s) the batch destroys to "
                             f"{state.rel(state.paths.data)} (one folder per file).")


def _snapshot_partial_batch(state: RunState) -> None:
    """Some files committed before one failed: take the after-snapshot and the diff now, so
    the run's snapshots describe what it did change."""
    from dbsage.tools.diff import diff_snapshots as diff
    from dbsage.tools.snapshot import dump_scope, take_snapshot

    if state.target is None or "before" not in state.files or state.paths is None:
        return
    paths = state.paths
    try:
        take_snapshot(state.target.url, paths.after, state.server_major,
                      scope=dump_scope(ensure_connected(state)))
        state.files["after"] = state.rel(paths.after)
        state.files["diff"] = state.rel(diff(paths.before, paths.after, paths.diff).path)
    except DbsageError as exc:
        state.warnings.append(f"No after-snapshot of the committed files: {exc.message}")


def check_batch_plan_still_holds(state: RunState) -> None:
    """Pre-flight: stop before touching anything if a file or the schema moved since the
    plan was approved."""
    from dbsage.tools.artifacts import file_sha256
    from dbsage.tools.catalog import schema_fingerprint

    assert state.plan is not None and state.conn is not None and state.batch is not None
    planned = {f["file"]: f["checksum"] for f in state.plan.get("files", [])}
    for f in state.batch.pending:
        if planned.get(f.name) != file_sha256(f.local.migration.path):
            raise StopRun(f"{f.name} changed (or joined the batch) after the plan was made; "
                          "nothing was applied.",
                          hint="Run the pre-flight again to plan the files as they are now.")
    if schema_fingerprint(state.conn) != state.plan["fingerprint"]:
        raise StopRun("The database schema changed after the plan was made; nothing was "
                      "applied.", hint="Run the pre-flight again against the current schema.")


def dry_run_batch_step(state: RunState) -> None:
    """The whole batch in one transaction that is always rolled back; each file's outcome."""
    from dbsage.agent.batch import ensure_pending
    from dbsage.tools.batch import dry_run_batch
    from dbsage.tools.catalog import schema_fingerprint

    conn = ensure_connected(state)
    assert state.batch is not None
    pending = ensure_pending(state)
    state.fingerprint_before = schema_fingerprint(conn)
    if not pending:
        state.status = "passed"
        state.step_note = "nothing to dry-run"
        return
    r = state.batch.dry_run = dry_run_batch(
        conn, [f.migration for f in pending if f.migration is not None],
        lock_timeout=state.options.lock_timeout,
        statement_timeout=state.options.statement_timeout, retry=lock_retry_policy(state))
    for f, fr in zip(pending, r.files, strict=True):
        f.status, f.message = fr.status, fr.message
        state.warnings.extend(fr.not_run_on_server)
        f.duration_ms = sum(s.duration_ms for s in fr.statements)
        f.rows_affected = sum(s.rows_affected for s in fr.statements)
        for s in fr.statements:
            state.statements[f.first_statement + s.index - 1].record(
                s.status, s.rows_affected, s.duration_ms)
    state.apply_time = round(r.duration_s, 4)
    state.attempts = r.attempts
    state.records_affected = sum(f.rows_affected for f in pending)
    state.notices.append("The dry-run transaction was rolled back: the database is unchanged.")
    failed = r.failed
    if failed is None:
        state.status = "passed"
        return
    fail = failed.failure
    assert fail is not None
    state.status, state.exit_code = "failed", 1
    state.error = {"error": "DryRunFailed", "message": failed.message or fail.message,
                   "path": str(failed.path), "line": fail.line, "sqlstate": fail.sqlstate,
                   "detail": fail.detail, "hint": fail.hint}


STEPS.update({
    "check_batch_history": check_batch_history,
    "save_batch_data": save_batch_data,
    "apply_batch": apply_batch,
    "dry_run_batch": dry_run_batch_step,
})
