"""What one run knows: the user's options and the typed state the steps build up.

The report (agent/report.py) is made from this state once, at the end (`build_report`); no
step, check or checkpoint ever reads the report back to decide anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dbsage.agent.report import RunReport

if TYPE_CHECKING:
    import psycopg

    from dbsage.agent.definitions import TaskSpec
    from dbsage.agent.modes import Asker, ModePolicy
    from dbsage.tools.analyze import LintFinding, MigrationAnalysis
    from dbsage.tools.apply import ApplyResult, LockRetryPolicy
    from dbsage.tools.batch import BatchDryRun, BatchResult, PendingPlan
    from dbsage.tools.connection import Target
    from dbsage.tools.dryrun import DryRunResult
    from dbsage.tools.history import CliSplit
    from dbsage.tools.localfiles import LocalFile, LocalMigrations
    from dbsage.tools.rollback import DataTarget, ReverseScript, SavedData
    from dbsage.tools.smoke import SmokeReport
    from dbsage.tools.snapshot import EarlySnapshot
    from dbsage.tools.sqlfile import MigrationFile

SNAPSHOT_DIR = Path("supabase") / "snapshots"
PLAN_DIR = Path("supabase") / "plans"
ROLLBACK_DIR = Path("supabase") / "rollback"

Status = Literal["pending", "applied", "failed", "refused", "passed", "planned", "prepared",
                 "rolled_back"]


@dataclass
class RunOptions:
    """What the user asked for, from flags or the chat."""

    mode: str = "interactive"
    db: str | None = None
    # "auto": half the server's deadlock_timeout (at most 1s), so that in a deadlock the
    # migration, not the application, is the one that yields (resources.ensure_connected).
    lock_timeout: str = "auto"
    statement_timeout: str | None = None
    lock_retry: LockRetryPolicy | None = None  # None: the task definition's policy
    project_dir: Path = field(default_factory=Path.cwd)
    asker: Asker | None = None  # None: ask on the console
    flags: dict[str, bool] = field(default_factory=dict)  # allow_destructive, force, ...
    exposed_schemas: tuple[str, ...] = ("public",)
    version: str | None = None  # --version: the version a file the CLI's rule skips is applied as
    # Called once while the run waits for work left running (the after-snapshot): the CLI
    # loads its renderer then instead of after the run.
    while_waiting: Callable[[], None] | None = None
    to_version: str | None = None  # `up --to V`: the batch stops after version V


@dataclass(frozen=True)
class RunPaths:
    """Every file of one run's TS, named once."""

    ts: str
    before: Path
    after: Path
    diff: Path
    data: Path
    decisions: Path
    rollback: Path

    @classmethod
    def of(cls, project_dir: Path, ts: str) -> RunPaths:
        snaps = project_dir / SNAPSHOT_DIR
        return cls(ts, snaps / f"{ts}_before.sql", snaps / f"{ts}_after.sql",
                   snaps / f"{ts}_diff.patch", snaps / f"{ts}_data",
                   snaps / f"{ts}_decisions.json",
                   project_dir / ROLLBACK_DIR / f"{ts}_rollback.sql")


@dataclass
class StatementOutcome:
    """How one statement of the file (or of a reverse script) went, as far as it got."""

    index: int
    line: int
    sql: str
    transactional: bool = True
    status: str = "not_run"  # "ok", "failed", "interrupted", "not_run"
    rows_affected: int = 0
    duration_ms: float = 0.0
    locks: list[str] | None = None  # dry-run: the locks it took

    def record(self, status: str, rows_affected: int, duration_ms: float) -> None:
        self.status, self.rows_affected = status, rows_affected
        self.duration_ms = round(duration_ms, 3)


@dataclass(frozen=True)
class RollbackPlan:
    """The apply run a rollback undoes, and how."""

    applied_ts: str
    version: str
    name: str
    path: str
    script: ReverseScript
    source: str
    saved: list[SavedData]


@dataclass
class Pending:
    """Work a step left running: `finish` waits for it, `cancel` stops it."""

    step: str
    finish: Callable[[], None]
    cancel: Callable[[], None] = lambda: None


