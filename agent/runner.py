"""Entry points: one function per task run, over the engine and the shipped definitions.

`run_named(task, options, **inputs)` loads the task's definition, makes its RunState, runs
the engine with the real registries (steps, checks, checkpoint actions, phases) and returns
the report built from the final state. It never raises DbsageError: the report carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbsage.agent.engine import Registries, run_checklist, run_task
from dbsage.agent.report import RunReport
from dbsage.agent.resources import end_run_marker
from dbsage.agent.state import RunOptions, RunState, build_report
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    from dbsage.agent.definitions import TaskSpec

__all__ = ["RunOptions", "RunState", "known_checks", "load_definition", "new_state",
           "prepare_rollback_only", "registries", "run_apply", "run_dry_run_task", "run_named",
           "run_plan", "run_rollback_task", "run_smoke_task"]


def known_checks() -> frozenset[str]:
    from dbsage.agent.checklists import CHECKS

    return frozenset(CHECKS)


def known_names() -> dict[str, frozenset[str]]:
    """Every registry a task definition may name, by what it names."""
    from dbsage.agent.checkpoints import ACTIONS, DETAILS, FOLLOW_UPS, TEMPLATE_VARIABLES
    from dbsage.agent.steps import STEPS

    return {"checks": known_checks(), "steps": frozenset(STEPS),
            "actions": frozenset(ACTIONS), "details": frozenset(DETAILS),
            "follow_ups": frozenset(FOLLOW_UPS), "phases": frozenset(PHASES),
            "template_variables": TEMPLATE_VARIABLES}


def load_definition(task: str) -> TaskSpec:
    """A shipped task definition, validated once per content (agent/definitions.py)."""
    from dbsage.agent.specs import load_spec

    return load_spec(task, known_names())


def _preflight(state: RunState) -> None:
    from dbsage.agent.preflight import preflight_phase

    preflight_phase(state)


def _preflight_batch(state: RunState) -> None:
    from dbsage.agent.preflight import preflight_batch_phase

    preflight_batch_phase(state)


PHASES = {"plan_and_ask": _preflight, "plan_batch_and_ask": _preflight_batch}


def _finish(state: RunState) -> None:
    """The success text and next steps, filled in; the decision log next to the snapshots."""
    from dbsage.agent.checkpoints import fill, template_values

    d = state.definition
    if state.exit_code == 0 and state.error is None:
        values = template_values(state)
        state.success_text = fill(d.success_output, values)
        state.next_steps = [(fill(n.command, values), n.description) for n in d.next_steps]
    if state.paths is not None:
        from dbsage.tools.artifacts import write_json

        write_json(state.paths.decisions, {"ts": state.paths.ts, "mode": state.policy.name,
                                           "decisions": state.policy.decisions_json()})
        state.files["decisions"] = state.rel(state.paths.decisions)
    end_run_marker(state)


def _cleanup(state: RunState) -> None:
    from dbsage.agent.resources import discard_early_snapshot

    discard_early_snapshot(state)


def _interrupted(state: RunState) -> DbsageError | None:
    from dbsage.agent.batch import interrupted

    return interrupted(state)


def _error_kind(exc: DbsageError) -> str | None:
    """The `error_handling.errors` kind an error is (the most specific class first)."""
    from dbsage.tools import errors as e

    kinds: tuple[tuple[type[DbsageError], str], ...] = (
        (e.LockTimeoutExhaustedError, "lock_timeout"),
        (e.MigrationFailedError, "transaction_rollback"),
        (e.ConnectionFailedError, "connection_failed"), (e.LockBusyError, "lock_busy"),
        (e.MigrationFileError, "query_syntax_error"), (e.SnapshotError, "snapshot_failed"))
    return next((kind for cls, kind in kinds if isinstance(exc, cls)), None)


def registries() -> Registries:
    """The real registries."""
    from dbsage.agent.checklists import command_hint, run_check
    from dbsage.agent.checkpoints import run_checkpoints
    from dbsage.agent.steps import STEPS

    return Registries(steps=STEPS, run_check=run_check, checkpoints=run_checkpoints,
                      phases=PHASES, finish=_finish, cleanup=_cleanup, error_kind=_error_kind,
                      hint_for=command_hint,
                      interrupted=_interrupted)


def new_state(task: str, options: RunOptions, **inputs: Any) -> RunState:
    """A RunState for one run of `task` in the options' mode."""
    from dbsage.agent.modes import ConsoleAsker, make_policy

    asker = options.asker or ConsoleAsker()
    if isinstance(asker, ConsoleAsker):  # the live progress line stops while it asks
        from dbsage.agent.progress import PausingAsker

        asker = PausingAsker(asker)
    policy = make_policy(options.mode, asker, options.flags)
    state = RunState(task, options, policy, load_definition(task), inputs=dict(inputs))
    path = inputs.get("path")
    if path is not None:
        state.path = Path(path)
    return state


