"""Execution modes: who answers a checkpoint, and how every decision is logged.

- yolo: rules decide (at most one prompt); each decision is logged with its reason.
- interactive: each checkpoint is asked, with a short explanation.
- preflight: every question is asked in one batch before anything runs; none after.
Prompts go through one Asker interface: console, scripted (tests, --answers), or yes (--yes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dbsage.tools.errors import ConfigError, DbsageError, ExitCode

MODES = ("yolo", "interactive", "preflight")


@dataclass(frozen=True)
class Question:
    """One checkpoint put to the user."""

    id: str
    text: str
    explanation: str = ""
    detail: str = ""
    choices: tuple[str, ...] = ("yes", "no")
    default: str | None = None


class Asker(Protocol):
    """Anything that can answer a Question with one of its choices."""

    def ask(self, question: Question) -> str: ...


YES_NO = ("yes", "no")


def match_answer(raw: str, question: Question) -> str | None:
    """The choice `raw` names, or None: y/yes/n/no in any case for a yes/no question, a
    choice or a unique prefix of one for a menu, empty for the default (None when there is
    no default: the question is asked again)."""
    text = raw.strip().lower()
    if not text:
        return question.default
    if set(question.choices) == set(YES_NO):
        return {"y": "yes", "yes": "yes", "n": "no", "no": "no"}.get(text)
    if text in question.choices:
        return text
    found = [c for c in question.choices if c.startswith(text)]
    return found[0] if len(found) == 1 else None


def answer_hint(question: Question) -> str:
    """What a prompt shows after its question: [Y/n], [y/N], [y/n] (no default: an empty
    answer asks again), or a menu's numbers and default."""
    if set(question.choices) == set(YES_NO):
        return {"yes": "[Y/n]", "no": "[y/N]"}.get(question.default or "", "[y/n]")
    return f"[{'/'.join(question.choices)}]" + (f" ({question.default})" if question.default
                                                 else "")


def please(question: Question) -> str:
    """The line shown after an answer that is none of the choices."""
    if set(question.choices) == set(YES_NO):
        return "Please answer y or n" + ("." if question.default else " (this question has no "
                                         "default).")
    return f"Please answer one of: {', '.join(question.choices)}."


class Cancelled(DbsageError):
    """End of input (Ctrl-D) at a question: the run stops before anything changes, exit 130
    (as an interrupt)."""

    exit_code = ExitCode.INTERRUPTED


def cancelled(question: Question) -> Cancelled:
    text = " ".join(question.text.split())
    text = text if len(text) <= 60 else text[:59] + "…"
    return Cancelled(f"Cancelled: end of input at \"{text}\"; nothing was changed.",
                     checkpoint=question.id)


def form_text(questions: list[Question]) -> str:
    """Every question of a pre-flight form, numbered, each with what is at stake."""
    lines = []
    for i, q in enumerate(questions, 1):
        lines.append(f"  {i}. {q.text}  {answer_hint(q)}")
        lines += [f"       {line}" for line in q.detail.splitlines() if line.strip()]
    return "\n".join(lines)


FORM_PROMPT = "Your answers (y: yes to all, n: cancel, or one per question, e.g. y y n):"


def match_form(raw: str, questions: list[Question]) -> list[str] | str:
    """The answers a form line gives, in order, or what to say when it gives none: `y`
    (every one yes), `n` (cancel: the first one no), or one answer per question; an empty
    line takes every default, unless a question has none."""
    words = raw.replace(",", " ").split()
    if not words:
        missing = [str(i) for i, q in enumerate(questions, 1) if q.default is None]
        if missing:
            return (f"Question(s) {', '.join(missing)} have no default: answer y for all, or "
                    f"one answer per question.")
        return [str(q.default) for q in questions]
    if len(words) == 1 and len(questions) != 1:
        one = match_answer(words[0], Question("", "", choices=YES_NO))
        if one == "yes":
            return ["yes" for _ in questions]
        if one == "no":
            return ["no" for _ in questions]
        return "Answer y, n, or one answer per question."
    if len(words) != len(questions):
        return f"{len(questions)} question(s), {len(words)} answer(s): give one per question."
    answers = [match_answer(w, q) for w, q in zip(words, questions, strict=True)]
    bad = [str(i) for i, a in enumerate(answers, 1) if a is None]
    if bad:
        return f"Answer {', '.join(bad)} is not y or n."
    return [str(a) for a in answers]


