"""A batch of migrations: the project's pending files, applied (or dry-run) in version order on
the one session that holds the migration lock.

Which files are pending follows the Supabase CLI (`supabase migration up` / `db push`,
apps/cli-go/pkg/migration/file.go `FindPendingMigrations` and internal/migration/up/up.go):
the local files matching `^([0-9]+)_(.*)\\.sql$`, sorted by name, walked side by side with the
applied versions. An applied version without a local file is an error (the CLI's "Remote
migration versions not found in local migrations directory"); a pending file older than the
latest applied version is out of order, refused unless included on purpose (`--include-all`).

Each file runs through tools/apply.py exactly as a single apply runs it (one transaction with
its history rows, SET LOCAL timeouts, the lock-timeout retry, a CONCURRENTLY-only file
statement by statement), so every per-file guarantee holds inside the batch; or, `atomic`,
all of them in ONE transaction (retried as a whole on a lock timeout). Between two files the
session's settings go back to what they were when it connected (`RESET ALL`): psql and the
CLI give every file a session of its own, so a `set_config('search_path', '', false)` in one
file must not leak into the next.

The dry-run runs the whole batch in one transaction that is always rolled back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbsage.tools.errors import (
    ConfigError,
    ConnectionFailedError,
    DbsageError,
    LockTimeoutExhaustedError,
    MigrationFailedError,
    StatementFailure,
)
from dbsage.tools.execute import (
    LockRetry,
    LockRetryPolicy,
    StatementResult,
    describe_failure,
    failure_hint,
    run_statement,
    set_timeouts,
    statement_failure,
    with_lock_retry,
)
from dbsage.tools.localfiles import (
    MIGRATIONS_DIR,
    LocalFile,
    LocalMigration,
    LocalMigrations,
    full_read_error,
    list_local_migrations,
    read_local_file,
    syntax_error,
)
from dbsage.tools.sqlfile import MigrationFile

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.analyze import LintFinding

__all__ = ["MIGRATIONS_DIR", "BatchDryRun", "BatchFailedError", "BatchResult", "FileDryRun",
           "FileResult", "LocalFile", "LocalMigration", "LocalMigrations", "PendingPlan",
           "apply_batch", "dry_run_batch", "find_pending", "lint_files", "list_local_migrations",
           "read_local_file", "syntax_error"]

STATUS_PARSED_ONLY = "validated by parsing only"


# --------------------------------------------------------------------------- which are pending


@dataclass(frozen=True)
class PendingPlan:
    """What the history says of the local files (the Supabase CLI's rule)."""

    pending: tuple[LocalMigration, ...]  # to apply, in this order
    applied: tuple[LocalMigration, ...]
    out_of_order: tuple[LocalMigration, ...]  # pending, but older than the latest applied version
    missing: tuple[str, ...]  # applied versions with no local file
    beyond_to: tuple[LocalMigration, ...] = ()  # pending, but after --to

    @property
    def latest_applied(self) -> str | None:
        versions = [m.version for m in self.applied]
        return max(versions) if versions else None


def find_pending(local: Sequence[LocalMigration], applied_versions: Iterable[str], *,
                 include_all: bool = False, to_version: str | None = None) -> PendingPlan:
    """The CLI's FindPendingMigrations: local files (sorted by name) against the applied
    versions (sorted); `include_all` puts the out-of-order ones in version order among the
    pending; `to_version` stops after that version (the rest stay pending)."""
    remote = sorted(set(applied_versions))
    i = j = 0
    applied: list[LocalMigration] = []
    missing: list[str] = []
    unapplied: list[LocalMigration] = []
    while i < len(remote) and j < len(local):
        r, mine = remote[i], local[j]
        if r == mine.version:
            applied.append(mine)
            i += 1
            j += 1
        elif r < mine.version:
            missing.append(r)
            i += 1
        else:
            unapplied.append(mine)
            j += 1
    if j == len(local):
        missing += remote[i:]
    rest = list(local[j:])
    pending = sorted([*unapplied, *rest], key=lambda m: m.path.name) if include_all else rest
    beyond: list[LocalMigration] = []
    if to_version is not None:
        cut = int(to_version)
        beyond = [m for m in pending if int(m.version) > cut]
        pending = [m for m in pending if int(m.version) <= cut]
    return PendingPlan(tuple(pending), tuple(applied), tuple(unapplied), tuple(missing),
                       tuple(beyond))


# --------------------------------------------------------------------------- squawk, once


def lint_files(paths: Sequence[Path], *, pg_version: str | None = None,
               assume_in_transaction: bool = False, timeout: float = 300.0,
               exclude: Sequence[str] | None = None) -> dict[Path, list[LintFinding]]:
    """squawk over many files in ONE process (its JSON names each finding's file); the
    findings of each path, in file order. Same rules and errors as analyze.lint_with_squawk."""
    from dbsage.tools.analyze import DEFAULT_EXCLUDED_RULES
    from dbsage.tools.binaries import find_squawk, run_child
    from dbsage.tools.errors import LintUnavailableError

    out: dict[Path, list[LintFinding]] = {p: [] for p in paths}
    if not paths:
        return out
    rules = DEFAULT_EXCLUDED_RULES if exclude is None else tuple(exclude)
    cmd = [str(find_squawk()), "--reporter", "json"]
    if pg_version:
        cmd += ["--pg-version", pg_version]
    if rules:
        cmd += ["--exclude", ",".join(rules)]
    if assume_in_transaction:
        cmd.append("--assume-in-transaction")
    folder = paths[0].parent
    same_folder = all(p.parent == folder for p in paths)
    # Relative names keep the command line short (a thousand files) and match squawk's "file".
    cmd += [p.name for p in paths] if same_folder else [str(p) for p in paths]
    try:
        proc = run_child(cmd, timeout=timeout, cwd=folder if same_folder else None)
    except subprocess.TimeoutExpired:
        from dbsage.tools.analyze import LintFailedError

        raise LintFailedError(f"squawk did not finish linting {len(paths)} file(s) within "
                              f"{timeout:.0f}s.", path=str(folder)) from None
    except OSError as exc:
        raise LintUnavailableError(f"squawk could not be started: {exc}",
                                   hint="Reinstall it: pip install --force-reinstall "
                                   "squawk-cli") from None
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, list):
        from dbsage.tools.analyze import LintFailedError

        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise LintFailedError(
            f"squawk failed on {len(paths)} file(s) (exit {proc.returncode}): "
            f"{err[-1] if err else 'no output'}", path=str(folder),
            hint="Run `squawk --reporter json FILE` to see the full output.")
    by_name = {(p.name if same_folder else str(p)): p for p in paths}
    for item in report:
        p = by_name.get(str(item.get("file", "")))
        if p is not None:
            out[p].append(_finding(item))
    for findings in out.values():
        findings.sort(key=lambda x: (x.line, x.column, x.rule))
    return out


