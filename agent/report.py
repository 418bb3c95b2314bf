"""The result of one task run, as the renderers and --json see it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class RunReport:
    """Everything a run did: statements, files, warnings, and the error if it failed."""

    task: str
    status: str = "pending"  # "applied", "failed", "refused"
    mode: str | None = "interactive"  # None: the task asks nothing (smoke-test, rls-audit)
    ts: str | None = None
    path: str | None = None
    version: str | None = None
    name: str | None = None
    target: str | None = None  # always redacted
    server_version: str | None = None
    statements: list[dict[str, Any]] = field(default_factory=list)
    records_affected: int = 0
    execution_time: float = 0.0  # seconds, whole run
    apply_time: float = 0.0  # seconds inside the migration transaction(s)
    attempts: int = 0
    files: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    prompts: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)  # dry-run: schema changes
    ddl: str = ""  # dry-run: the change as one DDL script
    smoke: dict[str, Any] | None = None  # smoke-test: checks and user tests
    success_text: str = ""  # the definition's success_output, filled in
    next_steps: list[tuple[str, str]] = field(default_factory=list)  # (command, description)
    follow_up: str | None = None
    follow_up_result: dict[str, Any] | None = None
    # the post-run menu a person is asked after the report (question, explanation, default,
    # options with their commands); None when it was answered in the run or not offered
    menu: dict[str, Any] | None = None
    # what a read-only task found, or a dry-run's advisor delta, JSON-ready by section
    # ("rls", "lints", "access", "advisors", "hotpaths")
    details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    exit_code: int = 0
    batch: list[dict[str, Any]] | None = None  # `up`: each pending file, in order, and its outcome

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the --json output). Every field already holds JSON-ready values
        (str, numbers, lists and dicts of them), so this is the fields, not a deep copy:
        dataclasses.asdict copied every cell of a 1,000-table audit (~60 ms)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
