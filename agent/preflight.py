"""Pre-flight: analyse everything, write the plan, ask every question in one batch.

`dbsage plan` is this analysis alone. Every fact comes from a tool (sizes, rows at stake,
missing objects, lint, a dry-run); this module only assembles and words the plan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dbsage.agent.checkpoints import question
from dbsage.agent.modes import PreflightPolicy, StopRun
from dbsage.agent.resources import analysis_of, ensure_connected, ensure_parsed
from dbsage.agent.state import PLAN_DIR, RunState


def build_plan(state: RunState) -> dict[str, Any]:
    """The pre-flight analysis: locks, sizes, rewrites, destructive ops, lint, dry-run."""
    from dbsage.agent.steps import note_advisor_delta, run_gate_dry_run
    from dbsage.tools.analyze import count_rows_at_stake, missing_objects, table_sizes
    from dbsage.tools.catalog import schema_fingerprint
    from dbsage.tools.rollback_state import references

    m = ensure_parsed(state)
    conn = ensure_connected(state)
    analysis = analysis_of(state)
    tables = sorted({t for a in analysis.statements for t in a.tables})
    sizes = table_sizes(conn, tables)
    at_stake = count_rows_at_stake(conn, analysis.destructive)
    missing = missing_objects(conn, analysis)
    if state.lint is None:
        from dbsage.agent.checklists import run_check

        run_check("lint_clean", state)
    if not m.transactional:
        state.warnings.append("Non-transactional file: the pre-flight dry-run validates it "
                              "by parsing only.")
    state.warnings += [f"dbsage will not be able to roll back line {line}: {why}."
                       for line, why in references(m).irreversible]
    run_gate_dry_run(state)  # with the advisor lints before it and inside its transaction
    assert state.dry_run is not None
    advisors = note_advisor_delta(state)
    return {
        "path": str(m.path), "checksum": m.checksum, "version": m.version,
        "fingerprint": schema_fingerprint(conn), "target": state.target_label,
        "transactional": m.transactional, "strongest_lock": analysis.strongest_lock,
        "created": list(analysis.created),
        "statements": [{"index": a.statement.index, "line": a.statement.line,
                        "sql": a.statement.summary, "lock_level": a.lock_level,
                        "tables": list(a.tables), "rewrites_table": a.rewrites_table,
                        "transactional": a.statement.transactional,
                        "destructive": [o.kind for o in a.destructive_ops]}
                       for a in analysis.statements],
        "tables": {t: {"exists": s.exists, "bytes": s.bytes, "estimated_rows": s.estimated_rows}
                   for t, s in sizes.items()},
        "destructive": [{"kind": o.kind, "table": o.table, "columns": list(o.columns),
                         "line": o.line,
                         "rows_at_stake": at_stake[o].rows if o in at_stake else None}
                        for o in analysis.destructive],
        "missing_objects": [{"name": x.name, "kind": x.kind, "line": x.line,
                             "reason": x.reason} for x in missing],
        "lint": [{"rule": f.rule, "level": f.level, "line": f.line, "message": f.message}
                 for f in state.lint or []],
        "dry_run": {"passed": state.dry_run.passed,
                    "duration_s": round(state.dry_run.duration_s, 4)},
        "advisors": advisors,
    }


def write_plan(state: RunState, plan: dict[str, Any]) -> None:
    """supabase/plans/{TS}_plan.json and .md."""
    from dbsage.tools.artifacts import write_json, write_text

    plan_dir = state.options.project_dir / PLAN_DIR
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    json_path = write_json(plan_dir / f"{stamp}_plan.json", plan)
    md_path = write_text(plan_dir / f"{stamp}_plan.md", render_plan_markdown(plan))
    state.files["plan_json"], state.files["plan_md"] = state.rel(json_path), state.rel(md_path)


def render_plan_markdown(plan: dict[str, Any]) -> str:
    """A plan a reviewer can read in a pull request (agent/plantext.py)."""
    from dbsage.agent.plantext import plan_markdown

    return plan_markdown(plan)


def preflight_phase(state: RunState) -> None:
    """Analyse everything, write the plan, show it, then ask every question in one form
    (the overrides the pre-conditions deferred first, each with what is at stake)."""
    from dbsage.agent.plantext import plan_table

    assert isinstance(state.policy, PreflightPolicy)
    state.plan = build_plan(state)
    write_plan(state, state.plan)
    # The plan above the form shows the statements and their locks: no detail repeats them.
    questions = [question(state, cp) for cp in state.definition.checkpoints
                 if "preflight" in cp.modes and cp.kind != "choice"]
    asked = len(questions) + len(state.policy.deferred)
    state.notices.append(f"Pre-flight plan written to {state.files['plan_md']} "
                         f"({asked} question(s), answered before anything ran).")
    intro = f"{plan_table(state.plan, _width())}\n  (written to {state.files['plan_md']})"
    _stop_on_no(state, state.policy.ask_batch(questions, intro))


def _width() -> int:
    """The terminal's width as rich finds it (COLUMNS first; 80 when there is none)."""
    from rich.console import Console

    return Console().width