def _finding(item: Mapping[str, Any]) -> LintFinding:
    """squawk's JSON lines and columns are 0-based; dbsage reports 1-based ones."""
    from dbsage.tools.analyze import LintFinding

    def one_based(key: str) -> int | None:
        value = item.get(key)
        return int(value) + 1 if isinstance(value, int) else None

    return LintFinding(
        rule=str(item.get("rule_name") or item.get("rule") or "unknown"),
        level="error" if str(item.get("level", "")).lower() == "error" else "warning",
        line=one_based("line") or 1, column=one_based("column") or 1,
        message=str(item.get("message") or ""), help=item.get("help"),
        end_line=one_based("line_end"), end_column=one_based("column_end"))


# --------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class FileResult:
    """How one file of a batch went."""

    index: int  # 0-based position in the batch
    path: Path
    version: str
    status: str  # "applied", "failed", "rolled_back" (atomic: undone with the batch), "not_run"
    statements: tuple[StatementResult, ...] = ()
    attempts: int = 0
    lock_timeouts: int = 0
    duration_s: float = 0.0
    transactional: bool = True

    @property
    def rows_affected(self) -> int:
        return sum(s.rows_affected for s in self.statements)


@dataclass(frozen=True)
class BatchResult:
    """What a batch did, file by file."""

    files: tuple[FileResult, ...]
    atomic: bool
    duration_s: float
    attempts: int = 1  # atomic: attempts of the one transaction

    @property
    def committed(self) -> tuple[FileResult, ...]:
        return tuple(f for f in self.files if f.status == "applied")

    @property
    def rows_affected(self) -> int:
        return sum(f.rows_affected for f in self.committed)

    @property
    def lock_timeouts(self) -> int:
        return sum(f.lock_timeouts for f in self.files)


class BatchFailedError(DbsageError):
    """A file of the batch failed: its own transaction was rolled back (with `atomic`, the
    whole batch's); the files before it stay committed. Keeps the failure's exit code."""

    def __init__(self, message: str, *, cause: DbsageError, result: BatchResult,
                 hint: str | None = None) -> None:
        data = {k: v for k, v in cause.data.items() if k != "statements"}
        data.update(committed=[f.path.name for f in result.committed],
                    failed=next((f.path.name for f in result.files if f.status == "failed"),
                                None),
                    not_run=[f.path.name for f in result.files if f.status == "not_run"])
        super().__init__(message, hint=hint if hint is not None else cause.hint, **data)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.result = result


Record = Callable[["psycopg.Connection", int, MigrationFile, list[StatementResult]], None]
Before = Callable[["psycopg.Connection", int, MigrationFile], None]
OnStatement = Callable[[int, StatementResult], None]
OnFile = Callable[[FileResult], None]


def apply_batch(conn: psycopg.Connection, migrations: Sequence[MigrationFile], *,
                atomic: bool = False, lock_timeout: str = "1s",
                statement_timeout: str | None = None, retry: LockRetryPolicy | None = None,
                record: Record | None = None, before: Before | None = None,
                on_statement: OnStatement | None = None,
                on_file: OnFile | None = None) -> BatchResult:
    """Apply `migrations` in order on an autocommit connection that holds the migration lock.

    Each file in its own transaction with its history (`record(conn, i, migration, results)`
    runs inside it, before COMMIT), exactly as tools/apply.apply_migration applies one file;
    or, `atomic`, every file in one transaction. `before(conn, i, migration)` runs inside a
    file's transaction before its first statement (again on a retry: saving the data it
    destroys). `on_statement` and `on_file` hear of progress (so an interrupted run can say
    what committed). Stops at the first failure: BatchFailedError, its `result` saying which
    files committed.
    """
    policy = retry or LockRetryPolicy()
    if atomic:
        return _apply_atomic(conn, migrations, lock_timeout, statement_timeout, policy, record,
                             before, on_statement, on_file)
    return _apply_each(conn, migrations, lock_timeout, statement_timeout, policy, record,
                       before, on_statement, on_file)


