"""Turn a RunReport into what a person reads (rich) or a program reads (--json)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from dbsage.agent.grammar import front_syntax as _say  # hints worded for the front end
from dbsage.agent.report import RunReport

if TYPE_CHECKING:
    from rich.console import Console

def render_json(report: RunReport) -> str:
    """The --json document."""
    return json.dumps(report.to_dict(), indent=2, default=str)


def warm_up() -> None:
    """Load rich now (about 15 ms), e.g. while a run waits for its after-snapshot."""
    _console()


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # emoji=False: ":x:" in a message from the database stays ":x:".
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def _e(text: object) -> str:
    """Text from the file or the database inside rich markup: never read as markup."""
    from rich.markup import escape

    return escape(str(text))


def print_notices(report: RunReport, skip: int = 0) -> None:
    """Each notice (but the first `skip`, shown already as they happened), on stderr so
    --json stays clean. No notice: rich is not even loaded (--json of a read-only task)."""
    if not report.notices[skip:]:
        return
    err = _console(stderr=True)
    for n in report.notices[skip:]:
        print_notice(err, n)


def print_notice(err: Console, text: str) -> None:
    """One notice: `ℹ text`, dim."""
    err.print(f"[dim]ℹ {_e(_say(text))}[/dim]")


def print_report(report: RunReport, view: str = "normal") -> None:
    """The success block of the original task, or a precise failure block.

    `view`: "normal" fits a small migration's report on one screen (the checks that passed
    are counted, not listed; each finding is shown once); "verbose" lists every check;
    "quiet" is one line (status, file, version, TS).
    """
    out = _console()
    VIEW["name"] = view
    if view == "quiet":
        out.print(quiet_line(report), markup=False)
        return
    if _print_details(out, report):  # rls-audit, analyze-hotpaths
        return
    if report.batch is not None:  # up, up --dry-run
        _print_batch(out, report)
    elif report.task == "dry-run" and report.status == "passed":
        _print_dry_run(out, report)
    elif report.task == "smoke-test" and report.smoke is not None:
        _print_smoke(out, report)
    elif report.task == "plan" and report.status == "planned":
        _print_plan(out, report)
        _print_warnings(out, report)
    elif report.status == "prepared":
        out.print(f"[bold]↩ Rollback plan for version {_e(report.version)} ({_e(report.name)})[/bold]")
        out.print(f"Reverse script: {report.files.get('rollback')}", markup=False)
        out.print(report.ddl, markup=False)
        _print_warnings(out, report, with_checks=False)
    elif report.status == "rolled_back":
        out.print(f"[bold green]✅ Rolled back version {_e(report.version)} ({_e(report.name)})[/bold green]")
        out.print(f"Timestamp: {report.ts}\nDatabase:  {report.target}", markup=False)
        out.print(f"Reverse script: {report.files.get('rollback')}; "
                  f"{report.records_affected} row(s) of saved data restored.", markup=False)
        for key in ("before", "after", "diff"):
            if key in report.files:
                out.print(f"  - {key + ':':<7} {report.files[key]}", markup=False)
        _print_checks(out, report)
        _print_warnings(out, report)
        _print_next_steps(out, report)
    elif report.status == "applied":
        _print_success(out, report)
    else:
        _print_failure(out, report)  # its statements once (a failed dry-run's too)
        _print_warnings(out, report, with_checks=False)
    if report.follow_up_result is not None:
        _print_follow_up(out, report)


def quiet_line(r: RunReport) -> str:
    """--quiet: `✅ applied supabase/migrations/x.sql version V TS T` (a failure adds its
    message's first line)."""
    ok = r.exit_code == 0
    parts = ["✅" if ok else "❌", r.status]
    if r.path:
        parts.append(str(r.path))
    elif r.batch:
        parts.append(f"{len(r.batch)} file(s)")
    if r.version:
        parts.append(f"version {r.version}")
    if r.ts:
        parts.append(f"TS {r.ts}")
    line = " ".join(parts)
    if not ok and r.error and r.error.get("message"):
        line += ": " + _say(str(r.error["message"])).splitlines()[0]
    return line


# The view of the report being printed ("normal", "verbose"); print_report sets it.
VIEW = {"name": "normal"}


def _wrapped(out: Console, text: str, mark: str, indent: str) -> None:
    """`mark` (markup), then `text` wrapped at word boundaries to the console's width, its
    next lines indented by `indent` (a long word, a URL, stays whole)."""
    import textwrap

    from rich.text import Text

    lead = " " * Text.from_markup(mark).cell_len
    lines = textwrap.wrap(text, width=max(40, out.width), initial_indent=lead,
                          subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False) or [lead]
    out.print(mark + _e(lines[0][len(lead):]))
    for line in lines[1:]:
        out.print(_e(line))


def _noted_checks(r: RunReport) -> list[dict[str, Any]]:
    return [c for c in r.checks if c["status"] != "pass" and c.get("detail")]


def _print_warnings(out: Console, r: RunReport, *, with_checks: bool = True) -> None:
    """Each warning once: one that a check shown above already says (its detail), or that the
    failure message says, is left out."""
    details = [str(c["detail"]) for c in _noted_checks(r)] if with_checks else []
    said = str((r.error or {}).get("message", ""))
    for w in r.warnings:
        if any(w.endswith(d) for d in details) or (said and w in said):
            continue
        _wrapped(out, _say(w), "[yellow]⚠[/yellow] ", "  ")


def _print_plan(out: Console, r: RunReport) -> None:
    """`dbsage plan`: the plan's table (agent/plantext.py), its files, the checks, and the
    failed check that makes it exit non-zero."""
    from dbsage.agent.plantext import plan_table

    out.print(f"[bold]📋 Pre-flight plan for {_e(r.path)}[/bold]")
    plan = (r.details or {}).get("plan")
    if plan:
        out.print(plan_table(plan, out.width), markup=False)
    out.print(f"Written to {r.files['plan_md']} and {r.files['plan_json']}", markup=False)
    advisors = (r.details or {}).get("advisors") or {}
    if advisors.get("introduced"):  # each with why and its fix (the table has the summary)
        out.print("\n".join(delta_text(advisors).splitlines()[1:]), markup=False)
    _print_checks(out, r)
    if r.error:
        out.print(f"[bold red]❌ {_e(_say(r.error.get('message', '')))}[/bold red]")
        if r.error.get("hint"):
            out.print(f"Hint: {_say(str(r.error['hint']))}", markup=False)


def _print_follow_up(out: Console, r: RunReport) -> None:
    result = r.follow_up_result or {}
    verdict = "[green]passed[/green]" if result.get("passed") else "[red]failed[/red]"
    out.print(f"\n{_e(_say(r.follow_up or ''))}: {verdict}")
    marks = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
    for c in result.get("checks", []):
        out.print(f"  {marks.get(c['status'], '?')} {c['id']}: ", end="")
        out.print(c["detail"], markup=False)
    _print_follow_up_details(out, result)


def _print_success(out: Console, r: RunReport) -> None:
    """The task definition's success_output, the statements, then its next_steps."""
    lines = r.success_text.splitlines() or ["✅ Migration Applied Successfully"]
    out.print(f"[bold green]{lines[0]}[/bold green]", markup=True)
    for line in lines[1:]:
        out.print(line, markup=False)
    where = ("in transaction" if all(s.get("transactional", True) for s in r.statements)
             else "outside a transaction")
    out.print(f"Version:   {r.version} ({len(r.statements)} statement(s), {r.records_affected} "
              "row(s))", markup=False)
    out.print(f"Timing:    {r.apply_time:.3f} s {where}, {r.execution_time:.2f} s in all"
              f"{', attempts ' + str(r.attempts) if r.attempts > 1 else ''}", markup=False)
    out.print(f"Database:  {r.target}", markup=False)
    _print_statements(out, r.statements)
    _print_checks(out, r)
    _print_warnings(out, r)
    _print_next_steps(out, r)


def _print_next_steps(out: Console, r: RunReport) -> None:
    if not r.next_steps:
        return
    steps = [(_say(c), t) for c, t in r.next_steps]
    width = max(len(c) for c, _ in steps)
    out.print("\nNext steps:")
    for cmd, text in steps:
        out.print(f"  {cmd:<{width}}  - {text}", markup=False)


_CHECK_MARKS = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]",
                "fail": "[red]✗[/red]", "overridden": "[yellow]~[/yellow]"}


