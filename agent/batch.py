"""`dbsage up`: the batch of pending migrations as one run knows it.

The resources of a batch run, made once on first use like agent/resources.py's: the project's
migration files (listed, read and syntax-checked before anything connects), the history's
verdict (the Supabase CLI's pending rule), the pending files fully parsed and analysed, and
squawk's findings for all of them from one squawk process. Every fact comes from a tool;
this module keeps them in `state.batch` and words them. It imports neither agent/steps.py nor
agent/checklists.py (they import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbsage.agent.resources import ensure_connected
from dbsage.agent.state import BatchFile, BatchRun, RunState, StatementOutcome
from dbsage.tools.errors import ConfigError, DbsageError

if TYPE_CHECKING:
    from dbsage.tools.analyze import LintFinding, MigrationAnalysis
    from dbsage.tools.batch import LocalMigration


def ensure_batch(state: RunState) -> BatchRun:
    """List supabase/migrations/ and read every candidate file (up to --to), checking its
    syntax with PostgreSQL's parser; nothing touches the database. The first file that does
    not parse raises its MigrationFileError (file:line:col)."""
    if state.batch is not None:
        return state.batch
    from dbsage.tools.localfiles import list_local_migrations, read_local_file

    local = list_local_migrations(state.options.project_dir)
    to = state.options.to_version
    if to is not None and not any(m.version == to for m in local.files):
        raise ConfigError(f"No migration file has version {to} (--to); nothing was applied.",
                          hint="List them with `dbsage status`.", version=to)
    candidates = [m for m in local.files if to is None or int(m.version) <= int(to)]
    files = [read_local_file(m) for m in candidates]
    state.batch = BatchRun(local, files)
    broken = next((f for f in files if f.syntax_error is not None), None)
    if broken is not None and broken.syntax_error is not None:
        raise broken.syntax_error
    return state.batch


def read_history(state: RunState) -> BatchRun:
    """The history's verdict on the local files: pending (the Supabase CLI's rule, with
    --include-all), applied, out of order, applied but missing locally, drifted. Read again
    on every call (once before the lock, once under it)."""
    from dbsage.tools.batch import find_pending
    from dbsage.tools.history import applied_checksums

    batch = ensure_batch(state)
    applied = applied_checksums(ensure_connected(state))
    plan = find_pending(batch.local.files, applied,
                        include_all=bool(state.options.flags.get("include_all")),
                        to_version=state.options.to_version)
    batch.plan = plan
    batch.applied_checksums = dict(applied)
    sums = {f.migration.version: f.checksum for f in batch.files}
    batch.drifted = [m.path.name for m in plan.applied
                     if applied.get(m.version) and m.version in sums
                     and applied[m.version] != sums[m.version]]
    return batch


def ensure_pending(state: RunState) -> list[BatchFile]:
    """The pending files, each fully read and parsed (read_migration: the refusals of unsafe
    statements, transaction shape, ...), before anything is locked or changed; the run's
    statement list is theirs, in order. The first file that cannot be applied raises."""
    batch = ensure_batch(state)
    if batch.plan is None:
        read_history(state)
    assert batch.plan is not None
    wanted = [m.path.name for m in batch.plan.pending]
    if [f.name for f in batch.pending] == wanted and all(f.migration for f in batch.pending):
        return batch.pending
    from dbsage.tools.analyze import refuse_bookkeeping_writes
    from dbsage.tools.sqlfile import read_migration

    by_name = {f.migration.path.name: f for f in batch.files}
    pending: list[BatchFile] = []
    statements: list[StatementOutcome] = []
    for name in wanted:
        local = by_name[name]
        m = read_migration(local.migration.path)
        refuse_bookkeeping_writes(m)  # before the lock and anything of the batch runs
        f = BatchFile(local, m, first_statement=len(statements))
        statements += [StatementOutcome(len(statements) + s.index, s.line,
                                        f"{name}: {s.summary}", s.transactional)
                       for s in m.statements]
        pending.append(f)
    batch.pending = pending
    state.statements = statements
    if pending:
        state.version = pending[-1].version
        state.name = f"{len(pending)} migration(s)"
    return pending


def analysis(f: BatchFile) -> MigrationAnalysis:
    """Lock levels, rewrites, destructive operations of one pending file (once)."""
    if f.analysis is None:
        from dbsage.tools.analyze import analyze_migration

        assert f.migration is not None
        f.analysis = analyze_migration(f.migration)
    return f.analysis


def lint_batch(state: RunState) -> list[tuple[BatchFile, LintFinding]]:
    """squawk's findings for every pending file: ONE squawk process for the files that run in
    a transaction (told so), one more only if some do not (CONCURRENTLY)."""
    from dbsage.tools.batch import lint_files

    pending = ensure_pending(state)
    version = f"{state.server_major}.0" if state.server_major else None
    atomic = bool(state.options.flags.get("atomic"))
    groups = ([f for f in pending if f.migration and (f.migration.transactional or atomic)],
              [f for f in pending if f.migration and not (f.migration.transactional or atomic)])
    for in_transaction, files in zip((True, False), groups, strict=True):
        if not files:
            continue
        found = lint_files([f.local.migration.path for f in files], pg_version=version,
                           assume_in_transaction=in_transaction)
        for f in files:
            f.lint = found[f.local.migration.path]
    return [(f, x) for f in pending for x in f.lint]


def touched_tables(files: list[BatchFile]) -> list[str]:
    """The relations the files' statements name or create, in order, once each."""
    names: list[str] = []
    for f in files:
        a = analysis(f)
        names += [*a.tables, *a.created]
    return list(dict.fromkeys(names))


