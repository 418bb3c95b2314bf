"""The one grammar: typed command functions are the single source of the CLI, the chat's
`*command` parser and the LangChain tool schemas.

A command is a plain typed function in agent/commands.py, registered with `@command(...)`.
Its parameters carry `Param` metadata (`Annotated[str | None, Param(...)]`): positional
arguments have no flag, options have one. From the signature this module builds a
`CommandSpec`, which `parse` reads (``*apply-migration "my dir/x.sql" --mode yolo`` →
`Invocation`), `agent/cli.py` turns into typer commands and `agent/llm.py` into tool schemas.
Every value, wherever it comes from, is checked by the same validator (`validate`).

Keep this module light: it is imported on every start-up, so it uses the standard library
only (no typer, rich, langchain or psycopg).
"""

from __future__ import annotations

import difflib
import inspect
import re
import shlex
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dbsage.tools.errors import DbsageError

__all__ = [
    "MODES",
    "ArgSpec",
    "CommandError",
    "CommandSpec",
    "Invocation",
    "NotACommand",
    "OptionSpec",
    "Param",
    "closest_command",
    "command",
    "commands",
    "complete",
    "get_spec",
    "help_text",
    "normalise_duration",
    "options",
    "parse",
    "shell_syntax",
    "validate",
]

STAR = "*"
MODES: tuple[str, ...] = ("yolo", "interactive", "preflight")
OptionValue = str | bool


class CommandError(DbsageError):
    """A command line that cannot be run as written; `hint` usually holds the usage."""

    exit_code = 2


class NotACommand(CommandError):
    """Free text (no leading `*`): the chat routes it to the model or the offline answer."""


# --------------------------------------------------------------------------- validators
# Each takes the raw token and returns the normalised value, or raises ValueError whose
# text is shown to the user.


def _path(value: str) -> str:
    """A migration path: any non-blank string without NUL."""
    if not value.strip():
        raise ValueError("PATH must not be empty")
    if "\x00" in value:
        raise ValueError("PATH must not contain a NUL character")
    return value


_TIMESTAMP = re.compile(r"[0-9]{14}")


def _rollback_target(value: str) -> str:
    """A 14-digit run TS, `latest`, or a `supabase/snapshots/*_before.sql` snapshot."""
    if value.lower() == "latest":
        return "latest"
    if _TIMESTAMP.fullmatch(value):
        return value
    if value.endswith("_before.sql") and ".." not in value:
        return value
    if "/" in value or "\\" in value or ".." in value or value.endswith(".sql"):
        raise ValueError(f"TS is a migration timestamp, not a path: {value!r}")
    raise ValueError(f"TS must be 14 digits (e.g. 20250101000000) or latest, not {value!r}")


def _mode(value: str) -> str:
    """One of the three modes, case-insensitive."""
    mode = value.lower()
    if mode not in MODES:
        raise ValueError(f"unknown mode {value!r}; choose {', '.join(MODES)}")
    return mode


def _command_name(value: str) -> str:
    """A command name or alias (a leading `*` is allowed), returned as its canonical name."""
    spec = _lookup(value.removeprefix(STAR))
    if spec is None:
        raise ValueError(_unknown_message(value))
    return spec.name


def _db_url(value: str) -> str:
    """A PostgreSQL connection string libpq can take (URL or key=value pairs)."""
    from dbsage.tools.connection import CONNINFO_FORMS, conninfo_problem

    if value.startswith("-"):
        raise ValueError(f"--db needs a database URL, not {value!r}")
    problem = conninfo_problem(value)
    if problem:
        raise ValueError(f"--db needs a database URL: {problem}; expected {CONNINFO_FORMS}")
    return value


_DURATION = re.compile(r"\s*([0-9]{1,15})\s*([a-z]*)\s*", re.IGNORECASE)
_UNITS: dict[str, tuple[str, int]] = {
    name: (canonical, factor)
    for canonical, factor, names in (
        ("ms", 1, ("ms", "msec", "msecs", "millisecond", "milliseconds")),
        ("s", 1000, ("s", "sec", "secs", "second", "seconds")),
        ("min", 60_000, ("min", "mins", "minute", "minutes")),
        ("h", 3_600_000, ("h", "hr", "hrs", "hour", "hours")),
        ("d", 86_400_000, ("d", "day", "days")),
    )
    for name in names
}
_MAX_MS = 2_147_483_647  # PostgreSQL's limit for lock_timeout / statement_timeout
DURATION_HINT = "Use a whole number and a unit: 500ms, 1s, 5min, 2h, 1d; off (or 0) disables."


