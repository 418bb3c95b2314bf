"""The checkpoint engine: every `checkpoints[]` entry of a task definition, asked or decided.

A checkpoint names its `action` in YAML (default `ask`); the actions, the detail shown with a
question and the follow-ups a menu option runs are registered here by name. No Python here
compares a checkpoint id or a task name.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbsage.agent.modes import Question, StopRun
from dbsage.agent.resources import analysis_of, ensure_connected, ensure_parsed
from dbsage.agent.state import RunState

if TYPE_CHECKING:
    import psycopg

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
            "snapshot_after": files.get("after", ""), "snapshot_diff": files.get("diff", ""),
            "batch_summary": _batch_summary(state), "runs": _runs(state)}


def _runs(state: RunState) -> str:
    """How the file's statements run, in the words a question uses (never "in one
    transaction" for a file that cannot run in one)."""
    m = state.migration
    if m is not None and not m.transactional:
        return ("one at a time, outside a transaction (the file has statements, such as CREATE "
                "INDEX CONCURRENTLY, that cannot run in one): each commits when it finishes")
    return "in one transaction: any error rolls all of them back"


def _batch_summary(state: RunState) -> str:
    from dbsage.agent.batch import summary

    return summary(state)


TEMPLATE_VARIABLES = frozenset({"path", "target", "migration", "statements_run", "checks_run",
                                "rollback_script", "ts", "snapshot_before", "snapshot_after",
                                "snapshot_diff", "batch_summary", "runs"})


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
    default = None if cp.default == "none" else cp.default
    return Question(cp.id, text, fill(cp.explanation, values), detail, ("yes", "no"), default)


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
    from dbsage.tools.dryrun import find_passing_dry_run  # not for yolo: 11 dataclasses

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
    how = ("It runs every statement in a transaction that is rolled back."
           if ensure_parsed(state).transactional else "This file cannot run in a transaction, "
           "so no dry-run can roll it back: it is parsed and linted only.")
    offer = Question("run_dry_run_now", f"Run a dry-run of {state.path} now, then apply if it "
                     "passes?", how, choices=("yes", "no"), default="yes")
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
    """Action `menu`: after success, offer the options; run the chosen one's follow-up.

    A person at a terminal (an asker whose front end prints the report) is asked after the
    report, not before it: the menu goes into the report (`state.menu`) and the front end
    asks it and runs the chosen command (commands.follow_menu)."""
    if not state.committed or not applies(state, cp):
        return
    if state.policy.name == "interactive" and getattr(state.policy.asker, "shows_reports", False):
        q = question(state, cp)
        state.menu = {"id": cp.id, "question": q.text, "explanation": q.explanation,
                      "default": q.default,
                      "options": [{"label": o.label, "command": o.command} for o in cp.options]}
        state.policy.log(cp.id, "after the report", "asked after the report is shown",
                         "rule")
        return
    answer = ask_checkpoint(state, cp)
    choice = cp.options[int(answer) - 1]
    state.follow_up = choice.command
    if choice.run:
        FOLLOW_UPS[choice.run](state)


def batch_ask(state: RunState, cp: CheckpointSpec) -> None:
    """Action `batch_ask`: `ask`, once for the whole batch (its plan is the detail); nothing
    to ask when nothing is pending."""
    from dbsage.agent.batch import nothing_to_apply

    if nothing_to_apply(state):
        state.policy.log(cp.id, "skipped", "nothing to apply")
        return
    ask(state, cp)