def _print_checks(out: Console, r: RunReport) -> None:
    """--verbose: every check. Otherwise how many passed, and each one that did not (an
    overridden one as overridden). Wrapped at word boundaries, never mid-word."""
    if not r.checks:
        return
    verbose = VIEW["name"] == "verbose"
    said = str((r.error or {}).get("message", ""))
    # not listed again: a check that passed (but with --verbose), a failure the message says
    shown = r.checks if verbose else [
        c for c in r.checks if c["status"] != "pass" and not (
            c["status"] == "fail" and not c.get("overridden") and c.get("detail")
            and str(c["detail"]) in said)]
    counts: dict[str, int] = {}
    for c in r.checks:
        key = "overridden" if c.get("overridden") else c["status"]
        counts[key] = counts.get(key, 0) + 1
    words = {"pass": "passed", "warn": "warning(s)", "fail": "failed", "overridden": "overridden"}
    summary = ", ".join(f"{counts[k]} {w}" for k, w in words.items() if counts.get(k))
    out.print(f"Checks: {summary}" + ("" if verbose else " (--verbose lists every check)"),
              markup=False)
    for c in shown:
        status = "overridden" if c.get("overridden") else c["status"]
        text = str(c["text"]) + (" (overridden)" if status == "overridden" else "")
        if c.get("detail"):
            text += f" — {c['detail']}"
        _wrapped(out, _say(text), f"  {_CHECK_MARKS[status]} ", "    ")


