"""The `dbsage` command line: thin subcommands over the runner. No LangChain here."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from dbsage.agent.report import RunReport

if TYPE_CHECKING:
    from dbsage.agent.modes import Asker

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


def _asker(mode: str, yes: bool, answers: Path | None) -> Asker:
    """Who answers checkpoints: --answers file, --yes, else the terminal (required then)."""
    from dbsage.agent.modes import ConsoleAsker, YesAsker, load_answers
    from dbsage.tools.errors import DbsageError

    if answers is not None:
        try:
            return load_answers(answers)
        except DbsageError as exc:
            _fail(exc.message, exc.hint)
    if yes or mode == "yolo":
        return YesAsker()
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _fail(f"{mode.capitalize()} mode asks questions, but there is no terminal to ask on.",
              "Pass --yes to confirm in advance, --answers FILE for scripted answers, or use "
              "--mode yolo.")
    return ConsoleAsker()


ModeOption = Annotated[str, typer.Option("--mode", "-m", help="yolo | interactive | preflight")]
LockTimeoutOption = Annotated[str, typer.Option(
    "--lock-timeout", help="Longest wait for a table lock before rolling back and retrying "
    "(PostgreSQL interval, e.g. 1s, 500ms).")]
StatementTimeoutOption = Annotated[str | None, typer.Option(
    "--statement-timeout", help="Cancel any statement running longer (e.g. 5min; default off).",
    show_default=False)]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations (CI).")]
AnswersOption = Annotated[Path | None, typer.Option(
    "--answers", help="YAML file mapping checkpoint ids to answers (non-interactive runs).",
    show_default=False)]


@app.command("apply")
def apply_cmd(
    path: Annotated[Path, typer.Argument(help="The migration file (.sql).", show_default=False)],
    mode: ModeOption = "interactive",
    db: DbOption = None,
    lock_timeout: LockTimeoutOption = "1s",
    statement_timeout: StatementTimeoutOption = None,
    yes: YesOption = False,
    answers: AnswersOption = None,
    allow_destructive: Annotated[bool, typer.Option(
        "--allow-destructive", help="Allow DROP/TRUNCATE/DELETE-without-WHERE and rewrites.")]
    = False,
    allow_out_of_order: Annotated[bool, typer.Option(
        "--allow-out-of-order", help="Allow a version older than the latest applied one.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Apply despite squawk errors.")] = False,
    no_dry_run: Annotated[bool, typer.Option(
        "--no-dry-run", help="yolo: skip the automatic dry-run (logged as your decision).")]
    = False,
    rollback_script: Annotated[bool, typer.Option(
        "--rollback-script", help="Write supabase/rollback/{TS}_rollback.sql now (default: "
        "derived from the run's snapshots when first needed).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply one migration: lock, snapshot, one transaction, snapshot, diff, history."""
    from dbsage.agent.runner import RunOptions, run_apply

    if mode not in MODES:
        _fail(f"Unknown mode {mode!r}.", f"Choose one of: {', '.join(MODES)}.")
    flags = {"allow_destructive": allow_destructive, "allow_out_of_order": allow_out_of_order,
             "force": force, "skip_dry_run": no_dry_run, "rollback_script": rollback_script}
    from dbsage.agent.render import warm_up

    opts = RunOptions(mode=mode, db=db, lock_timeout=lock_timeout,
                      statement_timeout=statement_timeout, asker=_asker(mode, yes, answers),
                      flags=flags, while_waiting=warm_up)
    _exit_with(run_apply(path, opts), as_json)


@app.command("plan")
def plan_cmd(
    path: Annotated[Path, typer.Argument(help="The migration file (.sql).", show_default=False)],
    db: DbOption = None,
    lock_timeout: LockTimeoutOption = "1s",
    as_json: JsonOption = False,
) -> None:
    """Pre-flight analysis only: locks, sizes, rewrites, destructive operations, lint, dry-run;
    writes supabase/plans/{TS}_plan.md and .json. Changes nothing."""
    from dbsage.agent.runner import RunOptions, run_plan

    opts = RunOptions(mode="preflight", db=db, lock_timeout=lock_timeout)
    _exit_with(run_plan(path, opts), as_json)


