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
from typer.core import TyperCommand, TyperGroup

from dbsage.agent.commands import commands
from dbsage.agent.front import (
    GLOBAL_OPTIONS,
    cli_names,
    execute,
    install_signal_handlers,
    invoked,
    kill_children,
)
from dbsage.agent.grammar import CommandError, CommandSpec, shell_syntax, validate

if TYPE_CHECKING:
    from collections.abc import Callable

    from typer._click import Context

_ALIASES: dict[str, str] = {}  # other names of a subcommand (apply-migration, migrate, ...)


class _Command(TyperCommand):
    """A subcommand whose usage line names its arguments plainly: `PATH`, `[PATH]`,
    `VERSION...` (typer writes a required one as `{PATH}`)."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name != "argument":
                continue
            name = p.metavar or (p.name or "").upper()
            name += "..." if p.nargs != 1 else ""
            pieces.append(name if p.required else f"[{name}]")
        return pieces


class _Group(TyperGroup):
    """The `dbsage` group: a subcommand's other names resolve to it without being listed
    (and without building a hidden copy of the command for each)."""

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        return super().get_command(ctx, _ALIASES.get(cmd_name, cmd_name))

    def resolve_command(self, ctx: Context, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else name), command, rest  # usage: `dbsage dry-run`


_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="dbsage",
    help="Dara, the DB Sage: apply PostgreSQL and Supabase migrations safely.\n\n"
         "Run `dbsage help COMMAND` (or `dbsage COMMAND -h`) for a command's options.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's panels cost ~60 ms of start-up on every --help
    context_settings=_SETTINGS,
    cls=_Group,
)
db_app = typer.Typer(help="Manage the embedded PostgreSQL kept under .dbsage/.",
                     no_args_is_help=True, rich_markup_mode=None, context_settings=_SETTINGS)
app.add_typer(db_app, name="db")

DbOption = Annotated[str | None, typer.Option(
    "--db", metavar="URL",
    help="Target database URL (default: SUPABASE_DB_URL, DATABASE_URL, else embedded).",
    show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dbsage {version('dbsage')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version of dbsage and exit.", is_eager=True,
        callback=_print_version)] = False,
    db: DbOption = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", "-m", metavar="MODE", help="yolo, interactive or preflight, for every "
        "command that asks questions.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the result as JSON, for every command that has --json.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="List every check in the report (commands with a report).")
    ] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print the report as one line (commands with a report).")
    ] = False,
) -> None:
    """Dara, the DB Sage: apply PostgreSQL and Supabase migrations safely."""
    # The values are read by each subcommand (_merge_globals), which knows whether it takes them.


def _fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    typer.echo(f"❌ {shell_syntax(message)}", err=True)
    if hint:
        typer.echo(f"Hint: {shell_syntax(hint)}", err=True)
    raise typer.Exit(code)


def _merge_globals(ctx: Context, values: dict[str, Any], accepts: set[str]) -> None:
    """Fill `values` with the global options given before the subcommand: exit 2 when the
    subcommand has no such option, or when it is given on both sides with different values."""
    given = ctx.find_root().params
    name = ctx.command_path.removeprefix(f"{ctx.find_root().info_name} ")
    for flag, param in GLOBAL_OPTIONS:
        value = given.get(param)
        if value in (None, False):
            continue
        if flag not in accepts:
            _fail(f"`dbsage {name}` has no {flag} option.",
                  f"See `dbsage help {name}` for its options.")
        mine = values.get(param)
        if mine not in (None, False) and mine != value:
            _fail(f"{flag} is given twice, before and after `{name}`, with different values.",
                  f"Give {flag} once.")
        values[param] = value


def _parameters(spec: CommandSpec) -> list[inspect.Parameter]:
    """typer parameters for a command spec: the context, arguments, then options (all
    keyword-only)."""
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=typer.Context)]
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


def _help_of(doc: str) -> str:
    """A docstring as help: its paragraphs (click re-wraps each), without `Args:` & co."""
    for section in ("\n\nArgs:", "\n\nRaises:", "\n\nReturns:"):
        doc = doc.split(section)[0]
    return doc


def _subcommand(spec: CommandSpec) -> Callable[..., None]:
    def run(ctx: Context, **values: Any) -> None:
        _merge_globals(ctx, values, {o.flag for o in spec.options})
        for a in spec.args:  # typer gives a variadic argument as a list, or None when empty
            if a.variadic:
                values[a.param] = tuple(values.get(a.param) or ())
        try:
            checked = validate(spec, values)
        except CommandError as exc:
            _fail(exc.message, exc.hint)
        raise typer.Exit(execute(spec, checked))

    run.__signature__ = inspect.Signature(_parameters(spec))  # type: ignore[attr-defined]
    run.__annotations__ = {}
    run.__doc__ = _help_of(spec.doc)
    run.__name__ = spec.name.replace("-", "_")
    return run


for _spec in commands():  # the subcommands made from command functions
    if _spec.cli:
        _main, *_others = cli_names(_spec)
        _ALIASES.update(dict.fromkeys(_others, _main))
        app.command(_main, cls=_Command, short_help=_spec.summary)(_subcommand(_spec))


@app.command("help", cls=_Command, short_help="Show the help of dbsage or of one command.")
def help_cmd(ctx: typer.Context, command: Annotated[list[str] | None, typer.Argument(
        metavar="COMMAND", help="a command (and subcommand: db start)",
        show_default=False)] = None) -> None:
    """Show the help of dbsage, or of one command: `dbsage help apply` is `dbsage apply -h`."""
    root = ctx.find_root()
    target: Any = root.command
    context: Any = root
    for name in command or []:
        sub = target.get_command(context, name) if hasattr(target, "get_command") else None
        if sub is None:
            from dbsage.agent.grammar import closest_command

            guess = closest_command(name)
            _fail(f"Unknown command {name!r}.", (f"Did you mean `dbsage help {guess}`? "
                  if guess else "") + "`dbsage help` lists the commands.")
        context = sub.make_context(name, [], parent=context, resilient_parsing=True)
        target = sub
    typer.echo(target.get_help(context))


_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


@app.command("completion", cls=_Command,
             short_help="Print the shell completion script for SHELL.")
def completion_cmd(shell: Annotated[str, typer.Argument(
        metavar="SHELL", help="bash, zsh, fish or powershell", show_default=False)]) -> None:
    """Print the shell completion script for SHELL (bash, zsh, fish or powershell).

    Load it in the current shell with `eval "$(dbsage completion bash)"`, or install it for
    every new shell with `dbsage --install-completion`.
    """
    from typer.completion import get_completion_script

    if shell not in _SHELLS:
        _fail(f"Unknown shell {shell!r}.", f"Choose one of: {', '.join(_SHELLS)}.")
    typer.echo(get_completion_script(prog_name="dbsage", complete_var="_DBSAGE_COMPLETE",
                                     shell=shell))


@app.command("chat", cls=_Command, short_help="Talk to Dara: a REPL of *commands, and plain-language "
             "questions with DBSAGE_MODEL set.")
def chat_cmd(
    ctx: typer.Context,
    db: DbOption = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", "-m", metavar="MODE", help="yolo, interactive (default) or preflight",
        show_default=False)] = None,
    script: Annotated[Path | None, typer.Option(
        "--script", metavar="FILE", help="Run one *command a line from FILE ('-' for stdin) "
        "without asking: every confirmation is answered yes (like --yes) and writes an LLM "
        "proposes are declined. Stops with a non-zero exit code at the first failure. A stdin "
        "that is not a terminal is read the same way.", show_default=False)] = None,
) -> None:
    """Talk to Dara: a REPL of *commands, and plain-language questions with DBSAGE_MODEL set.

    *help lists the commands; they take exactly the options of the dbsage subcommands.
    """
    values: dict[str, Any] = {"db": db, "mode": mode}
    _merge_globals(ctx, values, {"--db", "--mode"})
    db, mode = values["db"], values["mode"] or "interactive"
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


def _db_option(ctx: Context, db: str | None) -> str | None:
    values: dict[str, Any] = {"db": db}
    _merge_globals(ctx, values, {"--db"})
    return values["db"]


@db_app.command("url", cls=_Command)
def db_url(ctx: typer.Context, db: DbOption = None) -> None:
    """Print the URL dbsage would use (passwords redacted)."""
    db = _db_option(ctx, db)
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


@db_app.command("start", cls=_Command, short_help="Start (and initialise on first use) "
                "the local PostgreSQL in .dbsage/pgdata.")
def db_start(
    ctx: typer.Context,
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

    if _db_option(ctx, db):
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


@db_app.command("stop", cls=_Command)
def db_stop(ctx: typer.Context, db: DbOption = None) -> None:
    """Stop the embedded PostgreSQL."""
    from dbsage.tools.embedded import embedded_status, stop_embedded
    from dbsage.tools.errors import DbsageError

    if _db_option(ctx, db):
        _fail("--db points at an external server; dbsage stops only its embedded one.")
    if not embedded_status().running:
        typer.echo("The embedded PostgreSQL is not running.")
        return
    try:
        stop_embedded()
    except DbsageError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    typer.echo("Embedded PostgreSQL stopped.")


_invoked = invoked  # the generated subcommand argv runs, or None (agent/front.py)


def _build_only(name: str | None) -> None:
    """typer builds a click command for every registered one on each start (~10 ms for all
    of them, their signatures and type hints): when one generated subcommand is run, only
    it is registered; help, completion and anything unclear keep them all."""
    import os

    if name is None or any(k.endswith("_COMPLETE") for k in os.environ):
        return
    app.registered_commands = [c for c in app.registered_commands if c.name == name]
    app.registered_groups = []


def main() -> None:
    """The typer command line (agent/launch.py runs a plain invocation without it)."""
    _build_only(_invoked(sys.argv[1:]))
    install_signal_handlers()
    try:
        app()
    finally:
        kill_children()  # whatever ended the command, no child outlives it
        # The command is done. The interpreter's teardown would still walk every object the
        # run created (about 50,000) in garbage-collection passes: ~40 ms on every command.
        # Freezing them skips those passes; atexit handlers and flushing run as usual.
        gc.freeze()


if __name__ == "__main__":
    main()