class ConsoleAsker:
    """Asks on the terminal (rich for the text, one line of input per answer). An answer is
    y/yes/n/no in any case; an empty answer takes the default, or asks again when there is
    none; end of input (Ctrl-D) cancels the run (exit 130)."""

    shows_reports = True  # its front end prints the report: a menu waits for it

    def _console(self) -> Any:
        from rich.console import Console

        return Console(highlight=False, emoji=False)

    def ask(self, question: Question) -> str:
        console = self._console()
        if question.explanation:
            console.print(question.explanation, style="dim", markup=False)
        if question.detail:
            console.print(question.detail, markup=False)
        while True:
            raw = self._read(console, f"{question.text} {answer_hint(question)} ", question)
            answer = match_answer(raw, question)
            if answer is not None:
                return answer
            console.print(please(question), markup=False)

    def ask_form(self, questions: list[Question], intro: str = "") -> list[str]:
        """Every question at once: the intro (the plan), the numbered questions, one line of
        answers."""
        console = self._console()
        if intro:
            console.print(intro, markup=False, soft_wrap=True)
        console.print("Before anything runs, answer every question of the plan at once:",
                      style="bold", markup=False)
        console.print(form_text(questions), markup=False)
        while True:
            raw = self._read(console, FORM_PROMPT + " ", questions[0])
            answers = match_form(raw, questions)
            if isinstance(answers, list):
                return answers
            console.print(answers, markup=False)

    @staticmethod
    def _read(console: Any, prompt: str, question: Question) -> str:
        try:
            return str(console.input(prompt, markup=False))
        except EOFError:
            console.print()
            raise cancelled(question) from None


def ask_all(asker: Asker, questions: list[Question], intro: str = "") -> list[str]:
    """Every question in one form when the asker has one (a terminal); else one by one (the
    intro shown with the first)."""
    form = getattr(asker, "ask_form", None)
    if form is not None and questions:
        answers: list[str] = form(questions, intro)
        return answers
    out = []
    for i, q in enumerate(questions):
        if i == 0 and intro:
            from dataclasses import replace

            q = replace(q, detail="\n".join(x for x in (intro, q.detail) if x))
        out.append(asker.ask(q))
    return out


class YesAsker:
    """--yes: every confirmation is yes; a menu gets its default."""

    def ask(self, question: Question) -> str:
        if "yes" in question.choices:
            return "yes"
        return question.default or question.choices[-1]


@dataclass
class ScriptedAsker:
    """Answers from a mapping checkpoint id → answer (tests, CI's --answers file)."""

    answers: Mapping[str, str]
    asked: list[Question] = field(default_factory=list)
    on_ask: Callable[[Question], None] | None = None

    def ask(self, question: Question) -> str:
        self.asked.append(question)
        if self.on_ask:
            self.on_ask(question)
        if question.id not in self.answers:
            raise ConfigError(
                f"No scripted answer for checkpoint '{question.id}' ({question.text}).",
                hint=f"Add `{question.id}: <{'|'.join(question.choices)}>` to the answers file.")
        answer = str(self.answers[question.id]).strip().lower()
        if answer not in question.choices:
            raise ConfigError(f"Answer {answer!r} for checkpoint '{question.id}' is not one of "
                              f"{', '.join(question.choices)}.")
        return answer


def load_answers(path: Path) -> ScriptedAsker:
    """Read an --answers YAML file: a mapping of checkpoint id to answer."""
    import yaml

    from dbsage.tools.artifacts import read_text

    try:
        data = yaml.safe_load(read_text(path, strict=True))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the answers file: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: the answers file must map checkpoint ids to answers, "
                          "e.g. `confirm_apply: yes`.")
    return ScriptedAsker({k: ("yes" if v is True else "no" if v is False else str(v))
                          for k, v in data.items()})


@dataclass
class Decision:
    """What was decided at a checkpoint or rule, why, and by whom."""

    point: str
    answer: str
    why: str
    by: str  # "rule", "user", "plan"


class StopRun(DbsageError):
    """A checkpoint answer or a rule stops the run before anything changes."""

    exit_code = 6