@app.command("dry-run")
def dry_run_cmd(
    path: Annotated[Path, typer.Argument(help="The migration file (.sql).", show_default=False)],
    db: DbOption = None,
    lock_timeout: LockTimeoutOption = "1s",
    statement_timeout: StatementTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the migration exactly as apply would, in a transaction that is always rolled back."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import RunOptions, run_dry_run_task

    opts = RunOptions(mode="yolo", db=db, lock_timeout=lock_timeout,
                      statement_timeout=statement_timeout, asker=YesAsker())
    _exit_with(run_dry_run_task(path, opts), as_json)


@app.command("rollback")
def rollback_cmd(
    migration: Annotated[str, typer.Argument(
        help="The TS of the apply run to undo, `latest`, or a supabase/snapshots/*_before.sql "
        "snapshot.", show_default=False)],
    mode: ModeOption = "interactive",
    db: DbOption = None,
    lock_timeout: LockTimeoutOption = "1s",
    statement_timeout: StatementTimeoutOption = None,
    yes: YesOption = False,
    answers: AnswersOption = None,
    allow_data_loss: Annotated[bool, typer.Option(
        "--allow-data-loss", help="Allow a rollback that drops tables or columns holding rows.")]
    = False,
    prepare_only: Annotated[bool, typer.Option(
        "--prepare-only", help="Write and show the reverse script and what it would lose; "
        "change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Undo an applied migration with its reverse DDL, restoring the data it destroyed.

    Never replays the schema-only snapshot on the database (that would empty every table)."""
    from dbsage.agent.runner import RunOptions, prepare_rollback_only, run_rollback_task

    if prepare_only:
        _exit_with(prepare_rollback_only(migration, RunOptions(mode="yolo", db=db)), as_json)
    if mode not in MODES:
        _fail(f"Unknown mode {mode!r}.", f"Choose one of: {', '.join(MODES)}.")
    from dbsage.agent.render import warm_up

    opts = RunOptions(mode=mode, db=db, lock_timeout=lock_timeout,
                      statement_timeout=statement_timeout, asker=_asker(mode, yes, answers),
                      flags={"allow_data_loss": allow_data_loss}, while_waiting=warm_up)
    _exit_with(run_rollback_task(migration, opts), as_json)


@app.command("smoke-test")
def smoke_test_cmd(
    db: DbOption = None,
    exposed: Annotated[str, typer.Option(
        "--exposed-schemas", help="Comma-separated schemas the API exposes (RLS check).")]
    = "public",
    as_json: JsonOption = False,
) -> None:
    """Check the database (relations, indexes, constraints, sequences, RLS, history) and run
    supabase/tests/**/*.sql (pgTAP when available). Exit code 1 when anything fails."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import RunOptions, run_smoke_task

    schemas = tuple(x.strip() for x in exposed.split(",") if x.strip())
    opts = RunOptions(mode="yolo", db=db, asker=YesAsker(), exposed_schemas=schemas)
    _exit_with(run_smoke_task(opts), as_json)


@app.command("chat")
def chat_cmd(
    db: DbOption = None,
    mode: ModeOption = "interactive",
    script: Annotated[Path | None, typer.Option(
        "--script", help="Run one *command a line from FILE ('-' for stdin) without asking: "
        "every confirmation is answered yes (like --yes) and writes an LLM proposes are "
        "declined. Stops with a non-zero exit code at the first failure. A stdin that is not a "
        "terminal is read the same way.", show_default=False)] = None,
) -> None:
    """Talk to Dara: a REPL of *commands (*help lists them) and, with DBSAGE_MODEL set,
    plain-language questions."""
    from dbsage.agent.chat import run_chat

    if mode not in MODES:
        _fail(f"Unknown mode {mode!r}.", f"Choose one of: {', '.join(MODES)}.")
    from dbsage.tools.errors import Terminated

    try:
        code = run_chat(db=db, mode=mode, script=script)
    except Terminated:
        code = 143  # SIGTERM ends the chat (a run in it has stopped cleanly first)
    raise typer.Exit(code)


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


def _stop_cleanly(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled, a container stopped) stops a run like Ctrl-C: the open
    # transaction rolls back, the lock is released, temporary files are removed.
    from dbsage.tools.errors import Terminated

    raise Terminated


def main() -> None:
    """Console entry point."""
    import signal

    signal.signal(signal.SIGTERM, _stop_cleanly)
    try:
        app()
    finally:
        # The command is done. The interpreter's teardown would still walk every object the
        # run created (about 50,000) in garbage-collection passes: ~40 ms on every command.
        # Freezing them skips those passes; atexit handlers and flushing run as usual.
        gc.freeze()


if __name__ == "__main__":
    main()
