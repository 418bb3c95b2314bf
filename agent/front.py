"""The command line around a command function, without typer.

Shared by agent/cli.py (the typer app: help, completion, every error message) and
agent/launch.py (the console entry point). Here: the subcommands' names, a plain invocation
read with the chat's own grammar, running a command and printing its outcome, and the
signals that stop a run cleanly.

A plain invocation is one the chat's grammar reads without complaint: a generated subcommand
(or one of its other names), root options in their usual forms, the subcommand's own options
and arguments. It runs without importing typer (~80 ms of start-up on a slow machine, ~30 ms
on a fast one, on every command). Anything else (help, completion, a short flag typer groups,
an unknown or repeated option, a value a validator refuses) goes to typer, which parses it
again and says what is wrong in its words: the command line has one set of messages.
"""

from __future__ import annotations

import sys
from typing import Any

from dbsage.agent.commands import Outcome, Session, call, commands, follow_menu
from dbsage.agent.grammar import (
    CommandError,
    CommandSpec,
    options,
    parse_tokens,
    set_front,
    shell_syntax,
)

# Options that apply to every command that has them, written before or after the subcommand:
# `dbsage --db URL apply f.sql` is `dbsage apply f.sql --db URL`. (flag, parameter name)
GLOBAL_OPTIONS: tuple[tuple[str, str], ...] = (("--db", "db"), ("--mode", "mode"),
                                               ("--json", "as_json"), ("--verbose", "verbose"),
                                               ("--quiet", "quiet"))


def _root_forms() -> tuple[dict[str, str], dict[str, str]]:
    """The global options as a command line writes them before the subcommand (long flag and
    short one), each to its long flag: (those that take a value, flags). From the commands'
    own option specs, as typer's root callback declares them."""
    specs = options()
    values: dict[str, str] = {}
    flags: dict[str, str] = {}
    for flag, _ in GLOBAL_OPTIONS:
        o = specs[flag]
        for form in filter(None, (o.flag, o.short)):
            (values if o.takes_value else flags)[form] = o.flag
    return values, flags


def cli_names(spec: CommandSpec) -> list[str]:
    """The subcommand's name first, then its other names (resolved, not listed)."""
    names = [spec.cli_name or spec.name, spec.name, *spec.aliases]
    return [n for n in dict.fromkeys(names) if n.replace("-", "").isalnum()]


def subcommands() -> dict[str, CommandSpec]:
    """Every generated subcommand by each of its names."""
    return {name: spec for spec in commands() if spec.cli for name in cli_names(spec)}


def invoked(argv: list[str]) -> str | None:
    """The generated subcommand `argv` runs (an alias resolved), or None when that is not
    plain to see (help, version, completion, an unknown option, no subcommand, a typo)."""
    found = _split_root(argv)
    return None if found is None else cli_names(found[1])[0]


def _split_root(argv: list[str]) -> tuple[list[str], CommandSpec, list[str]] | None:
    """(root options as tokens of the subcommand, its spec, the words after it), or None."""
    root_values, root_flags = _root_forms()
    root: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        flag, has_inline, inline = word.partition("=")
        if word in root_values:
            if i + 1 == len(argv):
                return None
            root += [root_values[word], argv[i + 1]]
            i += 2
        elif word in root_flags:
            root.append(root_flags[word])
            i += 1
        elif has_inline and flag.startswith("--") and flag in root_values:
            root.append(f"{root_values[flag]}={inline}")
            i += 1
        elif word.startswith("-"):
            return None
        else:
            spec = subcommands().get(word)
            return None if spec is None else (root, spec, argv[i + 1:])
    return None


def plain_invocation(argv: list[str]) -> tuple[CommandSpec, dict[str, Any]] | None:
    """The command and its checked values, as typer would pass them, for an invocation the
    chat's grammar reads without complaint; None for anything else (typer then takes it)."""
    import os

    if any(k.endswith("_COMPLETE") for k in os.environ):  # shell completion asks
        return None
    found = _split_root(argv)
    if found is None:
        return None
    root, spec, words = found
    shorts = {o.short: o.flag for o in spec.options if o.short}
    tokens = [shorts.get(w, w) for w in words]
    if "--" in tokens:  # what follows `--` is an argument whatever it looks like
        cut = tokens.index("--")
        tokens = tokens[:cut] + root + tokens[cut:]
    else:
        tokens += root
    try:
        args, options = parse_tokens(spec, tokens)
    except CommandError:
        return None
    values: dict[str, Any] = {}
    for a in spec.args:
        values[a.param] = args.get(a.key, () if a.variadic else None)
    for o in spec.options:
        values[o.param] = options.get(o.key, o.default if o.takes_value else False)
    return spec, values


def echo(text: str, *, err: bool = False) -> None:
    """One line of output (stdout, or stderr with `err`), flushed."""
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def present(outcome: Outcome) -> None:
    """Print an outcome: notices on stderr, then the report (rich) or JSON, or its text."""
    if outcome.report is not None:
        from dbsage.agent.render import print_notices, print_report

        set_front("cli")  # hints as `dbsage rollback TS`, not the chat's `*rollback TS`
        if outcome.view != "quiet":
            from dbsage.agent.progress import current

            print_notices(outcome.report, current().already_printed(outcome.report.notices))
        if outcome.as_json:
            echo(outcome.text)
        else:
            print_report(outcome.report, outcome.view)
        return
    if outcome.text:
        text = outcome.text if outcome.as_json else shell_syntax(outcome.text)
        echo(text, err=not outcome.ok and not outcome.as_json)


def _warm_up() -> None:
    # agent/render.py is imported when the run first waits (for its after-snapshot), not
    # before the before-snapshot can start.
    from dbsage.agent.render import warm_up

    warm_up()


def execute(spec: CommandSpec, checked: dict[str, Any]) -> int:
    """Run a command with checked values, show its outcome (and the follow-up chosen from its
    menu); the exit code."""
    from dbsage.agent.progress import for_command

    session = Session(front="cli", interactive=sys.stdin.isatty() and sys.stdout.isatty(),
                      while_waiting=_warm_up)
    with for_command(checked):  # live progress on stderr while it runs
        outcome = call(spec, checked, session)
        present(outcome)
    follow = follow_menu(outcome, session, checked.get("db"))  # asked after the report
    if follow is not None:
        present(follow)
    return outcome.exit_code


def kill_children() -> None:
    """Kill what dbsage started. Children run in their own process groups (tools/binaries.py),
    so a signal to dbsage does not reach them: their groups are killed here. No module
    loaded, no child started."""
    binaries = sys.modules.get("dbsage.tools.binaries")
    if binaries is not None:
        binaries.kill_children()


def _stop_cleanly(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled, a container stopped) stops a run like Ctrl-C: the open
    # transaction rolls back, the lock is released, temporary files are removed.
    from dbsage.tools.errors import Terminated

    kill_children()
    raise Terminated


def _interrupt(signum: int, frame: object) -> None:
    kill_children()  # then exactly Python's own Ctrl-C
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM stops a run as Ctrl-C does; both kill dbsage's children first."""
    import signal

    signal.signal(signal.SIGTERM, _stop_cleanly)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _interrupt):
        signal.signal(signal.SIGINT, _interrupt)
