"""The run's lazy resources: the parsed file, its analysis, the session, the TS and its paths.

Each is made once, on first use, by whichever step or check needs it first; everything here
hands over to a tool and keeps the result in the RunState.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbsage.agent.state import SNAPSHOT_DIR, RunPaths, RunState, StatementOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import psycopg

    from dbsage.agent.definitions import RetryPolicySpec
    from dbsage.tools.analyze import MigrationAnalysis
    from dbsage.tools.apply import LockRetryPolicy
    from dbsage.tools.artifacts import RunMarker
    from dbsage.tools.connection import SessionFacts
    from dbsage.tools.sqlfile import MigrationFile


def ensure_parsed(state: RunState) -> MigrationFile:
    """Read and parse the file once; nothing touches the database."""
    if state.migration is not None:
        return state.migration
    from dbsage.tools.catalog import names_bookkeeping
    from dbsage.tools.sqlfile import read_migration

    assert state.path is not None
    m = read_migration(state.path)
    if names_bookkeeping(m.text):  # else nothing to look for: no analysis before the snapshot
        from dbsage.tools.analyze import refuse_bookkeeping_writes

        refuse_bookkeeping_writes(m)  # the history is not a migration's to write (exit 2)
    state.migration = m
    state.version, state.name = m.version, m.name
    state.statements = [StatementOutcome(s.index, s.line, s.summary, s.transactional)
                        for s in m.statements]
    return m


def analysis_of(state: RunState) -> MigrationAnalysis:
    """Lock levels, rewrites, destructive operations of the parsed file (once)."""
    if state.analysis is None:
        from dbsage.tools.analyze import analyze_migration

        state.analysis = analyze_migration(ensure_parsed(state))
    return state.analysis


def ensure_connected(state: RunState) -> psycopg.Connection:
    """Resolve --db / env / embedded, refuse a transaction pooler, connect (with retry) once.

    A read-only session is refused; so is a transaction pooler on any port when the task
    holds the migration lock (tools/connection.check_session_pooling): its first query
    tells whether a pooler answers at all, so a direct connection pays nothing more."""
    if state.conn is not None:
        return state.conn
    from dbsage.tools.connection import (
        Target,
        check_not_transaction_pooler,
        check_session_pooling,
        check_target,
        connect,
        inspect_session,
        resolve_target,
    )

    target = resolve_target(state.options.db)
    if target is None:
        from dbsage.tools.embedded import start_embedded

        ensure_project(state.options.project_dir)
        status = start_embedded(state.options.project_dir)
        ensure_gitignore(state)
        assert status.url is not None
        target = Target(status.url, "embedded")
        state.notices.append(
            f"Using {status.description} in {state.rel(status.pgdata)} (no --db, "
            "SUPABASE_DB_URL or DATABASE_URL set); stop it with `dbsage db stop`.")
        state.notices.extend(f"Warning: {note}" for note in status.notes)
    state.target = target
    check_target(target)
    check_not_transaction_pooler(target.url)
    policy = retry_for(state, "connection_failed")

    def open_session() -> tuple[psycopg.Connection, SessionFacts]:
        if policy:
            conn = connect(target.url, autocommit=True, attempts=policy.attempts,
                           first_wait=policy.initial_wait_seconds)
        else:
            conn = connect(target.url, autocommit=True, attempts=1)
        try:
            return conn, inspect_session(conn)  # read-only? and who answers
        except BaseException:
            conn.close()
            raise

    if state.early_wanted and state.early_snapshot is None:
        state.conn, facts = _connect_beside_early_snapshot(state, open_session)
    else:
        state.conn, facts = open_session()
    if facts.proxied:
        # A pooler: no early snapshot through it (its psql and pg_dump hold server
        # connections the check below, and the run, may need), and no transaction pooler.
        discard_early_snapshot(state)
        if state.session_lock:
            check_session_pooling(state.conn, target.url, facts)
    state.server_major = state.conn.info.server_version // 10000
    state.server_version = str(state.conn.info.parameter_status("server_version") or "")
    _settle_lock_timeout(state, state.conn)
    return state.conn


def _settle_lock_timeout(state: RunState, conn: psycopg.Connection) -> None:
    """`auto` becomes half the server's deadlock_timeout (at most 1s): a lock wait of the
    migration then always ends before the server's deadlock check, so in a deadlock with an
    application transaction the migration yields (and retries), not the application."""
    if state.options.lock_timeout == "auto":
        from dbsage.tools.catalog import deadlock_timeout_ms

        deadlock = deadlock_timeout_ms(conn)
        state.options.lock_timeout = f"{max(50, min(1000, deadlock // 2))}ms"
    elif state.options.lock_timeout == "0":
        state.warnings.append(
            "lock_timeout is off (0): a statement waiting for a lock queues every query on "
            "that table behind it for as long as it waits.")


def ensure_project(project_dir: Path) -> None:
    """ConfigError (exit 2) when `project_dir` is no project (no supabase/, .git or .dbsage/):
    the local server lives in the project, and dbsage makes no new database elsewhere."""
    from dbsage.tools.errors import ConfigError
    from dbsage.tools.project import is_project

    if is_project(project_dir):
        return
    raise ConfigError(
        f"Not in a project: neither {project_dir} nor a folder above it holds "
        "supabase/config.toml, supabase/migrations/ or .git, so there is no local database "
        "to use, and dbsage will not make a new one here.",
        hint="Run dbsage from your project's folder (or `supabase init` here to start one), or "
             "pass --db URL (or set SUPABASE_DB_URL or DATABASE_URL).")


def ensure_gitignore(state: RunState) -> None:
    """The first time a run writes into the project: .gitignore gets the local server and the
    saved rows (a git work tree), or the run says what to add."""
    from dbsage.tools.project import ensure_gitignore as update

    result = update(state.options.project_dir)
    if result.added:
        state.notices.append(f"Added {', '.join(result.added)} to {state.rel(result.path)} (the "
                             "local server, and the rows saved for rollbacks: users' data).")
    elif result.missing and (state.options.project_dir / ".git").exists():
        state.notices.append(f"Add {', '.join(result.missing)} to .gitignore: the local server "
                             "and the rows saved for rollbacks (users' data) do not belong in git.")


def ensure_paths(state: RunState) -> RunPaths:
    """This run's TS (reserved once: no earlier run used it) and every file named after it."""
    if state.paths is None:
        from dbsage.tools.artifacts import reserve_ts, sweep_leftovers, write_run_marker

        snaps = state.options.project_dir / SNAPSHOT_DIR
        left = sweep_leftovers(snaps)  # what killed runs left; never a live run's
        ts = reserve_ts(snaps)
        state.paths = RunPaths.of(state.options.project_dir, ts)
        subject = state.path or state.inputs.get("migration")
        m = state.migration
        state.run_marker = write_run_marker(
            snaps, ts, state.task, str(subject) if subject else None,
            outside_transaction=m is not None and not m.transactional)
        ensure_gitignore(state)
        _after_killed_runs(state, left.runs)
        if left.files and not left.runs:
            state.notices.append(f"Removed {len(left.files)} temporary file(s) a killed run "
                                 "left in " + state.rel(snaps) + ".")
    return state.paths


