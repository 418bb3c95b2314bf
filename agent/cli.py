"""The `dbsage` command line: one typer subcommand per command function of agent/commands.py.

Nothing here declares an option: each subcommand is generated from its function's signature
(agent/grammar.py), and every value goes through the same validators as in the chat before
the function runs. No LangChain here.
"""

from __future__ import annotations

import gc
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from dbsage.agent.commands import Outcome, Session, call, commands
from dbsage.agent.grammar import CommandError, CommandSpec, validate

if TYPE_CHECKING:
    from collections.abc import Callable

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


def _fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    typer.echo(f"❌ {message}", err=True)
    if hint:
        typer.echo(f"Hint: {hint}", err=True)
    raise typer.Exit(code)


def present(outcome: Outcome) -> None:
    """Print an outcome: notices on stderr, then the report (rich) or JSON, or its text."""
    if outcome.report is not None:
        from dbsage.agent.render import print_notices, print_report, set_front

        set_front("cli")  # hints as `dbsage rollback TS`, not the chat's `*rollback TS`
        if outcome.view != "quiet":
            print_notices(outcome.report)
        if outcome.as_json:
            typer.echo(outcome.text)
        else:
            print_report(outcome.report, outcome.view)
        return
    if outcome.text:
        typer.echo(outcome.text, err=not outcome.ok and not outcome.as_json)


def _session() -> Session:
    from dbsage.agent.render import warm_up

    return Session(front="cli", interactive=sys.stdin.isatty() and sys.stdout.isatty(),
                   while_waiting=warm_up)


def _parameters(spec: CommandSpec) -> list[inspect.Parameter]:
    """typer parameters for a command spec: arguments, then options (all keyword-only)."""
    params: list[inspect.Parameter] = []
    for a in spec.args:
        default = None if a.optional else ...
        info = typer.Argument(default, help=a.help, metavar=a.metavar, show_default=False)
        kind: Any = list[str] if a.variadic else str
        params.append(inspect.Parameter(a.param, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=info, annotation=kind | None if a.optional
                                        else kind))
    for o in spec.options:
        names = [o.flag, *([o.short] if o.short else [])]
        if o.takes_value:
            info = typer.Option(o.default, *names, help=o.help, metavar=o.metavar,
                                show_default=False)
            annotation: Any = str | None
        else:
            info = typer.Option(False, *names, help=o.help)
            annotation = bool
        params.append(inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY,
                                        default=info, annotation=annotation))
    return params


def _subcommand(spec: CommandSpec) -> Callable[..., None]:
    def run(**values: Any) -> None:
        for a in spec.args:  # typer gives a variadic argument as a list, or None when empty
            if a.variadic:
                values[a.param] = tuple(values.get(a.param) or ())
        try:
            checked = validate(spec, values)
        except CommandError as exc:
            _fail(exc.message, exc.hint)
        outcome = call(spec, checked, _session())
        present(outcome)
        raise typer.Exit(outcome.exit_code)

    run.__signature__ = inspect.Signature(_parameters(spec))  # type: ignore[attr-defined]
    run.__annotations__ = {}
    run.__doc__ = spec.doc.split("\n\nArgs:")[0]
    run.__name__ = spec.name.replace("-", "_")
    return run


def _cli_names(spec: CommandSpec) -> list[str]:
    """The subcommand's name first, then its other names (hidden in the help)."""
    names = [spec.cli_name or spec.name, spec.name, *spec.aliases]
    return [n for n in dict.fromkeys(names) if n.replace("-", "").isalnum()]


for _spec in commands():
    if _spec.cli:
        for _i, _name in enumerate(_cli_names(_spec)):
            app.command(_name, hidden=_i > 0)(_subcommand(_spec))


@app.command("chat")
def chat_cmd(
    db: DbOption = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="yolo | interactive | preflight")]
    = "interactive",
    script: Annotated[Path | None, typer.Option(
        "--script", help="Run one *command a line from FILE ('-' for stdin) without asking: "
        "every confirmation is answered yes (like --yes) and writes an LLM proposes are "
        "declined. Stops with a non-zero exit code at the first failure. A stdin that is not a "
        "terminal is read the same way.", show_default=False)] = None,
) -> None:
    """Talk to Dara: a REPL of *commands (*help lists them) and, with DBSAGE_MODEL set,
    plain-language questions."""
    from dbsage.agent.chat import run_chat
    from dbsage.agent.grammar import VALIDATORS

    try:
        mode = VALIDATORS["mode"](mode)
        db = VALIDATORS["db_url"](db) if db is not None else None
    except ValueError as exc:
        _fail(str(exc))
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
def db_start(
    db: DbOption = None,
    plain: Annotated[bool, typer.Option(
        "--plain", help="Make a plain PostgreSQL (only the superuser postgres) instead of the "
        "Supabase-compatible one a project with a supabase/ folder gets.")] = False,
) -> None:
    """Start (and initialise on first use) the local PostgreSQL in .dbsage/pgdata.

    In a project with a supabase/ folder it is Supabase-compatible: Supabase's roles, auth,
    storage, extensions schema and realtime publication, with postgres as a non-superuser
    owner, as on the platform."""
    from dbsage.tools.embedded import start_embedded
    from dbsage.tools.errors import DbsageError

    if db:
        _fail("--db points at an external server; dbsage starts only its embedded one.")
    try:
        status = start_embedded(kind="plain" if plain else None)
    except DbsageError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    for note in status.notes:
        typer.echo(f"Warning: {note}", err=True)
    typer.echo(f"Running {status.description} (pid {status.pid}) in {status.pgdata}")
    typer.echo(f"URL: {status.url}")
    if status.tcp:
        typer.echo(f"Listening on {status.tcp} ([db] port of supabase/config.toml)")


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
