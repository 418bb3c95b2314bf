"""The `dbsage` command line: thin subcommands over the runner. No LangChain here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from dbsage.agent.report import RunReport

app = typer.Typer(
    name="dbsage",
    help="Dara, the DB Sage: apply PostgreSQL and Supabase migrations safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the embedded PostgreSQL kept under .dbsage/.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")

DbOption = Annotated[str | None, typer.Option(
    "--db", help="Target database URL (default: SUPABASE_DB_URL, DATABASE_URL, else embedded).",
    show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
MODES = ("yolo", "interactive", "preflight")


def _exit_with(report: RunReport, as_json: bool) -> None:
    from dbsage.agent.render import print_notices, print_report, render_json

    print_notices(report)
    if as_json:
        typer.echo(render_json(report))
    else:
        print_report(report)
    raise typer.Exit(report.exit_code)


def _fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    typer.echo(f"❌ {message}", err=True)
    if hint:
        typer.echo(f"Hint: {hint}", err=True)
    raise typer.Exit(code)


def _confirmer(mode: str, yes: bool) -> Callable[[str], bool] | None:
    if yes or mode == "yolo":
        return None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _fail("Interactive mode needs a terminal to ask before applying.",
              "Pass --yes to confirm in advance, or use --mode yolo.")

    def ask(question: str) -> bool:
        from rich.prompt import Confirm

        return Confirm.ask(question + "Apply now?", default=False)

    return ask


@app.command("apply")
def apply_cmd(
    path: Annotated[Path, typer.Argument(help="The migration file (.sql).", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", "-m", help="yolo | interactive | preflight")]
    = "interactive",
    db: DbOption = None,
    lock_timeout: Annotated[str, typer.Option(
        "--lock-timeout", help="Longest wait for a table lock before rolling back and retrying "
        "(PostgreSQL interval, e.g. 1s, 500ms).")] = "1s",
    statement_timeout: Annotated[str | None, typer.Option(
        "--statement-timeout", help="Cancel any statement running longer (e.g. 5min; default "
        "off).", show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations (CI).")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Apply one migration: lock, snapshot, one transaction, snapshot, diff, history."""
    from dbsage.agent.runner import RunOptions, run_apply

    if mode not in MODES:
        _fail(f"Unknown mode {mode!r}.", f"Choose one of: {', '.join(MODES)}.")
    confirm = _confirmer(mode, yes or (as_json and mode == "yolo"))
    opts = RunOptions(mode=mode, db=db, lock_timeout=lock_timeout,
                      statement_timeout=statement_timeout,
                      confirm=confirm)
    _exit_with(run_apply(path, opts), as_json)


@db_app.command("url")
def db_url(db: DbOption = None) -> None:
    """Print the URL dbsage would use (passwords redacted)."""
    from dbsage.tools.connection import resolve_target
    from dbsage.tools.embedded import embedded_status

    target = resolve_target(db)
    if target:
        typer.echo(target.redacted)
        return
    status = embedded_status()
    if not status.running:
        _fail("The embedded PostgreSQL is not running.", "Start it with: dbsage db start", 1)
    typer.echo(status.url)


@db_app.command("start")
def db_start(db: DbOption = None) -> None:
    """Start (and initialise on first use) the embedded PostgreSQL in .dbsage/pgdata."""
    from dbsage.tools.embedded import start_embedded
    from dbsage.tools.errors import DbsageError

    if db:
        _fail("--db points at an external server; dbsage starts only its embedded one.")
    try:
        status = start_embedded()
    except DbsageError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    typer.echo(f"Embedded PostgreSQL running (pid {status.pid}) in {status.pgdata}")
    typer.echo(f"URL: {status.url}")


@db_app.command("stop")
def db_stop(db: DbOption = None) -> None:
    """Stop the embedded PostgreSQL."""
    from dbsage.tools.embedded import embedded_status, stop_embedded
    from dbsage.tools.errors import DbsageError

    if db:
        _fail("--db points at an external server; dbsage stops only its embedded one.")
    if not embedded_status().running:
        typer.echo("The embedded PostgreSQL is not running.")
        return
    try:
        stop_embedded()
    except DbsageError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    typer.echo("Embedded PostgreSQL stopped.")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
