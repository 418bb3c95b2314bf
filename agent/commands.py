"""Every command dbsage has, as one typed function each: the CLI, the chat and the LLM tools.

A function's signature (with `Param` metadata) and docstring are its grammar (agent/grammar.py
derives the `*command` parser, the typer subcommand and the tool schema from them). Each
returns an `Outcome`; none prints. Keep the module light: it is imported on every start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from dbsage.agent.grammar import (
    MODES,
    VALIDATORS,
    CommandError,
    CommandSpec,
    Invocation,
    NotACommand,
    OptionSpec,
    Param,
    call_values,
    closest_command,
    command,
    commands,
    complete,
    get_spec,
    help_text,
    normalise_duration,
    options,
    parse,
)
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    from dbsage.agent.modes import Asker
    from dbsage.agent.report import RunReport
    from dbsage.agent.state import RunOptions

__all__ = ["COMMANDS", "MIGRATIONS_DIR", "MODES", "MODE_HELP", "OPTIONS", "CommandError",
           "CommandSpec", "Invocation", "NotACommand", "OptionSpec", "Outcome", "Session",
           "call_values", "closest_command", "complete", "execute", "follow_menu", "get_spec",
           "help_text", "migration_files", "normalise_duration", "parse"]

MIGRATIONS_DIR = Path("supabase") / "migrations"
MODE_HELP = {
    "yolo": "rules decide every checkpoint; each decision is logged",
    "interactive": "I ask you at each checkpoint",
    "preflight": "I analyse first and ask every question in one batch before anything runs",
}


@dataclass
class Session:
    """Where a command runs: the front end's defaults and who answers checkpoints."""

    db: str | None = None
    mode: str | None = None  # None: each task definition's default_mode
    project_dir: Path = field(default_factory=lambda: project_root())
    asker: Asker | None = None  # who answers checkpoints (None: the console, if a terminal)
    lock_timeout: str = "auto"  # half the server's deadlock_timeout, at most 1s
    exposed_schemas: tuple[str, ...] = ("public",)
    interactive: bool = True  # False in --script mode or without a terminal: nobody to ask
    front: str = "chat"  # "chat" or "cli": how hints name commands
    agent: Any = field(default=None, repr=False)  # the LLM agent, built on first free text
    show: Callable[[Outcome], None] | None = field(default=None, repr=False)  # LLM runs
    while_waiting: Callable[[], None] | None = field(default=None, repr=False)


ChatSession = Session  # the chat's name for it


def project_root(start: Path | None = None) -> Path:
    """The project folder for `start` (default: the current directory), found upward:
    supabase/config.toml, else supabase/migrations/, else .git; else `start` itself."""
    from dbsage.tools.project import find_project_root

    return find_project_root(start).path


def require_project(project_dir: Path) -> None:
    """ConfigError (exit 2) when `project_dir` is no project: dbsage would otherwise make a
    new local database in a folder that is not one (run from the wrong place)."""
    from dbsage.agent.resources import ensure_project

    ensure_project(project_dir)


@dataclass
class Outcome:
    """What one command did: a run report and/or text to show, and whether the chat ends."""

    command: str
    ok: bool = True
    text: str = ""
    report: RunReport | None = None
    data: dict[str, Any] = field(default_factory=dict)
    exit: bool = False
    exit_code: int = 0
    as_json: bool = False
    view: str = "normal"  # how much of the report to print: "quiet", "normal", "verbose"


DispatchResult = Outcome


def execute(invocation: Invocation, session: Session) -> Outcome:
    """Run one parsed command; DbsageError becomes a failed Outcome (never raised)."""
    spec = invocation.spec
    assert spec.func is not None
    return call(spec, call_values(invocation), session)


def call(spec: CommandSpec, values: dict[str, Any], session: Session) -> Outcome:
    """Run a command function with validated values; DbsageError becomes a failed Outcome."""
    assert spec.func is not None
    try:
        result: Outcome = spec.func(**values, session=session)
        return result
    except DbsageError as exc:
        from dbsage.tools.connection import redact

        text = f"❌ {redact(exc.message)}" + (f"\nHint: {exc.hint}" if exc.hint else "")
        return Outcome(spec.name, ok=False, text=text, exit_code=exc.exit_code)


# --------------------------------------------------------------------------- parameters

_EXAMPLE_PATH = "supabase/migrations/20250101000000_add_profiles.sql"
MigrationPath = Annotated[str, Param(
    "the migration file, e.g. supabase/migrations/<TS>_<name>.sql", metavar="PATH",
    check="path")]
OptionalMigrationPath = Annotated[str | None, Param(
    "the migration file, e.g. supabase/migrations/<TS>_<name>.sql (none: every pending one, "
    "as *up)", metavar="PATH", check="path")]
Mode = Annotated[str | None, Param(
    "how checkpoints are handled: yolo, interactive or preflight", flag="--mode",
    metavar="MODE", check="mode", short="-m", example="interactive", llm=False)]
Db = Annotated[str | None, Param(
    "target database (else SUPABASE_DB_URL, DATABASE_URL, embedded)", flag="--db",
    metavar="URL", check="db_url", example="postgresql://postgres@localhost:54322/postgres",
    llm=False)]
Json = Annotated[bool, Param("print the report as JSON", flag="--json", llm=False)]
Verbose = Annotated[bool, Param("list every check in the report", flag="--verbose", short="-v",
                                llm=False)]
Quiet = Annotated[bool, Param("print the report as one line: status, file, version, TS",
                              flag="--quiet", short="-q", llm=False)]
Yes = Annotated[bool, Param("answer yes to every confirmation", flag="--yes", short="-y",
                            llm=False)]
Answers = Annotated[str | None, Param(
    "YAML file mapping checkpoint ids to answers (non-interactive runs)", flag="--answers",
    metavar="FILE", check="answers_file", example="answers.yaml", llm=False)]
ListCheckpoints = Annotated[bool, Param(
    "list the checkpoint ids --answers takes, with their answers; run nothing",
    flag="--list-checkpoints", llm=False)]
LockTimeout = Annotated[str | None, Param(
    "stop waiting for a lock after DURATION, roll back and retry (off: wait)",
    flag="--lock-timeout", metavar="DURATION", check="duration", example="2s", llm=False)]
StatementTimeout = Annotated[str | None, Param(
    "cancel a statement after DURATION (off: no limit)", flag="--statement-timeout",
    metavar="DURATION", check="duration", example="5min", llm=False)]
Exposed = Annotated[str | None, Param(
    "comma-separated schemas the API exposes (default: public)", flag="--exposed-schemas",
    metavar="SCHEMAS", check="schemas", example="public,api", llm=False)]




def _version(value: str) -> str:
    """A migration version: digits only, as the Supabase CLI's rule has it (kept as written:
    0001 stays 0001)."""
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"V is a version: digits only (e.g. 20250101000000), not {value!r}")
    return value


VALIDATORS.setdefault("version", _version)  # grammar.py's table; every front end uses it
Version = Annotated[str | None, Param(
    "apply a file the Supabase CLI does not take as a migration (its name is not "
    "<digits>_<name>.sql) anyway, as version V", flag="--version", metavar="V",
    check="version", example="20250101000000", llm=False)]


