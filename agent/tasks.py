"""Task definitions: pydantic models of `task_definitions/*.yaml` and a strict loader.

Every problem in a definition is a `TaskDefinitionError` naming the file, the line of the
offending key, what is wrong and what is allowed. Check and step ids are validated against
the registries the caller passes in, so no checklist item can silently pass.
"""

from __future__ import annotations

import difflib
import string
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dbsage.tools.errors import DbsageError

Mode = Literal["yolo", "interactive", "preflight"]
Severity = Literal["warn", "fail"]
OverrideFlag = Literal["allow_out_of_order", "allow_destructive", "force", "allow_data_loss"]
FieldType = Literal["string", "path", "integer", "number", "boolean", "object", "array"]
#: The error kinds the runner can tell apart (it maps exceptions and SQLSTATEs onto them).
ErrorKind = Literal[
    "connection_failed",  # ConnectionFailedError
    "lock_busy",  # LockBusyError: another migration holds the advisory lock
    "lock_timeout",  # SQLSTATE 55P03 lock_not_available (lock_timeout fired)
    "query_syntax_error",  # MigrationFileError: the file does not parse
    "transaction_rollback",  # MigrationFailedError: a statement failed, all rolled back
    "snapshot_failed",  # SnapshotError
]

_ID = r"^[a-z][a-z0-9_]*$"
_AT = "__below__"  # context key of a custom error: where below the validated object it sits
_TASK_NAME = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"