def _apply_each(conn: psycopg.Connection, migrations: Sequence[MigrationFile],
                lock_timeout: str, statement_timeout: str | None, policy: LockRetryPolicy,
                record: Record | None, before: Before | None, on_statement: OnStatement | None,
                on_file: OnFile | None) -> BatchResult:
    from dbsage.tools.apply import apply_migration

    started = time.perf_counter()
    done: list[FileResult] = []
    for i, m in enumerate(migrations):
        t0 = time.perf_counter()
        hooks = _FileHooks(i, m, record, before, on_statement)
        try:
            if _plain(m):
                res = _apply_plain(conn, m, lock_timeout, statement_timeout, policy, hooks)
            else:
                res = apply_migration(conn, m, lock_timeout=lock_timeout,
                                      statement_timeout=statement_timeout, retry=policy,
                                      before_commit=hooks.commit if record else None,
                                      on_statement=hooks.statement if on_statement else None,
                                      before_statements=hooks.before if before else None)
        except DbsageError as exc:
            failed = FileResult(i, m.path, m.version or "", "failed",
                                _statements_of(exc, m), duration_s=time.perf_counter() - t0,
                                transactional=m.transactional)
            if on_file:
                on_file(failed)
            result = BatchResult((*done, failed, *_not_run(migrations, i + 1)), False,
                                 time.perf_counter() - started)
            raise _batch_failed(exc, m, result, atomic=False) from None
        finally:
            _reset_session(conn, m)
        one = FileResult(i, m.path, m.version or "", "applied", tuple(res.statements),
                         res.attempts, res.lock_timeouts, time.perf_counter() - t0,
                         m.transactional)
        done.append(one)
        if on_file:
            on_file(one)
    return BatchResult(tuple(done), False, time.perf_counter() - started)


def _plain(m: MigrationFile) -> bool:
    """A file that runs in one transaction and touches no setting (no SET, no set_config, no
    DO block): the batch runs it in the fewest round trips (`_apply_plain`); any other file
    goes through tools/apply.py, which also re-applies and restores settings."""
    return (m.transactional and not getattr(m, "transaction_control", ())
            and not any(s.kind == "VariableSetStmt" or _sets_session(s) for s in m.statements))


@dataclass(frozen=True)
class _PlainResult:
    """What `_apply_plain` returns: the fields of apply.ApplyResult the batch reads."""

    statements: list[StatementResult]
    attempts: int
    lock_timeouts: int


def _apply_plain(conn: psycopg.Connection, m: MigrationFile, lock_timeout: str,
                 statement_timeout: str | None, policy: LockRetryPolicy,
                 hooks: _FileHooks) -> _PlainResult:
    """apply.apply_migration's transaction for a plain file, in 2 + N round trips: BEGIN with
    the SET LOCAL timeouts in one, each statement, the history rows, COMMIT. A lock timeout
    rolls it back and runs it again, as apply does; any other failure rolls it back."""
    from psycopg import sql

    begin = sql.SQL("BEGIN; SELECT set_config('lock_timeout', {}, true), "
                    "set_config('statement_timeout', {}, true)").format(
        sql.Literal(lock_timeout or "0"), sql.Literal(statement_timeout or "0"))

    def attempt() -> list[StatementResult]:
        import psycopg

        results = [StatementResult(s.index, s.line, s.summary, "not_run") for s in m.statements]
        conn.execute(begin)
        try:
            if hooks.before_hook:
                hooks.before(conn)
            for stmt, res in zip(m.statements, results, strict=True):
                run_statement(conn, stmt, res)
                if hooks.on_statement:
                    hooks.statement(res)
            if hooks.record:
                hooks.commit(conn, results)
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            _rollback(conn)
            failed = next((r for r in results if r.status == "failed"), None)
            stmt = m.statements[failed.index - 1] if failed else None
            failure = statement_failure(exc, stmt)
            if policy.retries(failure.sqlstate):
                raise LockRetry(failure, results) from None
            raise _migration_failed(m, failure, stmt, results) from None
        except BaseException:
            _rollback(conn)
            raise
        return results

    try:
        results, n = with_lock_retry(attempt, policy)
    except LockRetry as last:
        err = LockTimeoutExhaustedError(
            f"{m.path}:{last.failure.line}: could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times; everything was rolled back "
            "each time and nothing was applied.", failure=last.failure, path=str(m.path),
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start) and let it finish; or allow a longer lock_timeout.")
        done = last.outcome if isinstance(last.outcome, list) else []
        err.data.update(statements=[r.__dict__ for r in done], lock_timeout=lock_timeout,
                        attempts=policy.attempts)
        raise err from None
    return _PlainResult(results, n, n - 1)


def _rollback(conn: psycopg.Connection) -> None:
    """End the failed (or interrupted) transaction, when the session is still there."""
    import psycopg

    if conn.closed or conn.broken or conn.info.transaction_status == 0:
        return
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")


@dataclass
class _FileHooks:
    """The batch's callbacks bound to one file (tools/apply.py's hook signatures)."""

    index: int
    migration: MigrationFile
    record: Record | None
    before_hook: Before | None
    on_statement: OnStatement | None

    def commit(self, conn: psycopg.Connection, results: list[StatementResult]) -> None:
        assert self.record is not None
        self.record(conn, self.index, self.migration, results)

    def before(self, conn: psycopg.Connection) -> None:
        assert self.before_hook is not None
        self.before_hook(conn, self.index, self.migration)

    def statement(self, result: StatementResult) -> None:
        assert self.on_statement is not None
        self.on_statement(self.index, result)