# Yes/no options that change a safety decision: never offered to the model.
AllowDestructive = Annotated[bool, Param("allow statements that drop or rewrite data",
                                         flag="--allow-destructive", llm=False)]
AllowOutOfOrder = Annotated[bool, Param("allow a version older than the latest applied one",
                                        flag="--allow-out-of-order", llm=False)]
Force = Annotated[bool, Param("apply despite squawk errors", flag="--force", llm=False)]
NoDryRun = Annotated[bool, Param("skip the automatic dry-run (logged as your decision)",
                                 flag="--no-dry-run", llm=False)]
RollbackScript = Annotated[bool, Param("write supabase/rollback/{TS}_rollback.sql now",
                                       flag="--rollback-script", llm=False)]
AllowTransactionControl = Annotated[bool, Param(
    "run a file with its own BEGIN/COMMIT in the middle as psql and the Supabase CLI do: "
    "statement by statement, history only if every part commits",
    flag="--allow-transaction-control", llm=False)]
AllowDataLoss = Annotated[bool, Param(
    "allow a rollback that drops tables or columns holding rows", flag="--allow-data-loss",
    llm=False)]
PrepareOnly = Annotated[bool, Param(
    "write and show the reverse script and what it would lose; change nothing",
    flag="--prepare-only", llm=False)]


# --------------------------------------------------------------------------- helpers


def _run_options(session: Session, *, mode: str | None = None, db: str | None = None,
                 lock_timeout: str | None = None, statement_timeout: str | None = None,
                 asker: Asker | None = None, flags: dict[str, bool] | None = None,
                 exposed: str | None = None) -> RunOptions:
    """RunOptions from a command's values, falling back to the session's defaults."""
    from dbsage.agent.state import RunOptions

    assert mode is not None
    return RunOptions(
        mode=mode, db=db or session.db,
        lock_timeout=lock_timeout or session.lock_timeout,
        statement_timeout=statement_timeout, project_dir=session.project_dir,
        asker=asker, flags=flags or {},
        exposed_schemas=tuple(exposed.split(",")) if exposed else session.exposed_schemas,
        while_waiting=session.while_waiting)


def _mode(task: str, mode: str | None, session: Session) -> str:
    """--mode, else the session's mode, else the task definition's default_mode."""
    if mode or session.mode:
        return str(mode or session.mode)
    from dbsage.agent.runner import load_definition

    return load_definition(task).default_mode


def _asker(session: Session, mode: str, yes: bool, answers: str | None, task: str) -> Asker:
    """Who answers checkpoints: --answers file, --yes (or yolo), the front end's asker, or the
    console when there is a terminal."""
    from dbsage.agent.modes import ConsoleAsker, YesAsker, load_answers

    if answers is not None:
        scripted = load_answers(Path(answers))
        _check_answers(Path(answers), scripted.answers, task, session)
        return scripted
    if yes or mode == "yolo":
        return YesAsker()
    if session.asker is not None:
        return session.asker
    if not session.interactive:
        raise CommandError(
            f"{mode.capitalize()} mode asks questions, but there is no terminal to ask on.",
            hint="Pass --yes to confirm in advance, --answers FILE for scripted answers, or "
                 "use --mode yolo.")
    return ConsoleAsker()


class AnswerPoint(NamedTuple):
    """A question an --answers file can answer: its id, the answers it takes, when."""

    id: str
    answers: tuple[str, ...]
    asked: str  # in which modes, or on what condition
    text: str


_TASK_COMMAND = {"apply-migration": "apply", "up": "up", "rollback": "rollback", "seed": "seed"}


def answer_points(task: str) -> list[AnswerPoint]:
    """Every question id of a task definition that --answers accepts: its checkpoints (and
    the questions their actions ask next), and the override of each check that has one."""
    import re

    from dbsage.agent.checkpoints import FURTHER_QUESTIONS
    from dbsage.agent.runner import load_definition

    def plain(text: str) -> str:  # template variables as the reader knows them: {path} → PATH
        return re.sub(r"\{(\w+)\}", lambda m: m[1].upper(), " ".join(text.split()))

    d = load_definition(task)
    points: list[AnswerPoint] = []
    for cp in d.checkpoints:
        modes = ", ".join(cp.modes)
        if cp.kind == "choice":
            answers = tuple(str(i) for i in range(1, len(cp.options) + 1))
            menu = "; ".join(f"{i} {o.label}" for i, o in enumerate(cp.options, 1))
            points.append(AnswerPoint(cp.id, answers, modes, f"{plain(cp.question)} ({menu})"))
        else:
            note = " (a notice)" if cp.kind == "notice" else ""
            points.append(AnswerPoint(cp.id, ("yes", "no"), modes, plain(cp.question) + note))
        points += [AnswerPoint(extra, ("yes", "no"), modes, f"asked when {cp.id} is answered no")
                   for extra in FURTHER_QUESTIONS.get(cp.action, ())]
    for item in d.checklist_items:
        if item.override:
            points.append(AnswerPoint(
                f"override_{item.id}", ("yes", "no"), "interactive, preflight",
                f"go on although the check '{plain(item.text)}' failed? (yolo: only with "
                f"--{item.override.replace('_', '-')})"))
    return list({p.id: p for p in points}.values())


def _list_command(task: str, session: Session) -> str:
    name = _TASK_COMMAND.get(task, task)
    return (f"dbsage {name} --list-checkpoints" if session.front == "cli" else
            f"*{name} --list-checkpoints")


def _check_answers(path: Path, given: Any, task: str, session: Session) -> None:
    """CommandError (exit 2, before anything runs) for an id the task never asks, or an answer
    its question does not take; the message names the file and line."""
    import yaml

    from dbsage.tools.artifacts import read_text

    points = {p.id: p for p in answer_points(task)}
    lines: dict[str, int] = {}
    node = yaml.compose(read_text(path))
    if isinstance(node, yaml.MappingNode):
        lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    where = lambda key: f"{path}:{lines[key]}" if key in lines else str(path)  # noqa: E731
    for key, value in given.items():
        point = points.get(key)
        if point is None:
            raise CommandError(
                f"{where(key)}: unknown checkpoint id {key!r}: {task} never asks it.",
                hint=f"Known ids: {', '.join(points)} (`{_list_command(task, session)}` shows "
                     "each with its answers).")
        if str(value).strip().lower() not in point.answers:
            raise CommandError(f"{where(key)}: {key}: {value!r} is not an answer it takes.",
                               hint=f"Answer {key} with {' or '.join(point.answers)}.")


def _checkpoint_list(task: str, as_json: bool, session: Session) -> Outcome:
    """The Outcome of --list-checkpoints: the ids, their answers, when each is asked."""
    points = answer_points(task)
    data = {"task": task, "checkpoints": [
        {"id": p.id, "answers": list(p.answers), "asked": p.asked, "question": p.text}
        for p in points]}
    if as_json:
        return Outcome(task, text=_json(data), data=data, as_json=True)
    width = max(len(p.id) for p in points) + 2
    lines = [f"Checkpoints of {task}; an --answers FILE maps each id to its answer "
             "(a question the run asks whose id is missing stops it, exit 2):"]
    for p in points:
        lines += [f"  {p.id.ljust(width)}{'|'.join(p.answers)}  [{p.asked}]",
                  f"  {' ' * width}{p.text}"]
    return Outcome(task, text="\n".join(lines), data=data)


