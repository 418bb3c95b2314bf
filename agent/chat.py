"""`dbsage chat`: Dara's REPL over the one `*command` grammar and the one engine.

Lines starting with `*` are parsed by agent/commands.py and run by agent/dispatch.py; other
text goes to agent/llm.py (imported only then). Checkpoints of a run are asked in the chat
through `ChatAsker`. `--script FILE` (or a non-terminal stdin) runs one command a line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from dbsage.agent.commands import (
    COMMANDS,
    MODE_HELP,
    CommandError,
    NotACommand,
    Outcome,
    Session,
    call_values,
    complete,
    execute,
    follow_menu,
    get_spec,
    migration_files,
    parse,
    project_root,
)
from dbsage.agent.modes import (
    FORM_PROMPT,
    Question,
    YesAsker,
    answer_hint,
    cancelled,
    form_text,
    match_answer,
    match_form,
    please,
)
from dbsage.tools.errors import Terminated

if TYPE_CHECKING:
    from dbsage.agent.report import RunReport

__all__ = ["ChatAsker", "DaraCompleter", "greeting", "handle_line", "run_chat", "run_repl",
           "run_script"]

HISTORY_FILE = Path(".dbsage") / "chat_history"
PATH_COMMANDS = frozenset(s.name for s in COMMANDS if any(a.key == "path" for a in s.args))
Write = Callable[[str], None]


def _print(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- asking


@dataclass
class ChatAsker:
    """Asks a checkpoint in the chat: explanation, detail, then a prompt until a valid choice
    (y/yes/n/no in any case; empty for the default, asked again when there is none).

    Ctrl-C or Ctrl-D at a question cancels the command (exit 130, nothing changed; the chat
    goes on): cancelling never approves anything.
    """

    prompt: Callable[[str], str]
    write: Write = _print
    shows_reports = True  # the chat prints the report: a menu waits for it

    def ask(self, question: Question) -> str:
        if question.explanation:
            self.write(f"  ({question.explanation})")
        if question.detail:
            self.write(question.detail)
        message = f"❓ [{question.id}] {question.text} {answer_hint(question)}: "
        while True:
            answer = match_answer(self._read(message, question), question)
            if answer is not None:
                return answer
            self.write(f"  {please(question)}")

    def ask_form(self, questions: list[Question], intro: str = "") -> list[str]:
        """Every question of a pre-flight plan at once, one line of answers."""
        if intro:
            self.write(intro)
        self.write("Before anything runs, answer every question of the plan at once:")
        self.write(form_text(questions))
        while True:
            answers = match_form(self._read(f"❓ [plan] {FORM_PROMPT} ", questions[0]),
                                 questions)
            if isinstance(answers, list):
                return answers
            self.write(f"  {answers}")

    def _read(self, message: str, question: Question) -> str:
        try:
            return self.prompt(message)
        except (KeyboardInterrupt, EOFError):
            self.write("  → cancelled")
            raise cancelled(question) from None


def match_choice(raw: str, question: Question) -> str | None:
    """The choice `raw` names (modes.match_answer: y/yes/n/no, a menu number, empty for the
    default)."""
    return match_answer(raw, question)


def prompt_toolkit_asker() -> ChatAsker:
    """A ChatAsker reading answers with its own prompt_toolkit session (no history)."""
    from prompt_toolkit import PromptSession

    answers: PromptSession[str] = PromptSession()
    return ChatAsker(lambda message: answers.prompt(message))


# --------------------------------------------------------------------------- completion


class DaraCompleter(Completer):
    """Completes `*commands`, migration paths for PATH arguments, modes, and options."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        text = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        for candidate in self.candidates(text, word):
            yield Completion(candidate, start_position=-len(word))

    def candidates(self, text: str, word: str) -> list[str]:
        """What may replace `word`, the last word of `text`."""
        head = text[: len(text) - len(word)].split()
        if not head:
            return complete(word) if word.startswith("*") else []
        try:
            spec = get_spec(head[0])
        except CommandError:
            return []
        if word.startswith("-"):
            return [o.flag for o in spec.options if o.flag.startswith(word)]
        if spec.name in PATH_COMMANDS:
            return [p for p in self.paths() if p.startswith(word)]
        words = {"mode": MODE_HELP, "help": [s.name for s in COMMANDS],
                 "rollback": ["latest"]}.get(spec.name, [])
        return [w for w in words if w.startswith(word)]

    def paths(self) -> list[str]:
        return [str(p.relative_to(self.project_dir)) for p in migration_files(self.project_dir)]


# --------------------------------------------------------------------------- one line


def greeting(session: Session) -> str:
    """Dara introduces herself: target (redacted), mode, how to get help."""
    import os

    from dbsage.tools.connection import resolve_target

    target = resolve_target(session.db)
    where = (f"{target.redacted} (from {target.source})" if target else
             "the embedded PostgreSQL in .dbsage/pgdata (started when first needed)")
    model = os.environ.get("DBSAGE_MODEL")
    words = (f"Plain-language questions go to {model}." if model else
             "No model is configured, so I answer *commands (set DBSAGE_MODEL to chat freely).")
    return "\n".join([
        "👋 Hi, I'm Dara, the DB Sage. I apply your PostgreSQL migrations safely:",
        "   lock, snapshot, one transaction, diff, history — and I tell you what changed.",
        f"   Database: {where}",
        f"   Mode:     {session.mode} — {MODE_HELP[session.mode or 'interactive']} (*mode to change)",
        f"   {words}",
        "   Type *help for the commands, *exit or Ctrl-D to leave."])