def _statements_of(exc: DbsageError, m: MigrationFile) -> tuple[StatementResult, ...]:
    rows = exc.data.get("statements") or []
    if rows:
        return tuple(StatementResult(r["index"], r["line"], r["summary"], r["status"],
                                     r["rows_affected"], r["duration_ms"]) for r in rows)
    return tuple(StatementResult(s.index, s.line, s.summary, "not_run") for s in m.statements)


def _not_run(migrations: Sequence[MigrationFile], start: int) -> list[FileResult]:
    return [FileResult(k, m.path, m.version or "", "not_run",
                       tuple(StatementResult(s.index, s.line, s.summary, "not_run")
                             for s in m.statements), transactional=m.transactional)
            for k, m in enumerate(migrations) if k >= start]


def _reset_session(conn: psycopg.Connection, m: MigrationFile) -> None:
    """Give the next file the session as it was at connect time: settings a file changed for
    the session (`SET search_path`, `set_config(..., false)`) and its temporary tables go."""
    if conn.closed or conn.broken or conn.info.transaction_status != 0:
        return
    if any(_sets_session(s) for s in m.statements):
        conn.execute("RESET ALL")
    if any(_creates_temporary(s.node) for s in m.statements):
        conn.execute("DISCARD TEMP")


def _sets_session(s: Any) -> bool:
    """The statement may change a setting for the session: SET (not LOCAL), set_config(),
    or code (DO, a function call) that could call it."""
    if s.kind == "VariableSetStmt":
        return not getattr(s.node, "is_local", False)
    text = s.sql.lower()
    return "set_config" in text or s.kind == "DoStmt"


def _creates_temporary(node: Any) -> bool:
    relation = getattr(node, "relation", None) or getattr(getattr(node, "into", None), "rel",
                                                          None)
    return str(getattr(relation, "relpersistence", "p")) == "t"


def _batch_failed(exc: DbsageError, m: MigrationFile, result: BatchResult, *,
                  atomic: bool) -> BatchFailedError:
    committed = [f.path.name for f in result.committed]
    not_run = [f.path.name for f in result.files if f.status == "not_run"]
    total = len(result.files)
    if atomic:
        state = (f" The batch ran in one transaction: it was rolled back, none of the {total} "
                 "file(s) is applied and the database is unchanged.")
    elif not getattr(exc, "rolled_back", True):
        state = ""  # a non-transactional file: its own message says what stayed
    else:
        state = " Its transaction was rolled back."
    if not atomic:
        state += (f" Committed before it (they stay applied): {', '.join(committed)} "
                  f"({len(committed)} of {total})." if committed else
                  f" No file of the batch was committed ({total} in all).")
    if not_run:
        state += f" Not run: {', '.join(not_run)}."
    return BatchFailedError(exc.message.rstrip() + state, cause=exc, result=result)


def _apply_atomic(conn: psycopg.Connection, migrations: Sequence[MigrationFile],
                  lock_timeout: str, statement_timeout: str | None, policy: LockRetryPolicy,
                  record: Record | None, before: Before | None, on_statement: OnStatement | None,
                  on_file: OnFile | None) -> BatchResult:
    blocked = [m for m in migrations if not m.transactional]
    if blocked:
        raise ConfigError(
            f"{blocked[0].path} cannot run inside the batch's one transaction (it holds "
            "statements such as CREATE INDEX CONCURRENTLY that refuse a transaction); nothing "
            "was applied.", path=str(blocked[0].path),
            hint="Apply without atomic (each file in its own transaction), or stop the batch "
                 "before that file.")
    started = time.perf_counter()
    attempt = _AtomicAttempt(conn, migrations, lock_timeout, statement_timeout, policy, record,
                             before, on_statement)
    try:
        per_file, attempts = with_lock_retry(attempt.run, policy)
    except LockRetry as last:
        k, m = attempt.failed_at
        err = LockTimeoutExhaustedError(
            f"{m.path}:{last.failure.line}: could not get the locks it needs within "
            f"lock_timeout {lock_timeout}, {policy.attempts} times; everything was rolled back "
            "each time and nothing was applied.", failure=last.failure, path=str(m.path),
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
            "xact_start) and let it finish; or allow a longer lock_timeout.")
        err.data.update(lock_timeout=lock_timeout, attempts=policy.attempts)
        raise _batch_failed(err, m, attempt.result(k, started), atomic=True) from None
    except MigrationFailedError as exc:
        k, m = attempt.failed_at
        raise _batch_failed(exc, m, attempt.result(k, started), atomic=True) from None
    total = time.perf_counter() - started
    files = tuple(FileResult(i, m.path, m.version or "", "applied", tuple(per_file[i]), attempts,
                             attempts - 1, 0.0, True) for i, m in enumerate(migrations))
    if files:  # one transaction: its time is the batch's; each file gets its statements' time
        files = tuple(replace(f, duration_s=sum(s.duration_ms for s in f.statements) / 1000)
                      for f in files)
    for f in files:
        if on_file:
            on_file(f)
    return BatchResult(files, True, total, attempts)


