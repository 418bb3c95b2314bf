"""Seed data: the SQL files `supabase db reset` loads after the migrations, run by dbsage in
ONE transaction.

Which files (`find_seed_files`): `[db.seed] sql_paths` of supabase/config.toml, globs relative to
`supabase/`, matched the way the Supabase CLI matches them (each pattern's matches sorted, the
patterns in their order, a file listed once, a pattern that matches nothing only noted); the
default is `./seed.sql`; `enabled = false` means none. Each file is read and parsed exactly as
a migration is (tools/sqlfile.read_migration: syntax errors with file:line:col, meta-commands
refused, an outer BEGIN/COMMIT stripped).

How (`run_seed`): every statement of every file in one transaction, on the caller's session
(which holds the migration advisory lock), with SET LOCAL lock_timeout/statement_timeout; a
lock timeout rolls everything back and retries the whole transaction (tools/execute.py's one
retry helper); any other error rolls everything back and names the file and line. Nothing is
recorded anywhere: a seed is not a migration (no supabase_migrations row, no dbsage row). The
transaction's id is returned, so a new session can tell that it committed
(`transaction_status`).
"""

from __future__ import annotations

import glob
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from dbsage.tools.errors import (
    ConfigError,
    LockTimeoutExhaustedError,
    MigrationFailedError,
    StatementFailure,
    TransactionShapeError,
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
from dbsage.tools.project import CONFIG_FILE, SUPABASE_DIR, ProjectConfig, read_project_config
from dbsage.tools.sqlfile import MigrationFile, Statement, read_migration

if TYPE_CHECKING:
    import psycopg

__all__ = ["SeedPlan", "SeedResult", "SeedSources", "find_seed_files", "load_seed",
           "run_seed", "transaction_status"]

OnStatement = Callable[[StatementResult], None]


@dataclass(frozen=True)
class SeedSources:
    """Which seed files a project has, before any is read."""

    enabled: bool
    config: Path | None  # supabase/config.toml, when the project has one
    patterns: tuple[str, ...]  # [db.seed] sql_paths as written (relative to supabase/)
    paths: tuple[Path, ...]  # the files they match, in run order
    unmatched: tuple[str, ...] = ()  # patterns that matched no file
    enabled_line: int | None = None  # the config line of `enabled = false`

    @property
    def origin(self) -> str:
        """Where the list comes from, for messages."""
        if self.config is None:
            return f"{SUPABASE_DIR / 'seed.sql'} (the default: no {CONFIG_FILE})"
        return f"{self.config} [db.seed] sql_paths = {list(self.patterns)}"


@dataclass(frozen=True)
class SeedPlan:
    """The parsed seed files, in run order."""

    sources: SeedSources
    files: tuple[MigrationFile, ...]

    @property
    def statements(self) -> tuple[tuple[MigrationFile, Statement], ...]:
        """Every statement with its file, in the order they run (one transaction)."""
        return tuple((f, s) for f in self.files for s in f.statements)


@dataclass(frozen=True)
class SeedResult:
    """A committed seed."""

    statements: tuple[StatementResult, ...]  # `index` counts across all files, from 1
    attempts: int
    duration_s: float
    xid: str  # the committed transaction's id (pg_current_xact_id)

    @property
    def rows_affected(self) -> int:
        return sum(s.rows_affected for s in self.statements)

    @property
    def lock_timeouts(self) -> int:
        return self.attempts - 1


def find_seed_files(project_dir: Path, config: ProjectConfig | None = None) -> SeedSources:
    """The seed files `[db.seed]` names (see the module docstring); reads only the config.

    Paths are relative when `project_dir` is the working directory (as messages show them).

    Raises:
        ConfigError: supabase/config.toml is unreadable, not TOML, or has a key of the wrong
            type; or a glob pattern is malformed.
    """
    config = config if config is not None else read_project_config(project_dir)
    seed = config.seed
    config_path = _shown(project_dir, CONFIG_FILE) if config.path is not None else None
    if not seed.enabled:
        return SeedSources(False, config_path, seed.sql_paths, (),
                           enabled_line=config.line_of("db.seed", "enabled"))
    root = project_dir / SUPABASE_DIR
    seen: set[str] = set()
    paths: list[Path] = []
    unmatched: list[str] = []
    for pattern in seed.sql_paths:
        cleaned = posixpath.normpath(pattern.replace("\\", "/"))
        matches = sorted(glob.glob(cleaned, root_dir=root, include_hidden=True))
        if not matches:
            unmatched.append(pattern)
        for match in matches:
            key = posixpath.normpath(match)
            if key not in seen:
                seen.add(key)
                paths.append(_shown(project_dir, SUPABASE_DIR / key))
    return SeedSources(True, config_path, seed.sql_paths, tuple(paths), tuple(unmatched))


def _shown(project_dir: Path, relative: Path) -> Path:
    """`relative` under the project: as is when the project is the working directory."""
    if relative.is_absolute():
        return relative
    if project_dir.resolve() == Path.cwd().resolve():
        return relative
    return project_dir / relative


def load_seed(project_dir: Path, config: ProjectConfig | None = None) -> SeedPlan:
    """Find and parse every seed file; nothing touches the database.

    Raises:
        ConfigError: seeding is disabled (`[db.seed] enabled = false`), or no file matched; or
            the config cannot be used (find_seed_files).
        MigrationFileError: a seed file cannot be read or parsed (file:line:col).
        TransactionShapeError: a seed file holds a statement that cannot run inside a
            transaction (every seed runs in one).
    """
    sources = find_seed_files(project_dir, config)
    if not sources.enabled:
        where = f"{sources.config}:{sources.enabled_line}" if sources.enabled_line else \
            str(sources.config)
        raise ConfigError(f"Seeding is disabled: {where} sets [db.seed] enabled = false.",
                          path=str(sources.config), line=sources.enabled_line,
                          hint="Set enabled = true under [db.seed] to load the seed files.")
    if not sources.paths:
        raise ConfigError(
            f"No seed file to run: {sources.origin} matches no file.",
            path=str(sources.config or SUPABASE_DIR / "seed.sql"),
            hint=f"Write {SUPABASE_DIR / 'seed.sql'}, or list the seed files (globs relative to "
                 f"{SUPABASE_DIR}/) under [db.seed] sql_paths in {CONFIG_FILE}.")
    files = tuple(read_migration(p) for p in sources.paths)
    for f in files:
        outside = next((s for s in f.statements if not s.transactional), None)
        if outside is not None:
            raise TransactionShapeError(
                f"{f.path}:{outside.line}: {outside.summary} cannot run inside a transaction, "
                "and every seed file runs in one. Nothing was run.",
                path=str(f.path), line=outside.line,
                hint="Seeds load data: move the statement into a migration of its own.")
    return SeedPlan(sources, files)


def run_seed(conn: psycopg.Connection, plan: SeedPlan, *, lock_timeout: str = "1s",
             statement_timeout: str | None = None, retry: LockRetryPolicy | None = None,
             on_statement: OnStatement | None = None) -> SeedResult:
    """Run every statement of every seed file in one transaction on an autocommit session.

    A lock timeout rolls everything back and retries with backoff (`retry`); `on_statement`
    hears of each statement that finished.

    Raises:
        MigrationFailedError: a statement failed; everything was rolled back. `path` and
            `line` name the seed file and its line; data["statements"] holds every
            statement's result (global index).
        LockTimeoutExhaustedError: the locks could not be had within lock_timeout, on every
            attempt.
    """
    policy = retry or LockRetryPolicy()
    started = time.perf_counter()
    try:
        (results, xid), attempts = with_lock_retry(
            lambda: _attempt(conn, plan, lock_timeout, statement_timeout, policy, on_statement),
            policy)
    except LockRetry as last:
        results = cast(list[StatementResult], last.outcome)
        failed = _located(plan, results)
        path = failed[0].path if failed else plan.files[0].path
        err = LockTimeoutExhaustedError(
            f"{path}:{last.failure.line}: could not get the locks it needs within lock_timeout "
            f"{lock_timeout}, {policy.attempts} times; everything was rolled back each time "
            "and nothing was seeded.",
            failure=last.failure, path=str(path),
            hint="A long transaction holds the table. Find it in pg_stat_activity (state, "
                 "xact_start) and let it finish; or allow a longer lock_timeout.")
        err.data.update(statements=[r.__dict__ for r in results], lock_timeout=lock_timeout,
                        attempts=policy.attempts)
        raise err from None
    return SeedResult(tuple(results), attempts, time.perf_counter() - started, xid)


def _located(plan: SeedPlan, results: list[StatementResult]
             ) -> tuple[MigrationFile, Statement] | None:
    """The file and statement of the result marked failed, if any."""
    failed = next((r for r in results if r.status == "failed"), None)
    return plan.statements[failed.index - 1] if failed else None


def _attempt(conn: psycopg.Connection, plan: SeedPlan, lock_timeout: str,
             statement_timeout: str | None, policy: LockRetryPolicy,
             on_statement: OnStatement | None) -> tuple[list[StatementResult], str]:
    import psycopg

    pairs = plan.statements
    results = [StatementResult(i, s.line, s.summary, "not_run")
               for i, (_, s) in enumerate(pairs, 1)]
    try:
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            for (_, stmt), res in zip(pairs, results, strict=True):
                run_statement(conn, stmt, res)
                if on_statement:
                    on_statement(res)
            xid = _current_xid(conn)
    except psycopg.Error as exc:
        located = _located(plan, results)
        stmt = located[1] if located else None
        failure = statement_failure(exc, stmt)
        if policy.retries(failure.sqlstate):
            raise LockRetry(failure, results) from None
        raise _failed(plan, located, failure, results) from None
    return results, xid


def _failed(plan: SeedPlan, located: tuple[MigrationFile, Statement] | None,
            failure: StatementFailure, results: list[StatementResult]) -> MigrationFailedError:
    file, stmt = located if located else (plan.files[0], None)
    err = MigrationFailedError(
        describe_failure(file.path, len(file.statements), failure, stmt)
        + " Every seed file was rolled back: nothing was seeded.",
        failure=failure, path=str(file.path), hint=failure_hint(failure, stmt))
    err.data["statements"] = [r.__dict__ for r in results]
    return err


def _current_xid(conn: psycopg.Connection) -> str:
    """This transaction's id (assigning one if it wrote nothing), as text."""
    modern = conn.info.server_version >= 130000
    row = conn.execute("SELECT pg_current_xact_id()::text" if modern
                       else "SELECT txid_current()::text").fetchone()
    assert row is not None
    return str(row[0])


def transaction_status(url: str, xid: str) -> str | None:
    """'committed', 'aborted' or 'in progress' for a transaction id, as a NEW session on
    `url` sees it (None: too old to tell). Opens and closes its own session."""
    from dbsage.tools.connection import connect

    with connect(url, autocommit=True, attempts=1) as other:
        modern = other.info.server_version >= 130000
        row = other.execute("SELECT pg_xact_status(%s::xid8)" if modern
                            else "SELECT txid_status(%s::bigint)", (xid,)).fetchone()
    return str(row[0]) if row and row[0] is not None else None