def _yes() -> Asker:
    from dbsage.agent.modes import YesAsker

    return YesAsker()


def _path(path: str, session: Session) -> Path:
    """A PATH argument; a relative path is the current directory's when it names a file
    there (shell completion), else the project folder's."""
    p = Path(path)
    if p.is_absolute() or session.project_dir.resolve() == Path.cwd().resolve():
        return p
    if p.exists():
        return p.resolve()
    return session.project_dir / p


def _json(data: Any) -> str:
    """`data` as indented JSON (json is imported here: it is not needed to start up)."""
    import json

    return json.dumps(data, indent=2)


def _from_report(name: str, report: RunReport, as_json: bool, view: str = "normal") -> Outcome:
    from dbsage.agent.render import render_json

    return Outcome(name, ok=report.exit_code == 0, report=report, exit_code=report.exit_code,
                   as_json=as_json, text=render_json(report) if as_json else "", view=view)


def _view(verbose: bool, quiet: bool) -> str:
    """--verbose / --quiet as the report's view (both: a usage error, before anything runs)."""
    if verbose and quiet:
        raise CommandError("--verbose and --quiet exclude each other.",
                           hint="Pass one of them (neither: the one-screen report).")
    return "verbose" if verbose else "quiet" if quiet else "normal"


def follow_menu(outcome: Outcome, session: Session, db: str | None = None) -> Outcome | None:
    """The post-run menu, asked after the report was shown (a person at a terminal): the
    chosen option's command runs on the same target, its outcome returned to be shown; None
    for "done", end of input, or no menu."""
    from dbsage.agent.modes import Cancelled, ConsoleAsker, Question

    report = outcome.report
    menu = report.menu if report is not None and not outcome.as_json else None
    if not menu:
        return None
    options = menu["options"]

    def named(command: str) -> str:
        if session.front != "cli":
            return command
        spec = get_spec(command.lstrip("*").split()[0])
        return f"dbsage {spec.cli_name or spec.name}"

    listing = "\n".join(f"  {i}. {o['label']}" + (f"  ({named(o['command'])})"
                                                   if o["command"] else "")
                         for i, o in enumerate(options, 1))
    labels = tuple(str(i) for i in range(1, len(options) + 1))
    question = Question(menu["id"], menu["question"], menu["explanation"], listing, labels,
                        menu.get("default") or labels[-1])
    asker = session.asker or ConsoleAsker()
    try:
        answer = asker.ask(question)
    except (Cancelled, EOFError):
        return None  # end of input at the menu: done (the run itself is over)
    command = options[int(answer) - 1]["command"] if answer in labels else None
    if not command:
        return None
    invocation = parse(command)
    values = call_values(invocation)
    if db and any(o.param == "db" for o in invocation.spec.options):
        values["db"] = db
    return call(invocation.spec, values, session)


def migration_files(project_dir: Path) -> list[Path]:
    """The `.sql` files of supabase/migrations/, sorted by name."""
    from dbsage.tools.artifacts import list_files

    return list_files(project_dir / MIGRATIONS_DIR, "*.sql")


def _offer_transaction_control(report: RunReport, path: str, session: Session) -> None:
    """A file refused for its own mid-file BEGIN/COMMIT: name the option that runs it as
    written, when that would run it."""
    error = report.error or {}
    if not (error.get("transaction_control") and error.get("run_as_written")):
        return
    verb = "dbsage apply" if session.front == "cli" else "*apply-migration"
    offer = (f"To run it as written: {verb} {path} --allow-transaction-control (no dry-run "
             "can run it: its COMMIT would end the dry-run's transaction).")
    error["hint"] = f"{error['hint']} {offer}" if error.get("hint") else offer


# --------------------------------------------------------------------------- task commands


@command("apply-migration", example=f"*apply-migration {_EXAMPLE_PATH} --mode interactive",
         aliases=("apply", "migrate"), cli_name="apply", writes=True, tool="apply_migration",
         keywords=("apply", "migrate", "migration", "deploy", "push", "execute", "run"))
def apply_migration(path: OptionalMigrationPath = None, *, mode: Mode = None, db: Db = None,
                    lock_timeout: LockTimeout = None, statement_timeout: StatementTimeout = None,
                    yes: Yes = False, answers: Answers = None,
                    allow_destructive: AllowDestructive = False,
                    allow_out_of_order: AllowOutOfOrder = False, force: Force = False,
                    no_dry_run: NoDryRun = False, rollback_script: RollbackScript = False,
                    allow_transaction_control: AllowTransactionControl = False,
                    version: Version = None, list_checkpoints: ListCheckpoints = False,
                    as_json: Json = False, verbose: Verbose = False, quiet: Quiet = False,
                    session: Session) -> Outcome:
    """Apply a migration safely: lock, snapshot, apply, diff, record.

    One transaction with lock_timeout and retries; the history row commits with it.
    Without PATH, every pending migration of supabase/migrations/ (as *up).

    Args:
        path: the migration file, e.g. supabase/migrations/<TS>_<name>.sql.
    """
    from dbsage.agent.runner import run_apply

    if list_checkpoints:
        return _checkpoint_list("apply-migration", as_json, session)
    view = _view(verbose, quiet)
    if path is None:
        return up(mode=mode, db=db, lock_timeout=lock_timeout,
                  statement_timeout=statement_timeout, yes=yes, answers=answers,
                  include_all=allow_out_of_order, allow_destructive=allow_destructive,
                  force=force, no_dry_run=no_dry_run, as_json=as_json, verbose=verbose,
                  quiet=quiet, session=session)
    chosen = _mode("apply-migration", mode, session)
    flags = {"allow_destructive": allow_destructive, "allow_out_of_order": allow_out_of_order,
             "force": force, "skip_dry_run": no_dry_run, "rollback_script": rollback_script,
             "allow_transaction_control": allow_transaction_control}
    opts = _run_options(session, mode=chosen, db=db, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout,
                        asker=_asker(session, chosen, yes, answers, "apply-migration"),
                        flags=flags)
    opts.version = version
    from dbsage.tools.sqlfile import allowing_transaction_control

    # read_migration keeps a mid-file BEGIN ... COMMIT only when this run allows it
    with allowing_transaction_control(allow_transaction_control):
        report = run_apply(_path(path, session), opts)
    _offer_transaction_control(report, path, session)
    return _from_report("apply-migration", report, as_json, view)


@command("dry-run", example=f"*dry-run {_EXAMPLE_PATH}", aliases=("dryrun",), tool="dry_run",
         keywords=("dry", "try", "simulate", "preview", "rehearse"))
