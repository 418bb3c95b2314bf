"""The engine alone, with fake registries: the order of phases, `always` steps, work left
running, interrupts and the YAML-named failure exits. No database, no tools."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from dbsage.agent.definitions import (
    AboutSpec,
    ChecklistItemSpec,
    CheckpointSpec,
    ErrorHandlingSpec,
    OnChecksFailedSpec,
    StepSpec,
    TaskSpec,
)
from dbsage.agent.engine import Registries, run_task
from dbsage.agent.modes import YesAsker, make_policy
from dbsage.agent.state import Pending, RunOptions, RunState
from dbsage.tools.errors import DbsageError, Terminated


@dataclass(frozen=True)
class Found:
    status: str
    detail: str = ""
    duration_ms: float = 0.0
    error: DbsageError | None = None


def item(check: str, *, blocker: bool = True, severity: str = "fail",
         hint: str | None = None) -> ChecklistItemSpec:
    return ChecklistItemSpec(check, f"text of {check}", check, blocker, f"{check} failed",
                             severity, None, hint)


def task(steps: list[str], *, always: tuple[str, ...] = ("release",), pre: tuple[str, ...] = (),
         post: tuple[str, ...] = (), phases: dict[str, str] | None = None,
         on: OnChecksFailedSpec | None = None, severity: str = "fail",
         blocker: bool = True) -> TaskSpec:
    return TaskSpec(
        task="fake", about=AboutSpec("t", "p", "r"), default_mode="yolo", inputs=[],
        pre_conditions=[item(c, hint=f"hint for {c}") for c in pre],
        post_conditions=[item(c, blocker=blocker, severity=severity) for c in post],
        acceptance_criteria=[],
        steps=[StepSpec(s, False, None, "") for s in steps]
        + [StepSpec(s, True, None, "") for s in always],
        checkpoints=[CheckpointSpec("cp", steps[0], None, "confirm", "q?", "", [], None,
                                    ["interactive"])] if steps else [],
        error_handling=ErrorHandlingSpec("abort", [], []),
        phases=phases or {},
        on_checks_failed=on or OnChecksFailedSpec(1, "ChecklistFailed", "{failures}", None, True))


class Fake:
    """Registries that log every call; `fail`/`raise_` make one name misbehave."""

    def __init__(self, checks: dict[str, str] | None = None) -> None:
        self.log: list[str] = []
        self.checks = checks or {}
        self.raise_: dict[str, BaseException] = {}

    def step(self, name: str) -> Any:
        def run(state: RunState) -> None:
            self.log.append(f"step {name}")
            if name in self.raise_:
                raise self.raise_[name]
        return run

    def registries(self, definition: TaskSpec) -> Registries:
        names = [s.id for s in definition.steps]
        return Registries(
            steps={n: self.step(n) for n in names},
            run_check=lambda check, state: (self.log.append(f"check {check}")
                                            or Found(self.checks.get(check, "pass"), "why")),
            checkpoints=lambda state, step, where: self.log.append(f"{where} {step}"),
            phases={"plan": lambda state: self.log.append("phase plan")},
            finish=lambda state: self.log.append("finish"),
            cleanup=lambda state: self.log.append("cleanup"))


def state_for(definition: TaskSpec, mode: str = "yolo") -> RunState:
    return RunState("fake", RunOptions(mode=mode), make_policy(mode, YesAsker()), definition)


def test_phases_run_in_order() -> None:
    d = task(["a", "b"], pre=("p1",), post=("q1",), phases={"yolo": "plan"})
    fake = Fake()
    state = state_for(d)
    run_task(fake.registries(d), state)
    assert fake.log == ["check p1", "phase plan", "before a", "step a", "after a", "before b",
                        "step b", "after b", "check q1", "cleanup", "step release",
                        "after release", "finish"]
    assert state.exit_code == 0 and state.error is None
    assert [s["step"] for s in state.steps] == ["a", "b", "release"]


def test_a_phase_runs_only_in_its_mode() -> None:
    d = task(["a"], phases={"preflight": "plan"})
    fake = Fake()
    run_task(fake.registries(d), state_for(d, "yolo"))
    assert "phase plan" not in fake.log


def test_a_failed_step_stops_the_rest_but_always_steps_run() -> None:
    d = task(["a", "b"], post=("q1",))
    fake = Fake()
    fake.raise_["a"] = DbsageError("a broke", hint="fix a")
    state = state_for(d)
    run_task(fake.registries(d), state)
    assert "step b" not in fake.log and "check q1" not in fake.log
    assert fake.log[-3:] == ["cleanup", "step release", "finish"]  # no checkpoint after it
    assert state.status == "refused" and state.exit_code == 1
    assert state.error is not None and state.error["message"] == "a broke"


def test_a_failed_pre_condition_raises_with_the_yaml_hint() -> None:
    d = task(["a"], pre=("p1",))
    fake = Fake({"p1": "fail"})
    state = state_for(d)
    run_task(fake.registries(d), state)
    assert "step a" not in fake.log and "step release" in fake.log
    assert state.exit_code == 6
    assert state.error is not None and state.error["hint"] == "hint for p1"
    assert state.error["message"] == "p1 failed: why"


def test_work_left_running_is_joined_after_the_checks_and_cancelled_on_failure() -> None:
    d = task(["a", "b"], post=("q1",))
    fake = Fake()
    registries = fake.registries(d)

    def leave_work(state: RunState) -> None:
        fake.log.append("step a")
        state.pending.append(Pending("dump", lambda: fake.log.append("joined dump"),
                                     lambda: fake.log.append("cancelled dump")))

    registries = replace(registries, steps={**registries.steps, "a": leave_work})
    run_task(registries, state_for(d))
    assert fake.log.index("check q1") < fake.log.index("joined dump") < fake.log.index(
        "step release")
    assert "cancelled dump" not in fake.log
    fake.log.clear()
    fake.raise_["b"] = DbsageError("b broke")
    run_task(registries, state_for(d))
    assert "cancelled dump" in fake.log and "joined dump" not in fake.log


@pytest.mark.parametrize(("interrupt", "code"), [(KeyboardInterrupt(), 130), (Terminated(), 143)])
def test_interrupts_end_in_a_report_and_release(interrupt: BaseException, code: int) -> None:
    d = task(["a", "b"])
    fake = Fake()
    fake.raise_["a"] = interrupt
    state = state_for(d)
    run_task(fake.registries(d), state)
    assert state.exit_code == code and "step release" in fake.log and "step b" not in fake.log
    assert state.error is not None and "Nothing was committed" in state.error["message"]


def test_failed_post_conditions_use_the_definitions_exit() -> None:
    on = OnChecksFailedSpec(7, "CommittedButChecksFailed", "committed, but {failures}",
                            "undo: rollback {ts}", False)
    d = task(["a"], post=("q1",), on=on)
    fake = Fake({"q1": "fail"})
    state = state_for(d)
    state.status = "applied"
    run_task(fake.registries(d), state)
    assert state.exit_code == 7 and state.status == "applied"  # mark_failed: false
    assert state.error == {"error": "CommittedButChecksFailed",
                           "message": "committed, but q1 failed: why", "hint": "undo: rollback "}


def test_a_non_blocker_warns_or_fails_by_its_severity() -> None:
    warn = task(["a"], post=("q1",), blocker=False, severity="warn")
    fake = Fake({"q1": "fail"})
    state = state_for(warn)
    run_task(fake.registries(warn), state)
    assert state.exit_code == 0 and state.warnings == ["q1 failed: why"]
    fail = task(["a"], post=("q1",), blocker=False, severity="fail")
    state = state_for(fail)
    run_task(fake.registries(fail), state)
    assert state.exit_code == 1 and state.status == "failed"
    assert "step release" in fake.log


def test_a_missing_or_mistyped_required_input_is_refused_before_anything() -> None:
    from dbsage.agent.definitions import InputFieldSpec

    d = replace(task(["a"], pre=("p1",)),
                inputs=[InputFieldSpec("path", "path", "User Input", True, "a .sql file")])
    fake = Fake()
    state = state_for(d)
    run_task(fake.registries(d), state)
    assert state.exit_code == 2 and "needs its input 'path'" in (state.error or {})["message"]
    assert (state.error or {})["hint"] == "a .sql file"
    assert "check p1" not in fake.log and "step a" not in fake.log
    state = state_for(d)
    state.inputs["path"] = 42
    run_task(fake.registries(d), state)
    assert state.exit_code == 2 and "must be a path" in (state.error or {})["message"]


def test_a_documented_error_kind_adds_its_title_cause_and_resolution() -> None:
    from dbsage.agent.definitions import KnownErrorSpec

    d = task(["a"])
    d = replace(d, error_handling=ErrorHandlingSpec("abort", [], [KnownErrorSpec(
        "lock_busy", "Lock Already Held", "another run", "wait for it", "stop")]))
    fake = Fake()
    fake.raise_["a"] = DbsageError("busy")
    registries = replace(fake.registries(d), error_kind=lambda exc: "lock_busy")
    state = state_for(d)
    run_task(registries, state)
    assert state.error is not None
    assert (state.error["title"], state.error["cause"], state.error["hint"]) == (
        "Lock Already Held", "another run", "wait for it")


def test_an_interrupt_hook_tells_what_a_batch_committed() -> None:
    from dataclasses import replace as with_fields

    from dbsage.tools.errors import RunInterrupted

    d = task(["a", "b"])
    fake = Fake()
    fake.raise_["a"] = KeyboardInterrupt()
    told = RunInterrupted("Interrupted. 2 of 3 file(s) were committed and stay applied")
    registries = with_fields(fake.registries(d), interrupted=lambda state: told)
    state = state_for(d)
    run_task(registries, state)
    assert state.exit_code == 130 and "step release" in fake.log
    assert state.error is not None and "2 of 3 file(s) were committed" in state.error["message"]
    # without an account of its own (None), the engine's stands
    fake.log.clear()
    state = state_for(d)
    run_task(with_fields(fake.registries(d), interrupted=lambda state: None), state)
    assert state.error is not None and "Nothing was committed" in state.error["message"]
