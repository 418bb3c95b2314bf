"""The checkpoint engine: every `checkpoints[]` entry of a task definition, asked or decided.

A checkpoint names its `action` in YAML (default `ask`); the actions, the detail shown with a
question and the follow-ups a menu option runs are registered here by name. No Python here
compares a checkpoint id or a task name.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import TYPE_CHECKING

from dbsage.agent.modes import Question, StopRun
from dbsage.agent.resources import analysis_of, ensure_connected, ensure_parsed
from dbsage.agent.state import RunState

if TYPE_CHECKING:
    from dbsage.agent.definitions import CheckpointSpec

Action = Callable[[RunState, "CheckpointSpec"], None]
Detail = Callable[[RunState], str]
FollowUp = Callable[[RunState], None]


# --- template values ---------------------------------------------------------------------------

def template_values(state: RunState) -> dict[str, str]:
    """The variables a definition's texts may name (tasks.py checks them at load time)."""
    files = state.files
    return {"path": str(state.path or ""), "target": state.target_label or "(not resolved yet)",
            "migration": str(state.inputs.get("migration", "")),
            "statements_run": str(sum(s.status == "ok" for s in state.statements)),
            "checks_run": str(len(state.smoke.checks) if state.smoke else 0),
            "rollback_script": files.get("rollback", ""),
            "ts": state.ts or "{ts}", "snapshot_before": files.get("before", ""),
            "snapshot_after": files.get("after", ""), "snapshot_diff": files.get("diff", "")}


TEMPLATE_VARIABLES = frozenset({"path", "target", "migration", "statements_run", "checks_run",
                                "rollback_script", "ts", "snapshot_before", "snapshot_after",
                                "snapshot_diff"})


def fill(text: str, values: dict[str, str]) -> str:
    """`text` with its {variables} filled in; an unknown one is a load-time error, so a miss
    here is a bug: it raises instead of showing the raw template."""
    names = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    unknown = names - values.keys()
    if unknown:
        raise KeyError(f"unknown template variable(s) {sorted(unknown)} in {text!r}")
    return text.format(**values)


# --- the engine -------------------------------------------------------------------------------

def run_checkpoints(state: RunState, step: str, position: str) -> None:
    """Ask (or decide) every checkpoint placed before/after `step`."""
    for cp in state.definition.checkpoints:
        if cp.step != step or (cp.before_step is None) == (position == "before"):
            continue
        ACTIONS[cp.action](state, cp)


def applies(state: RunState, cp: CheckpointSpec) -> bool:
    # yolo meets every checkpoint too: its rules decide, and each decision is logged.
    return state.policy.name == "yolo" or state.policy.name in cp.modes


def question(state: RunState, cp: CheckpointSpec, detail: str = "") -> Question:
    """The Question a checkpoint puts, with its variables filled in."""
    values = template_values(state)
    if cp.kind == "choice":
        labels = tuple(str(i) for i in range(1, len(cp.options) + 1))
        menu = "\n".join(f"  {i}. {o.label}" + (f"  ({o.command})" if o.command else "")
                         for i, o in enumerate(cp.options, 1))
        return Question(cp.id, fill(cp.question, values), cp.explanation,
                        "\n".join(x for x in (detail, menu) if x), labels, labels[-1])
    text = fill(cp.question, values)
    if cp.kind == "notice":
        text += " Continue?"
    return Question(cp.id, text, fill(cp.explanation, values), detail, ("yes", "no"), "yes")


def detail_of(state: RunState, cp: CheckpointSpec) -> str:
    """What the checkpoint shows above its question (its `detail` provider, if any)."""
    return DETAILS[cp.detail](state) if cp.detail else ""


def ask_checkpoint(state: RunState, cp: CheckpointSpec) -> str:
    """Put the question; "no" stops the run with the checkpoint's stop message."""
    answer = state.policy.checkpoint(question(state, cp, detail_of(state, cp)))
    if cp.kind != "choice" and answer == "no":
        raise StopRun(fill(cp.stop_message or f"Stopped at checkpoint {cp.id}.",
                           template_values(state)), checkpoint=cp.id)
    return answer


def ask(state: RunState, cp: CheckpointSpec) -> None:
    """Action `ask`: the question, in the modes the checkpoint lists (yolo decides by rule)."""
    if applies(state, cp):
        ask_checkpoint(state, cp)


