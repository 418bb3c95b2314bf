"""The engine: run a task definition's phases over a RunState.

pre-conditions → (pre-flight) → steps with their checkpoints → post-conditions → acceptance
criteria → work left running joined → `always` steps. Which checks, steps, checkpoint
actions and failure exits exist is the task definition's business (YAML) and the
registries' (Python); this module knows neither, so its tests run with fake registries and
no database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Protocol

from dbsage.agent.modes import Question
from dbsage.agent.progress import current as progress
from dbsage.agent.state import RunState
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    from dbsage.agent.definitions import ChecklistItemSpec, TaskSpec


class CheckOutcome(Protocol):
    """What a registered check found (agent/checklists.py's CheckResult)."""

    @property
    def status(self) -> str: ...  # "pass", "warn", "fail"

    @property
    def detail(self) -> str: ...

    @property
    def duration_ms(self) -> float: ...

    @property
    def error(self) -> DbsageError | None: ...  # the error behind a failure (its exit code)


@dataclass(frozen=True)
class Registries:
    """Everything the engine calls by name."""

    steps: Mapping[str, Callable[[RunState], None]]
    run_check: Callable[[str, RunState], CheckOutcome]
    checkpoints: Callable[[RunState, str, str], None]  # (state, step, "before"|"after")
    phases: Mapping[str, Callable[[RunState], None]]  # task-level phases (pre-flight)
    finish: Callable[[RunState], None]  # fills the success text, writes the decision log
    cleanup: Callable[[RunState], None]  # stops what a run left behind (early snapshot)
    error_kind: Callable[[DbsageError], str | None] = lambda exc: None  # for error_handling.errors
    hint_for: Callable[[DbsageError], str | None] = lambda exc: exc.hint  # adds the command
    # What an interrupt left committed, when the task knows better than one file's statements
    # (a batch: the files before the one that was running); None: the engine's own account.
    interrupted: Callable[[RunState], DbsageError | None] = lambda state: None


class ChecklistFailed(DbsageError):
    """A blocking checklist item failed."""

    exit_code = 6


def run_checklist(reg: Registries, state: RunState, phase: str,
                  items: list[ChecklistItemSpec]) -> list[str]:
    """Run every item and report it; return the failed blockers' messages (after-commit phases)
    or raise at the first failed blocker (pre-conditions)."""
    failed: list[str] = []
    for item in items:
        progress().begin(state, item.text)
        try:
            result = reg.run_check(item.check, state)
        finally:
            progress().end(state)
        entry = {"phase": phase, "id": item.id, "text": item.text, "status": result.status,
                 "detail": result.detail, "blocker": item.blocker,
                 "duration_ms": result.duration_ms}
        state.checks.append(entry)
        if result.status != "fail":
            if result.status == "warn":
                state.warnings.append(f"{item.text}: {result.detail}")
            continue
        if not item.blocker:
            state.warnings.append(f"{item.error_message}: {result.detail}")
            if item.severity == "fail":
                failed.append(f"{item.error_message}: {result.detail}")
            continue
        if item.override and _overridden(state, item, result.detail):
            entry["overridden"] = True
            continue
        message = f"{item.error_message}: {result.detail}"
        if phase == "pre_conditions":
            if result.error is not None:  # keep the error's own kind and exit code
                result.error.message = message
                result.error.data["check"] = item.id
                raise result.error
            raise ChecklistFailed(message, hint=item.hint, check=item.id)
        failed.append(message)
    return failed


def _overridden(state: RunState, item: ChecklistItemSpec, detail: str) -> bool:
    # What is at stake (the check's finding: rows, versions, squawk's errors) is the detail,
    # shown in full (in a pre-flight form too); the safe answer is the default.
    q = Question(f"override_{item.id}", f"{item.error_message}. Continue anyway?",
                 detail=detail, choices=("yes", "no"), default="no")
    return state.policy.override(q, item.override)


def run_task(reg: Registries, state: RunState) -> None:
    """Run the definition over `state`; DbsageError never escapes (the state carries it).

    Steps marked `always` run whatever happened. A step may leave work running (the
    after-snapshot's pg_dump): the post-conditions and acceptance criteria are checked while
    it runs, then it is joined, before the `always` steps release the lock.
    """
    d = state.definition
    started = time.perf_counter()
    main = [s.id for s in d.steps if not s.always]
    always = [s.id for s in d.steps if s.always]
    # Nobody is asked anything before the snapshot in yolo, so it can start at once.
    state.early_wanted = state.policy.name == "yolo" and "take_snapshot_before" in main
    state.session_lock = "acquire_lock" in main
    completed = False
    try:
        _check_inputs(state)
        run_checklist(reg, state, "pre_conditions", d.pre_conditions)
        phase = d.phases.get(state.policy.name)
        if phase:
            reg.phases[phase](state)
        for name in main:
            reg.checkpoints(state, name, "before")
            _timed(reg, state, name)
            reg.checkpoints(state, name, "after")
        completed = True
        _after_steps(reg, state, d)
        _join_pending(state)
    except DbsageError as exc:
        exc.hint = reg.hint_for(exc)  # the next command, in the words of the front end
        _fail(state, exc, reg.error_kind(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the CLI raises Terminated)
        from dbsage.tools.errors import Terminated

        error = reg.interrupted(state) or _interrupted(state)
        error.exit_code = 143 if isinstance(exc, Terminated) else 130
        _fail(state, error, None)
        state.exit_code = error.exit_code  # also after a commit: the run did not finish
    finally:
        _cancel_pending(state)
        reg.cleanup(state)
        for name in always:
            try:
                _timed(reg, state, name)
            except Exception as exc:  # cleanup must not hide the run's own outcome
                state.warnings.append(f"{name} failed: {exc}")
    if completed:
        try:
            for name in always:
                reg.checkpoints(state, name, "after")
        except DbsageError as exc:
            state.warnings.append(exc.message)
    state.execution_time = round(time.perf_counter() - started, 4)
    reg.finish(state)


def _join_pending(state: RunState) -> None:
    """Wait for the work steps left running, in order; a failure stops the rest."""
    idle, state.options.while_waiting = state.options.while_waiting, None
    if state.pending and idle is not None:
        try:
            idle()
        except Exception as exc:  # only ever a head start for the caller: never fail the run
            state.warnings.append(f"while waiting: {type(exc).__name__}: {exc}")
    while state.pending:
        work = state.pending[0]
        t0 = time.perf_counter()
        status = "failed"
        progress().begin(state, _description(state, work.step) or work.step)
        try:
            work.finish()
            status = "ok"
        finally:
            progress().end(state)
            state.pending.pop(0)
            state.steps.append({"step": f"{work.step} (joined)", "status": status,
                                "duration_ms": round((time.perf_counter() - t0) * 1000, 2)})


def _cancel_pending(state: RunState) -> None:
    """After a failure nothing waits for the work left running: stop it."""
    while state.pending:
        state.pending.pop(0).cancel()


def _after_steps(reg: Registries, state: RunState, d: TaskSpec) -> None:
    """Post-conditions and acceptance criteria, on the run's own session."""
    if not (d.post_conditions or d.acceptance_criteria):
        return
    failed = (run_checklist(reg, state, "post_conditions", d.post_conditions)
              + run_checklist(reg, state, "acceptance_criteria", d.acceptance_criteria))
    if not failed:
        return
    on = d.on_checks_failed
    if state.error is not None:
        return
    if on.mark_failed:
        state.status = "failed"
    state.exit_code = on.exit_code
    values = {"ts": state.ts or "", "failures": "; ".join(failed)}
    state.error = {"error": on.error, "message": on.message.format(**values)}
    if on.hint:
        state.error["hint"] = on.hint.format(**values)


def _description(state: RunState, name: str) -> str:
    return next((s.description for s in state.definition.steps if s.id == name), "")


def _timed(reg: Registries, state: RunState, name: str) -> None:
    t0 = time.perf_counter()
    progress().begin(state, _description(state, name) or name)
    try:
        reg.steps[name](state)
        status = "ok"
    except BaseException:
        status = "failed"
        raise
    finally:
        progress().end(state)
        entry: dict[str, object] = {"step": name, "status": status,
                                    "duration_ms": round((time.perf_counter() - t0) * 1000, 2)}
        description = _description(state, name)
        if description:
            entry["description"] = description
        if state.step_note:
            entry["note"], state.step_note = state.step_note, None
        state.steps.append(entry)


_INPUT_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "path": (str, PurePath), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "object": (dict,), "array": (list, tuple)}


def _check_inputs(state: RunState) -> None:
    """Every required input the user gives (`source: User Input`) is there, and every input
    given has the definition's `type`."""
    from dbsage.tools.errors import ConfigError

    for field in state.definition.inputs:
        value = state.inputs.get(field.name)
        if value is None or value == "":
            if field.required and field.source == "User Input":
                raise ConfigError(f"{state.task} needs its input '{field.name}'.",
                                  hint=field.validation or None)
            continue
        if not isinstance(value, _INPUT_TYPES[field.type]):
            raise ConfigError(f"{state.task}: input '{field.name}' must be a {field.type}, "
                              f"not {type(value).__name__}.", hint=field.validation or None)


def _fail(state: RunState, exc: DbsageError, kind: str | None) -> None:
    """Record the error; a kind the definition documents adds its title, resolution and
    recovery (and the resolution is the hint when the error has none)."""
    from dbsage.tools.connection import redact

    if state.committed:
        # Committed already: a later step (snapshot, diff) failed. Say so plainly.
        state.warnings.append(f"The migration is committed, but: {redact(exc.message)}")
        return
    state.status = "failed" if state.ran_sql() else "refused"
    state.error = {k: (redact(v) if isinstance(v, str) else v)
                   for k, v in exc.to_dict().items() if k != "statements"}
    documented = next((e for e in state.definition.error_handling.errors if e.kind == kind), None)
    if documented is not None:
        state.error.update(kind=kind, title=documented.title, cause=documented.cause,
                           resolution=documented.resolution, recovery=documented.recovery)
        if not state.error.get("hint"):
            state.error["hint"] = documented.resolution
    state.exit_code = exc.exit_code


def _interrupted(state: RunState) -> DbsageError:
    """What an interrupt left behind (an open transaction has been rolled back by then)."""
    from dbsage.tools.errors import RunInterrupted

    if state.committed:
        return RunInterrupted("Interrupted after the commit; the steps after it did not finish.")
    if state.steps and state.steps[-1]["step"] == "apply_migration":  # a statement ran
        running = next((s for s in state.statements if s.status == "not_run"), None)
        if running is not None:
            running.status = "interrupted"
    m = state.migration
    if m is None or m.transactional or "apply_migration" not in {s.id for s in state.definition.steps}:
        return RunInterrupted("Interrupted. Nothing was committed: the database is unchanged.")
    ran = [str(s.line) for s in state.statements if s.status == "ok"]
    done = (f"the statements at line(s) {', '.join(ran)} are committed" if ran
            else "none of them finished")
    return RunInterrupted(
        f"Interrupted. This file runs outside a transaction: {done}; the rest did not run.",
        hint="An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: *smoke-test "
             "finds it; DROP INDEX CONCURRENTLY it, then apply the remaining statements.")