def normalise_duration(value: str) -> str:
    """Validate a timeout and return it as a PostgreSQL interval string (`0` = disabled).

    Raises:
        ValueError: not a whole number with a unit of ms, s, min, h or d, or too large.
    """
    if value.strip().lower() in ("off", "0"):
        return "0"
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    number, unit = int(match[1]), match[2].lower()
    if not unit:
        raise ValueError(f"{value!r} needs a unit")
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {value!r}")
    canonical, factor = _UNITS[unit]
    if number * factor > _MAX_MS:
        raise ValueError(f"{value!r} is longer than PostgreSQL allows (about 24 days)")
    return "0" if number == 0 else f"{number}{canonical}"




def _schemas(value: str) -> str:
    """A comma-separated list of schema names."""
    names = [x.strip() for x in value.split(",") if x.strip()]
    if not names or any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", n) for n in names):
        raise ValueError(f"expected schema names separated by commas, not {value!r}")
    return ",".join(names)


def _positive_int(value: str) -> str:
    """A whole number of at least 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"expected a whole number of at least 1, not {value!r}")
    return str(int(value))


def _answers_file(value: str) -> str:
    """A path to a YAML file of checkpoint answers."""
    if not value.strip() or "\x00" in value:
        raise ValueError(f"--answers needs a file path, not {value!r}")
    return value


VALIDATORS: dict[str, Callable[[str], str]] = {
    "path": _path, "rollback_target": _rollback_target, "mode": _mode,
    "command_name": _command_name, "db_url": _db_url, "duration": normalise_duration,
    "schemas": _schemas, "positive_int": _positive_int, "answers_file": _answers_file,
}


# --------------------------------------------------------------------------- the table


class Param(typing.NamedTuple):
    """How a command function's parameter is written: `Annotated[T, Param(...)]`.

    Param, ArgSpec and OptionSpec are NamedTuples, immutable as frozen dataclasses are: this
    module is imported on every start-up, and a frozen dataclass costs ~0.5 ms to create.

    `flag` None makes it a positional argument. `check` names a validator of VALIDATORS
    (the same one runs for the CLI, the chat and the LLM tools). `llm=False` keeps it out of
    the language model's tool schema (flags that override a safety check, the target).
    """

    help: str
    flag: str | None = None
    metavar: str | None = None
    check: str | None = None
    short: str | None = None
    example: str = ""
    llm: bool = True


class ArgSpec(typing.NamedTuple):
    """A positional argument: its key in `Invocation.args`, what the user sees, its check."""

    key: str
    metavar: str
    help: str
    check: Callable[[str], str] | None
    optional: bool = False
    param: str = ""  # the function parameter it binds to
    llm: bool = True
    variadic: bool = False  # the last argument may take every remaining word (VERSION...)


class OptionSpec(typing.NamedTuple):
    """A `--flag` or `--option VALUE`; `key` is its name in `Invocation.options`."""

    flag: str
    help: str
    metavar: str | None = None  # None: a flag without a value (stored as True)
    check: Callable[[str], str] | None = None
    example: str = ""  # a valid value, for the help example
    param: str = ""  # the function parameter it binds to
    short: str | None = None
    default: Any = None
    llm: bool = True

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    @property
    def usage(self) -> str:
        return f"[{self.flag} {self.metavar}]" if self.metavar else f"[{self.flag}]"


@dataclass(frozen=True)
class CommandSpec:
    """One command of the grammar, derived from its typed function."""

    name: str
    summary: str
    example: str
    aliases: tuple[str, ...] = ()
    args: tuple[ArgSpec, ...] = ()
    options: tuple[OptionSpec, ...] = ()
    keywords: tuple[str, ...] = ()  # words of free text that point to this command
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    doc: str = ""  # the function's docstring: the CLI help and the LLM tool description
    cli: bool = True  # a `dbsage` subcommand (else chat only: *mode, *help, *exit)
    cli_name: str | None = None  # the subcommand's name when it differs (apply)
    writes: bool = False  # changes the database or the project's files: the LLM must have
    # the human's approval (a call with dry_run set changes nothing and needs none)
    tool: str | None = None  # its LangChain tool name, when the model may call it

    @property
    def usage(self) -> str:
        """`*name ARG [OPTIONAL] [--flag] [--option VALUE]`."""
        parts = [STAR + self.name]
        parts += [(f"[{a.metavar}...]" if a.variadic else f"[{a.metavar}]") if a.optional
                  else (f"{a.metavar}..." if a.variadic else a.metavar) for a in self.args]
        parts += [o.usage for o in self.options]
        return " ".join(parts)

    def option(self, flag: str) -> OptionSpec | None:
        """The accepted option called `flag`, if any."""
        return next((o for o in self.options if o.flag == flag), None)


_REGISTRY: list[CommandSpec] = []


def _meta(annotation: Any) -> tuple[Any, Param | None]:
    """(the bare type, its Param) of an `Annotated[T, Param(...)]` annotation."""
    if typing.get_origin(annotation) is typing.Annotated:
        bare, *extras = typing.get_args(annotation)
        return bare, next((x for x in extras if isinstance(x, Param)), None)
    return annotation, None


def _is_bool(bare: Any) -> bool:
    return bare is bool


def _is_sequence(bare: Any) -> bool:
    """`tuple[str, ...]` (or `list[str]`): an argument that takes every remaining word."""
    return typing.get_origin(bare) in (tuple, list)


def command(name: str, *, example: str, aliases: tuple[str, ...] = (),
            keywords: tuple[str, ...] = (), cli: bool = True, cli_name: str | None = None,
            writes: bool = False, tool: str | None = None
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a typed function as a command; its signature and docstring are the grammar.

    Every parameter but `session` must be `Annotated[..., Param(...)]`; the first docstring
    line is the summary. A parameter without Param, or a Param naming an unknown validator,
    is an error at import time.
    """

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)
        args: list[ArgSpec] = []
        opts: list[OptionSpec] = []
        for p in inspect.signature(func).parameters.values():
            if p.name == "session":
                continue
            bare, meta = _meta(hints.get(p.name))
            if meta is None:
                raise TypeError(f"{func.__name__}({p.name}): annotate it with Param(...)")
            if meta.check is not None and meta.check not in VALIDATORS:
                raise TypeError(f"{func.__name__}({p.name}): unknown validator {meta.check!r}")
            check = VALIDATORS[meta.check] if meta.check else None
            if meta.flag is None:
                args.append(ArgSpec(p.name, meta.metavar or p.name.upper(), meta.help, check,
                                    optional=p.default is not inspect.Parameter.empty,
                                    param=p.name, llm=meta.llm, variadic=_is_sequence(bare)))
            else:
                metavar = None if _is_bool(bare) else (meta.metavar or "VALUE")
                opts.append(OptionSpec(meta.flag, meta.help, metavar, check, meta.example,
                                       param=p.name, short=meta.short,
                                       default=None if p.default is inspect.Parameter.empty
                                       else p.default, llm=meta.llm))
        doc = inspect.getdoc(func) or ""
        if not doc:
            raise TypeError(f"{func.__name__}: a command needs a docstring (its summary)")
        _REGISTRY.append(CommandSpec(
            name, doc.splitlines()[0], example, aliases, tuple(args), tuple(opts), keywords,
            func=func, doc=doc, cli=cli, cli_name=cli_name, writes=writes, tool=tool))
        return func

    return register


