"""The task schema: what a `task_definitions/*.yaml` file may say, as plain frozen dataclasses.

These classes are the one declaration of the shape: field names, types (`Literal[...]` for the
closed sets), defaults and, in field metadata, the per-field rules:

- `pattern`, `ge`, `le`, `min_length`: constraints pydantic itself reads from a dataclass
  field's metadata (the names of its `Field()` arguments) and enforces while validating;
- `names`: the registry (a key of the `known` mapping) the value, or each dict value, must name;
  agent/tasks.py checks it against the registries the caller passes;
- `yaml_default`: the value when the YAML omits the key, for a field that stays positional in
  Python because a required field follows it (a dataclass default is impossible there).

agent/tasks.py validates the YAML into these classes with pydantic (strict, unknown keys refused:
`__pydantic_config__` below is a plain dict, so this module imports no pydantic) and reports
every problem with its file and line. Importing pydantic and yaml costs about 90 ms and the
shipped definitions are the same on every run, so the first load of a file (same bytes, same
schema code, same registries) writes the validated definition as JSON to the cache; later loads
read that JSON and never import pydantic or yaml.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Literal, get_args

CACHE_FORMAT = "3"

Mode = Literal["yolo", "interactive", "preflight"]
Severity = Literal["warn", "fail"]
OverrideFlag = Literal["allow_out_of_order", "allow_destructive", "force", "allow_data_loss"]
FieldType = Literal["string", "path", "integer", "number", "boolean", "object", "array"]
#: The error kinds the engine tells apart (it maps exceptions and SQLSTATEs onto them).
ErrorKind = Literal[
    "connection_failed",  # ConnectionFailedError
    "lock_busy",  # LockBusyError: another migration holds the advisory lock
    "lock_timeout",  # SQLSTATE 55P03 lock_not_available (lock_timeout fired)
    "query_syntax_error",  # MigrationFileError: the file does not parse
    "transaction_rollback",  # MigrationFailedError: a statement failed, all rolled back
    "snapshot_failed",  # SnapshotError
]

_ID = {"pattern": r"^[a-z][a-z0-9_]*$"}


class _Strict:
    """Base of every spec: pydantic validates strictly (no coercion) and refuses unknown keys."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"strict": True, "extra": "forbid"}


@dataclass(frozen=True)
class InputFieldSpec(_Strict):
    """A task input (AIOS `Entrada`). The engine asks for a required `User Input` one that is
    missing, with `validation` as the hint."""

    name: str = field(metadata=_ID)
    type: FieldType
    source: str = "User Input"
    required: bool = True
    validation: str = ""


@dataclass(frozen=True)
class OutputFieldSpec(_Strict):
    """A task output (AIOS `Saída`): documentation, under `about`."""

    name: str = field(metadata=_ID)
    type: FieldType
    destination: str = "Return value"
    persisted: bool = False


@dataclass(frozen=True)
class ChecklistItemSpec(_Strict):
    """A pre-condition, post-condition or acceptance criterion, backed by a registered check.

    A failing `blocker` stops the run with `error_message` and `hint`; a non-blocker with
    `severity: warn` is reported as a warning, with `fail` as a failure that does not stop.
    `override`: the flag with which yolo goes on anyway (interactive asks, pre-flight batches it).
    """

    id: str = field(metadata=_ID)
    text: str
    check: str = field(metadata={"names": "checks"})
    blocker: bool = field(metadata={"yaml_default": True})
    error_message: str
    severity: Severity = "fail"
    override: OverrideFlag | None = None
    hint: str | None = None


@dataclass(frozen=True)
class StepSpec(_Strict):
    """A registered step; `always` steps run even after a failure (cleanup); `retry` names a
    policy of error_handling.retry."""

    id: str = field(metadata={"names": "steps"})
    always: bool = False
    retry: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ChoiceSpec(_Strict):
    """One option of a `choice` checkpoint: a `*command` shown, the registered follow-up run."""

    label: str
    command: str | None = None
    run: str | None = field(default=None, metadata={"names": "follow_ups"})


def _interactive_only() -> list[Mode]:
    return ["interactive"]


@dataclass(frozen=True)
class CheckpointSpec(_Strict):
    """A question asked before or after a step, in the listed modes, by a registered action.

    `confirm`: yes/no; no stops the run with `stop_message`. `notice`: shown, not asked.
    `choice`: a menu of `options`. Several checkpoints at one position are asked in file order.
    `detail` names the registered provider of what is shown above the question. `default`
    is the answer an empty reply gives to a yes/no question: "yes", "no" (what destroys or
    risks something), or "none" (an empty reply asks again: the target).
    """

    id: str = field(metadata=_ID)
    before_step: str | None = field(metadata={"yaml_default": None})
    after_step: str | None = field(metadata={"yaml_default": None})
    kind: Literal["confirm", "notice", "choice"] = field(metadata={"yaml_default": "confirm"})
    question: str
    explanation: str
    options: list[ChoiceSpec] = field(default_factory=list)
    stop_message: str | None = None
    modes: list[Mode] = field(default_factory=_interactive_only, metadata={"min_length": 1})
    action: str = field(default="ask", metadata={"names": "actions"})
    detail: str | None = field(default=None, metadata={"names": "details"})
    default: Literal["yes", "no", "none"] = "yes"

    @property
    def step(self) -> str:
        """The step this checkpoint sits next to."""
        return self.before_step or self.after_step or ""