@dataclass
class _AtomicAttempt:
    conn: psycopg.Connection
    migrations: Sequence[MigrationFile]
    lock_timeout: str
    statement_timeout: str | None
    policy: LockRetryPolicy
    record: Record | None
    before: Before | None
    on_statement: OnStatement | None
    failed_at: tuple[int, MigrationFile] = field(init=False)
    per_file: list[list[StatementResult]] = field(default_factory=list)

    def run(self) -> list[list[StatementResult]]:
        """One attempt: every file in one transaction, history rows after each file's
        statements; LockRetry when the policy retries what stopped it."""
        import psycopg

        conn = self.conn
        self.per_file = [[StatementResult(s.index, s.line, s.summary, "not_run")
                          for s in m.statements] for m in self.migrations]
        current = 0
        try:
            with conn.transaction():
                set_timeouts(conn, self.lock_timeout, self.statement_timeout, local=True)
                for current, m in enumerate(self.migrations):
                    if current:
                        conn.execute("RESET ALL")  # the next file starts from the defaults
                        set_timeouts(conn, self.lock_timeout, self.statement_timeout, local=True)
                    if self.before:
                        self.before(conn, current, m)
                    for stmt, res in zip(m.statements, self.per_file[current], strict=True):
                        run_statement(conn, stmt, res)
                        # SET lock_timeout = 0 (a pg_dump header): dbsage's timeouts again
                        if _sets_session(stmt) or stmt.kind == "VariableSetStmt":
                            set_timeouts(conn, self.lock_timeout, self.statement_timeout,
                                         local=True)
                        if self.on_statement:
                            self.on_statement(current, res)
                    if self.record:
                        self.record(conn, current, m, self.per_file[current])
        except DbsageError:  # from a hook (the history guard): the transaction rolled back
            self.failed_at = (current, self.migrations[current])
            raise
        except psycopg.Error as exc:
            m = self.migrations[current]
            self.failed_at = (current, m)
            failed = next((r for r in self.per_file[current] if r.status == "failed"), None)
            stmt = m.statements[failed.index - 1] if failed else None
            failure = statement_failure(exc, stmt)
            if self.policy.retries(failure.sqlstate):
                raise LockRetry(failure, self.per_file) from None
            raise _migration_failed(m, failure, stmt, self.per_file[current]) from None
        if not conn.closed and conn.info.transaction_status == 0:
            conn.execute("RESET ALL")
        return self.per_file

    def result(self, failed: int, started: float) -> BatchResult:
        files = []
        for i, m in enumerate(self.migrations):
            stmts = tuple(self.per_file[i]) if i < len(self.per_file) else ()
            status = "failed" if i == failed else "rolled_back" if i < failed else "not_run"
            files.append(FileResult(i, m.path, m.version or "", status, stmts))
        return BatchResult(tuple(files), True, time.perf_counter() - started)


def _migration_failed(m: MigrationFile, failure: StatementFailure, stmt: Any,
                      results: list[StatementResult]) -> MigrationFailedError:
    err = MigrationFailedError(
        describe_failure(m.path, len(m.statements), failure, stmt), failure=failure,
        path=str(m.path), hint=failure_hint(failure, stmt), rolled_back=True)
    err.data["statements"] = [r.__dict__ for r in results]
    return err


# --------------------------------------------------------------------------- the dry-run


@dataclass(frozen=True)
class FileDryRun:
    """How one file went in the batch's dry-run."""

    path: Path
    version: str
    status: str  # "passed", "failed", "parsed_only" (cannot run in a transaction), "not_run"
    statements: tuple[StatementResult, ...]
    failure: StatementFailure | None = None
    message: str | None = None
    #: What it did not run because it acts on the database host, one sentence each.
    not_run_on_server: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchDryRun:
    """The batch's dry-run: one transaction, always rolled back."""

    files: tuple[FileDryRun, ...]
    duration_s: float
    attempts: int

    @property
    def passed(self) -> bool:
        return all(f.status in ("passed", "parsed_only") for f in self.files)

    @property
    def failed(self) -> FileDryRun | None:
        return next((f for f in self.files if f.status == "failed"), None)


def dry_run_batch(conn: psycopg.Connection, migrations: Sequence[MigrationFile], *,
                  lock_timeout: str = "1s", statement_timeout: str | None = None,
                  retry: LockRetryPolicy | None = None, log: bool = True,
                  after_file: Callable[[psycopg.Connection, int], None] | None = None
                  ) -> BatchDryRun:
    """Run every file in order in ONE transaction that is always rolled back; stop at the
    first failure. A file that cannot run in a transaction (CONCURRENTLY) is validated by
    parsing only. `log` writes each file's outcome to dbsage.dry_run_log (own transactions,
    after the rollback), as a single dry-run does. `after_file(conn, i)` is called inside the
    transaction after file i's statements passed (the batch's advisor lints look there; on a
    lock-timeout retry it is called again)."""
    from psycopg.pq import TransactionStatus

    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        raise ConfigError("A dry run needs an idle autocommit connection (it opens and rolls "
                          "back its own transaction).")
    policy = retry or LockRetryPolicy()
    started = time.perf_counter()
    attempt = _DryAttempt(conn, migrations, lock_timeout, statement_timeout, policy, after_file)
    try:
        files, attempts = with_lock_retry(attempt.run, policy)
    except LockRetry as last:
        files = list(last.outcome) if isinstance(last.outcome, list) else []
        attempts = policy.attempts
        files = [replace(f, failure=replace(f.failure, hint=(
            f"lock_timeout {lock_timeout} fired {policy.attempts} times: a long transaction "
            "holds the table; let it finish, or allow a longer lock_timeout.")))
            if f.failure else f for f in files]
    duration = time.perf_counter() - started
    if log:
        from dbsage.tools.history import record_dry_run

        for f, m in zip(files, migrations, strict=True):
            if f.status in ("passed", "failed"):
                record_dry_run(conn, m.version, str(m.path), m.checksum, f.status == "passed",
                               len(m.statements), f.message, duration * 1000 / len(files))
    return BatchDryRun(tuple(files), duration, attempts)