def _fold(key: str) -> str:
    """Lower-case `key` and strip accents, so `Obrigatório` and `obrigatorio` match."""
    decomposed = unicodedata.normalize("NFKD", key)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _custom(kind: str, message: str, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """A validation error; `at` points below the validated object (the loader finds its line)."""
    return PydanticCustomError(kind, message, {_AT: at})


def _registered(value: str, info: ValidationInfo, registry: str, noun: str) -> str:
    """Refuse `value` unless it is in the registry passed as validation context."""
    known = (info.context or {}).get(registry)
    if known is None or value in known:
        return value
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    allowed = ", ".join(sorted(known)) or "(none)"
    raise _custom(f"unknown_{noun}", f"unknown {noun} '{value}'{hint}; registered {noun}s: {allowed}")


class _Strict(BaseModel):
    """Base: unknown keys are errors, no type coercion, immutable; `aliases` map folded names."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    aliases: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _rename_aliases(cls, data: Any) -> Any:
        if not cls.aliases or not isinstance(data, dict):
            return data
        out: dict[Any, Any] = {}
        written: dict[str, str] = {}
        for key, value in data.items():
            name = cls.aliases.get(_fold(key), key) if isinstance(key, str) else key
            if name in out:
                raise _custom(
                    "duplicate_key",
                    f"'{key}' and '{written[name]}' are the same key ('{name}'); keep one",
                    (key,),
                )
            written[name] = key
            out[name] = value
        return out


class IOField(_Strict):
    """Common part of an input or output (AIOS: `campo`, `tipo`)."""

    aliases: ClassVar[Mapping[str, str]] = {"campo": "name", "tipo": "type"}

    name: str = Field(pattern=_ID)
    type: FieldType


class InputField(IOField):
    """A task input (AIOS `Entrada`: `origem`, `obrigatório`, `validação`)."""

    aliases: ClassVar[Mapping[str, str]] = {
        **IOField.aliases,
        "origem": "source",
        "obrigatorio": "required",
        "validacao": "validation",
    }

    source: str = "User Input"
    required: bool = True
    validation: str = ""


class OutputField(IOField):
    """A task output (AIOS `Saída`: `destino`, `persistido`)."""

    aliases: ClassVar[Mapping[str, str]] = {
        **IOField.aliases,
        "destino": "destination",
        "persistido": "persisted",
    }

    destination: str = "Return value"
    persisted: bool = False


class ChecklistItem(_Strict):
    """A pre-condition, post-condition or acceptance criterion, backed by a registered check.

    A failing `blocker` stops the run with `error_message`; a non-blocker with
    `severity: warn` is reported as a warning, with `fail` as a failure that does not stop.
    """

    id: str = Field(pattern=_ID)
    text: str
    check: str
    blocker: bool = True
    error_message: str
    severity: Severity = "fail"
    # A failed blocker that the user may override: interactive asks, yolo needs this flag,
    # pre-flight puts the question in its batch.
    override: OverrideFlag | None = None

    @field_validator("check")
    @classmethod
    def _check_registered(cls, value: str, info: ValidationInfo) -> str:
        return _registered(value, info, "known_checks", "check")

    @model_validator(mode="after")
    def _blocker_fails(self) -> ChecklistItem:
        if self.blocker and self.severity == "warn":
            raise _custom(
                "severity_conflict",
                "a blocker cannot have severity 'warn'; set blocker: false or severity: fail",
                ("severity",),
            )
        return self


class Step(_Strict):
    """A registered step function; `always` steps run even after a failure (cleanup)."""

    id: str
    always: bool = False
    retry: str | None = None
    description: str = ""

    @field_validator("id")
    @classmethod
    def _step_registered(cls, value: str, info: ValidationInfo) -> str:
        return _registered(value, info, "known_steps", "step")


class Choice(_Strict):
    """One option of a `choice` checkpoint; `command` is a `*command` or none (done)."""

    label: str
    command: str | None = None


def _interactive_only() -> list[Mode]:
    return ["interactive"]


class Checkpoint(_Strict):
    """A question asked before or after a step, in the listed modes.

    `confirm`: yes/no; no stops the run with `stop_message`. `notice`: shown, not asked.
    `choice`: a menu of `options`. Several checkpoints at one position are asked in file order.
    """

    id: str = Field(pattern=_ID)
    before_step: str | None = None
    after_step: str | None = None
    kind: Literal["confirm", "notice", "choice"] = "confirm"
    question: str
    explanation: str
    options: list[Choice] = Field(default_factory=list)
    stop_message: str | None = None
    modes: list[Mode] = Field(default_factory=_interactive_only, min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Checkpoint:
        if (self.before_step is None) == (self.after_step is None):
            at = "id" if self.before_step is None else "after_step"
            raise _custom("position", "give exactly one of before_step or after_step", (at,))
        if (self.kind == "choice") != bool(self.options):
            raise _custom(
                "options", "options are required for kind 'choice' and only for it", ("kind",)
            )
        return self

    @property
    def step(self) -> str:
        """The step this checkpoint sits next to."""
        return self.before_step or self.after_step or ""


class RetryPolicy(_Strict):
    """Exponential backoff: waits initial, initial*multiplier, ... capped at max_wait."""

    id: str = Field(pattern=_ID)
    attempts: int = Field(ge=1, le=100)
    initial_wait_seconds: float = Field(ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_wait_seconds: float = Field(ge=0)
    on: list[ErrorKind] = Field(min_length=1)

    @model_validator(mode="after")
    def _cap_above_start(self) -> RetryPolicy:
        if self.max_wait_seconds < self.initial_wait_seconds:
            raise _custom(
                "retry_cap", "max_wait_seconds must be >= initial_wait_seconds", ("max_wait_seconds",)
            )
        return self


class KnownError(_Strict):
    """A documented error kind: what causes it, how to resolve it, how dbsage recovers."""

    kind: ErrorKind
    title: str
    cause: str
    resolution: str
    recovery: str


class ErrorHandling(_Strict):
    """The strategy, the retry policies steps may reference, and the documented errors."""

    strategy: Literal["retry", "abort", "fallback"]
    retry: list[RetryPolicy] = Field(default_factory=list)
    errors: list[KnownError] = Field(default_factory=list)


class NextStep(_Strict):
    """A `*command` suggested after success."""

    command: str = Field(pattern=r"^\*[a-z]")
    description: str


def _default_error_handling() -> ErrorHandling:
    return ErrorHandling(strategy="abort")


class TaskDefinition(_Strict):
    """One task: who, what, its checklists, steps, checkpoints and error handling.

    Placeholders in `success_output`, `next_steps` and checkpoint texts must name an input or
    an output. `success_output` is printed first, then `next_steps`.
    """

    aliases: ClassVar[Mapping[str, str]] = {
        "entrada": "inputs",
        "saida": "outputs",
        "responsavel": "responsible",
        "responsavel_type": "responsible_type",
        "pre-conditions": "pre_conditions",
        "post-conditions": "post_conditions",
        "acceptance-criteria": "acceptance_criteria",
    }

    task: str = Field(pattern=_TASK_NAME)
    title: str
    purpose: str
    responsible: str
    responsible_type: str = "Agent"
    atomic_layer: str = ""
    elicit: bool = False
    default_mode: Mode = "interactive"
    inputs: list[InputField] = Field(default_factory=list)
    outputs: list[OutputField] = Field(default_factory=list)
    pre_conditions: list[ChecklistItem] = Field(default_factory=list)
    post_conditions: list[ChecklistItem] = Field(default_factory=list)
    acceptance_criteria: list[ChecklistItem] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    error_handling: ErrorHandling = Field(default_factory=_default_error_handling)
    success_output: str = ""
    next_steps: list[NextStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_references(self) -> TaskDefinition:
        for kind, message, at in self._problems():
            raise _custom(kind, message, at)
        return self

    def _problems(self) -> Iterable[tuple[str, str, tuple[str | int, ...]]]:
        """Duplicate ids and dangling references, each with where it sits."""
        groups: list[tuple[tuple[str, ...], str]] = [
            (("pre_conditions", "post_conditions", "acceptance_criteria"), "id"),
            (("inputs", "outputs"), "name"),
            (("steps",), "id"),
            (("checkpoints",), "id"),
        ]
        for fields_, key in groups:
            seen: dict[str, str] = {}
            for field_name in fields_:
                for i, item in enumerate(getattr(self, field_name)):
                    value = getattr(item, key)
                    if value in seen:
                        yield "duplicate_id", (
                            f"duplicate {key} '{value}' (already used by {seen[value]})"
                        ), (field_name, i, key)
                    seen[value] = f"{field_name}[{i}]"
        policies = [p.id for p in self.error_handling.retry]
        for i, policy_id in enumerate(policies):
            if policy_id in policies[:i]:
                yield "duplicate_id", f"duplicate retry policy '{policy_id}'", (
                    "error_handling", "retry", i, "id")
        steps = [s.id for s in self.steps]
        for i, step in enumerate(self.steps):
            if step.retry is not None and step.retry not in policies:
                allowed = ", ".join(policies) or "(none defined)"
                yield "unknown_retry", (
                    f"unknown retry policy '{step.retry}'; error_handling.retry defines: {allowed}"
                ), ("steps", i, "retry")
        for i, point in enumerate(self.checkpoints):
            if point.step not in steps:
                at = "before_step" if point.before_step else "after_step"
                yield "unknown_position", (
                    f"no step '{point.step}' in this task; steps: {', '.join(steps)}"
                ), ("checkpoints", i, at)
        yield from self._placeholder_problems()

    def _placeholder_problems(self) -> Iterable[tuple[str, str, tuple[str | int, ...]]]:
        names = [f.name for f in self.inputs] + [f.name for f in self.outputs]
        templates: list[tuple[str, tuple[str | int, ...]]] = [
            (self.success_output, ("success_output",))
        ]
        for i, nxt in enumerate(self.next_steps):
            templates += [(nxt.command, ("next_steps", i, "command")),
                          (nxt.description, ("next_steps", i, "description"))]
        for i, point in enumerate(self.checkpoints):
            for attr in ("question", "explanation", "stop_message"):
                templates.append((getattr(point, attr) or "", ("checkpoints", i, attr)))
        allowed = ", ".join(names) or "(no inputs or outputs)"
        for text, at in templates:
            try:
                fields_ = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
            except ValueError as exc:
                yield "template", f"bad template ({exc}); write literal braces as {{{{ }}}}", at
                continue
            for field_name in fields_:
                root = field_name.split(".")[0].split("[")[0]
                if root not in names:
                    yield "template", (
                        f"unknown placeholder '{{{field_name}}}'; inputs and outputs: {allowed}"
                    ), at

    @property
    def checklist_items(self) -> list[ChecklistItem]:
        """Every checklist item, in run order."""
        return [*self.pre_conditions, *self.post_conditions, *self.acceptance_criteria]

    def retry_policy(self, policy_id: str) -> RetryPolicy:
        """The retry policy called `policy_id` (KeyError if absent)."""
        for policy in self.error_handling.retry:
            if policy.id == policy_id:
                return policy
        raise KeyError(policy_id)


# --------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class Problem:
    """One thing wrong in a definition file."""

    source: str
    line: int | None
    where: str
    what: str

    def render(self) -> str:
        """`file:line: where: what`."""
        place = f"{self.source}:{self.line}" if self.line else self.source
        return f"{place}: {self.where}: {self.what}" if self.where else f"{place}: {self.what}"


class TaskDefinitionError(DbsageError):
    """A task definition file cannot be used; the message lists every problem with its line."""

    exit_code = 2

    def __init__(self, problems: list[Problem], *, hint: str | None = None) -> None:
        path, line = problems[0].source, problems[0].line
        super().__init__("\n".join(p.render() for p in problems), hint=hint, path=path,
                         line=line, problems=[asdict(p) for p in problems])
        self.path = path
        self.line = line
        self.problems = problems


def _fail(source: str, line: int | None, what: str, where: str = "") -> TaskDefinitionError:
    return TaskDefinitionError([Problem(source, line, where, what)])


_ALL_ALIASES: dict[str, str] = {
    **InputField.aliases, **OutputField.aliases, **TaskDefinition.aliases
}
_TYPE_NAMES = {
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
}

Loc = tuple[str | int, ...]


def _to_python(node: yaml.Node, path: Loc, lines: dict[Loc, int], source: str) -> Any:
    """Build plain data from a composed YAML node, recording each key's and item's line."""
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail(source, line, "keys must be plain names", _where(path))
            key: str = key_node.value  # raw text: `on`/`yes` stay strings (YAML 1.1 reads them as bools)
            if key in out:
                raise _fail(source, line, f"duplicate key '{key}' (first at line "
                            f"{lines[(*path, key)]})", _where(path))
            canonical = _ALL_ALIASES.get(_fold(key)) or key  # pydantic reports this name
            lines[(*path, key)] = line
            lines.setdefault((*path, canonical), line)
            out[key] = _to_python(value_node, (*path, canonical), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_to_python(item, (*path, i), lines, source))
        return items
    return yaml.constructor.SafeConstructor().construct_object(node)


def _where(loc: Loc) -> str:
    """`pre_conditions[0].check` for a loc."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> int:
    """The line of `loc`, or of its nearest ancestor that is in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _model_at(loc: Loc) -> type[_Strict] | None:
    """The model class that validates the object at `loc`."""
    current: Any = TaskDefinition
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, _Strict)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = info.annotation
        while get_origin(current) is not None:  # list[X], X | None
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[0] if args else None
    return current if isinstance(current, type) and issubclass(current, _Strict) else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(source: str, error: Mapping[str, Any], lines: Mapping[Loc, int]) -> Problem:
    """Turn one pydantic error into a Problem with a line and the allowed values."""
    loc: Loc = (*error["loc"], *error.get("ctx", {}).get(_AT, ()))
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = ", ".join(model.model_fields) if model else "?"
        aliases = f" (AIOS aliases: {', '.join(model.aliases)})" if model and model.aliases else ""
        what = f"unknown key '{loc[-1]}'; allowed keys: {allowed}{aliases}"
        return Problem(source, _line_for(loc, lines), _where(loc[:-1]), what)
    if kind == "missing":
        what = f"missing required key '{loc[-1]}'"
        return Problem(source, _line_for(loc, lines), _where(loc[:-1]), what)
    if kind in _TYPE_NAMES:
        what = f"expected {_TYPE_NAMES[kind]}, got {_shown(error['input'])}"
    elif _AT in error.get("ctx", {}):
        what = error["msg"]
    else:
        what = f"{error['msg']}; got {_shown(error['input'])}"
    return Problem(source, _line_for(loc, lines), _where(loc), what)


def parse_task(
    text: str, *, source: str, known_checks: Collection[str], known_steps: Collection[str]
) -> TaskDefinition:
    """Validate the YAML `text` of the file `source`; its `task` must equal the file's stem."""
    try:
        # libyaml when present: the pure-Python composer costs ~100 ms on every run.
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None)
        what = f"YAML syntax error: {getattr(exc, 'problem', None) or exc}"
        what += f" ({context})" if context else ""
        raise _fail(source, mark.line + 1 if mark else None, what) from None
    if root is None:
        raise _fail(source, 1, "file is empty; expected a mapping with at least "
                    "task, title, purpose, responsible, steps")
    if not isinstance(root, yaml.MappingNode):
        raise _fail(source, root.start_mark.line + 1, "expected a mapping of keys at the top level")
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    data = _to_python(root, (), lines, source)
    context = {"known_checks": frozenset(known_checks), "known_steps": frozenset(known_steps)}
    try:
        definition = TaskDefinition.model_validate(data, context=context)
    except ValidationError as exc:
        raise TaskDefinitionError([_problem(source, e, lines) for e in exc.errors()]) from None
    stem = Path(source).stem
    if definition.task != stem:
        what = f"task '{definition.task}' does not match the file name; expected '{stem}'"
        raise _fail(source, lines[("task",)], what, "task")
    return definition