@dataclass(frozen=True)
class RetryPolicySpec(_Strict):
    """Exponential backoff for the errors listed in `on`: waits initial, initial*multiplier, ...
    capped at max_wait."""

    id: str = field(metadata=_ID)
    attempts: int = field(metadata={"ge": 1, "le": 100})
    initial_wait_seconds: float = field(metadata={"ge": 0})
    multiplier: float = field(metadata={"ge": 1, "yaml_default": 2.0})
    max_wait_seconds: float = field(metadata={"ge": 0})
    on: list[ErrorKind] = field(metadata={"min_length": 1})


@dataclass(frozen=True)
class KnownErrorSpec(_Strict):
    """A documented error kind: what causes it, how to resolve it, how dbsage recovers."""

    kind: ErrorKind
    title: str
    cause: str
    resolution: str
    recovery: str


@dataclass(frozen=True)
class ErrorHandlingSpec(_Strict):
    """The strategy, the retry policies steps may name, and the documented errors."""

    strategy: Literal["retry", "abort", "fallback"]
    retry: list[RetryPolicySpec] = field(default_factory=list)
    errors: list[KnownErrorSpec] = field(default_factory=list)


@dataclass(frozen=True)
class NextStepSpec(_Strict):
    """A `*command` suggested after success."""

    command: str = field(metadata={"pattern": r"^\*[a-z]"})
    description: str


@dataclass(frozen=True)
class OnChecksFailedSpec(_Strict):
    """How a run ends when a post-condition or acceptance criterion fails.

    `message` and `hint` may name {failures} (the failed items' messages) and {ts}.
    `mark_failed: false` keeps a committed run's status (its change is in the database).
    """

    exit_code: int = field(default=1, metadata={"ge": 1, "le": 125})
    error: str = "ChecklistFailed"
    message: str = "{failures}"
    hint: str | None = None
    mark_failed: bool = True


@dataclass(frozen=True)
class AboutSpec(_Strict):
    """What a task is, for people: never executed. (AIOS files give these keys at the top level;
    the loader moves them here.)"""

    title: str
    purpose: str
    responsible: str
    responsible_type: str = "Agent"
    atomic_layer: str = ""
    elicit: bool = False
    outputs: list[OutputFieldSpec] = field(default_factory=list)


def _abort() -> ErrorHandlingSpec:
    return ErrorHandlingSpec("abort")


@dataclass(frozen=True, kw_only=True)
class TaskSpec(_Strict):
    """One task definition. Everything but `about` is executed by the engine (agent/engine.py).

    Placeholders in `success_output`, `next_steps`, checkpoint texts and `on_checks_failed`
    must name a variable the engine fills. `success_output` is printed first, then `next_steps`.
    `phases`: by mode, a registered phase run after the pre-conditions.
    """

    task: str = field(metadata={"pattern": r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"})
    about: AboutSpec
    default_mode: Mode = "interactive"
    inputs: list[InputFieldSpec] = field(default_factory=list)
    pre_conditions: list[ChecklistItemSpec] = field(default_factory=list)
    post_conditions: list[ChecklistItemSpec] = field(default_factory=list)
    acceptance_criteria: list[ChecklistItemSpec] = field(default_factory=list)
    steps: list[StepSpec] = field(metadata={"min_length": 1})
    checkpoints: list[CheckpointSpec] = field(default_factory=list)
    error_handling: ErrorHandlingSpec = field(default_factory=_abort)
    success_output: str = ""
    next_steps: list[NextStepSpec] = field(default_factory=list)
    phases: dict[Mode, str] = field(default_factory=dict, metadata={"names": "phases"})
    on_checks_failed: OnChecksFailedSpec = field(default_factory=OnChecksFailedSpec)

    @property
    def checklist_items(self) -> list[ChecklistItemSpec]:
        """Every checklist item, in run order."""
        return [*self.pre_conditions, *self.post_conditions, *self.acceptance_criteria]

    def retry_policy(self, policy_id: str) -> RetryPolicySpec:
        """The retry policy called `policy_id` (KeyError if absent)."""
        for policy in self.error_handling.retry:
            if policy.id == policy_id:
                return policy
        raise KeyError(policy_id)


ABOUT_KEYS = tuple(f.name for f in fields(AboutSpec))

def nested_spec(annotation: Any) -> type | None:
    """The spec class a field of this type holds: X, list[X], X | None, else None."""
    if isinstance(annotation, type) and is_dataclass(annotation):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and is_dataclass(arg):
            return arg
    return None


_NESTED: dict[type, list[tuple[str, type | None]]] = {}


def spec_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """Build `cls` (a spec dataclass) from its `dataclasses.asdict` form, recursing into specs."""
    shape = _NESTED.get(cls)
    if shape is None:
        shape = _NESTED[cls] = [(f.name, nested_spec(f.type)) for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for name, nested in shape:
        value = data[name]
        if nested is not None and value is not None:
            value = ([spec_from_dict(nested, v) for v in value] if isinstance(value, list)
                     else spec_from_dict(nested, value))
        kwargs[name] = value
    return cls(**kwargs)