def batch_dry_run_gate(state: RunState, cp: CheckpointSpec) -> None:
    """Action `batch_dry_run_gate`: `dry_run_gate` for a batch. yolo runs none first; the
    other modes ask only when some pending file has no passing dry-run on record."""
    from dbsage.agent.batch import ensure_pending

    pending = ensure_pending(state)
    if not pending:
        state.policy.log(cp.id, "skipped", "nothing to apply")
        return
    if state.options.flags.get("skip_dry_run"):
        state.policy.log(cp.id, "skipped", "--no-dry-run: the user chose to apply without one")
        return
    if state.policy.name == "yolo":
        state.policy.log(cp.id, "skipped", "yolo: no separate dry-run: each file runs in a "
                         "transaction that any error rolls back")
        return
    from dbsage.tools.dryrun import find_passing_dry_run  # not for yolo: a heavy import

    conn = ensure_connected(state)
    untried = [f for f in pending if f.migration is None
               or find_passing_dry_run(conn, f.migration.checksum) is None]
    if not untried:
        state.policy.log(cp.id, "yes", f"a passing dry-run of each of the {len(pending)} "
                         "file(s) is on record", "record")
        return
    from dbsage.agent.modes import YesAsker

    if isinstance(state.policy.asker, YesAsker):  # --yes answers questions, it runs no check
        _run_batch_gate(state, pending)
        state.policy.log(cp.id, "run", f"--yes: {len(untried)} file(s) had no passing dry-run "
                         "on record, so the batch's dry-run ran now and passed")
        return
    if state.policy.checkpoint(question(state, cp, detail_of(state, cp))) == "yes":
        return
    offer = Question("run_dry_run_now", f"Run a dry-run of the {len(pending)} pending "
                     "migration(s) now, then apply them if it passes?",
                     "They run in order in one transaction that is rolled back (a file that "
                     "cannot run in one, CONCURRENTLY, is parsed and linted only).",
                     choices=("yes", "no"), default="yes")
    if state.policy.checkpoint(offer) != "yes":
        raise StopRun(fill(cp.stop_message or f"Stopped at checkpoint {cp.id}.",
                           template_values(state)), checkpoint=cp.id)
    _run_batch_gate(state, pending)


def _run_batch_gate(state: RunState, pending: list[Any]) -> None:
    """The batch's dry-run before it is applied (under the run's lock); a failure stops the
    run with exit 1, as the apply would have failed."""
    from dbsage.agent.resources import lock_retry_policy
    from dbsage.agent.steps import acquire_lock
    from dbsage.tools.batch import dry_run_batch
    from dbsage.tools.errors import MigrationFailedError

    acquire_lock(state)
    dry = dry_run_batch(ensure_connected(state),
                        [f.migration for f in pending if f.migration is not None],
                        lock_timeout=state.options.lock_timeout,
                        statement_timeout=state.options.statement_timeout,
                        retry=lock_retry_policy(state))
    failed = dry.failed
    if failed is not None:
        where = f"{failed.path.name}" + (f":{failed.failure.line}" if failed.failure else "")
        raise MigrationFailedError(f"The dry-run of the batch failed at {where}: "
                                   f"{failed.message or 'a statement failed'} Nothing was "
                                   "applied.", path=str(failed.path))


def batch_confirm(state: RunState, cp: CheckpointSpec) -> None:
    """Action `batch_confirm`: the one question of an interactive batch. On a database with
    Supabase's API roles it first dry-runs the batch with the advisor lints looked at after
    each file, and lists the ERROR-level ones the files introduce with the plan: a yes
    accepts them too (apply's `advisor_errors` checkpoint, folded into the batch's question).
    Other modes: `batch_ask` (yolo and pre-flight judge them by --force, inside each file's
    transaction)."""
    from dbsage.agent.batch import nothing_to_apply
    from dbsage.agent.steps import accept_introduced_lints, batch_introduced_errors, finding_doc

    if nothing_to_apply(state) or state.policy.name != "interactive" or not applies(state, cp):
        batch_ask(state, cp)
        return
    introduced = batch_introduced_errors(state)
    detail = detail_of(state, cp)
    if introduced:
        lines = ["", "ERROR-level advisor lints these migrations introduce (a yes applies them "
                 "anyway; each one is logged):"]
        for name, f in introduced:
            doc = finding_doc(f)
            lines += [f"  {name}: {f.name} on {f.object}" + (f" ({f.item})" if f.item else ""),
                      f"      why: {doc['why']}", f"      fix: {doc['fix']}"]
        detail = "\n".join([detail, *lines])
    answer = state.policy.checkpoint(question(state, cp, detail))
    if answer == "no":
        raise StopRun(fill(cp.stop_message or f"Stopped at checkpoint {cp.id}.",
                           template_values(state)), checkpoint=cp.id)
    if introduced:
        accept_introduced_lints(state, [f.key for _, f in introduced])


ACTIONS: dict[str, Action] = {"ask": ask, "dry_run_gate": dry_run_gate, "menu": menu,
                              "batch_ask": batch_ask, "batch_dry_run_gate": batch_dry_run_gate,
                              "batch_confirm": batch_confirm}


# --- what a question shows ----------------------------------------------------------------------