def applied_files(state: RunState) -> list[BatchFile]:
    """The files this run committed."""
    return [f for f in (state.batch.pending if state.batch else []) if f.status == "applied"]


def nothing_to_apply(state: RunState) -> bool:
    """An `up` run whose batch is empty (the database is up to date)."""
    return state.batch is not None and state.batch.plan is not None and not state.batch.pending


def names(files: list[BatchFile] | list[LocalMigration], limit: int = 10) -> str:
    """`a.sql, b.sql, ...` (at most `limit` names, then how many more)."""
    shown = [f.path.name if hasattr(f, "path") else f.name for f in files]
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def summary(state: RunState) -> str:
    """One line for the success text: what the batch did."""
    batch = state.batch
    if batch is None:
        return ""
    if not batch.pending:
        applied = len(batch.plan.applied) if batch.plan else 0
        return f"Nothing to apply: all {applied} migration(s) are applied."
    done = [f for f in batch.pending if f.status in ("applied", "passed", "parsed_only")]
    verb = "dry-run" if batch.dry_run is not None else "applied"
    how = ("in one transaction" if state.options.flags.get("atomic") and verb == "applied"
           else "each in its own transaction" if verb == "applied" else
           "in one transaction, rolled back")
    return f"{len(done)} migration(s) {verb} {how}: {names(done)}"


def plan_text(state: RunState) -> str:
    """What the batch will run: each file, its statements and the lock each takes."""
    lines: list[str] = []
    atomic = bool(state.options.flags.get("atomic"))
    for i, f in enumerate(ensure_pending(state), 1):
        m = f.migration
        assert m is not None
        how = ("one by one, outside a transaction" if not m.transactional else
               "in the batch's one transaction" if atomic else "in its own transaction")
        lines.append(f"{i}. {f.name} ({len(m.statements)} statement(s), {how})")
        lines += [f"     line {a.statement.line:<4} {a.lock_level or 'no table lock':<22} "
                  f"{a.statement.summary}" for a in analysis(f).statements]
    return "\n".join(lines) or "Nothing to apply."


def interrupted(state: RunState) -> DbsageError | None:
    """What a Ctrl-C or SIGTERM left of a batch: the files committed before the one that was
    running (that one's transaction is rolled back), or None for a run that is not a batch."""
    from dbsage.tools.errors import RunInterrupted

    batch = state.batch
    if batch is None or batch.dry_run is not None or not batch.pending:
        return None
    done = [f for f in batch.pending if f.status == "applied"]
    if state.status == "applied":
        return RunInterrupted("Interrupted after the batch committed; the steps after it did "
                              "not finish.")
    running = next((f for f in batch.pending if f.status == "pending"), None)
    if running is not None:
        running.status = "interrupted"
        for s in state.statements[running.first_statement:]:
            if s.status == "not_run":
                s.status = "interrupted"
                break
    if not done:
        return RunInterrupted("Interrupted. Nothing was committed: the database is unchanged.")
    return RunInterrupted(
        f"Interrupted. {len(done)} of {len(batch.pending)} file(s) were committed and stay "
        f"applied: {names(done)}; "
        + (f"{running.name} was rolled back; " if running else "")
        + "the rest did not run.",
        hint="Run `dbsage up` again to apply the rest.")