@dataclass
class _DryAttempt:
    conn: psycopg.Connection
    migrations: Sequence[MigrationFile]
    lock_timeout: str
    statement_timeout: str | None
    policy: LockRetryPolicy
    after_file: Callable[[psycopg.Connection, int], None] | None = None

    def run(self) -> list[FileDryRun]:
        import psycopg

        from dbsage.tools.analyze import STATUS_ACTS_ON_SERVER, dry_run_skips

        conn = self.conn
        out: list[FileDryRun] = []
        failure: StatementFailure | None = None
        try:
            with conn.transaction():
                set_timeouts(conn, self.lock_timeout, self.statement_timeout, local=True)
                for k, m in enumerate(self.migrations):
                    if failure is not None:
                        out.append(_dry(m, "not_run"))
                        continue
                    if k:
                        conn.execute("RESET ALL")
                        set_timeouts(conn, self.lock_timeout, self.statement_timeout,
                                     local=True)
                    results = [StatementResult(s.index, s.line, s.summary, "not_run")
                               for s in m.statements]
                    if not m.transactional:
                        for r in results:
                            r.status = STATUS_PARSED_ONLY
                        out.append(FileDryRun(m.path, m.version or "", "parsed_only",
                                              tuple(results)))
                        continue
                    failed = None
                    skips = dry_run_skips(m)  # acts on the host: never in a dry-run
                    for stmt, res in zip(m.statements, results, strict=True):
                        if stmt.index in skips:
                            res.status = STATUS_ACTS_ON_SERVER
                            continue
                        try:
                            run_statement(conn, stmt, res)
                            if _sets_session(stmt) or stmt.kind == "VariableSetStmt":
                                set_timeouts(conn, self.lock_timeout, self.statement_timeout,
                                             local=True)
                        except psycopg.Error as exc:
                            if conn.broken:
                                raise
                            failed = stmt
                            failure = statement_failure(exc, stmt)
                            failure = replace(failure, hint=failure_hint(failure, stmt))
                            break
                    skipped = tuple(f"{m.path.name} {a.not_run_message}"
                                    for a in skips.values())
                    if failed is None:
                        out.append(FileDryRun(m.path, m.version or "", "passed", tuple(results),
                                              not_run_on_server=skipped))
                        if self.after_file is not None:
                            self.after_file(conn, k)
                    else:
                        assert failure is not None
                        out.append(FileDryRun(
                            m.path, m.version or "", "failed", tuple(results), failure,
                            describe_failure(m.path, len(m.statements), failure, failed),
                            skipped))
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise ConnectionFailedError(f"The connection broke during the dry run: {exc}",
                                            hint="Nothing was committed. Check the server, "
                                                 "then retry.") from exc
            raise DbsageError(f"The dry run could not complete: {exc}",
                              hint="Nothing was committed.") from exc
        if not conn.closed and conn.info.transaction_status == 0:
            conn.execute("RESET ALL")
        if failure is not None and self.policy.retries(failure.sqlstate):
            raise LockRetry(failure, out)
        return out


def _dry(m: MigrationFile, status: str) -> FileDryRun:
    return FileDryRun(m.path, m.version or "", status,
                      tuple(StatementResult(s.index, s.line, s.summary, "not_run")
                            for s in m.statements))


def tables_without_rls(conn: psycopg.Connection, names: Sequence[str]
                       ) -> tuple[list[str], list[str]]:
    """Of `names` (as to_regclass reads them): the ordinary or partitioned tables, and those
    of them without row level security; one query."""
    rows = conn.execute(
        "SELECT t.name, c.relrowsecurity FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i) "
        "JOIN pg_class c ON c.oid = to_regclass(t.name) WHERE c.relkind IN ('r', 'p') "
        "ORDER BY t.i", (list(names),)).fetchall()
    return [r[0] for r in rows], [r[0] for r in rows if not r[1]]


# --------------------------------------------------------------------------- baseline, repair
#
# A baseline adopts a database that already holds what the migrations make (built by hand, by
# the dashboard, or with a history table that was lost): every pending file is replayed, in
# order, inside ONE transaction that is always rolled back, each statement in a savepoint of
# its own so that one that fails (`relation "todos" already exists`) is skipped. After each
# file the schema fingerprint (tools/catalog.py: relations, columns, constraints, indexes,
# policies, functions) is compared with the database's own: the files up to the last one
# after which replaying them changes nothing are contained in the database, and only those
# are recorded. Grants, comments and rows are not compared.

_DML_KINDS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "CopyStmt"})
_CONCURRENTLY = re.compile(r"\bconcurrently\b", re.IGNORECASE)


@dataclass(frozen=True)
class BaselineFile:
    """One pending file replayed over the existing schema."""

    path: Path
    version: str
    contained: bool  # replaying the files up to this one leaves the schema as it is
    skipped: tuple[str, ...]  # "line N: why", statements that failed on the existing schema
    changes_rows: bool  # it runs INSERT/UPDATE/DELETE: rows are not compared


