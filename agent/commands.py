"""The one `*command` grammar shared by the CLI and the chat.

The commands are a table of data (`COMMANDS`); `parse` turns a line such as
``*apply-migration "my dir/x.sql" --mode yolo`` into an `Invocation`, and
`format_invocation` turns it back. Keep this module light: it is imported on every
start-up, so it uses the standard library only (no typer, rich, langchain or psycopg).
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dbsage.tools.errors import DbsageError

__all__ = [
    "COMMANDS",
    "MODES",
    "OPTIONS",
    "ArgSpec",
    "CommandError",
    "CommandSpec",
    "Invocation",
    "NotACommand",
    "OptionSpec",
    "closest_command",
    "complete",
    "format_invocation",
    "get_spec",
    "help_text",
    "normalise_duration",
    "parse",
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


def _timestamp(value: str) -> str:
    """A 14-digit migration version, or `latest`; never a path."""
    if value.lower() == "latest":
        return "latest"
    if _TIMESTAMP.fullmatch(value):
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
    """A database URL or conninfo string: non-blank, not an option, no NUL."""
    if not value.strip() or value.startswith("-") or "\x00" in value:
        raise ValueError(f"--db needs a database URL, not {value!r}")
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


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ArgSpec:
    """A positional argument: its key in `Invocation.args`, what the user sees, its check."""

    key: str
    metavar: str
    help: str
    check: Callable[[str], str]
    optional: bool = False


@dataclass(frozen=True)
class OptionSpec:
    """A `--flag` or `--option VALUE`; `key` is its name in `Invocation.options`."""

    flag: str
    help: str
    metavar: str | None = None  # None: a flag without a value (stored as True)
    check: Callable[[str], str] | None = None
    example: str = ""  # a valid value, for the help example

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    @property
    def usage(self) -> str:
        return f"[{self.flag} {self.metavar}]" if self.metavar else f"[{self.flag}]"


OPTIONS: dict[str, OptionSpec] = {
    spec.flag: spec
    for spec in (
        OptionSpec("--mode", "M is how checkpoints are handled: yolo, interactive or preflight",
                   "M", _mode, "interactive"),
        OptionSpec("--db", "target database (else SUPABASE_DB_URL, DATABASE_URL, embedded)",
                   "URL", _db_url,
                   "postgresql://postgres@localhost:54322/postgres"),
        OptionSpec("--json", "print the report as JSON"),
        OptionSpec("--yes", "answer yes to every confirmation"),
        OptionSpec("--allow-destructive", "allow statements that drop or rewrite data"),
        OptionSpec("--allow-out-of-order", "allow a migration older than the latest applied one"),
        OptionSpec("--allow-data-loss", "allow losing rows written since the migration"),
        OptionSpec("--force", "go past a blocking check that may be overridden"),
        OptionSpec("--lock-timeout", "stop waiting for a lock after DURATION (off: wait)",
                   "DURATION", normalise_duration, "2s"),
        OptionSpec("--statement-timeout", "cancel a statement after DURATION (off: no limit)",
                   "DURATION", normalise_duration, "5min"),
    )
}


def _options(*flags: str) -> tuple[OptionSpec, ...]:
    return tuple(OPTIONS[flag] for flag in flags)


_TIMEOUTS = ("--lock-timeout", "--statement-timeout")
_WRITE_OPTIONS = _options("--mode", "--db", "--json", "--yes", *_TIMEOUTS)
_READ_OPTIONS = _options("--db", "--json")
_PATH = ArgSpec("path", "PATH", "the migration file, e.g. supabase/migrations/<TS>_<name>.sql",
                _path)
_EXAMPLE_PATH = "supabase/migrations/20250101000000_add_profiles.sql"


@dataclass(frozen=True)
class CommandSpec:
    """One command of the grammar, as data."""

    name: str
    summary: str
    example: str
    aliases: tuple[str, ...] = ()
    args: tuple[ArgSpec, ...] = ()
    options: tuple[OptionSpec, ...] = ()
    keywords: tuple[str, ...] = ()  # words of free text that point to this command

    @property
    def usage(self) -> str:
        """`*name ARG [OPTIONAL] [--flag] [--option VALUE]`."""
        parts = [STAR + self.name]
        parts += [f"[{a.metavar}]" if a.optional else a.metavar for a in self.args]
        parts += [o.usage for o in self.options]
        return " ".join(parts)

    def option(self, flag: str) -> OptionSpec | None:
        """The accepted option called `flag`, if any."""
        return next((o for o in self.options if o.flag == flag), None)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "apply-migration", "Apply a migration safely: lock, snapshot, apply, diff, record.",
        f"*apply-migration {_EXAMPLE_PATH} --mode interactive",
        aliases=("apply", "migrate"), args=(_PATH,),
        options=_WRITE_OPTIONS[:4] + _options(
            "--allow-destructive", "--allow-out-of-order", "--allow-data-loss", "--force",
        ) + _WRITE_OPTIONS[4:],
        keywords=("apply", "migrate", "migration", "deploy", "push", "execute", "run"),
    ),
    CommandSpec(
        "dry-run", "Run a migration in a transaction that is rolled back; report what it would do.",
        f"*dry-run {_EXAMPLE_PATH}",
        aliases=("dryrun",), args=(_PATH,), options=_READ_OPTIONS + _options(*_TIMEOUTS),
        keywords=("dry", "try", "simulate", "preview", "rehearse"),
    ),
    CommandSpec(
        "rollback", "Undo an applied migration with its prepared rollback script.",
        "*rollback latest",
        aliases=("undo",),
        args=(ArgSpec("ts", "TS|latest", "the migration's 14-digit timestamp, or latest",
                      _timestamp),),
        options=_WRITE_OPTIONS[:4] + _options("--allow-data-loss", "--force") + _WRITE_OPTIONS[4:],
        keywords=("rollback", "roll", "undo", "revert", "back", "restore"),
    ),
    CommandSpec(
        "smoke-test", "Run the smoke tests (supabase/tests/*.sql) against the database.",
        "*smoke-test", aliases=("smoke",), options=_READ_OPTIONS,
        keywords=("smoke", "test", "tests", "pgtap", "verify", "sanity"),
    ),
    CommandSpec(
        "plan", "Pre-flight analysis only: locks, rewrites, destructive statements.",
        f"*plan {_EXAMPLE_PATH}", args=(_PATH,), options=_READ_OPTIONS,
        keywords=("plan", "analyse", "analyze", "preflight", "locks", "risk", "risky", "safe"),
    ),
    CommandSpec(
        "status", "Show applied, pending and drifted migrations.",
        "*status", aliases=("st",), options=_READ_OPTIONS,
        keywords=("status", "pending", "applied", "drift", "drifted", "state", "list", "which"),
    ),
    CommandSpec(
        "mode", "Set the session's default mode: yolo, interactive or preflight.",
        "*mode preflight",
        args=(ArgSpec("mode", "yolo|interactive|preflight",
                      "yolo runs without asking, interactive asks at each checkpoint, "
                      "preflight analyses only", _mode),),
        keywords=("mode", "yolo", "interactive", "switch"),
    ),
    CommandSpec(
        "help", "List the commands, or explain one.", "*help dry-run",
        aliases=("?",),
        args=(ArgSpec("command", "COMMAND", "a command name", _command_name, optional=True),),
        keywords=("help", "commands", "usage", "how"),
    ),
    CommandSpec(
        "exit", "Leave the chat.", "*exit", aliases=("quit", "q", "bye"),
        keywords=("exit", "quit", "bye", "goodbye", "leave"),
    ),
    CommandSpec(
        "rls-audit", "Audit row-level security: tables without RLS or policies.",
        "*rls-audit", aliases=("rls",), options=_READ_OPTIONS,
        keywords=("rls", "security", "secure", "policy", "policies", "row", "audit", "exposed"),
    ),
    CommandSpec(
        "analyze-hotpaths", "Find the slowest queries and the indexes they are missing.",
        "*analyze-hotpaths", aliases=("hotpaths",), options=_READ_OPTIONS,
        keywords=("hot", "hotpaths", "slow", "queries", "performance", "index", "indexes"),
    ),
)

_BY_NAME: dict[str, CommandSpec] = {
    name: spec for spec in COMMANDS for name in (spec.name, *spec.aliases)
}


# --------------------------------------------------------------------------- invocation


@dataclass(frozen=True)
class Invocation:
    """A parsed command: canonical name, positional args and given options, and the raw line."""

    command: str
    args: dict[str, str] = field(default_factory=dict)
    options: dict[str, OptionValue] = field(default_factory=dict)
    raw: str = ""

    @property
    def spec(self) -> CommandSpec:
        return _BY_NAME[self.command]


def _lookup(name: str) -> CommandSpec | None:
    """The spec for a name or alias (case-insensitive, `_` as `-`), or None."""
    return _BY_NAME.get(name.lower().replace("_", "-"))


def _closest_name(name: str) -> str | None:
    """The canonical command whose name or alias is spelt most like `name`."""
    matches = difflib.get_close_matches(name.lower(), list(_BY_NAME), n=1, cutoff=0.6)
    return _BY_NAME[matches[0]].name if matches else None


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
    positionals, options = _parse_tokens(spec, tokens[1:])
    return Invocation(spec.name, _bind_args(spec, positionals), options, line)


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


def _bind_args(spec: CommandSpec, positionals: list[str]) -> dict[str, str]:
    """Match positional tokens to the spec's arguments, validating each."""
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