@dataclass
class BatchFile:
    """One pending migration of an `up` batch: the parsed file, its analysis, and how it went."""

    local: LocalFile
    migration: MigrationFile | None = None
    analysis: MigrationAnalysis | None = None
    lint: list[LintFinding] = field(default_factory=list)
    data_targets: list[DataTarget] = field(default_factory=list)
    saved_data: list[SavedData] = field(default_factory=list)
    first_statement: int = 0  # where its statements start in RunState.statements
    cli_split: CliSplit | None = field(default=None, repr=False)  # made before the lock
    # "pending", then "applied", "failed", "rolled_back" (atomic), "not_run"; dry-run:
    # "passed", "failed", "parsed_only", "not_run"
    status: str = "pending"
    duration_ms: float = 0.0
    attempts: int = 0
    rows_affected: int = 0
    message: str | None = None
    # what tools/rollback.py captured in its transaction, and the rollback plan it kept
    capture: Any = field(default=None, repr=False)
    rollback_plan: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.local.migration.path.name

    @property
    def version(self) -> str:
        return self.local.migration.version


@dataclass
class BatchRun:
    """What an `up` run knows of the project's migrations (agent/batch.py fills it in)."""

    local: LocalMigrations
    files: list[LocalFile]  # read and syntax-checked: every candidate file (up to --to)
    plan: PendingPlan | None = None  # set once the history is read
    pending: list[BatchFile] = field(default_factory=list)
    applied_checksums: dict[str, str | None] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    result: BatchResult | None = None
    dry_run: BatchDryRun | None = None


@dataclass
class RunState:
    """The state one run builds up, step by step (typed: no field is read as Any)."""

    task: str
    options: RunOptions
    policy: ModePolicy
    definition: TaskSpec
    inputs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the report's task name when it differs (plan, rollback-plan)
    path: Path | None = None
    # resources, made on first use (agent/resources.py)
    migration: MigrationFile | None = None
    analysis: MigrationAnalysis | None = None
    lint: list[LintFinding] | None = None
    target: Target | None = None
    conn: psycopg.Connection | None = None
    server_major: int = 0
    server_version: str = ""
    lock_held: bool = False
    paths: RunPaths | None = None
    run_marker: Path | None = None  # says "run TS in progress" until the run ends (or is killed)
    # what the steps found and did
    status: Status = "pending"
    version: str | None = None
    name: str | None = None
    statements: list[StatementOutcome] = field(default_factory=list)
    apply_result: ApplyResult | None = None
    dry_run: DryRunResult | None = None
    plan: dict[str, Any] | None = None
    fingerprint_before: str | None = None
    rollback: RollbackPlan | None = None
    smoke: SmokeReport | None = None
    early_wanted: bool = False  # start the before-snapshot as soon as the target is known
    session_lock: bool = True  # the task holds the migration lock: no transaction pooler
    early_snapshot: EarlySnapshot | None = None
    # the kept early snapshot, still being written while the migration runs; its file is
    # moved into place before the commit (steps.take_snapshot_before / apply_migration)
    before_dump: EarlySnapshot | None = None
    # Work a step left running (the after-snapshot's pg_dump) and the steps waiting for it:
    # joined, in order, once the post-conditions and acceptance criteria have run.
    pending: list[Pending] = field(default_factory=list)
    step_note: str | None = None  # a step's one-line remark for the report's step entry
    data_targets: list[DataTarget] = field(default_factory=list)  # what the migration destroys
    saved_data: list[SavedData] = field(default_factory=list)  # and what was saved of it
    batch: BatchRun | None = None  # `up`: the batch of pending migrations (agent/batch.py)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # what the report shows (written by steps, read only by build_report)
    files: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    records_affected: int = 0
    apply_time: float = 0.0
    attempts: int = 0
    execution_time: float = 0.0
    changes: list[dict[str, Any]] = field(default_factory=list)
    ddl: str = ""
    smoke_out: dict[str, Any] | None = None
    success_text: str = ""
    next_steps: list[tuple[str, str]] = field(default_factory=list)
    follow_up: str | None = None
    follow_up_result: dict[str, Any] | None = None
    menu: dict[str, Any] | None = None  # the post-run menu, asked after the report is shown
    details: dict[str, Any] | None = None  # the report's `details` sections (steps fill them)
    error: dict[str, Any] | None = None
    exit_code: int = 0

    @property
    def ts(self) -> str | None:
        return self.paths.ts if self.paths else None

    @property
    def target_label(self) -> str | None:
        """The target as shown to people (password redacted)."""
        return self.target.redacted if self.target else None

    @property
    def committed(self) -> bool:
        """The run's change is committed (a later step may still fail)."""
        return self.status in ("applied", "rolled_back")

    def rel(self, p: Path) -> str:
        """A path as the user sees it: relative to the project when inside it."""
        try:
            return str(p.relative_to(self.options.project_dir))
        except ValueError:
            return str(p)

    def ran_sql(self) -> bool:
        return any(s.status != "not_run" for s in self.statements)