def dry_run(path: MigrationPath, *, db: Db = None, lock_timeout: LockTimeout = None,
            statement_timeout: StatementTimeout = None, version: Version = None,
            as_json: Json = False, verbose: Verbose = False, quiet: Quiet = False,
            session: Session) -> Outcome:
    """Run a migration in a transaction that is rolled back; report what it would do.

    Args:
        path: the migration file, e.g. supabase/migrations/<TS>_<name>.sql.
    """
    from dbsage.agent.runner import run_dry_run_task

    view = _view(verbose, quiet)
    opts = _run_options(session, mode="yolo", db=db, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout, asker=_yes())
    opts.version = version
    return _from_report("dry-run", run_dry_run_task(_path(path, session), opts), as_json, view)


@command("plan", example=f"*plan {_EXAMPLE_PATH}", tool="plan",
         keywords=("plan", "analyse", "analyze", "preflight", "locks", "risk", "risky", "safe"))
def plan(path: MigrationPath, *, db: Db = None, lock_timeout: LockTimeout = None,
         version: Version = None, as_json: Json = False, session: Session) -> Outcome:
    """Pre-flight analysis only: locks, rewrites, destructive statements; changes nothing.

    Writes supabase/plans/{TS}_plan.md and .json.

    Args:
        path: the migration file, e.g. supabase/migrations/<TS>_<name>.sql.
    """
    from dbsage.agent.runner import run_plan

    opts = _run_options(session, mode="preflight", db=db, lock_timeout=lock_timeout,
                        asker=_yes())
    opts.version = version
    return _from_report("plan", run_plan(_path(path, session), opts), as_json)


def _rollback_run(value: str) -> str:
    """A migration version or apply-run TS (digits), or `latest`; never a path."""
    if value.lower() == "latest":
        return "latest"
    if value.isascii() and value.isdigit():
        return value
    if "/" in value or "\\" in value or ".." in value or value.lower().endswith(".sql"):
        raise ValueError(f"VERSION|TS is a migration version or run timestamp, not a path: "
                         f"{value!r}")
    raise ValueError(f"expected a version or run TS (digits, e.g. 20250101000000) or latest, "
                     f"not {value!r}")


VALIDATORS.setdefault("rollback_run", _rollback_run)  # grammar.py's table; every front end
RollbackTo = Annotated[str | None, Param(
    "undo every run applied after version V, newest first (V stays applied)", flag="--to",
    metavar="V", check="rollback_run", example="20250101000000")]
AcceptDifference = Annotated[bool, Param(
    "commit the rollback even when the result differs from the state before the migration "
    "(the differences are listed and logged)", flag="--accept-difference", llm=False)]


@command("rollback", example="*rollback latest", aliases=("undo",), writes=True,
         tool="rollback",
         keywords=("rollback", "roll", "undo", "revert", "back", "restore"))
def rollback(ts: Annotated[str | None, Param(
                 "the version to undo (its newest apply run), the TS of an apply run, or "
                 "latest", metavar="VERSION|TS|latest", check="rollback_run")] = None,
             *, to: RollbackTo = None, mode: Mode = None, db: Db = None,
             lock_timeout: LockTimeout = None, statement_timeout: StatementTimeout = None,
             yes: Yes = False, answers: Answers = None, allow_data_loss: AllowDataLoss = False,
             accept_difference: AcceptDifference = False, prepare_only: PrepareOnly = False,
             list_checkpoints: ListCheckpoints = False, as_json: Json = False,
             verbose: Verbose = False, quiet: Quiet = False,
             session: Session) -> Outcome:
    """Undo an applied migration with the plan captured in its transaction, verified.

    Reverse DDL, the rows it changed or destroyed, and a comparison with the state before the
    migration, in one transaction; works from any checkout (the plan is in the database).
    Only the newest run, or every run after a version with --to.

    Args:
        ts: the version to undo (its newest apply run), the 14-digit TS of a run, or latest.
        to: undo every run applied after this version instead.
    """
    from dbsage.agent.runner import prepare_rollback_only, run_rollback_task

    if list_checkpoints:
        return _checkpoint_list("rollback", as_json, session)
    if (ts is None) == (to is None):
        raise CommandError("*rollback needs VERSION|TS|latest, or --to V (not both).",
                           hint="Usage: *rollback VERSION|TS|latest [--to V]")
    target = ts or ""
    view = _view(verbose, quiet)
    chosen = _mode("rollback", mode, session)
    if prepare_only:
        opts = _run_options(session, mode="yolo", db=db, lock_timeout=lock_timeout,
                            asker=_yes())
        report = prepare_rollback_only(target, opts, to=to) if to else \
            prepare_rollback_only(target, opts)
        return _from_report("rollback", report, as_json, view)
    opts = _run_options(session, mode=chosen, db=db, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout,
                        asker=_asker(session, chosen, yes, answers, "rollback"),
                        flags={"allow_data_loss": allow_data_loss,
                               "accept_difference": accept_difference})
    report = run_rollback_task(target, opts, to=to) if to else run_rollback_task(target, opts)
    return _from_report("rollback", report, as_json, view)


@command("smoke-test", example="*smoke-test", aliases=("smoke",), tool="smoke_test",
         keywords=("smoke", "test", "tests", "pgtap", "verify", "sanity"))
def smoke_test(*, db: Db = None, exposed_schemas: Exposed = None, as_json: Json = False,
               session: Session) -> Outcome:
    """Run the smoke tests (built-in checks and supabase/tests/*.sql) against the database.

    Exit code 1 when anything fails.
    """
    from dbsage.agent.runner import run_smoke_task

    opts = _run_options(session, mode="yolo", db=db, asker=_yes(), exposed=exposed_schemas)
    return _from_report("smoke-test", run_smoke_task(opts), as_json)


@command("seed", example="*seed --yes", aliases=("seeds",), writes=True, tool="seed",
         keywords=("seed", "seeds", "seeding", "populate", "fixtures", "sample"))
def seed(*, mode: Mode = None, db: Db = None, lock_timeout: LockTimeout = None,
         statement_timeout: StatementTimeout = None, yes: Yes = False, answers: Answers = None,
         list_checkpoints: ListCheckpoints = False, as_json: Json = False,
         session: Session) -> Outcome:
    """Load the seed data: supabase/seed.sql, or [db.seed] sql_paths of supabase/config.toml.

    Every seed file in one transaction, under the migration lock, with lock_timeout and
    retries; nothing is recorded in supabase_migrations (a seed is not a migration).
    """
    from dbsage.agent.runner import run_named

    if list_checkpoints:
        return _checkpoint_list("seed", as_json, session)
    disabled = _seeding_disabled(session)
    if disabled:
        data = {"task": "seed", "status": "skipped", "reason": disabled}
        return Outcome("seed", text=_json(data) if as_json else f"ℹ {disabled}",
                       data=data, as_json=as_json)
    chosen = _mode("seed", mode, session)
    opts = _run_options(session, mode=chosen, db=db, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout,
                        asker=_asker(session, chosen, yes, answers, "seed"))
    return _from_report("seed", run_named("seed", opts), as_json)