#: How long the run's session may take to answer once the early snapshot has started.
EARLY_SNAPSHOT_PATIENCE_S = 2.0


def _connect_beside_early_snapshot(
        state: RunState, open_session: Callable[[], tuple[psycopg.Connection, SessionFacts]]
        ) -> tuple[psycopg.Connection, SessionFacts]:
    """Open the run's session in a thread while this one starts the early snapshot (psql
    exports a snapshot, then pg_dump dumps it), and give the snapshot up if the session has
    not answered its first query EARLY_SNAPSHOT_PATIENCE_S later: through a pool of one server
    connection, psql's exporting transaction holds it, and the session would wait without end.

    The snapshot is started here, not in the thread: the thread spends ~70 ms importing
    psycopg (CPU-bound), and a thread other than the busy one waits for the GIL at each step
    (starting psql, reading its answer, starting pg_dump: ~20 ms in all, measured), while the
    main thread gets it back within the switch interval, shortened for the overlap. The
    thread starts once psql has its query (tools/snapshot `meanwhile`): up to there this
    thread has the GIL to itself, and it then waits for psql's answer."""
    import sys
    import threading

    box: list[tuple[psycopg.Connection, SessionFacts] | BaseException] = []
    answered = threading.Event()

    def meanwhile() -> None:
        try:
            box.append(open_session())
        except BaseException as exc:  # raised again in this thread
            box.append(exc)
        finally:
            answered.set()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        worker = threading.Thread(target=meanwhile, name="dbsage-connect", daemon=True)
        start_early_snapshot(state, meanwhile=worker.start)
        if not answered.wait(EARLY_SNAPSHOT_PATIENCE_S):
            discard_early_snapshot(state)
        worker.join()
    finally:
        sys.setswitchinterval(switch)
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _after_killed_runs(state: RunState, runs: Sequence[RunMarker]) -> None:
    """Say what each killed run left; the saved-data folder of one that committed nothing
    holds rows nothing destroyed (the clean stop of a run removes it too)."""
    from dbsage.tools.artifacts import remove_tree
    from dbsage.tools.history import outcomes_if_idle

    outcomes = outcomes_if_idle(state.conn, [r.ts for r in runs]) if state.conn else {}
    for run in runs:
        what = f"Run {run.ts} ({run.task}, pid {run.pid}) was killed"
        o = outcomes.get(run.ts)
        if o is None:
            state.notices.append(f"{what}; cleaned up what it left.")
        elif o.applied or o.rolled_back:
            done = (f"{', '.join(o.applied)} applied" if o.applied
                    else f"{', '.join(o.rolled_back)} rolled back")
            state.notices.append(f"{what} after its commit ({done}); cleaned up what it left.")
        elif run.outside_transaction:
            state.notices.append(f"{what} before its history row; the statements of its file "
                                 "that finished (run outside a transaction) are committed.")
        else:
            remove_tree(state.options.project_dir / SNAPSHOT_DIR / f"{run.ts}_data")
            state.notices.append(f"{what} before its commit (nothing was changed); cleaned up "
                                 "what it left.")