def _print_dry_run(out: Console, r: RunReport) -> None:
    out.print(f"[bold green]✅ Dry-run passed[/bold green] — {_e(r.path)}: nothing was changed "
              "(the transaction was rolled back).")
    out.print(f"Database: {r.target}", markup=False)
    _print_statements(out, r.statements)
    for s in r.statements:
        if s.get("locks"):
            out.print(f"  line {s['line']} locks: {', '.join(s['locks'])}", markup=False)
    if r.changes:
        out.print("Schema changes it would make:")
        for c in r.changes:
            detail = " ".join(str(c.get("detail") or "").split())
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            out.print(f"  {c['action']:<9} {c['kind']:<18} {c['name']}"
                      + (f"  ({detail})" if detail else ""), markup=False)
    if r.ddl:
        out.print("As DDL:")
        out.print(r.ddl, markup=False)
    _print_advisors(out, r)
    _print_warnings(out, r, with_checks=False)
    _print_next_steps(out, r)


_SMOKE_ITEMS = 10  # objects listed under a smoke check that warns or fails


def _print_smoke(out: Console, r: RunReport) -> None:
    smoke = r.smoke or {}
    ok = smoke.get("passed")
    out.print("[bold green]✅ Smoke test passed[/bold green]" if ok else
              "[bold red]❌ Smoke test failed[/bold red]")
    marks = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
    for c in smoke.get("checks", []):
        out.print(f"  {marks[c['status']]} {_e(c['title'])}  [dim]({c['duration_ms']:.0f} ms)[/dim]")
        if c["status"] != "pass":
            out.print(f"      {c['detail']}", markup=False)
            items = c.get("items") or []
            for item in items[:_SMOKE_ITEMS]:  # name them: which FK, which table
                out.print(f"        - {item}", markup=False)
            if len(items) > _SMOKE_ITEMS:
                out.print(f"        … {len(items) - _SMOKE_ITEMS} more (--json lists every one)",
                          markup=False)
    for t in smoke.get("user_tests", []):
        mark = marks["pass" if t["passed"] else "fail"]
        out.print(f"  {mark} {_e(t['path'])} ({t['mode']}, {t['ran']} test(s))")
        for f in t["failures"] + ([t["error"]] if t["error"] else []):
            out.print(f"      {f}", markup=False)
    _print_warnings(out, r, with_checks=False)
    if ok:
        _print_next_steps(out, r)