def _seeding_disabled(session: Session) -> str | None:
    """Why there is nothing to seed ([db.seed] enabled = false), before any run starts. A
    config that cannot be read is left to the run, whose pre-condition reports it."""
    from dbsage.tools.project import CONFIG_FILE, read_project_config

    try:
        config = read_project_config(session.project_dir)
    except DbsageError:
        return None
    if config.seed.enabled:
        return None
    line = config.line_of("db.seed", "enabled")
    return (f"Seeding is disabled ({CONFIG_FILE}{f':{line}' if line else ''}: [db.seed] "
            "enabled = false): nothing to do.")


# --------------------------------------------------------------------------- status, RLS


def _status_text(data: dict[str, Any], front: str = "chat") -> str:
    lines = [f"Database: {data['target']}"]
    if data.get("migrations"):
        lines += ["Migrations:", *_status_table(data["migrations"])]
    lock = data.get("lock")
    lines.append(f"Migration lock: held by {lock['described']} (a migration is running now)"
                 if lock else "Migration lock: free (no migration is running)")
    for run in data.get("runs") or ():
        lines.append(run["described"][0].upper() + run["described"][1:])
    if data.get("scratch_databases"):
        lines.append(f"Scratch databases a killed rollback of an older dbsage left: "
                     f"{', '.join(data['scratch_databases'])} (the next rollback drops the ones "
                     "nobody is connected to)")
    labels = (("applied", "Applied"), ("pending", "Pending"),
              ("drifted", "Drifted (changed since applied)"),
              ("missing", "Applied, but no file (missing)"),
              ("unverified", "Applied by another tool (no checksum)"),
              ("ignored", "Ignored (no leading version)"), ("duplicates", "Duplicate version"))
    for key, label in labels:
        items = data[key]
        if items or key in ("applied", "pending", "drifted"):
            lines.append(f"{label}: {len(items)}")
            lines += [f"  - {item}" for item in items]
    if data["pending"]:
        verb = "*dry-run" if front == "chat" else "dbsage dry-run"
        up_ = "*up" if front == "chat" else "dbsage up"
        lines.append(f"Next: {verb} supabase/migrations/{data['pending'][0]}, or all of them: "
                     f"{up_} --dry-run, then {up_}")
    return "\n".join(lines)


def _target(session: Session, db: str | None) -> tuple[str, str]:
    """(URL, redacted URL) of the target, starting the embedded server when none is set."""
    from dbsage.tools.connection import (
        check_not_transaction_pooler,
        check_target,
        redact,
        resolve_target,
    )

    target = resolve_target(db or session.db)
    if target is not None:
        check_target(target)  # SUPABASE_DB_URL/DATABASE_URL get --db's check
    if target is None:
        from dbsage.tools.embedded import start_embedded

        require_project(session.project_dir)
        status_ = start_embedded(session.project_dir)
        assert status_.url is not None
        url = status_.url
    else:
        url = target.url
    check_not_transaction_pooler(url)
    return url, redact(url)


@command("status", example="*status", aliases=("st",), tool="status",
         keywords=("status", "pending", "applied", "drift", "drifted", "state", "list", "which"))
def status(*, db: Db = None, as_json: Json = False, session: Session) -> Outcome:
    """Show applied, pending and drifted migrations (files against the history).

    Each version with its name, run TS, when and by whom it was applied, the mode and how
    long it took; applied versions without a file; and who holds the migration lock when a
    migration is running now.
    """
    from dbsage.tools.batch import project_status
    from dbsage.tools.connection import connect

    url, shown = _target(session, db)
    with connect(url, autocommit=True) as conn:
        st = project_status(conn, session.project_dir)
    holder = st.lock_holder
    data: dict[str, Any] = {
        "target": shown,
        "applied": st.names("applied", "drifted", "unverified"),
        "pending": st.names("pending", "out_of_order"), "drifted": st.names("drifted"),
        "missing": [m.version for m in st.migrations if m.state == "missing"],
        "unverified": [m.version for m in st.migrations if m.state == "unverified"],
        "out_of_order": st.names("out_of_order"), "ignored": list(st.local.ignored),
        "duplicates": list(st.local.duplicates),
        "migrations": [_status_row(m) for m in st.migrations],
        "lock": None if holder is None else {
            "pid": holder.pid, "application_name": holder.application_name,
            "since": holder.since.isoformat() if holder.since else None, "user": holder.user,
            "described": holder.describe()},
        "runs": [_run_left(r, session.front) for r in st.runs],
        "scratch_databases": list(st.scratch)}
    ok = not (data["drifted"] or data["missing"] or data["duplicates"])
    text = _json(data) if as_json else _status_text(data, session.front)
    return Outcome("status", ok=ok, text=text, data=data, as_json=as_json,
                   exit_code=0 if ok else 1)


def _run_left(r: Any, front: str) -> dict[str, Any]:
    """A run that left its marker (tools/batch.RunLeft): its state in words and as a key."""
    o = r.outcome
    what = f"run {r.ts} ({r.task}{' ' + r.subject if r.subject else ''}, pid {r.pid})"
    rollback = "*rollback" if front == "chat" else "dbsage rollback"
    if r.alive:
        state, text = "running", f"{what} is still running"
    elif r.task == "rollback":
        if o.rolled_back:
            state = "interrupted_after_commit"
            text = (f"{what} was interrupted after its commit: {', '.join(o.rolled_back)} "
                    "rolled back")
        else:
            state, text = "interrupted_before_commit", (f"{what} was interrupted before its "
                                                        "commit: nothing was undone")
    elif o.applied:
        state = "interrupted_after_commit"
        text = f"{what} was interrupted after commit: {', '.join(o.applied)} applied"
        text += (f"; rollback available: {rollback} {r.ts}" if o.rollback_available
                 else "; no rollback plan was kept")
    elif r.outside_transaction:
        state = "interrupted_outside_transaction"
        text = (f"{what} was interrupted before its history row: its statements run outside a "
                "transaction, so those that finished before the kill are committed (look for "
                "them, e.g. invalid indexes, before running it again)")
    else:
        state = "interrupted_before_commit"
        text = f"{what} was interrupted before commit: nothing applied"
        text += (f"; its before-snapshot is kept ({r.before_snapshot})" if r.before_snapshot
                 else "; it left no before-snapshot")
    if not r.alive:
        text += "; the next run cleans up what it left"
    return {"ts": r.ts, "task": r.task, "subject": r.subject, "pid": r.pid, "state": state,
            "applied": list(o.applied), "rollback_available": list(o.rollback_available),
            "rolled_back": list(o.rolled_back), "before_snapshot": r.before_snapshot,
            "described": text}


def _status_row(m: Any) -> dict[str, Any]:
    e = m.entry
    return {"version": m.version, "file": m.file,
            "name": (e.name if e and e.name else None) or (m.file[len(m.version) + 1:-4]
                                                          if m.file else None),
            "state": m.state, "ts": e.ts if e else None,
            "applied_at": e.applied_at.isoformat() if e and e.applied_at else None,
            "applied_by": e.applied_by if e else None, "mode": e.mode if e else None,
            "duration_ms": round(e.duration_ms, 1) if e and e.duration_ms is not None else None,
            "recorded_by": None if e is None else "dbsage" if e.by_dbsage else "supabase"}