def handle_line(line: str, session: Session, write: Write = _print) -> Outcome | None:
    """Run one line of the chat and show its outcome; None for a blank line."""
    if not line.strip():
        return None
    try:
        invocation = parse(line)
    except NotACommand:
        return _free_text(line, session, write)
    except CommandError as exc:
        write(f"❌ {exc.message}" + (f"\n{exc.hint}" if exc.hint else ""))
        return Outcome("", ok=False, exit_code=exc.exit_code)
    result = execute(invocation, session)
    show(result, session, write, db=call_values(invocation).get("db"))
    return result


def _free_text(text: str, session: Session, write: Write) -> Outcome:
    """Free text: the model when DBSAGE_MODEL is set, else the offline answer (no network)."""
    from dbsage.agent import llm

    if not llm.available(session):
        write(llm.offline_answer(text))
        return Outcome("", ok=False, exit_code=2)
    code, reply = llm.reply(text, session)  # a model that cannot answer fails a --script
    write(f"Dara: {reply}")
    return Outcome("", ok=code == 0, exit_code=code)


def show(result: Outcome, session: Session, write: Write = _print, db: str | None = None
         ) -> None:
    """Print a result: the report (rich) or its text; then the post-run menu (asked after the
    report) and the chosen follow-up."""
    if result.report is not None and not result.as_json:
        from dbsage.agent.render import print_notices, print_report

        print_notices(result.report)
        print_report(result.report, result.view)
        _show_follow_up(result.report, session, write)
    if result.text:
        write(result.text)
    follow = follow_menu(result, session, db or session.db)
    if follow is not None:
        show(follow, session, write)


def _show_follow_up(report: RunReport, session: Session, write: Write) -> None:
    """After the post-migration menu: run the chosen command unless the run did (then the
    report has shown its result already)."""
    if not report.follow_up or report.follow_up_result is not None:
        return
    write(f"➡ Follow-up: {report.follow_up}")
    try:
        follow = parse(report.follow_up)
    except CommandError:
        return
    show(execute(follow, session), session, write)


# --------------------------------------------------------------------------- loops


def run_script(lines: Iterable[str], session: Session, write: Write = _print) -> int:
    """Run one command a line without asking anyone (confirmations are yes, like --yes).

    Blank lines and `#` comments are skipped; the first failure ends the script with its
    exit code (non-zero); `*exit` ends it with 0.
    """
    session.asker, session.interactive = YesAsker(), False
    session.show = lambda result: show(result, session, write)
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        write(f"dara> {line}")
        result = handle_line(line, session, write)
        if result is None:
            continue
        if not result.ok:
            write(f"Stopped at line {number}: {line}")
            return result.exit_code or 1
        if result.exit:
            return 0
    return 0


def run_repl(session: Session) -> int:
    """The interactive loop: Ctrl-C cancels the current line, Ctrl-D (or *exit) leaves."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history = session.project_dir / HISTORY_FILE
    from dbsage.tools.artifacts import ensure_dir

    ensure_dir(history.parent)
    prompt: PromptSession[str] = PromptSession(history=FileHistory(str(history)),
                                               completer=DaraCompleter(session.project_dir),
                                               complete_while_typing=False)
    session.asker = prompt_toolkit_asker()
    session.show = lambda result: show(result, session)
    _print(greeting(session))
    while True:
        try:
            line = prompt.prompt(f"dara[{session.mode}]> ")
        except Terminated:
            raise
        except KeyboardInterrupt:
            continue
        except EOFError:
            _print("Goodbye — may your migrations be boring.")
            return 0
        try:
            result = handle_line(line, session)
        except Terminated:
            raise
        except KeyboardInterrupt:
            _print("⏹ Interrupted. If a run was in progress, its transaction was rolled back.")
            continue
        if result is not None and result.report is not None and result.report.exit_code == 143:
            raise Terminated  # SIGTERM arrived during the run: it stopped cleanly, now leave
        if result is not None and result.exit:
            return 0


def run_chat(db: str | None = None, mode: str = "interactive", script: Path | None = None,
             stdin: TextIO | None = None, project_dir: Path | None = None) -> int:
    """`dbsage chat`: the REPL on a terminal, else the script (FILE, `-` or piped stdin)."""
    session = Session(db=db, mode=mode, project_dir=project_dir or project_root())
    source = stdin or sys.stdin
    if script is not None and str(script) != "-":
        from dbsage.tools.artifacts import read_text

        try:
            text = read_text(script, strict=True)
        except OSError as exc:
            _print(f"❌ Cannot read the script {script}: {exc.strerror}")
            return 2
        return run_script(text.splitlines(), session)
    if script is not None or not (source.isatty() and sys.stdout.isatty()):
        return run_script(source, session)
    return run_repl(session)