def _refused(task: str, exc: DbsageError, path: Any = None, mode: str = "") -> RunReport:
    report = RunReport(task=task, mode=mode or "interactive", path=str(path or "") or None)
    report.status, report.error, report.exit_code = "refused", exc.to_dict(), exc.exit_code
    return report


def run_named(task: str, options: RunOptions | None = None, **inputs: Any) -> RunReport:
    """Run a shipped task; never raises DbsageError (the report carries it)."""
    opts = options or RunOptions()
    try:
        state = new_state(task, opts, **inputs)
    except DbsageError as exc:
        return _refused(task, exc, inputs.get("path"), opts.mode)
    run_task(registries(), state)
    return build_report(state)


def run_apply(path: str | Path, options: RunOptions | None = None) -> RunReport:
    """Apply one migration file safely."""
    return run_named("apply-migration", options, path=path)


def run_dry_run_task(path: str | Path, options: RunOptions | None = None) -> RunReport:
    """Dry-run one migration file: everything apply does, then roll back."""
    return run_named("dry-run", options, path=path)


def run_rollback_task(migration: str, options: RunOptions | None = None,
                      to: str | None = None) -> RunReport:
    """Undo an applied migration run (VERSION, TS or `latest`; or every run after version
    `to`) safely."""
    return run_named("rollback", options, migration=migration, to=to or "")


def run_smoke_task(options: RunOptions | None = None) -> RunReport:
    """Smoke-test the target database and run the user's supabase/tests."""
    return run_named("smoke-test", options)


def _partial(task: str, label: str, options: RunOptions, work: Any, **inputs: Any) -> RunReport:
    """Run `work(state)` (a part of a task: its analysis) and always release the session."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.steps import release_lock

    options.asker = options.asker or YesAsker()
    try:
        state = new_state(task, options, **inputs)
    except DbsageError as exc:
        return _refused(label, exc, inputs.get("path"), options.mode)
    state.label = label
    try:
        try:
            work(state)
        finally:
            release_lock(state)
            end_run_marker(state)
    except DbsageError as exc:
        state.status, state.exit_code, state.error = "refused", exc.exit_code, exc.to_dict()
    return build_report(state)


def prepare_rollback_only(migration: str, options: RunOptions,
                          to: str | None = None) -> RunReport:
    """`dbsage rollback TS --prepare-only`: write and show the reverse script and what it
    would lose; change nothing."""

    def work(state: RunState) -> None:
        from dbsage.agent.resources import ensure_connected
        from dbsage.agent.steps import resolve_rollback
        from dbsage.tools.rollback import rows_at_stake

        plan = resolve_rollback(state)
        losses = [x.describe() for x in rows_at_stake(ensure_connected(state), plan.script)
                  if x.rows]
        state.ddl = plan.script.render()
        state.warnings += [f"would lose: {x}" for x in losses]
        state.status = "prepared"

    return _partial("rollback", "rollback-plan", options, work, migration=migration,
                    to=to or "")


def run_plan(path: str | Path, options: RunOptions) -> RunReport:
    """`dbsage plan`: the pre-flight analysis alone; writes the plan, changes nothing."""

    def work(state: RunState) -> None:
        from dbsage.agent.preflight import build_plan, write_plan

        run_checklist(registries(), state, "pre_conditions", state.definition.pre_conditions)
        state.plan = build_plan(state)
        write_plan(state, state.plan)
        state.details = {**(state.details or {}), "plan": state.plan}
        state.status = "planned"
        # Nobody overrides anything in a plan: a check that an apply would stop at (or ask
        # about) is a failure here, with its exit code, after the whole plan is written.
        failed = [c for c in state.checks if c["status"] == "fail"]
        for c in failed:
            c.pop("overridden", None)
        if failed:
            from dbsage.agent.engine import ChecklistFailed

            item = next(i for i in state.definition.pre_conditions if i.id == failed[0]["id"])
            error = ChecklistFailed(f"{item.error_message}: {failed[0]['detail']}",
                                    hint=item.hint, check=item.id)
            state.exit_code, state.error = error.exit_code, error.to_dict()

    return _partial("apply-migration", "plan", options, work, path=path)