def _stop_on_no(state: RunState, answers: dict[str, str]) -> None:
    """A "no" in the form stops the run; nothing has changed yet. A declined override is a
    failed check again in the report."""
    declined = [qid for qid, answer in answers.items() if answer == "no"]
    if not declined:
        return
    for entry in state.checks:
        if entry.get("overridden") and f"override_{entry['id']}" in declined:
            entry["overridden"] = False
    first = next(d for d in state.policy.decisions if d.point == declined[0])
    raise StopRun(f"Stopped: \"{first.why}\" was answered no in the plan review; nothing was "
                  "changed.", checkpoint=declined[0])


# --- `up`: the whole batch planned, every question asked up front -----------------------------

def build_batch_plan(state: RunState) -> dict[str, Any]:
    """The pre-flight analysis of every pending file: locks, sizes, rewrites, destructive
    operations with the rows at stake, squawk, and a dry-run of the whole batch."""
    from dbsage.agent.batch import analysis, ensure_pending
    from dbsage.agent.resources import lock_retry_policy
    from dbsage.agent.steps import acquire_lock
    from dbsage.tools.analyze import count_rows_at_stake, table_sizes
    from dbsage.tools.batch import dry_run_batch
    from dbsage.tools.catalog import schema_fingerprint

    conn = ensure_connected(state)
    pending = ensure_pending(state)
    files: list[dict[str, Any]] = []
    tables = sorted({t for f in pending for a in analysis(f).statements for t in a.tables})
    sizes = table_sizes(conn, tables)
    for f in pending:
        a, m = analysis(f), f.migration
        assert m is not None
        at_stake = count_rows_at_stake(conn, a.destructive)
        files.append({
            "file": f.name, "version": f.version, "checksum": m.checksum,
            "transactional": m.transactional, "strongest_lock": a.strongest_lock,
            "created": list(a.created),
            "statements": [{"index": s.statement.index, "line": s.statement.line,
                            "sql": s.statement.summary, "lock_level": s.lock_level,
                            "tables": list(s.tables), "rewrites_table": s.rewrites_table}
                           for s in a.statements],
            "destructive": [{"kind": o.kind, "table": o.table, "columns": list(o.columns),
                             "line": o.line,
                             "rows_at_stake": at_stake[o].rows if o in at_stake else None}
                            for o in a.destructive],
            "lint": [{"rule": x.rule, "level": x.level, "line": x.line, "message": x.message}
                     for x in f.lint]})
    acquire_lock(state)
    dry = dry_run_batch(conn, [f.migration for f in pending if f.migration is not None],
                        lock_timeout=state.options.lock_timeout,
                        statement_timeout=state.options.statement_timeout,
                        retry=lock_retry_policy(state))
    for entry, fr in zip(files, dry.files, strict=True):
        entry["dry_run"] = fr.status
        state.warnings.extend(fr.not_run_on_server)
        if fr.message:
            entry["dry_run_failure"] = fr.message
    return {"task": "up", "target": state.target_label, "fingerprint": schema_fingerprint(conn),
            "atomic": bool(state.options.flags.get("atomic")), "files": files,
            "tables": {t: {"exists": s.exists, "bytes": s.bytes,
                           "estimated_rows": s.estimated_rows} for t, s in sizes.items()},
            "dry_run": {"passed": dry.passed, "duration_s": round(dry.duration_s, 4)}}


