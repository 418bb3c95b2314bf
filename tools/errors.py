"""The one error tree of dbsage. Each error carries a user-facing message, a hint and an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The process exit codes of dbsage (README: "Exit codes")."""

    OK = 0
    FAILED = 1  # a statement, dry-run or check failed (a failed apply is rolled back)
    USAGE = 2  # bad input, flags, configuration or connection
    LOCK_BUSY = 3  # another migration is running
    ALREADY_APPLIED = 4
    DRIFT = 5  # an applied migration's file changed
    REFUSED = 6  # a pre-condition or a checkpoint answer stopped the run
    COMMITTED_BUT_CHECKS_FAILED = 7  # committed, but a post-condition or acceptance criterion failed
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM


# What each exit code means, one situation each: the README's table is generated from this
# (exit_code_table) and a test keeps the two equal.
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success; for `smoke-test`, `rls-audit` and `status`: nothing wrong found",
    ExitCode.FAILED: "a statement failed, in the apply or in a dry-run (also the one apply runs "
                     "first), or the lock timeout kept firing: everything was rolled back; or "
                     "a check found a problem (`smoke-test`, `rls-audit`, `status`)",
    ExitCode.USAGE: "bad input, found before anything changed: a flag or value, a file that "
                    "cannot be read or parsed, the configuration, an `--answers` file, a "
                    "connection string; or the database cannot be reached",
    ExitCode.LOCK_BUSY: "another migration is running (it holds the migration lock)",
    ExitCode.ALREADY_APPLIED: "the migration's version is already applied",
    ExitCode.DRIFT: "an applied migration's file changed since it was applied",
    ExitCode.REFUSED: "stopped before anything changed: a checkpoint answered no, a rule or a "
                      "pre-condition refused (e.g. destructive without `--allow-destructive`)",
    ExitCode.COMMITTED_BUT_CHECKS_FAILED: "committed, but a post-condition or acceptance "
                                          "criterion failed (undo it with `dbsage rollback TS`)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C: the open transaction is rolled back, the lock "
                          "released, and the report says what, if anything, was committed",
    ExitCode.TERMINATED: "stopped by SIGTERM, exactly as by Ctrl-C",
}


def exit_code_table() -> str:
    """The README's exit-code table (Markdown), one row per ExitCode."""
    rows = ["| code | name | meaning |", "|---:|---|---|"]
    rows += [f"| {c.value} | `{c.name}` | {EXIT_CODE_MEANINGS[c]} |" for c in ExitCode]
    return "\n".join(rows)


class DbsageError(Exception):
    """Base of every error dbsage reports to a user."""

    exit_code: int = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the error."""
        out: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        out.update({k: v for k, v in self.data.items() if v is not None})
        return out


class ConfigError(DbsageError):
    """Bad flags, environment or settings."""

    exit_code = ExitCode.USAGE


class ConnectionFailedError(DbsageError):
    """The database could not be reached after the retries."""

    exit_code = ExitCode.USAGE


class PoolerError(ConfigError):
    """The target is a transaction pooler, which breaks session advisory locks."""


class MigrationFileError(DbsageError):
    """The migration file cannot be used: missing, empty, not UTF-8, syntax error, psql meta-command."""

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str,
        line: int | None = None,
        column: int | None = None,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, path=path, line=line, column=column,
                         source_line=source_line)
        self.path = path
        self.line = line
        self.column = column
        self.source_line = source_line


class TransactionShapeError(MigrationFileError):
    """COMMIT/ROLLBACK in the middle, or transactional mixed with non-transactional statements."""


class LockBusyError(DbsageError):
    """Another session holds the migration advisory lock."""

    exit_code = ExitCode.LOCK_BUSY


class AlreadyAppliedError(DbsageError):
    """The migration's version is already recorded as applied."""

    exit_code = ExitCode.ALREADY_APPLIED


class DriftError(DbsageError):
    """An applied migration's file changed since it was applied."""

    exit_code = ExitCode.DRIFT


class SnapshotError(DbsageError):
    """pg_dump failed or is missing."""


class BinaryNotFoundError(DbsageError):
    """A program dbsage runs (psql, the bundled PostgreSQL, ...) cannot be found."""


class LintUnavailableError(BinaryNotFoundError):
    """The squawk binary (from the squawk-cli wheel) cannot be found or started."""

    exit_code = ExitCode.USAGE


@dataclass
class StatementFailure:
    """What PostgreSQL said about the statement that failed."""

    line: int
    sqlstate: str | None
    message: str
    detail: str | None = None
    hint: str | None = None
    statement: str = ""
    index: int = 0


class MigrationFailedError(DbsageError):
    """A statement failed; the transaction was rolled back."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, failure: StatementFailure, path: str,
                 hint: str | None = None, rolled_back: bool = True) -> None:
        super().__init__(message, hint=hint or failure.hint, path=path, line=failure.line,
                         sqlstate=failure.sqlstate, detail=failure.detail,
                         rolled_back=rolled_back)
        self.failure = failure
        self.path = path
        self.rolled_back = rolled_back


class DryRunFailedError(DbsageError):
    """A dry-run (pre-flight's, of a whole batch) failed: rolled back, nothing was applied."""

    exit_code = ExitCode.FAILED


class LockTimeoutExhaustedError(MigrationFailedError):
    """lock_timeout kept firing: every retry was rolled back."""


class RunInterrupted(DbsageError):
    """The run was stopped by Ctrl-C or SIGTERM; what was committed is said in the report."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that a run stops the same clean way."""