def _print_statements(out: Console, statements: list[dict[str, Any]]) -> None:
    if not statements:
        return
    out.print("Statements:")
    from dbsage.tools.analyze import STATUS_ACTS_ON_SERVER

    marks = {"ok": "[green]✓[/green]", "failed": "[red]✗[/red]", "not_run": "[dim]·[/dim]",
             STATUS_ACTS_ON_SERVER: "[yellow]⊘[/yellow]"}
    for s in _shown_statements(statements):
        if isinstance(s, int):
            out.print(f"  [dim]… {s:,} more statement(s) (--json lists every one)[/dim]")
            continue
        rows = f", {s['rows_affected']} row(s)" if s["rows_affected"] else ""
        tail = f"  ({s['duration_ms']:.1f} ms{rows})"
        sql = str(s["sql"])
        room = out.width - len(f"  ✓ line {s['line']:<4} ") - len(tail)
        if VIEW["name"] != "verbose" and len(sql) > room:  # one line each (--verbose: all)
            sql = sql[:max(room - 1, 20)] + "…"
        out.print(f"  {marks.get(s['status'], '?')} line {s['line']:<4} {_e(sql)}"
                  f"[dim]{_e(tail)}[/dim]")


MAX_STATEMENTS_SHOWN = 20


def _shown_statements(statements: list[dict[str, Any]]) -> list[dict[str, Any] | int]:
    """A long file's statements as a person reads them: the first ones, the failed or
    interrupted one with its neighbours, the last ones; a number stands for as many left
    out. (A 10,000-statement file took 8 s to print in full.)"""
    if len(statements) <= MAX_STATEMENTS_SHOWN:
        return list(statements)
    keep = set(range(12)) | set(range(len(statements) - 4, len(statements)))
    for i, s in enumerate(statements):
        if s["status"] not in ("ok", "not_run"):
            keep |= {i - 1, i, i + 1}
    keep = {i for i in keep if 0 <= i < len(statements)}
    out: list[dict[str, Any] | int] = []
    previous = -1
    for i in sorted(keep):
        if i - previous > 1:
            out.append(i - previous - 1)
        out.append(statements[i])
        previous = i
    return out


# What a failure block is headed with, by task (default: Migration refused / failed).
_TASK_NOUNS = {"smoke-test": "Smoke test", "rls-audit": "RLS audit",
               "analyze-hotpaths": "Hot-path analysis", "seed": "Seed", "rollback": "Rollback",
               "dry-run": "Dry-run", "plan": "Plan"}
_CHECKING_TASKS = frozenset({"smoke-test", "rls-audit", "analyze-hotpaths", "dry-run", "plan"})