def _mode_of(state: RunState) -> str | None:
    """The run's mode, or None when its task asks nothing in any mode (smoke-test, rls-audit):
    a report must not say `mode: yolo` about a run that had no mode to be in."""
    d = state.definition
    asks = d.checkpoints or any(i.override for i in d.checklist_items)
    return state.options.mode if asks else None


def build_report(state: RunState) -> RunReport:
    """The run's report, made from its state once the run is over."""
    return RunReport(
        task=state.label or state.task, status=state.status, mode=_mode_of(state),
        ts=state.ts, path=str(state.path) if state.path else None, version=state.version,
        name=state.name, target=state.target_label, server_version=state.server_version or None,
        statements=[_statement_dict(s) for s in state.statements],
        records_affected=state.records_affected, execution_time=state.execution_time,
        apply_time=state.apply_time, attempts=state.attempts, files=dict(state.files),
        notices=list(state.notices), warnings=[*_file_warnings(state), *state.warnings],
        steps=list(state.steps),
        checks=list(state.checks), decisions=state.policy.decisions_json(),
        prompts=state.policy.prompts, changes=list(state.changes), ddl=state.ddl,
        smoke=state.smoke_out, success_text=state.success_text,
        next_steps=list(state.next_steps), follow_up=state.follow_up,
        follow_up_result=state.follow_up_result, menu=state.menu, details=state.details,
        error=state.error,
        exit_code=state.exit_code, batch=_batch_dicts(state))


def _file_warnings(state: RunState) -> list[str]:
    """What the file's own SET/set_config lines change (pg_dump's header named as such) and
    what it does on the database host, each with its line: plan, dry-run and apply say so."""
    if state.migration is not None:
        files = [(state.migration, state.analysis)]
    else:
        files = [(f.migration, f.analysis) for f in (state.batch.pending if state.batch else ())
                 if f.migration]
    if not files:
        return []
    from dbsage.tools.analyze import file_warnings

    return [f"{m.path.name} {w}" for m, a in files for w in file_warnings(m, a)]


def _statement_dict(s: StatementOutcome) -> dict[str, Any]:
    # Spelled out rather than dataclasses.asdict, which deep-copies every field: a report of a
    # 10,000-statement file spent over a second there.
    d: dict[str, Any] = {"index": s.index, "line": s.line, "sql": s.sql,
                         "transactional": s.transactional, "status": s.status,
                         "rows_affected": s.rows_affected, "duration_ms": s.duration_ms}
    if s.locks is not None:
        d["locks"] = list(s.locks)
    return d


def _batch_dicts(state: RunState) -> list[dict[str, Any]] | None:
    """`up`: one entry per pending file, in order (None for a run that is not a batch)."""
    if state.batch is None:
        return None
    return [{"version": f.version, "name": f.local.migration.name, "file": f.name,
             "path": state.rel(f.local.migration.path), "status": f.status,
             "statements": len(f.migration.statements) if f.migration else 0,
             "rows_affected": f.rows_affected, "duration_ms": round(f.duration_ms, 3),
             "attempts": f.attempts,
             "transactional": bool(f.migration and f.migration.transactional),
             "saved_rows": sum(x.rows for x in f.saved_data), "message": f.message}
            for f in state.batch.pending]