@dataclass
class ModePolicy:
    """Base policy: ask through the asker and log every decision."""

    asker: Asker
    flags: Mapping[str, bool] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    prompts: int = 0
    name: str = "interactive"

    def ask(self, q: Question) -> str:
        self.prompts += 1
        answer = self.asker.ask(q)
        self.decisions.append(Decision(q.id, answer, q.text, "user"))
        return answer

    def checkpoint(self, q: Question) -> str:
        """Answer a checkpoint of the task flow."""
        return self.ask(q)

    def override(self, q: Question, flag: str | None) -> bool:
        """A blocking check failed but may be overridden: its flag (--allow-destructive, ...)
        given on the command line decides it; else ask (interactive)."""
        if self.flagged(q, flag):
            return True
        return self.ask(q) == "yes"

    def flagged(self, q: Question, flag: str | None) -> bool:
        """True (and logged) when the override's flag was given: nobody is asked."""
        if not (flag and self.flags.get(flag)):
            return False
        self.log(q.id, "yes", f"{q.text} — allowed by --{flag.replace('_', '-')}")
        return True

    def log(self, point: str, answer: str, why: str, by: str = "rule") -> None:
        self.decisions.append(Decision(point, answer, why, by))

    def decisions_json(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self.decisions]


@dataclass
class YoloPolicy(ModePolicy):
    """Rules decide; nothing is asked. Overrides need an explicit flag."""

    name: str = "yolo"

    def checkpoint(self, q: Question) -> str:
        # A confirmation is yes by rule (the checks and override flags gate the run, not a
        # person's safe default); a menu takes its default.
        answer = "yes" if "yes" in q.choices else q.default or q.choices[-1]
        self.log(q.id, answer, f"yolo: '{q.text}' answered {answer} by rule")
        return answer

    def override(self, q: Question, flag: str | None) -> bool:
        allowed = bool(flag and self.flags.get(flag))
        how = f"--{flag.replace('_', '-')}" if flag else "no flag"
        why = (f"yolo: allowed by {how}" if allowed else
               f"yolo: refused ({how} not given)" if flag else "yolo: cannot be overridden")
        self.log(q.id, "yes" if allowed else "no", f"{q.text} — {why}")
        return allowed


@dataclass
class PreflightPolicy(ModePolicy):
    """All questions are asked in one form up front; execution asks nothing.

    A pre-condition that fails but may be overridden is not asked on its own: its question
    joins the form (`deferred`), and the run goes on to the plan; a "no" there stops the run
    before anything has changed.
    """

    name: str = "preflight"
    batch: dict[str, str] = field(default_factory=dict)
    executing: bool = False
    deferred: list[Question] = field(default_factory=list)

    def ask_batch(self, questions: list[Question], intro: str = "") -> dict[str, str]:
        """Ask every open question now, in one form, before anything runs."""
        questions = [*self.deferred, *questions]
        self.deferred = []
        answers = ask_all(self.asker, questions, intro) if questions else []
        for q, answer in zip(questions, answers, strict=True):
            self.prompts += 1
            self.decisions.append(Decision(q.id, answer, q.text, "user"))
            self.batch[q.id] = answer
        self.executing = True
        return self.batch

    def checkpoint(self, q: Question) -> str:
        if not self.executing:
            return self.ask(q)
        if q.id in self.batch:
            self.log(q.id, self.batch[q.id], f"pre-flight: answered in the plan ({q.text})", "plan")
            return self.batch[q.id]
        answer = "yes" if "yes" in q.choices else q.default or q.choices[-1]
        self.log(q.id, answer, f"pre-flight: covered by the approved plan ({q.text})", "plan")
        return answer

    def override(self, q: Question, flag: str | None) -> bool:
        if self.flagged(q, flag):
            return True
        if self.executing:
            return self.checkpoint(q) == "yes"
        self.deferred.append(q)  # asked in the plan's form; "no" there stops the run
        return True


def make_policy(mode: str, asker: Asker, flags: Mapping[str, bool] | None = None) -> ModePolicy:
    """The policy object for a mode name."""
    classes: dict[str, type[ModePolicy]] = {"yolo": YoloPolicy, "interactive": ModePolicy,
                                            "preflight": PreflightPolicy}
    if mode not in classes:
        raise ConfigError(f"Unknown mode {mode!r}.", hint=f"Choose one of: {', '.join(MODES)}.")
    return classes[mode](asker=asker, flags=dict(flags or {}))