def _shipped() -> Traversable:
    return files("dbsage.task_definitions")


def shipped_task_names() -> list[str]:
    """Names of the task definitions shipped with dbsage."""
    return sorted(p.name.removesuffix(".yaml") for p in _shipped().iterdir()
                  if p.name.endswith(".yaml"))


def load_task(
    name_or_path: str | Path, *, known_checks: Collection[str], known_steps: Collection[str]
) -> TaskDefinition:
    """Load a shipped task by name (`apply-migration`) or any definition file by path."""
    ref = str(name_or_path)
    source: Traversable
    if isinstance(name_or_path, Path) or ref.endswith((".yaml", ".yml")) or "/" in ref:
        source = Path(name_or_path)
    else:
        source = _shipped() / f"{ref}.yaml"
        if not source.is_file():
            raise _fail(ref, None, f"unknown task '{ref}'; shipped tasks: "
                        f"{', '.join(shipped_task_names())}")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(str(source), None, f"cannot read the file: {exc}") from None
    return parse_task(text, source=str(source), known_checks=known_checks,
                      known_steps=known_steps)


def load_all_tasks(
    directory: Path | None = None,
    *,
    known_checks: Collection[str],
    known_steps: Collection[str],
) -> dict[str, TaskDefinition]:
    """Load every `*.yaml` in `directory` (default: the shipped ones), keyed by task name.

    The problems of all files are gathered into one TaskDefinitionError.
    """
    refs: list[str | Path] = (
        list(shipped_task_names()) if directory is None
        else sorted(directory.glob("*.yaml"))
    )
    tasks: dict[str, TaskDefinition] = {}
    problems: list[Problem] = []
    for ref in refs:
        try:
            definition = load_task(ref, known_checks=known_checks, known_steps=known_steps)
        except TaskDefinitionError as exc:
            problems += exc.problems
            continue
        tasks[definition.task] = definition
    if problems:
        raise TaskDefinitionError(problems)
    return tasks