def _print_failure(out: Console, r: RunReport) -> None:
    err = r.error or {}
    if err.get("error") == "Cancelled":  # end of input at a question: one line says it all
        out.print(f"⏹ {err.get('message', 'Cancelled.')}", markup=False)
        return
    noun = _TASK_NOUNS.get(r.task, "Migration")
    title = f"{noun} refused" if r.status == "refused" else f"{noun} failed"
    if r.task in _CHECKING_TASKS and r.status == "refused":  # nothing was to be changed
        title = f"{noun} could not run"
    if err.get("error") == "LockBusyError":
        title = "Another migration is running"
    out.print(f"[bold red]❌ {title}[/bold red]")
    out.print(_say(err.get("message", "")), markup=False)
    if err.get("source_line") is not None:
        out.print(f"    {err['source_line']}", markup=False)
        if err.get("column"):
            out.print("    " + " " * (err["column"] - 1) + "^", markup=False)
    for key, label in (("detail", "Detail"), ("hint", "Hint")):
        if err.get(key):
            out.print(f"{label}: {_say(str(err[key]))}", markup=False)
    if r.statements and any(s["status"] != "not_run" for s in r.statements):
        _print_statements(out, r.statements)
    if r.files.get("before"):
        out.print(f"Pre-migration snapshot kept: {r.files['before']}", markup=False)


# --------------------------------------------------------------------------- issue 14: findings
# The report's `details` sections (agent/steps.py makes them): rls, lints, access, advisors,
# hotpaths. Text is built as plain lines and printed without markup (names come from the
# database).

_LEVEL_STYLE = {"ERROR": "bold red", "WARN": "yellow", "INFO": "cyan"}
_OUTCOME = {"allowed": "✓", "denied_rls": "✗rls", "denied_privilege": "✗grant",
            "not_testable": "?", "error": "!err"}


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in text.splitlines()]


def delta_text(doc: dict[str, Any], *, errors_only: bool = False) -> str:
    """An advisors section (a migration's delta) as text: the one-line summary, then each
    finding it introduces (+) with why and its fix, and each it fixes (-)."""
    lines = [f"Advisors: this migration {doc['summary']}"]
    for f in doc["introduced"]:
        if errors_only and f["level"] != "ERROR":
            continue
        lines.append(f"  + {f['level']} {f['name']} on {f['object']}"
                     + (f" ({f['item']})" if f["item"] else ""))
        lines.append(f"      {f['detail']}")
        lines.append(f"      Why: {f['why']}")
        lines += ["      Fix:", *_indent(f["fix"], "        ")]
    if not errors_only:
        for f in doc["fixed"]:
            lines.append(f"  - {f['level']} {f['name']} on {f['object']}"
                         + (f" ({f['item']})" if f["item"] else ""))
        hot = doc.get("hot_queries")
        if hot:
            lines.append(f"Hot queries: {hot['checked']} planned before and after; "
                         + (f"{len(hot['lines'])} change(s):" if hot["lines"] else
                            "no plan gets more expensive or loses an index scan"))
            lines += [f"  ! {line}" for line in hot["lines"]]
    return "\n".join(lines)


def _print_advisors(out: Console, r: RunReport) -> None:
    doc = (r.details or {}).get("advisors")
    if doc:
        out.print(delta_text(doc), markup=False)


def _policy_lines(t: dict[str, Any]) -> list[str]:
    lines = []
    for p in t["policies"]:
        kind = "permissive" if p["permissive"] else "RESTRICTIVE"
        lines.append(f"    policy \"{p['name']}\" FOR {p['command']} {kind} TO "
                     f"{', '.join(p['roles'])}")
        if p["using"] is not None:
            lines.append(f"      using ({p['using']})")
        if p["with_check"] is not None:
            lines.append(f"      with check ({p['with_check']})")
    return lines


def _table_lines(t: dict[str, Any]) -> list[str]:
    rls = "RLS on" if t["rls_enabled"] else "RLS OFF"
    head = f"  {t['table']}  {rls}{', FORCE' if t['rls_forced'] else ''}  (owner {t['owner']}"
    head += f", extension {t['extension']})" if t["extension"] else ")"
    lines = [head, *_policy_lines(t)]
    flags = t["flags"]
    if "rls_off" in flags:
        lines.append("    ✗ RLS off: the grants alone decide who reads and writes every row")
    elif "rls_on_no_policy" in flags:
        lines.append("    ✗ RLS on, no policy: nobody but the owner and BYPASSRLS roles "
                     "(service_role) reaches a row")
    elif t["uncovered"]:
        lines.append(f"    ! covered: {', '.join(t['covered'])}; no permissive policy for "
                     f"{', '.join(t['uncovered'])}")
    else:
        lines.append("    ✓ every command covered by a permissive policy")
    return lines


