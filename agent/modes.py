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

from dbsage.tools.errors import ConfigError, DbsageError

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


class ConsoleAsker:
    """Asks on the terminal with rich."""

    def ask(self, question: Question) -> str:
        from rich.console import Console
        from rich.prompt import Prompt

        console = Console(highlight=False)
        if question.explanation:
            console.print(f"[dim]{question.explanation}[/dim]")
        if question.detail:
            console.print(question.detail, markup=False)
        if question.default is None:
            return Prompt.ask(question.text, choices=list(question.choices), console=console)
        return Prompt.ask(question.text, choices=list(question.choices),
                          default=question.default, console=console)


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
        """A blocking check failed but may be overridden: ask (interactive)."""
        return self.ask(q) == "yes"

    def log(self, point: str, answer: str, why: str, by: str = "rule") -> None:
        self.decisions.append(Decision(point, answer, why, by))

    def decisions_json(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self.decisions]


@dataclass
class YoloPolicy(ModePolicy):
    """Rules decide; nothing is asked. Overrides need an explicit flag."""

    name: str = "yolo"

    def checkpoint(self, q: Question) -> str:
        answer = q.default or ("yes" if "yes" in q.choices else q.choices[-1])
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
    """All questions are asked in one batch up front; execution asks nothing."""

    name: str = "preflight"
    batch: dict[str, str] = field(default_factory=dict)
    executing: bool = False

    def ask_batch(self, questions: list[Question]) -> dict[str, str]:
        """Ask every open question now, before anything runs."""
        for q in questions:
            self.batch[q.id] = self.ask(q)
        self.executing = True
        return self.batch

    def checkpoint(self, q: Question) -> str:
        if not self.executing:
            return self.ask(q)
        if q.id in self.batch:
            self.log(q.id, self.batch[q.id], f"pre-flight: answered in the plan ({q.text})", "plan")
            return self.batch[q.id]
        answer = q.default or ("yes" if "yes" in q.choices else q.choices[-1])
        self.log(q.id, answer, f"pre-flight: covered by the approved plan ({q.text})", "plan")
        return answer

    def override(self, q: Question, flag: str | None) -> bool:
        return self.checkpoint(q) == "yes"


def make_policy(mode: str, asker: Asker, flags: Mapping[str, bool] | None = None) -> ModePolicy:
    """The policy object for a mode name."""
    classes: dict[str, type[ModePolicy]] = {"yolo": YoloPolicy, "interactive": ModePolicy,
                                            "preflight": PreflightPolicy}
    if mode not in classes:
        raise ConfigError(f"Unknown mode {mode!r}.", hint=f"Choose one of: {', '.join(MODES)}.")
    return classes[mode](asker=asker, flags=dict(flags or {}))