def format_invocation(invocation: Invocation, *, star: bool = True) -> str:
    """The canonical command line for an invocation; `parse` reads it back unchanged."""
    spec = invocation.spec
    words = [(STAR if star else "") + spec.name]
    for option in spec.options:
        value = invocation.options.get(option.key)
        if value is True:
            words.append(option.flag)
        elif isinstance(value, str):
            words += [option.flag, shlex.quote(value)]
    positionals = [invocation.args[a.key] for a in spec.args if a.key in invocation.args]
    if any(p.startswith("-") for p in positionals):
        words.append("--")
    words += [shlex.quote(p) for p in positionals]
    return " ".join(words)


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
    scores = [(_keyword_score(spec, words), -i, spec.name) for i, spec in enumerate(COMMANDS)]
    best_score, _, best = max(scores)
    return best if best_score > 0 else None


# --------------------------------------------------------------------------- help


def _overview() -> str:
    """All commands with their summaries."""
    width = max(len(spec.name) for spec in COMMANDS) + 3
    lines = ["Commands:"]
    lines += [f"  {(STAR + spec.name).ljust(width)}{spec.summary}" for spec in COMMANDS]
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


def complete(prefix: str) -> list[str]:
    """Command names (with `*` if the prefix has it) that complete `prefix`, for the REPL."""
    star = STAR if prefix.startswith(STAR) else ""
    stem = prefix.removeprefix(STAR).lower()
    if any(c.isspace() for c in stem):
        return []
    names = sorted(s.name for s in COMMANDS if s.name.startswith(stem))
    aliases = sorted(
        next(a for a in s.aliases if a.startswith(stem))
        for s in COMMANDS
        if s.name not in names and any(a.startswith(stem) for a in s.aliases)
    )
    return [star + name for name in names + aliases]