def rls_text(rls: dict[str, Any]) -> list[str]:
    """The rls section: per table RLS, FORCE, policies and coverage; then the summary."""
    s = rls["summary"]
    lines = [f"Tables of {', '.join(rls['schemas'])}:"]
    for t in rls["tables"]:
        lines += _table_lines(t)
    if not rls["tables"]:
        lines.append("  (none)")
    lines.append(f"Summary: {s['tables']} table(s), {s['rls_enabled']} with RLS "
                 f"({s['rls_forced']} forced), {s['policies']} policy(ies); {s['rls_off']} with "
                 f"RLS off, {s['rls_on_no_policy']} with RLS on and no policy, "
                 f"{s['incomplete_coverage']} with incomplete coverage, {s['fully_covered']} "
                 "fully covered.")
    return lines


def lints_text(lints: dict[str, Any]) -> list[str]:
    """The lints by level, each with its object, why and fix (the fix once per lint: the
    others are the same with their own names)."""
    c = lints["counts"]
    lines = [f"Advisor lints: {c['ERROR']} ERROR, {c['WARN']} WARN, {c['INFO']} INFO"]
    shown: set[str] = set()
    for f in lints["findings"]:
        where = f["object"] + (f" ({f['item']})" if f["item"] else "")
        lines.append(f"  {f['level']:<5} {f['name']} — {where}")
        lines.append(f"        {f['detail']}")
        if f["name"] in shown:
            continue
        shown.add(f["name"])
        lines.append(f"        Why: {f['why']}")
        lines += ["        Fix (the same for each " + f["name"] + ", with its own names):",
                  *_indent(f["fix"], "          ")]
        if f.get("docs"):
            lines.append(f"        Docs: {f['docs']}")
    return lines


def _cell(probe: dict[str, Any]) -> str:
    mark = _OUTCOME.get(probe["outcome"], probe["outcome"])
    if probe["outcome"] == "allowed" and probe["rows"] is not None:
        return f"{probe['rows']}"
    return mark


def access_text(access: dict[str, Any]) -> list[str]:
    """The impersonation matrix: a row per table, a column per role (SELECT/INSERT/UPDATE/
    DELETE: rows it reached, ✗rls / ✗grant denied, ? not testable, !err)."""
    roles = access["roles"]
    cells = {(c["table"], c["role"]): c for c in access["cells"]}
    rows = [["table", "all rows", *roles]]
    for table in access["tables"]:
        total = access["total_rows"].get(table)
        row = [table, "?" if total is None else str(total)]
        for role in roles:
            c = cells.get((table, role))
            row.append("-" if c is None else " ".join(
                f"{k[0].upper()}:{_cell(c[k])}" for k in ("select", "insert", "update", "delete")))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["Who can do what (impersonated in a transaction that was rolled back):"]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    lines.append("  S/I/U/D: SELECT, INSERT, UPDATE, DELETE; a number: rows it reached (0: RLS "
                 "let none through); ✗rls: refused by a policy's WITH CHECK; ✗grant: no "
                 "privilege; ?: the probe row broke a constraint (says nothing about access); "
                 "!err: see --json")
    return lines


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.2f} ms"