def commands() -> tuple[CommandSpec, ...]:
    """Every registered command, in the order agent/commands.py defines them (importing that
    module registers them; every front end does)."""
    return tuple(_REGISTRY)


def options() -> dict[str, OptionSpec]:
    """Every option of any command, by flag (the first definition of each)."""
    out: dict[str, OptionSpec] = {}
    for spec in commands():
        for o in spec.options:
            out.setdefault(o.flag, o)
    return out


def validate(spec: CommandSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise raw values by parameter name (the CLI's path into the grammar).

    Raises:
        CommandError: a value its validator refuses; the message names the flag.
    """
    out = dict(values)
    for a in spec.args:
        if isinstance(out.get(a.param), str):
            out[a.param] = _check(spec, a.check, out[a.param], "")
        elif a.variadic and isinstance(out.get(a.param), list | tuple):
            out[a.param] = tuple(_check(spec, a.check, v, "") for v in out[a.param])
    for o in spec.options:
        value = out.get(o.param)
        if isinstance(value, str) and o.takes_value:
            out[o.param] = _check(spec, o.check, value, o.flag)
    return out


def call_values(invocation: Invocation) -> dict[str, Any]:
    """The function's keyword arguments for a parsed invocation."""
    spec = invocation.spec
    values: dict[str, Any] = {}
    for a in spec.args:
        if a.key in invocation.args:
            values[a.param] = invocation.args[a.key]
    for o in spec.options:
        if o.key in invocation.options:
            values[o.param] = invocation.options[o.key]
    return values


def _by_name() -> dict[str, CommandSpec]:
    return {name: spec for spec in commands() for name in (spec.name, *spec.aliases)}


# --------------------------------------------------------------------------- invocation


@dataclass(frozen=True)
class Invocation:
    """A parsed command: canonical name, positional args and given options, and the raw line."""

    command: str
    args: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    options: dict[str, OptionValue] = field(default_factory=dict)
    raw: str = ""

    @property
    def spec(self) -> CommandSpec:
        return _by_name()[self.command]


def _lookup(name: str) -> CommandSpec | None:
    """The spec for a name or alias (case-insensitive, `_` as `-`), or None."""
    return _by_name().get(name.lower().replace("_", "-"))


def _closest_name(name: str) -> str | None:
    """The canonical command whose name or alias is spelt most like `name`."""
    matches = difflib.get_close_matches(name.lower(), list(_by_name()), n=1, cutoff=0.6)
    return _by_name()[matches[0]].name if matches else None


def _unknown_message(name: str) -> str:
    guess = _closest_name(name)
    message = f"Unknown command {STAR}{name}."
    return f"{message} Did you mean {STAR}{guess}?" if guess else message


def get_spec(name: str) -> CommandSpec:
    """The spec of a command name or alias (a leading `*` is allowed).

    Raises:
        CommandError: no such command; the message names the closest one.
    """
    bare = name.removeprefix(STAR)
    spec = _lookup(bare)
    if spec is None:
        raise CommandError(_unknown_message(bare), hint="Type *help to list the commands.",
                           command=bare)
    return spec


def _usage_error(spec: CommandSpec, message: str, advice: str = "") -> CommandError:
    """An error whose hint is the command's usage (after `advice`, if any)."""
    hint = f"{advice}\nUsage: {spec.usage}" if advice else f"Usage: {spec.usage}"
    return CommandError(message, hint=hint, command=spec.name)


def _split(text: str) -> list[str]:
    """shlex-split `text`, turning a quoting error into a CommandError."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CommandError(
            f"Unbalanced quote in the command line ({str(exc).lower()}).",
            hint='Close every quote; wrap a path with spaces in quotes: *dry-run "my dir/x.sql"',
        ) from exc


def _strip_star(line: str, require_star: bool) -> str:
    """The line without its leading `*`; NotACommand if the star is required and missing."""
    text = line.strip()
    if text.startswith(STAR):
        return text[1:]
    if require_star:
        raise NotACommand("Not a *command.", hint="Commands start with *; type *help.",
                          text=line)
    return text


def parse(line: str, *, require_star: bool = True) -> Invocation:
    """Parse one command line into an Invocation.

    Args:
        line: e.g. ``*dry-run "supabase/migrations/2025 x.sql"``.
        require_star: the chat needs the leading `*`; the CLI may leave it out.

    Raises:
        NotACommand: free text (no leading `*`) while `require_star` is set.
        CommandError: unknown command, bad arguments or options, unbalanced quotes.
    """
    tokens = _split(_strip_star(line, require_star))
    if not tokens:
        raise CommandError("No command given.", hint="Type *help to list the commands.")
    spec = get_spec(tokens[0])
    args, options = parse_tokens(spec, tokens[1:])
    return Invocation(spec.name, args, options, line)


def parse_tokens(spec: CommandSpec, tokens: list[str]
                 ) -> tuple[dict[str, str | tuple[str, ...]], dict[str, OptionValue]]:
    """A command's words after its name: (arguments, options) by key, every value checked.

    The chat reads a `*command` line with it, and the command line a plain invocation.

    Raises:
        CommandError: an unknown or repeated option, a missing value or argument, a value a
        validator refuses.
    """
    positionals, options = _parse_tokens(spec, tokens)
    return _bind_args(spec, positionals), options


def _parse_tokens(spec: CommandSpec, tokens: list[str]) -> tuple[list[str], dict[str, OptionValue]]:
    """Separate positionals from options (`--flag`, `--opt VALUE`, `--opt=VALUE`, `--`)."""
    positionals: list[str] = []
    options: dict[str, OptionValue] = {}
    rest = iter(tokens)
    for token in rest:
        if token == "--":
            positionals.extend(rest)
        elif token.startswith("-") and token != "-":
            _take_option(spec, token, rest, options)
        else:
            positionals.append(token)
    return positionals, options


def _take_option(
    spec: CommandSpec, token: str, rest: Iterator[str], options: dict[str, OptionValue]
) -> None:
    """Read one option (and its value from `rest` when needed) into `options`."""
    flag, has_inline, inline = token.partition("=")
    option = spec.option(flag)
    if option is None:
        raise _usage_error(spec, f"{STAR}{spec.name} has no option {flag}.")
    if option.key in options:
        raise _usage_error(spec, f"{flag} is given twice.")
    if not option.takes_value:
        if has_inline:
            raise _usage_error(spec, f"{flag} takes no value.")
        options[option.key] = True
        return
    value = inline if has_inline else next(rest, None)
    if value is None or (not has_inline and value.startswith("-") and value != "-"):
        raise _usage_error(spec, f"{flag} needs a value ({option.metavar}).")
    options[option.key] = _check(spec, option.check, value, option.flag)


def _check(spec: CommandSpec, check: Callable[[str], str] | None, value: str, what: str) -> str:
    """Run a validator on `what` (a flag, or "" for an argument); errors carry the usage."""
    if check is None:
        return value
    try:
        return check(value)
    except ValueError as exc:
        reason = str(exc).rstrip(".?") + ("?" if str(exc).endswith("?") else ".")
        advice = DURATION_HINT if check is normalise_duration else ""
        where = f"{STAR}{spec.name} {what}" if what else f"{STAR}{spec.name}"
        raise _usage_error(spec, f"{where}: {reason}", advice) from exc


def _bind_args(spec: CommandSpec, positionals: list[str]) -> dict[str, str | tuple[str, ...]]:
    """Match positional tokens to the spec's arguments, validating each; a variadic last
    argument takes the rest."""
    if spec.args and spec.args[-1].variadic:
        *fixed, last = spec.args
        missing_fixed = [a.metavar for a in fixed[len(positionals):] if not a.optional]
        rest = positionals[len(fixed):]
        if missing_fixed or (not rest and not last.optional):
            needs = missing_fixed + ([] if rest or last.optional else [last.metavar])
            raise _usage_error(spec, f"{STAR}{spec.name} needs {' '.join(needs)}.")
        bound: dict[str, str | tuple[str, ...]] = {
            a.key: _check(spec, a.check, v, "") for a, v in zip(fixed, positionals, strict=False)}
        if rest:
            bound[last.key] = tuple(_check(spec, last.check, v, "") for v in rest)
        return bound
    if len(positionals) > len(spec.args):
        extra = " ".join(positionals[len(spec.args):])
        raise _usage_error(spec, f"{STAR}{spec.name}: unexpected argument(s): {extra}")
    missing = [a.metavar for a in spec.args[len(positionals):] if not a.optional]
    if missing:
        raise _usage_error(spec, f"{STAR}{spec.name} needs {' '.join(missing)}.")
    return {
        arg.key: _check(spec, arg.check, value, "")
        for arg, value in zip(spec.args, positionals, strict=False)
    }


# --------------------------------------------------------------------------- free text


_WORD = re.compile(r"[a-z0-9]+")
_WEAK_WORDS = frozenset({"migration", "run"})  # common in free text: they count half
_PHRASE_BONUS = 2.0  # the text spells a command's name ("dry run", "roll back")


def _keyword_score(spec: CommandSpec, words: list[str]) -> float:
    """How strongly the words of free text point to `spec` (close spellings count)."""
    vocabulary = {*spec.keywords, *spec.aliases, spec.name}
    score = 0.0
    for word in words:
        best, keyword = max((difflib.SequenceMatcher(None, word, k).ratio(), k) for k in vocabulary)
        if best >= 0.8:
            score += best / 2 if keyword in _WEAK_WORDS else best
    joined = "-" + "-".join(words) + "-"
    if any(f"-{name}-" in joined for name in (spec.name, *spec.aliases)):
        score += _PHRASE_BONUS
    return score


def closest_command(text: str) -> str | None:
    """The command free text most likely asks for ("undo" → "rollback"), or None."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    scores = [(_keyword_score(spec, words), -i, spec.name) for i, spec in enumerate(commands())]
    best_score, _, best = max(scores)
    return best if best_score > 0 else None


# --------------------------------------------------------------------------- help


def _overview() -> str:
    """All commands with their summaries."""
    width = max(len(spec.name) for spec in commands()) + 3
    lines = ["Commands:"]
    lines += [f"  {(STAR + spec.name).ljust(width)}{spec.summary}" for spec in commands()]
    lines += ["", "Type *help COMMAND for its options. Text without * is a question for Dara."]
    return "\n".join(lines)


def _details(spec: CommandSpec) -> str:
    """One command's usage, arguments, options and an example."""
    lines = [f"Usage: {spec.usage}", "", spec.summary]
    if spec.aliases:
        lines.append("Aliases: " + ", ".join(STAR + a for a in spec.aliases))
    named = [(a.metavar, a.help) for a in spec.args]
    named += [(f"{o.flag} {o.metavar}" if o.metavar else o.flag, o.help) for o in spec.options]
    width = max((len(n) for n, _ in named), default=0) + 3
    if spec.args:
        lines += ["", "Arguments:"]
        lines += [f"  {a.metavar.ljust(width)}{a.help}" for a in spec.args]
    if spec.options:
        lines += ["", "Options:"]
        lines += [f"  {n.ljust(width)}{h}" for n, h in named[len(spec.args):]]
    lines += ["", f"Example: {spec.example}"]
    return "\n".join(lines)


def help_text(command: str | None = None) -> str:
    """Plain-text help: every command with its summary, or one command in detail.

    Raises:
        CommandError: `command` is not a command name or alias.
    """
    return _overview() if command is None else _details(get_spec(command))


_STAR_COMMAND = re.compile(r"(?<![\w*])\*([a-z][a-z-]*)")


# Where text is shown: "cli" writes `*command` hints as `dbsage <command>`, "chat" as they are.
# Kept here, not in agent/render.py, so that a CLI run can set it before render is loaded.
_FRONT = {"name": "chat"}


def set_front(front: str) -> None:
    """Word command hints for the shell ("cli") or the chat ("chat")."""
    _FRONT["name"] = front


def front_syntax(text: str) -> str:
    """`text` with its `*command` hints in the syntax of the front end set by `set_front`."""
    return shell_syntax(text) if _FRONT["name"] == "cli" else text


def shell_syntax(text: str) -> str:
    """`text` with its `*command` names as the shell spells them: `*dry-run PATH` becomes
    `dbsage dry-run PATH`, `*apply-migration` `dbsage apply` (chat-only ones stay)."""
    names = {n: spec.cli_name or spec.name for spec in commands() if spec.cli
             for n in (spec.name, *spec.aliases)}
    return _STAR_COMMAND.sub(
        lambda m: f"dbsage {names[m[1]]}" if m[1] in names else m[0], text)


def complete(prefix: str) -> list[str]:
    """Command names (with `*` if the prefix has it) that complete `prefix`, for the REPL."""
    star = STAR if prefix.startswith(STAR) else ""
    stem = prefix.removeprefix(STAR).lower()
    if any(c.isspace() for c in stem):
        return []
    names = sorted(s.name for s in commands() if s.name.startswith(stem))
    aliases = sorted(
        next(a for a in s.aliases if a.startswith(stem))
        for s in commands()
        if s.name not in names and any(a.startswith(stem) for a in s.aliases)
    )
    return [star + name for name in names + aliases]
