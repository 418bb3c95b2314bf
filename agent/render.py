"""Turn a RunReport into what a person reads (rich) or a program reads (--json)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from dbsage.agent.report import RunReport

if TYPE_CHECKING:
    from rich.console import Console

NEXT_STEPS = (
    ("*smoke-test", "Validate migration"),
    ("*rls-audit", "Check security"),
    ("*rollback {ts}", "Undo if needed"),
)


def render_json(report: RunReport) -> str:
    """The --json document."""
    return json.dumps(report.to_dict(), indent=2, default=str)


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
    if report.status == "applied":
        _print_success(out, report)
    else:
        _print_failure(out, report)
    for w in report.warnings:
        out.print(f"[yellow]⚠ {w}[/yellow]")


def _print_success(out: Console, r: RunReport) -> None:
    out.print("[bold green]✅ Migration Applied Successfully[/bold green]\n")
    out.print(f"Timestamp: {r.ts}")
    out.print(f"Migration: {r.path}  (version {r.version}, {len(r.statements)} statement(s), "
              f"{r.records_affected} row(s), {r.apply_time:.3f}s in transaction"
              f"{', attempts ' + str(r.attempts) if r.attempts > 1 else ''})")
    out.print(f"Database:  {r.target}")
    out.print("Snapshots:")
    for label, key in (("Before:", "before"), ("After:", "after"), ("Diff:", "diff")):
        if key in r.files:
            out.print(f"  - {label:<7} {r.files[key]}")
    _print_statements(out, r.statements)
    out.print("\nNext steps:")
    cmds = [(cmd.format(ts=r.ts), text) for cmd, text in NEXT_STEPS]
    width = max(len(c) for c, _ in cmds)
    for cmd, text in cmds:
        out.print(f"  {cmd:<{width}}  - {text}")


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


def stdout_is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