#: A question lists at most this many statements (a screen, not a 10,000-line scroll).
SHOWN_STATEMENTS = 40


def statements_with_locks(state: RunState) -> str:
    """The statements with the lock level each takes: the first SHOWN_STATEMENTS, then how
    many more there are."""
    analyses = analysis_of(state).statements
    lines = [f"  line {a.statement.line:<4} {a.lock_level or 'no table lock':<22} "
             f"{a.statement.summary}" for a in analyses[:SHOWN_STATEMENTS]]
    if len(analyses) > SHOWN_STATEMENTS:
        lines.append(f"  ... and {len(analyses) - SHOWN_STATEMENTS:,} more statement(s) "
                     "(`dbsage plan` lists every one)")
    return "\n".join(lines)


def reverse_script(state: RunState) -> str:
    """The reverse script a rollback runs."""
    from dbsage.agent.steps import resolve_rollback

    return resolve_rollback(state).script.render()


def batch_plan(state: RunState) -> str:
    """Every pending file of the batch, in order, with its statements and their locks."""
    from dbsage.agent.batch import plan_text

    return plan_text(state)


DETAILS: dict[str, Detail] = {"statements_with_locks": statements_with_locks,
                              "reverse_script": reverse_script, "batch_plan": batch_plan}


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


def _follow_up_connection(state: RunState) -> psycopg.Connection:
    """A fresh session on the run's target (the run's own is closed by now)."""
    from dbsage.tools.connection import connect

    assert state.target is not None
    return connect(state.target.url, autocommit=True, attempts=1)


def _check_entries(state: RunState, *check_ids: str) -> list[dict[str, str]]:
    from dbsage.agent.checklists import run_check

    return [{"id": cid, "status": r.status, "detail": r.detail}
            for cid in check_ids for r in (run_check(cid, state),)]


def follow_up_rls(state: RunState) -> None:
    """The RLS audit (*rls-audit): every exposed table's RLS, policies and coverage, and the
    exposure lints, on a fresh session; the schemas of supabase/config.toml when it has them."""
    from dbsage.agent.steps import (
        EXPOSURE_LINTS,
        audit_doc,
        lints_doc,
        project_exposed_schemas,
        store_audit,
    )
    from dbsage.tools.advisors import run_advisors
    from dbsage.tools.rls import audit_rls

    exposed = project_exposed_schemas(state.options.project_dir) or state.options.exposed_schemas
    with _follow_up_connection(state) as conn:
        audit = audit_rls(conn, exposed)
        findings = run_advisors(conn, exposed, only=set(EXPOSURE_LINTS))
    store_audit(state, audit, findings)
    checks = _check_entries(state, "no_error_lints", "exposed_tables_covered")
    state.follow_up_result = {
        "passed": all(c["status"] != "fail" for c in checks), "checks": checks,
        "details": {"rls": audit_doc(audit), "lints": lints_doc(findings)}}


def follow_up_hotpaths(state: RunState) -> None:
    """The hot-path analysis (*analyze-hotpaths) on a fresh session, its report written to
    supabase/docs/; never creates an extension (that takes the command's own checkpoint)."""
    from dbsage.agent.steps import DOCS_DIR, hotpaths_doc, store_hotpaths
    from dbsage.tools.hotpaths import analyze_hotpaths, write_report

    with _follow_up_connection(state) as conn:
        report = analyze_hotpaths(conn, 10)
    store_hotpaths(state, report)
    path = write_report(report, state.options.project_dir.joinpath(*DOCS_DIR))
    checks = _check_entries(state, "query_stats_available")
    state.follow_up_result = {
        "passed": all(c["status"] != "fail" for c in checks), "checks": checks,
        "files": {"report": state.rel(path)}, "details": {"hotpaths": hotpaths_doc(report)}}


FOLLOW_UPS: dict[str, FollowUp] = {"smoke_test": follow_up_smoke, "rls_audit": follow_up_rls,
                                   "analyze_hotpaths": follow_up_hotpaths}


# --- the advisors' gate and the extension question (issue 14) ----------------------------------