def render_batch_plan_markdown(plan: dict[str, Any]) -> str:
    """The batch's plan as a reviewer reads it in a pull request."""
    from dbsage.agent.plantext import destructive_text

    how = "in one transaction (--atomic)" if plan["atomic"] else "each in its own transaction"
    lines = [f"# Pre-flight plan: {len(plan['files'])} pending migration(s)", "",
             f"- Target: {plan['target']}", f"- Schema fingerprint: `{plan['fingerprint']}`",
             f"- Runs {how}; dry-run of the batch: "
             f"{'passed' if plan['dry_run']['passed'] else 'FAILED'}", ""]
    for i, f in enumerate(plan["files"], 1):
        lines += [f"## {i}. {f['file']}", "",
                  f"Checksum `{f['checksum']}`; strongest lock {f['strongest_lock'] or 'none'}"
                  f"; dry-run {f.get('dry_run', '-')}", "",
                  "| line | lock | rewrite | statement |", "|---|---|---|---|"]
        lines += [f"| {s['line']} | {s['lock_level'] or '-'} | "
                  f"{'yes' if s['rewrites_table'] else ''} | `{s['sql']}` |"
                  for s in f["statements"]]
        if f["destructive"]:
            lines += ["", "Destructive operations:",
                      *[f"- line {d['line']}: {destructive_text(d)}" for d in f["destructive"]]]
        if f["lint"]:
            lines += ["", "squawk:", *[f"- line {x['line']}: {x['level']} `{x['rule']}`: "
                                       f"{x['message']}" for x in f["lint"]]]
        if f.get("dry_run_failure"):
            lines += ["", f"Dry-run failure: {f['dry_run_failure']}"]
        lines.append("")
    return "\n".join(lines)


def preflight_batch_phase(state: RunState) -> None:
    """Plan the whole batch, write the plan, ask every question in one batch before anything
    runs."""
    from dbsage.agent.batch import nothing_to_apply
    from dbsage.tools.artifacts import write_json, write_text

    assert isinstance(state.policy, PreflightPolicy)
    if nothing_to_apply(state):
        state.policy.ask_batch([])
        return
    state.plan = plan = build_batch_plan(state)
    plan_dir = state.options.project_dir / PLAN_DIR
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    json_path = write_json(plan_dir / f"{stamp}_up_plan.json", plan)
    md_path = write_text(plan_dir / f"{stamp}_up_plan.md", render_batch_plan_markdown(plan))
    state.files["plan_json"], state.files["plan_md"] = state.rel(json_path), state.rel(md_path)
    if not plan["dry_run"]["passed"]:
        failed = next(f for f in plan["files"] if f.get("dry_run") == "failed")
        from dbsage.tools.errors import DryRunFailedError

        raise DryRunFailedError(f"The pre-flight dry-run of the batch failed: "
                                f"{failed.get('dry_run_failure')} Nothing was applied.",
                                hint=f"See {state.files['plan_md']}.")
    questions = [question(state, cp) for cp in state.definition.checkpoints
                 if "preflight" in cp.modes and cp.kind != "choice"]
    asked = len(questions) + len(state.policy.deferred)
    state.notices.append(f"Pre-flight plan written to {state.files['plan_md']} "
                         f"({asked} question(s), answered before anything ran).")
    from dbsage.agent.plantext import batch_plan_table

    intro = f"{batch_plan_table(plan, _width())}\n  (written to {state.files['plan_md']})"
    _stop_on_no(state, state.policy.ask_batch(questions, intro))