def _flat(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _hot_finding_lines(findings: list[dict[str, Any]], prefix: str) -> list[str]:
    lines = []
    for f in findings:
        lines.append(f"{prefix}[{f['severity'].upper()}] {f['title']}")
        lines.append(f"{prefix}    evidence: {f['evidence']}")
        lines.append(f"{prefix}    → {f['suggestion']}")
    return lines


def hotpaths_text(h: dict[str, Any], report_file: str | None) -> list[str]:
    """The hotpaths section: statistics, top statements, plans and findings, indexes."""
    st = h["statistics"]
    lines = [f"Database {h['database']} (PostgreSQL {h['server_version']})"]
    if report_file:
        lines.append(f"Report: {report_file}")
    if st["status"] != "ok":
        lines.append(f"Query statistics are not available: {st['message']}")
        lines += [f"  {i}. {step}" for i, step in enumerate(st["how_to_enable"], 1)]
    else:
        lines.append(st["message"])
        by_number = {q["number"]: q for q in h["queries"]}
        for title, numbers in (("by total time", h["by_total"]), ("by mean time", h["by_mean"])):
            lines.append(f"Top statements {title}:")
            lines += [f"  #{n:<3} {q['calls']:>8,} calls  total {_ms(q['total_ms']):>11}  "
                      f"mean {_ms(q['mean_ms']):>10}  max {_ms(q['max_ms']):>10}  "
                      f"{q['share']:6.1%}  {_flat(q['query'], 60)}"
                      for n in numbers if (q := by_number.get(n))]
            if not numbers:
                lines.append("  (no application statement recorded yet)")
    for q in h["queries"]:
        lines.append(f"Statement #{q['number']}: {_flat(q['query'])}")
        plan = q["plan"]
        if plan is None:
            lines.append(f"  no plan: {q['error']}")
            continue
        how = "EXPLAIN ANALYZE (read-only, rolled back)" if plan["analyzed"] else (
            "EXPLAIN only, never run" + (f": {plan['write_reason']}" if plan["write_reason"]
                                         else ""))
        lines.append(f"  plan: {how}; cost {plan['total_cost']:,.2f}"
                     + (f", execution {_ms(plan['execution_ms'])}"
                        if plan["execution_ms"] is not None else ""))
        lines += [f"    {line}" for line in plan["outline"][:15]]
        if len(plan["outline"]) > 15:
            lines.append(f"    … {len(plan['outline']) - 15} more node(s) in the report")
        lines += _hot_finding_lines(q["findings"], "  ") or ["  no finding"]
    if h["schema_findings"]:
        lines.append("Schema findings:")
        lines += _hot_finding_lines(h["schema_findings"], "  ")
    idx = h["indexes"]
    lines.append(f"Recommended indexes: {len(idx['advice'])}"
                 + (f" — {idx['note']}" if idx["advice"] else ""))
    for i, a in enumerate(idx["advice"], 1):
        lines.append(f"  {i}. {a['sql']}")
        lines.append(f"     why: {a['reason']}; {a['verification']}")
        if a["helps"]:
            lines.append(f"     helps statement(s) {', '.join(f'#{n}' for n in a['helps'])}")
        lines.append(f"     as a migration: save it alone in {a['migration']} (CONCURRENTLY "
                     "cannot share a transaction), then *dry-run it and *apply-migration it")
    lines += [f"  already covered: {s}" for s in idx["skipped"]]
    if h["next_steps"]:
        lines.append("Next steps:")
        lines += [f"  {i}. {step}" for i, step in enumerate(h["next_steps"], 1)]
    lines.append("No data was changed: statements that may write were only planned; read-only "
                 "ones ran under EXPLAIN ANALYZE in read-only transactions that were rolled "
                 "back.")
    return lines


def _details_lines(details: dict[str, Any], files: dict[str, str]) -> list[str]:
    lines: list[str] = []
    if "rls" in details:
        lines += rls_text(details["rls"])
    if "lints" in details:
        lines += lints_text(details["lints"])
    if "access" in details:
        lines += access_text(details["access"])
    if "hotpaths" in details:
        lines += hotpaths_text(details["hotpaths"], files.get("report"))
    return lines


def _print_details(out: Console, r: RunReport) -> bool:
    """rls-audit and analyze-hotpaths: their findings, then the verdict. False for any other
    report (or one that stopped before finding anything: the failure block shows it)."""
    details = r.details or {}
    if r.task == "rls-audit" and "rls" in details:
        title = f"🔒 RLS audit of {', '.join(details['rls']['schemas'])}"
    elif r.task == "analyze-hotpaths" and "hotpaths" in details:
        title = "⚡ Hot paths"
    elif r.task in ("rls-audit", "analyze-hotpaths"):  # stopped before it found anything
        err = r.error or {}
        out.print(f"❌ {r.task} stopped: {err.get('message', r.status)}", style="bold red",
                  markup=False)
        if err.get("hint"):
            out.print(f"Hint: {err['hint']}", markup=False)
        return True
    else:
        return False
    out.print(title, style="bold", markup=False)
    out.print(f"Database: {r.target}", markup=False)
    for line in _details_lines(details, r.files):
        level = line.lstrip().split(" ", 1)[0]
        out.print(line, style=_LEVEL_STYLE.get(level), markup=False)
    if r.exit_code == 0:
        out.print("✅ " + (r.success_text.splitlines() or ["Done"])[0].lstrip("✅ "),
                  style="bold green", markup=False)
    else:
        err = r.error or {}
        out.print(f"❌ {err.get('message', 'failed')}", style="bold red", markup=False)
        if err.get("hint"):
            out.print(f"Hint: {err['hint']}", markup=False)
    _print_next_steps(out, r)
    shown = (r.error or {}).get("message", "")
    for w in r.warnings:
        if w not in shown:  # a failed check is both a warning and part of the verdict
            out.print(f"⚠ {w}", style="yellow", markup=False)
    return True


def _print_follow_up_details(out: Console, result: dict[str, Any]) -> None:
    """What a follow-up of the post-migration menu found (its details sections)."""
    for line in _details_lines(result.get("details") or {}, result.get("files") or {}):
        out.print(line, markup=False)


_BATCH_MARKS = {"applied": "[green]✓[/green]", "passed": "[green]✓[/green]",
                "parsed_only": "[green]~[/green]", "failed": "[red]✗[/red]",
                "rolled_back": "[yellow]↺[/yellow]", "interrupted": "[red]![/red]",
                "not_run": "[dim]·[/dim]", "pending": "[dim]·[/dim]"}


def _print_batch(out: Console, r: RunReport) -> None:
    """`up`: the outcome, then one line per file; a failure names the file, the line and what
    stays committed."""
    ok = r.exit_code == 0 and r.status in ("applied", "passed")
    if ok:
        lines = r.success_text.splitlines() or ["✅ Done"]
        out.print(f"[bold green]{_e(lines[0])}[/bold green]")
        for line in lines[1:] if r.ts else []:  # no TS: nothing applied, no snapshots
            out.print(line, markup=False)
    else:
        _print_failure(out, r)
    if r.target:
        out.print(f"Database:  {r.target}", markup=False)
    files = r.batch or []
    if files:
        width = max(len(f["file"]) for f in files)
        out.print("Files:")
        for f in files:
            extra = f", {f['rows_affected']} row(s)" if f["rows_affected"] else ""
            extra += f", attempts {f['attempts']}" if f["attempts"] > 1 else ""
            out.print(f"  {_BATCH_MARKS.get(f['status'], '?')} {_e(f['file']):<{width}}  "
                      f"[dim]{_e(f['status'])} ({f['statements']} statement(s), "
                      f"{f['duration_ms']:.1f} ms{extra})[/dim]")
    if not ok and r.statements and r.error and r.error.get("line"):
        failing = [s for s in r.statements if s["status"] in ("failed", "interrupted")]
        _print_statements(out, failing)
    _print_checks(out, r)
    _print_warnings(out, r)
    if ok:
        _print_next_steps(out, r)