def advisor_gate(state: RunState, cp: CheckpointSpec) -> None:
    """Action `advisor_gate`: does the migration introduce an ERROR-level advisor lint?

    yolo decides inside the migration's own transaction (it rolls back unless --force); here
    interactive and pre-flight learn it before anything is applied: pre-flight from the plan's
    dry-run, interactive from a dry-run now (only on a database with Supabase's API roles,
    where the gate applies). Interactive asks (no stops the run); pre-flight stops unless
    --force, as the plan showed them already.
    """
    from dbsage.agent.steps import (
        accept_introduced_lints,
        advisor_delta_of,
        advisor_gate_applies,
        delta_summary,
        note_advisor_delta,
        run_gate_dry_run,
    )
    from dbsage.tools.errors import MigrationFailedError

    if not advisor_gate_applies(state):  # plain PostgreSQL, or not one transaction
        return
    if state.policy.name == "yolo":
        state.policy.log(cp.id, "skipped", "yolo: judged inside the migration's transaction (an "
                         "ERROR-level lint it introduces rolls it back unless --force)")
        return
    by = "plan" if state.policy.name == "preflight" else "rule"
    delta = advisor_delta_of(state)
    if delta is None:
        try:
            run_gate_dry_run(state)
        except MigrationFailedError as exc:  # the apply itself will fail the same way
            # (its own report says so)
            state.policy.log(cp.id, "skipped", f"the dry-run for the advisors failed: "
                             f"{exc.message}", by)
            return
        note_advisor_delta(state)
        delta = advisor_delta_of(state)
    if delta is None:
        state.policy.log(cp.id, "skipped", "the advisor lints could not be compared", by)
        return
    errors = [f for f in delta.introduced if f.level == "ERROR"]
    if not errors:
        state.policy.log(cp.id, "yes", f"no ERROR-level lint introduced ({delta_summary(delta)})",
                         by)
        return
    listed = "; ".join(f"{f.name} on {f.object}" for f in errors)
    if state.policy.name == "preflight":
        if state.options.flags.get("force"):
            state.policy.log(cp.id, "yes", f"pre-flight: accepted by --force: {listed}", by)
            accept_introduced_lints(state, [f.key for f in errors])
            return
        state.policy.log(cp.id, "no", f"pre-flight: refused (--force not given): {listed}", by)
        raise StopRun(f"The plan shows this migration introduces ERROR-level advisor lint(s): "
                      f"{listed}. Nothing was applied.",
                      hint=f"See {state.files.get('plan_md', 'the plan')} for each one and its "
                           "fix; fix the migration, or pass --force to apply anyway.",
                      checkpoint=cp.id)
    ask_checkpoint(state, cp)
    accept_introduced_lints(state, [f.key for f in errors])


def extension_gate(state: RunState, cp: CheckpointSpec) -> None:
    """Action `extension_gate`: pg_stat_statements is missing from the database; create it?
    Only --create-extension or the interactive user's yes creates it (then hypopg too, when
    the server has it); yolo, scripts and the model never do."""
    from dbsage.agent.steps import want_extensions
    from dbsage.tools.hotpaths import top_queries

    if state.options.flags.get("create_extension"):
        state.policy.log(cp.id, "yes", "--create-extension")
        return
    hot = top_queries(ensure_connected(state), 1)
    if hot.status != "extension_missing":
        return
    if state.policy.name != "interactive":
        state.policy.log(cp.id, "no", f"{state.policy.name}: no extension is created without "
                         "--create-extension")
        return
    from dataclasses import replace

    detail = "\n".join([hot.message, *hot.how_to_enable])
    if state.policy.checkpoint(replace(question(state, cp, detail), default="no")) == "yes":
        want_extensions(state)


def advisor_delta_detail(state: RunState) -> str:
    """The ERROR-level findings the migration introduces, each with why and its fix."""
    from dbsage.agent.render import delta_text
    from dbsage.agent.steps import advisor_delta_of, delta_doc

    delta = advisor_delta_of(state)
    if delta is None:
        return ""
    return delta_text(delta_doc(delta, state.options.exposed_schemas), errors_only=True)


ACTIONS.update({"advisor_gate": advisor_gate, "extension_gate": extension_gate})
DETAILS.update({"advisor_delta": advisor_delta_detail})
# Question ids an action may ask besides its checkpoint's own: --answers accepts them too
# (`dbsage apply --list-checkpoints` lists them with the checkpoint they follow).
FURTHER_QUESTIONS: dict[str, tuple[str, ...]] = {"dry_run_gate": ("run_dry_run_now",)}
