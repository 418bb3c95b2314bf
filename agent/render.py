"""Turn a RunReport into what a person reads (rich) or a program reads (--json)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

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

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_notices(report: RunReport) -> None:
    """One line per notice, on stderr so --json stays clean."""
    err = _console(stderr=True)
    for n in report.notices:
        err.print(f"[dim]ℹ {n}[/dim]")


def print_report(report: RunReport) -> None:
    """The success block of the original task, or a precise failure block."""
    out = _console()
    if report.task == "dry-run" and report.status == "passed":
        _print_dry_run(out, report)
    elif report.task == "smoke-test" and report.smoke is not None:
        _print_smoke(out, report)
    elif report.task == "plan" and report.status == "planned":
        out.print(f"[bold]📋 Pre-flight plan for {report.path}[/bold]")
        out.print(f"  - {report.files['plan_md']}\n  - {report.files['plan_json']}")
        _print_checks(out, report)
    elif report.status == "prepared":
        out.print(f"[bold]↩ Rollback plan for version {report.version} ({report.name})[/bold]")
        out.print(f"Reverse script: {report.files.get('rollback')}")
        out.print(report.ddl, markup=False)
    elif report.status == "rolled_back":
        out.print(f"[bold green]✅ Rolled back version {report.version} ({report.name})[/bold green]")
        out.print(f"Timestamp: {report.ts}\nDatabase:  {report.target}")
        out.print(f"Reverse script: {report.files.get('rollback')}; "
                  f"{report.records_affected} row(s) of saved data restored.")
        for key in ("before", "after", "diff"):
            if key in report.files:
                out.print(f"  - {key + ':':<7} {report.files[key]}")
        _print_checks(out, report)
        _print_next_steps(out, report)
    elif report.status == "applied":
        _print_success(out, report)
        _print_checks(out, report)
    else:
        _print_failure(out, report)
        if report.task == "dry-run" and report.error and report.error.get("line"):
            _print_statements(out, report.statements)
    if report.follow_up_result is not None:
        _print_follow_up(out, report)
    for w in report.warnings:
        out.print(f"[yellow]⚠ {w}[/yellow]")


def _print_follow_up(out: Console, r: RunReport) -> None:
    result = r.follow_up_result or {}
    verdict = "[green]passed[/green]" if result.get("passed") else "[red]failed[/red]"
    out.print(f"\n{r.follow_up}: {verdict}")
    marks = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
    for c in result.get("checks", []):
        out.print(f"  {marks.get(c['status'], '?')} {c['id']}: ", end="")
        out.print(c["detail"], markup=False)


def _print_success(out: Console, r: RunReport) -> None:
    """The task definition's success_output, the statements, then its next_steps."""
    lines = r.success_text.splitlines() or ["✅ Migration Applied Successfully"]
    out.print(f"[bold green]{lines[0]}[/bold green]", markup=True)
    for line in lines[1:]:
        out.print(line, markup=False)
    out.print(f"Version:   {r.version} ({len(r.statements)} statement(s), {r.records_affected} "
              f"row(s), {r.apply_time:.3f}s in transaction"
              f"{', attempts ' + str(r.attempts) if r.attempts > 1 else ''})")
    out.print(f"Database:  {r.target}", markup=False)
    _print_statements(out, r.statements)
    _print_next_steps(out, r)


def _print_next_steps(out: Console, r: RunReport) -> None:
    if not r.next_steps:
        return
    width = max(len(c) for c, _ in r.next_steps)
    out.print("\nNext steps:")
    for cmd, text in r.next_steps:
        out.print(f"  {cmd:<{width}}  - {text}", markup=False)


def _print_checks(out: Console, r: RunReport) -> None:
    if not r.checks:
        return
    marks = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
    out.print("Checks:")
    for c in r.checks:
        out.print(f"  {marks[c['status']]} {c['text']}  [dim]— {c['detail']}[/dim]")


def _print_dry_run(out: Console, r: RunReport) -> None:
    out.print(f"[bold green]✅ Dry-run passed[/bold green] — {r.path}: nothing was changed "
              "(the transaction was rolled back).")
    out.print(f"Database: {r.target}")
    _print_statements(out, r.statements)
    for s in r.statements:
        if s.get("locks"):
            out.print(f"  line {s['line']} locks: {', '.join(s['locks'])}", markup=False)
    if r.changes:
        out.print("Schema changes it would make:")
        for c in r.changes:
            out.print(f"  {c['action']:<8} {c['kind']:<10} {c['name']}", markup=False)
    if r.ddl:
        out.print("As DDL:")
        out.print(r.ddl, markup=False)
    _print_next_steps(out, r)


def _print_smoke(out: Console, r: RunReport) -> None:
    smoke = r.smoke or {}
    ok = smoke.get("passed")
    out.print("[bold green]✅ Smoke test passed[/bold green]" if ok else
              "[bold red]❌ Smoke test failed[/bold red]")
    marks = {"pass": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
    for c in smoke.get("checks", []):
        out.print(f"  {marks[c['status']]} {c['title']}  [dim]({c['duration_ms']:.0f} ms)[/dim]")
        if c["status"] != "pass":
            out.print(f"      {c['detail']}", markup=False)
    for t in smoke.get("user_tests", []):
        mark = marks["pass" if t["passed"] else "fail"]
        out.print(f"  {mark} {t['path']} ({t['mode']}, {t['ran']} test(s))")
        for f in t["failures"] + ([t["error"]] if t["error"] else []):
            out.print(f"      {f}", markup=False)
    if ok:
        _print_next_steps(out, r)


def _print_statements(out: Console, statements: list[dict[str, Any]]) -> None:
    if not statements:
        return
    out.print("Statements:")
    marks = {"ok": "[green]✓[/green]", "failed": "[red]✗[/red]", "not_run": "[dim]·[/dim]"}
    for s in statements:
        rows = f", {s['rows_affected']} row(s)" if s["rows_affected"] else ""
        out.print(f"  {marks.get(s['status'], '?')} line {s['line']:<4} {s['sql']}"
                  f"  [dim]({s['duration_ms']:.1f} ms{rows})[/dim]")


def _print_failure(out: Console, r: RunReport) -> None:
    err = r.error or {}
    title = "Migration refused" if r.status == "refused" else "Migration failed"
    if err.get("error") == "LockBusyError":
        title = "Another migration is running"
    out.print(f"[bold red]❌ {title}[/bold red]")
    out.print(err.get("message", ""), markup=False)
    if err.get("source_line") is not None:
        out.print(f"    {err['source_line']}", markup=False)
        if err.get("column"):
            out.print("    " + " " * (err["column"] - 1) + "^", markup=False)
    for key, label in (("detail", "Detail"), ("hint", "Hint")):
        if err.get(key):
            out.print(f"{label}: {err[key]}", markup=False)
    if r.statements and any(s["status"] != "not_run" for s in r.statements):
        _print_statements(out, r.statements)
    if r.files.get("before"):
        out.print(f"Pre-migration snapshot kept: {r.files['before']}")