@dataclass(frozen=True)
class BaselineProbe:
    """Which prefix of the pending files the database already holds."""

    files: tuple[BaselineFile, ...]
    fingerprint: str

    @property
    def contained(self) -> tuple[BaselineFile, ...]:
        """The files up to the last one after which the schema is unchanged."""
        last = max((i for i, f in enumerate(self.files) if f.contained), default=-1)
        return self.files[:last + 1]


def probe_baseline(conn: psycopg.Connection, migrations: Sequence[MigrationFile], *,
                   lock_timeout: str = "5s", statement_timeout: str | None = None
                   ) -> BaselineProbe:
    """Replay `migrations` over the database in one transaction that is rolled back; see the
    section comment. `conn` is autocommit and holds the migration lock."""
    import psycopg

    try:
        return _probe(conn, migrations, lock_timeout, statement_timeout)
    except psycopg.Error as exc:
        raise DbsageError(f"The baseline could not replay the migrations: {exc}; nothing was "
                          "recorded.", hint="The transaction was rolled back.") from exc


def _probe(conn: psycopg.Connection, migrations: Sequence[MigrationFile], lock_timeout: str,
           statement_timeout: str | None) -> BaselineProbe:
    import psycopg

    from dbsage.tools.catalog import schema_fingerprint

    original = schema_fingerprint(conn)
    files: list[BaselineFile] = []
    with conn.transaction(force_rollback=True):
        set_timeouts(conn, lock_timeout, statement_timeout, local=True)
        for k, m in enumerate(migrations):
            if k:
                conn.execute("RESET ALL")
                set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            skipped: list[str] = []
            for s in m.statements:
                text = s.sql
                if not s.transactional:
                    if s.kind != "IndexStmt" and s.kind != "DropStmt" and s.kind != "ReindexStmt":
                        skipped.append(f"line {s.line}: cannot run in a transaction; no schema "
                                       "effect to compare")
                        continue
                    text = _CONCURRENTLY.sub("", text, count=1)
                try:
                    with conn.transaction():  # a savepoint: a failure skips this statement
                        conn.execute(text.encode())
                except psycopg.Error as exc:
                    if conn.broken:
                        raise ConnectionFailedError(f"The connection broke during the "
                                                    f"baseline: {exc}") from exc
                    if LockRetryPolicy().retries(getattr(exc, "sqlstate", None)):
                        raise DbsageError(
                            f"{m.path}:{s.line}: could not get the locks it needs within "
                            f"lock_timeout {lock_timeout}; nothing was recorded.",
                            hint="A long transaction holds the table; let it finish.") from exc
                    skipped.append(f"line {s.line}: {statement_failure(exc, s).message}")
            files.append(BaselineFile(m.path, m.version or "",
                                      schema_fingerprint(conn) == original, tuple(skipped),
                                      any(s.kind in _DML_KINDS for s in m.statements)))
    if not conn.closed and conn.info.transaction_status == 0:
        conn.execute("RESET ALL")
    return BaselineProbe(tuple(files), original)


def record_as_applied(conn: psycopg.Connection, migrations: Sequence[MigrationFile], *, ts: str,
                      mode: str, event_status: str = "baseline") -> None:
    """Record `migrations` as applied, in one transaction: the Supabase history row (the
    file's statements split as the CLI splits them) and dbsage's log row (its checksum, so
    drift is caught later; `mode` says how it got there). Nothing of them is run."""
    from datetime import UTC, datetime

    from dbsage.tools.cli_split import statements_for_history
    from dbsage.tools.history import HistoryRecord, log_event, mark_applied

    now = datetime.now(UTC)
    with conn.transaction():
        mark_applied(conn, [(m.version or "", m.name, statements_for_history(m.text))
                            for m in migrations])
        for m in migrations:
            log_event(conn, HistoryRecord(
                ts=ts, version=m.version or "", name=m.name, path=str(m.path),
                checksum=m.checksum, mode=mode, started_at=now, duration_ms=0.0,
                rows_affected=0, statements=[s.sql for s in m.statements],
                snapshot_before=None, snapshot_after=None, diff_patch=None), event_status)


@dataclass(frozen=True)
class RepairResult:
    """What `repair_history` changed."""

    status: str  # "applied" or "reverted"
    versions: tuple[str, ...]
    files: tuple[Path, ...] = ()  # applied: the files whose statements were recorded
    removed: int = 0  # reverted: rows deleted


def repair_history(conn: psycopg.Connection, project_dir: Path, versions: Sequence[str],
                   status: str) -> RepairResult:
    """`supabase migration repair --status applied|reverted VERSION...`, with the CLI's
    semantics, in one transaction on a connection that holds the migration lock: applied
    upserts each version's row from its local file (`<version>_*.sql`, the first by name;
    statements split as the CLI splits them); reverted deletes the rows.

    Raises:
        ConfigError: a version has no local file (applied), or an unknown status.
    """
    from dbsage.tools.cli_split import statements_for_history
    from dbsage.tools.history import mark_applied, mark_reverted

    if status not in ("applied", "reverted"):
        raise ConfigError(f"Unknown repair status {status!r}: applied or reverted.")
    if status == "reverted":
        with conn.transaction():
            removed = mark_reverted(conn, list(versions))
        return RepairResult(status, tuple(versions), removed=removed)
    local = list_local_migrations(project_dir)
    rows: list[tuple[str, str, list[str]]] = []
    files: list[Path] = []
    for v in versions:
        found = next((m for m in local.files if m.version == v), None)
        if found is None:
            raise ConfigError(f"No file {MIGRATIONS_DIR}/{v}_*.sql: version {v} cannot be marked "
                              "applied; nothing was changed.", version=v)
        raw = found.path.read_bytes()
        try:
            text = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise full_read_error(found.path) from None
        rows.append((v, found.name, statements_for_history(text)))
        files.append(found.path)
    with conn.transaction():
        mark_applied(conn, rows)
    return RepairResult(status, tuple(versions), tuple(files))


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class MigrationStatus:
    """One version as `dbsage status` lists it."""

    version: str
    file: str | None  # the local file's name; None: applied, but no file (missing)
    state: str  # "applied", "drifted", "unverified", "pending", "out_of_order", "missing"
    entry: Any = None  # history.HistoryEntry when applied