def _status_table(rows: list[dict[str, Any]]) -> list[str]:
    """The versions as a table: version, name, state, run TS, applied at, by, mode, duration."""
    head = ("version", "name", "state", "run TS", "applied at (UTC)", "by", "mode", "duration")
    cells = [head] + [(
        r["version"], (r["name"] or "")[:32], r["state"].replace("_", " "), r["ts"] or "-",
        (r["applied_at"] or "-")[:19].replace("T", " "), r["applied_by"] or "-",
        r["mode"] or ("-" if r["recorded_by"] != "supabase" else "cli"),
        f"{r['duration_ms']:.0f} ms" if r["duration_ms"] is not None else "-") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return ["  " + "  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip()
            for c in cells]


def _probe_roles(value: str) -> str:
    """API roles to impersonate, comma-separated: anon, authenticated, service_role."""
    names = [x.strip().lower() for x in value.split(",") if x.strip()]
    if not names or any(n not in ("anon", "authenticated", "service_role") for n in names):
        raise ValueError("ROLES are anon, authenticated and/or service_role, comma-separated "
                         f"(e.g. anon,authenticated), not {value!r}")
    return ",".join(dict.fromkeys(names))


def _claims_json(value: str) -> str:
    """A JSON object of JWT claims (e.g. the user's id as sub)."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError('JSON must be a JSON object of claims, e.g. {"sub": "<user id>"}, '
                         f"not {value!r}")
    return json.dumps(parsed)


VALIDATORS.setdefault("probe_roles", _probe_roles)  # grammar.py's table; every front end uses it
VALIDATORS.setdefault("claims_json", _claims_json)
AsRoles = Annotated[str | None, Param(
    "impersonate ROLES side by side (anon, authenticated, service_role; comma-separated): "
    "rows each SELECT returns, whether INSERT/UPDATE/DELETE are allowed (always rolled back)",
    flag="--as", metavar="ROLES", check="probe_roles", example="anon,authenticated")]
Claims = Annotated[str | None, Param(
    "the authenticated probe's JWT claims, a JSON object (its sub is auth.uid())",
    flag="--claims", metavar="JSON", check="claims_json",
    example='\'{"sub": "00000000-0000-0000-0000-000000000001"}\'')]
Top = Annotated[str | None, Param(
    "analyse the N slowest statements by total and by mean time (default 10)", flag="--top",
    metavar="N", check="positive_int", example="5")]
CreateExtension = Annotated[bool, Param(
    "create pg_stat_statements (and hypopg, when the server has it) if the database lacks it",
    flag="--create-extension", llm=False)]


def _exposed(session: Session, given: str | None) -> str | None:
    """--exposed-schemas, else `[api] schemas` of supabase/config.toml, else None (the
    session's default)."""
    if given:
        return given
    from dbsage.agent.steps import project_exposed_schemas

    found = project_exposed_schemas(session.project_dir)
    return ",".join(found) if found else None


@command("rls-audit", example="*rls-audit --as anon,authenticated", aliases=("rls",),
         tool="rls_audit",
         keywords=("rls", "security", "secure", "policy", "policies", "row", "audit",
                   "exposed", "who", "see", "access", "lint", "lints", "advisor", "advisors"))
def rls_audit(*, db: Db = None, exposed_schemas: Exposed = None, as_roles: AsRoles = None,
              claims: Claims = None, as_json: Json = False, session: Session) -> Outcome:
    """Audit row level security: RLS, policies and coverage per exposed table, the lints.

    Per table of the exposed schemas (--exposed-schemas, else [api] schemas of
    supabase/config.toml, else public): RLS on/off, FORCE, each policy, the commands its
    permissive policies cover; the Supabase advisor lints about exposure, each with why and a
    fix; with --as, what each role can actually see and change (impersonated in a
    transaction that is always rolled back). Exit code 1 when an ERROR-level lint or an
    exposed table without RLS or without any policy exists.
    """
    from dbsage.agent.runner import run_named

    roles = as_roles.split(",") if as_roles else []
    if claims and "authenticated" not in roles:
        if roles:
            raise CommandError("--claims are the JWT claims of the authenticated probe, but "
                               f"--as {as_roles} does not probe authenticated.",
                               hint=f"Use --as {as_roles},authenticated.")
        roles = ["authenticated"]
    opts = _run_options(session, mode="yolo", db=db, asker=_yes(),
                        exposed=_exposed(session, exposed_schemas))
    report = run_named("rls-audit", opts, roles=roles, claims=claims)
    return _from_report("rls-audit", report, as_json)


@command("analyze-hotpaths", example="*analyze-hotpaths --top 5", aliases=("hotpaths",),
         tool="analyze_hotpaths",
         keywords=("hot", "hotpaths", "slow", "queries", "performance", "index", "indexes"))
def analyze_hotpaths(*, top: Top = None, db: Db = None,
                     statement_timeout: StatementTimeout = None,
                     create_extension: CreateExtension = False, as_json: Json = False,
                     session: Session) -> Outcome:
    """Find the slowest queries, their plans, what is wrong and the indexes that would help.

    Reads pg_stat_statements; plans statements that may write with EXPLAIN only, and runs
    EXPLAIN ANALYZE for read-only ones in read-only transactions that are rolled back: no
    data changes. Writes supabase/docs/performance-analysis-{TS}.md. Creates no extension
    unless --create-extension is given or you answer yes when asked.
    """
    from dbsage.agent.runner import run_named

    asker: Asker | None = None
    if session.interactive and not as_json:
        from dbsage.agent.modes import ConsoleAsker

        asker = session.asker or ConsoleAsker()
    opts = _run_options(session, mode="interactive" if asker else "yolo", db=db,
                        statement_timeout=statement_timeout, asker=asker or _yes(),
                        flags={"create_extension": create_extension})
    report = run_named("analyze-hotpaths", opts, top=int(top or 10))
    return _from_report("analyze-hotpaths", report, as_json)


# --------------------------------------------------------------------------- the project workflow


ToVersion = Annotated[str | None, Param(
    "stop after version V (it is applied; the later ones stay pending)", flag="--to",
    metavar="V", check="version", example="20250101000000")]
Atomic = Annotated[bool, Param(
    "apply the whole batch in ONE transaction: every file commits, or none",
    flag="--atomic", llm=False)]
IncludeAll = Annotated[bool, Param(
    "also apply pending files older than the latest applied version, in version order (the "
    "Supabase CLI's --include-all)", flag="--include-all", llm=False)]
RollbackPlans = Annotated[bool, Param(
    "keep a rollback plan for each file, as apply does, so `rollback --to V` undoes the batch "
    "file by file (catalog captures in each file's transaction: slower)",
    flag="--rollback-plans", llm=False)]
DryRunBatch = Annotated[bool, Param(
    "run the whole batch in one transaction that is rolled back; report each file",
    flag="--dry-run")]


@command("up", example="*up --mode yolo", writes=True, tool="up",
         keywords=("up", "everything", "batch", "upgrade", "catch", "date"))
def up(*, mode: Mode = None, db: Db = None, lock_timeout: LockTimeout = None,
       statement_timeout: StatementTimeout = None, yes: Yes = False, answers: Answers = None,
       atomic: Atomic = False, to: ToVersion = None, include_all: IncludeAll = False,
       dry_run: DryRunBatch = False, allow_destructive: AllowDestructive = False,
       force: Force = False, no_dry_run: NoDryRun = False,
       rollback_plans: RollbackPlans = False, list_checkpoints: ListCheckpoints = False,
       as_json: Json = False, verbose: Verbose = False, quiet: Quiet = False,
       session: Session) -> Outcome:
    """Apply every pending migration of supabase/migrations/, in version order, safely.

    One advisory lock for the whole batch, one snapshot before and one after it; each file in
    its own transaction with its history row (as the Supabase CLI does), or --atomic for one
    transaction over the batch. Stops at the first failure and says which files committed.
    Interactive mode asks once, for the whole batch with its plan.
    """
    from dbsage.agent.runner import run_named

    if list_checkpoints:
        return _checkpoint_list("up", as_json, session)
    view = _view(verbose, quiet)
    task = "up-dry-run" if dry_run else "up"
    chosen = "yolo" if dry_run else _mode("up", mode, session)
    flags = {"allow_destructive": allow_destructive, "force": force, "atomic": atomic,
             "include_all": include_all, "skip_dry_run": no_dry_run,
             "rollback_plans": rollback_plans}
    opts = _run_options(session, mode=chosen, db=db, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout,
                        asker=_yes() if dry_run else _asker(session, chosen, yes, answers, "up"),
                        flags=flags)
    opts.to_version = to
    if opts.db is None:
        _require_local_project(session)
    return _from_report("up", run_named(task, opts), as_json, view)


def _require_local_project(session: Session) -> None:
    """No --db and no URL in the environment: the local server is the target, and it exists
    only in a project."""
    from dbsage.tools.connection import resolve_target

    if resolve_target(None) is None:
        require_project(session.project_dir)


MigrationName = Annotated[str, Param(
    "the migration's name: lowercase letters, digits and underscores", metavar="NAME",
    check="migration_name")]


def _migration_name(value: str) -> str:
    """A migration name as `supabase migration new` takes it, restricted to what reads well in
    a file name: lowercase letters, digits and underscores."""
    from dbsage.tools.project import MIGRATION_NAME

    if not MIGRATION_NAME.match(value):
        raise ValueError(f"NAME is lowercase letters, digits and underscores (e.g. "
                         f"add_profiles), not {value!r}")
    return value


VALIDATORS.setdefault("migration_name", _migration_name)


@command("new", example="*new add_profiles", writes=True, tool="new_migration",
         keywords=("new", "create", "scaffold", "generate", "template"))
def new(name: MigrationName, *, as_json: Json = False, session: Session) -> Outcome:
    """Create supabase/migrations/<UTC timestamp>_<name>.sql from a template.

    The template has the timeouts squawk recommends, commented in; an existing file is never
    overwritten.

    Args:
        name: lowercase letters, digits and underscores.
    """
    from dbsage.tools.project import create_migration

    require_project(session.project_dir)
    made = create_migration(session.project_dir, name)
    rel = made.path.relative_to(session.project_dir)
    data = {"path": str(rel), "version": made.version, "name": made.name}
    verb = "*apply-migration" if session.front == "chat" else "dbsage apply"
    text = (_json(data) if as_json else
            f"✅ Created {rel}\nWrite the migration there, then: {verb} {rel} (or all pending: "
            f"{'*up' if session.front == 'chat' else 'dbsage up'})")
    return Outcome("new", text=text, data=data, as_json=as_json)


def _repair_status(value: str) -> str:
    """applied or reverted, as `supabase migration repair --status` takes them."""
    if value.lower() not in ("applied", "reverted"):
        raise ValueError(f"--status is applied or reverted, not {value!r}")
    return value.lower()


VALIDATORS.setdefault("repair_status", _repair_status)
Versions = Annotated[tuple[str, ...], Param(
    "the versions to mark", metavar="VERSION", check="version")]
RepairStatus = Annotated[str | None, Param(
    "applied: record the versions as applied (statements split as the Supabase CLI splits "
    "the file); reverted: take them out of the history", flag="--status",
    metavar="applied|reverted", check="repair_status", example="reverted")]
Baseline = Annotated[bool, Param(
    "adopt a database that already holds the migrations (as *baseline)", flag="--baseline",
    llm=False)]


@command("repair", example="*repair --status reverted 20250101000000", writes=True,
         tool="repair", keywords=("repair", "mark", "history", "reverted"))
def repair(versions: Versions = (), *, status: RepairStatus = None, baseline: Baseline = False,
           db: Db = None, yes: Yes = False, as_json: Json = False,
           session: Session) -> Outcome:
    """Repair the migration history, as `supabase migration repair` does; nothing is run.

    --status applied VERSION...: record each as applied (its row upserted, its statements
    split as the CLI splits the file); --status reverted VERSION...: delete their rows.
    --baseline: adopt an existing database (as *baseline).
    """
    if baseline:
        if versions or status:
            raise CommandError("--baseline takes no VERSION and no --status.",
                               hint="Usage: *repair --baseline, or *repair --status "
                                    "applied|reverted VERSION...")
        return baseline_(db=db, yes=yes, as_json=as_json, session=session)
    if status is None or not versions:
        raise CommandError("*repair needs --status applied|reverted and at least one VERSION "
                           "(or --baseline).",
                           hint="Usage: *repair --status reverted 20250101000000")
    from dbsage.tools.batch import repair_history

    with _locked_session(session, db) as (conn, shown):
        result = repair_history(conn, session.project_dir, list(versions), status)
    data = {"target": shown, "status": result.status, "versions": list(result.versions),
            "files": [str(p.relative_to(session.project_dir)) if p.is_relative_to(
                session.project_dir) else str(p) for p in result.files],
            "removed": result.removed}
    listed = " ".join(result.versions)
    text = (_json(data) if as_json else
            f"✅ Repaired migration history: {listed} => {result.status}"
            + (f" ({result.removed} row(s) removed)" if result.status == "reverted" else "")
            + f"\nDatabase: {shown}")
    return Outcome("repair", text=text, data=data, as_json=as_json)


class _Locked:
    """A session of its own holding the migration lock (repair, baseline); closes on exit."""

    def __init__(self, session: Session, db: str | None) -> None:
        self.session, self.db = session, db
        self.conn: Any = None

    def __enter__(self) -> tuple[Any, str]:
        from dbsage.tools.connection import check_write_session, connect
        from dbsage.tools.lock import acquire_lock

        url, shown = _target(self.session, self.db)
        self.conn = connect(url, autocommit=True)
        try:
            check_write_session(self.conn, url)  # read-only, or a transaction pooler: refused
            acquire_lock(self.conn)
        except BaseException:
            self.conn.close()
            raise
        return self.conn, shown

    def __exit__(self, *exc: object) -> None:
        from dbsage.tools.lock import release_lock

        try:
            release_lock(self.conn)
        finally:
            self.conn.close()


def _locked_session(session: Session, db: str | None) -> _Locked:
    return _Locked(session, db)


@command("baseline", example="*baseline --yes", writes=True,
         keywords=("baseline", "adopt", "existing", "import"))
def baseline_(*, db: Db = None, to: ToVersion = None, yes: Yes = False,
              dry_run: Annotated[bool, Param(
                  "say which files the database already holds; record nothing",
                  flag="--dry-run", llm=False)] = False,
              as_json: Json = False, session: Session) -> Outcome:
    """Adopt a database that already holds the migrations: record them without running them.

    Every pending file is replayed over the existing schema in one transaction that is always
    rolled back (a statement that fails, "already exists", is skipped); the files up to the
    last one after which the schema is unchanged are recorded as applied. Grants, comments
    and rows are not compared.
    """
    from dbsage.agent.modes import Question
    from dbsage.tools.artifacts import release_reservation, reserve_ts
    from dbsage.tools.batch import (
        find_pending,
        list_local_migrations,
        probe_baseline,
        record_as_applied,
    )
    from dbsage.tools.history import applied_checksums
    from dbsage.tools.sqlfile import read_migration

    local = list_local_migrations(session.project_dir)
    with _locked_session(session, db) as (conn, shown):
        plan = find_pending(local.files, applied_checksums(conn), include_all=True,
                            to_version=to)
        migrations = [read_migration(m.path) for m in plan.pending]
        probe = probe_baseline(conn, migrations)
        contained = probe.contained
        chosen = [m for m in migrations if m.path in {f.path for f in contained}]
        recorded = False
        if chosen and not dry_run:
            ask = yes or not session.interactive or _yes_to(session, Question(
                "confirm_baseline", f"Record {len(chosen)} migration(s) as applied, without "
                "running them?", explanation="Their objects are already in the database; "
                "dbsage only writes the history rows.", detail="\n".join(
                    f"  {m.path.name}" for m in chosen), choices=("yes", "no"), default="no"))
            if not ask:
                raise CommandError("Baseline cancelled; nothing was recorded.")
            snaps = session.project_dir / "supabase" / "snapshots"
            ts = reserve_ts(snaps)
            release_reservation(snaps / f"{ts}_before.sql")
            record_as_applied(conn, chosen, ts=ts, mode="baseline")
            recorded = True
    rel = {f.path: f for f in probe.files}
    rows = [{"file": f.path.name, "version": f.version, "contained": f in contained,
             "skipped": list(f.skipped), "changes_rows": f.changes_rows} for f in rel.values()]
    left = [r["file"] for r in rows if not r["contained"]]
    data = {"target": shown, "recorded": recorded, "files": rows,
            "contained": [f.path.name for f in contained], "not_contained": left}
    if as_json:
        return Outcome("baseline", text=_json(data), data=data, as_json=True)
    if not plan.pending:
        return Outcome("baseline", text=f"ℹ Nothing to adopt: every migration is applied.\n"
                       f"Database: {shown}", data=data)
    head = ("✅ Recorded as applied (already in the database, not run)" if recorded else
            "ℹ Already in the database (nothing recorded: --dry-run)" if dry_run and contained
            else "ℹ The database holds none of the pending migrations")
    lines = [f"{head}: {len(contained)} of {len(plan.pending)} file(s)", f"Database: {shown}"]
    lines += [f"  ✓ {f.path.name}" + (f"  ({len(f.skipped)} statement(s) found in place)"
                                       if f.skipped else "") for f in contained]
    if left:
        verb = "*up" if session.front == "chat" else "dbsage up"
        lines.append(f"Not in the database (apply them with {verb}): {', '.join(left)}")
    rowful = [f.path.name for f in contained if f.changes_rows]
    if rowful:
        lines.append("⚠ These insert, update or delete rows, which a baseline does not compare: "
                     + ", ".join(rowful))
    return Outcome("baseline", text="\n".join(lines), data=data)


def _yes_to(session: Session, question: Any) -> bool:
    from dbsage.agent.modes import ConsoleAsker

    asker = session.asker or ConsoleAsker()
    return asker.ask(question) == "yes"


def _keep(value: str) -> str:
    """How many runs' snapshots to keep: a whole number, 0 or more."""
    if not value.strip().isdigit():
        raise ValueError(f"N is a whole number (0 or more), not {value!r}")
    return str(int(value))


VALIDATORS.setdefault("keep", _keep)


@command("prune", example="*prune --keep 20", writes=False,
         keywords=("prune", "clean", "cleanup", "snapshots", "disk"))
def prune(*, keep: Annotated[str, Param(
              "keep the snapshots of the newest N runs", flag="--keep", metavar="N",
              check="keep", example="20", llm=False)] = "20",
          dry_run: Annotated[bool, Param("list what would be removed; remove nothing",
                                         flag="--dry-run", llm=False)] = False,
          as_json: Json = False, session: Session) -> Outcome:
    """Remove old snapshots: keep the newest N runs of supabase/snapshots/ (default 20).

    A run's files go together: both snapshots, the diff, the decision log and the saved data.
    """
    from dbsage.tools.project import prune_snapshots

    require_project(session.project_dir)
    result = prune_snapshots(session.project_dir, int(keep), dry_run=dry_run)
    data = {"removed": list(result.removed), "kept": list(result.kept),
            "files": [str(p.relative_to(session.project_dir)) for p in result.files],
            "bytes_freed": result.bytes_freed, "dry_run": dry_run}
    if as_json:
        return Outcome("prune", text=_json(data), data=data, as_json=True)
    verb = "Would remove" if dry_run else "Removed"
    text = (f"{verb} the snapshots of {len(result.removed)} run(s) ({len(result.files)} "
            f"file(s), {result.bytes_freed / 1024:.0f} kB); kept the newest "
            f"{len(result.kept)}." if result.removed else
            f"Nothing to remove: {len(result.kept)} run(s), keeping {keep}.")
    return Outcome("prune", text=text, data=data)


# --------------------------------------------------------------------------- chat commands


@command("mode", example="*mode preflight", cli=False,
         keywords=("mode", "yolo", "interactive", "switch"))
def mode(mode: Annotated[str, Param(
             "yolo runs without asking, interactive asks at each checkpoint, preflight "
             "analyses first", metavar="yolo|interactive|preflight", check="mode")],
         *, session: Session) -> Outcome:
    """Set the session's default mode: yolo, interactive or preflight."""
    session.mode = mode
    return Outcome("mode", text=f"Mode is now {session.mode}: {MODE_HELP[session.mode]}.",
                   data={"mode": session.mode})


@command("help", example="*help dry-run", aliases=("?",), cli=False,
         keywords=("help", "commands", "usage", "how"))
def help_(command: Annotated[str | None, Param(
              "a command name", metavar="COMMAND", check="command_name")] = None,
          *, session: Session) -> Outcome:
    """List the commands, or explain one."""
    return Outcome("help", text=help_text(command))


@command("exit", example="*exit", aliases=("quit", "q", "bye"), cli=False,
         keywords=("exit", "quit", "bye", "goodbye", "leave"))
def exit_(*, session: Session) -> Outcome:
    """Leave the chat."""
    return Outcome("exit", text="Goodbye — may your migrations be boring.", exit=True)


COMMANDS: tuple[CommandSpec, ...] = commands()
OPTIONS: dict[str, OptionSpec] = options()