def dry_run_gate(state: RunState, cp: CheckpointSpec) -> None:
    """Action `dry_run_gate`: has this exact file passed a dry-run? yolo never runs one first
    (the apply already runs every statement once, in a transaction that any error rolls
    back); the other modes ask only when dbsage has no record of a passing dry-run."""
    from dbsage.tools.dryrun import find_passing_dry_run

    if state.options.flags.get("skip_dry_run"):
        state.policy.log(cp.id, "skipped", "--no-dry-run: the user chose to apply without one")
        return
    if state.policy.name == "yolo":
        state.policy.log(cp.id, "skipped", f"yolo: no separate dry-run: {_why_no_gate(state)}")
        return
    if state.dry_run is not None and state.dry_run.passed:  # the pre-flight plan ran one
        state.policy.log(cp.id, "yes", "the pre-flight plan's dry-run of this file passed",
                         "record")
        return
    record = find_passing_dry_run(ensure_connected(state), ensure_parsed(state).checksum)
    if record is not None:
        state.policy.log(cp.id, "yes", f"a passing dry-run of this checksum is on record "
                         f"({record.ran_at:%Y-%m-%d %H:%M:%S})", "record")
        return
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.steps import run_gate_dry_run

    if isinstance(state.policy.asker, YesAsker):  # --yes answers questions, it runs no check
        run_gate_dry_run(state)
        state.policy.log(cp.id, "run", "--yes: no passing dry-run of this file was on record, "
                         "so one ran now and passed")
        return
    answer = state.policy.checkpoint(question(state, cp, detail_of(state, cp)))
    if answer == "yes":
        return
    offer = Question("run_dry_run_now", f"Run a dry-run of {state.path} now, then apply if it "
                     "passes?", "It runs every statement in a transaction that is rolled back.",
                     choices=("yes", "no"), default="yes")
    if state.policy.checkpoint(offer) != "yes":
        raise StopRun(fill(cp.stop_message or f"Stopped at checkpoint {cp.id}.",
                           template_values(state)), checkpoint=cp.id)
    run_gate_dry_run(state)


def _why_no_gate(state: RunState) -> str:
    if ensure_parsed(state).transactional:
        return ("the file runs in one transaction that any error rolls back, so a dry-run "
                "first would only run every statement twice (and advance sequences twice)")
    return ("the file runs outside a transaction (CONCURRENTLY), which no dry-run can roll "
            "back; it was parsed and linted instead")


def menu(state: RunState, cp: CheckpointSpec) -> None:
    """Action `menu`: after success, offer the options; run the chosen one's follow-up."""
    if not state.committed or not applies(state, cp):
        return
    answer = ask_checkpoint(state, cp)
    choice = cp.options[int(answer) - 1]
    state.follow_up = choice.command
    if choice.run:
        FOLLOW_UPS[choice.run](state)


ACTIONS: dict[str, Action] = {"ask": ask, "dry_run_gate": dry_run_gate, "menu": menu}


# --- what a question shows ----------------------------------------------------------------------

def statements_with_locks(state: RunState) -> str:
    """Every statement with the lock level it takes."""
    return "\n".join(f"  line {a.statement.line:<4} {a.lock_level or 'no table lock':<22} "
                     f"{a.statement.summary}" for a in analysis_of(state).statements)


def reverse_script(state: RunState) -> str:
    """The reverse script a rollback runs."""
    from dbsage.agent.steps import resolve_rollback

    return resolve_rollback(state).script.render()


DETAILS: dict[str, Detail] = {"statements_with_locks": statements_with_locks,
                              "reverse_script": reverse_script}


# --- follow-ups a menu option runs ---------------------------------------------------------------

def follow_up_smoke(state: RunState) -> None:
    """The smoke checks, on a fresh session (the run's own is closed by now)."""
    from dbsage.tools.smoke import smoke_test_url

    assert state.target is not None
    smoke = smoke_test_url(state.target.url, state.options.project_dir,
                           exposed_schemas=state.options.exposed_schemas)
    state.follow_up_result = {
        "passed": smoke.passed,
        "checks": [{"id": c.id, "status": c.status, "detail": c.detail} for c in smoke.checks]}


def follow_up_rls(state: RunState) -> None:
    """The RLS check of the exposed schemas, on a fresh session."""
    from dbsage.tools.smoke import rls_check_url

    assert state.target is not None
    out = rls_check_url(state.target.url, state.options.exposed_schemas)
    state.follow_up_result = {"passed": out.status != "fail", "checks": [
        {"id": out.id, "status": out.status, "detail": out.detail}]}


FOLLOW_UPS: dict[str, FollowUp] = {"smoke_test": follow_up_smoke, "rls_audit": follow_up_rls}