@dataclass(frozen=True)
class RunLeft:
    """A run whose marker is still there: killed (its writer is dead) or still running, and
    what it committed."""

    ts: str
    task: str
    subject: str | None  # the file it applied, or what it rolled back
    pid: int
    alive: bool
    outcome: Any  # history.RunOutcome
    before_snapshot: str | None  # the before-snapshot it finished (relative path), if any
    outside_transaction: bool = False  # its file ran statement by statement


@dataclass(frozen=True)
class ProjectStatus:
    """supabase/migrations/ against the history, version by version, and who holds the
    migration lock now."""

    migrations: tuple[MigrationStatus, ...]
    local: LocalMigrations
    lock_holder: Any = None  # lock.LockHolder, when a migration is running now
    runs: tuple[RunLeft, ...] = ()  # runs killed (or still running) that left a marker
    scratch: tuple[str, ...] = ()  # dbsage_scratch_* databases an older dbsage left

    def names(self, *states: str) -> list[str]:
        return [m.file or m.version for m in self.migrations if m.state in states]


def project_status(conn: psycopg.Connection, project_dir: Path) -> ProjectStatus:
    """Every local file and every applied version, oldest first: applied (with the history's
    run TS, time, role, mode and duration), drifted (dbsage's checksum differs), unverified
    (the CLI's row: no checksum), pending, out of order (pending, older than the latest
    applied version), missing (applied, no file)."""
    from dbsage.tools.history import history_entries
    from dbsage.tools.lock import find_lock_holder

    local = list_local_migrations(project_dir)
    entries = {e.version: e for e in history_entries(conn)}
    plan = find_pending(local.files, entries)
    out_of_order = {m.path.name for m in plan.out_of_order}
    dupes = set(local.duplicates)
    rows: list[MigrationStatus] = []
    seen: set[str] = set()
    for m in local.files:
        if m.path.name in dupes:
            continue
        seen.add(m.version)
        e = entries.get(m.version)
        if e is None:
            state = "out_of_order" if m.path.name in out_of_order else "pending"
        elif e.checksum is None:
            state = "unverified"
        else:
            state = ("applied" if hashlib.sha256(m.path.read_bytes()).hexdigest() == e.checksum
                     else "drifted")
        rows.append(MigrationStatus(m.version, m.path.name, state, e))
    rows += [MigrationStatus(v, None, "missing", e) for v, e in entries.items() if v not in seen]
    rows.sort(key=lambda r: (r.version, r.file or ""))
    from dbsage.tools.catalog import scratch_databases

    return ProjectStatus(tuple(rows), local, find_lock_holder(conn), runs_left(conn, project_dir),
                         tuple(d.name for d in scratch_databases(conn)))


def runs_left(conn: psycopg.Connection, project_dir: Path) -> tuple[RunLeft, ...]:
    """The runs that left a marker in supabase/snapshots/ (tools/artifacts.py), with what each
    committed: a killed run's state, until the next run cleans up after it."""
    from dbsage.tools.artifacts import run_markers
    from dbsage.tools.history import run_outcomes

    snaps = project_dir / "supabase" / "snapshots"
    markers = run_markers(snaps)
    if not markers:
        return ()
    outcomes = run_outcomes(conn, [m.ts for m in markers])
    out = []
    for m in markers:
        before = snaps / f"{m.ts}_before.sql"
        kept = before.is_file() and before.stat().st_size > 0
        out.append(RunLeft(m.ts, m.task, m.file, m.pid, m.alive, outcomes[m.ts],
                           str(before.relative_to(project_dir)) if kept else None,
                           m.outside_transaction))
    return tuple(out)


def may_destroy_data(migration: MigrationFile) -> bool:
    """A statement of the file is one whose data tools/rollback.destructive_targets saves
    (DROP TABLE, ALTER TABLE ... DROP COLUMN / ALTER COLUMN TYPE, TRUNCATE, DELETE, UPDATE
    without WHERE), told from the node kinds alone: cheap, so that module is loaded only for
    the files that need it."""
    for s in migration.statements:
        node, kind = s.node, s.kind
        if kind in ("TruncateStmt", "DeleteStmt"):
            return True
        if kind == "UpdateStmt" and getattr(node, "whereClause", None) is None:
            return True
        if kind == "DropStmt" and str(getattr(node.removeType, "name", "")) == "OBJECT_TABLE":
            return True
        if kind == "AlterTableStmt" and any(
                str(getattr(c.subtype, "name", "")) in ("AT_DropColumn", "AT_AlterColumnType")
                for c in node.cmds or ()):
            return True
    return False