def end_run_marker(state: RunState) -> None:
    """The run ended (however, but a SIGKILL): nothing to say about it later."""
    if state.run_marker is not None:
        from dbsage.tools.artifacts import remove_run_marker

        remove_run_marker(state.run_marker)
        state.run_marker = None


def start_early_snapshot(state: RunState, meanwhile: Callable[[], None] | None = None) -> None:
    """Start the before-snapshot now, ahead of the lock (see tools/snapshot.py); `meanwhile`
    is called while psql exports the snapshot."""
    from dbsage.tools.artifacts import temp_path
    from dbsage.tools.snapshot import start_early_snapshot as start

    assert state.target is not None
    state.early_wanted = False
    tmp = temp_path(state.options.project_dir / SNAPSHOT_DIR / "early-before.sql")
    state.early_snapshot = start(state.target.url, tmp, meanwhile=meanwhile)


def discard_early_snapshot(state: RunState) -> None:
    """Stop and delete an early snapshot the run did not adopt."""
    for early in (state.early_snapshot, state.before_dump):
        if early is not None:
            early.discard()
    state.early_snapshot = state.before_dump = None


def retry_for(state: RunState, kind: str) -> RetryPolicySpec | None:
    """The definition's retry policy for an error kind: the one whose `on` lists it, named by
    a step's `retry` (that is where retrying happens); none under `strategy: abort`."""
    handling = state.definition.error_handling
    if handling.strategy == "abort":
        return None
    named = {s.retry for s in state.definition.steps if s.retry}
    return next((p for p in handling.retry if p.id in named and kind in p.on), None)


def lock_retry_policy(state: RunState) -> LockRetryPolicy:
    """--lock-retry from the caller, else the definition's policy for lock timeouts (one
    attempt when it has none); told of its retries when a live display shows them."""
    from dbsage.agent.progress import current

    return current().with_retry_hook(state, _lock_retry_policy(state))


def _lock_retry_policy(state: RunState) -> LockRetryPolicy:
    from dbsage.tools.apply import LockRetryPolicy

    if state.options.lock_retry is not None:
        return state.options.lock_retry
    p = retry_for(state, "lock_timeout")
    if p is None:
        return LockRetryPolicy(attempts=1)
    return LockRetryPolicy(p.attempts, p.initial_wait_seconds, p.max_wait_seconds,
                           multiplier=p.multiplier, retry_on=tuple(p.on))
