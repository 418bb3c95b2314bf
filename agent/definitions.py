"""Validated task definitions as plain frozen dataclasses, cached by content.

`agent/tasks.py` validates a YAML definition with pydantic and reports every problem with its
file and line. Importing pydantic and building those models costs about 90 ms, a third of the
whole shell procedure dbsage is measured against, and the shipped definitions are the same on
every run. So the engine runs on these dataclasses: on the first load of a given file (same
bytes, same schema code, same check and step registries) the validated definition is written
as JSON to the cache; later loads read that JSON and never import pydantic or yaml.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CACHE_FORMAT = "1"
_NESTED = "nested"  # dataclass field metadata: the spec class of a nested object or list


def _nested(cls: type) -> dict[str, type]:
    return {_NESTED: cls}


@dataclass(frozen=True)
class InputFieldSpec:
    """A task input."""

    name: str
    type: str
    source: str
    required: bool
    validation: str


@dataclass(frozen=True)
class OutputFieldSpec:
    """A task output."""

    name: str
    type: str
    destination: str
    persisted: bool


@dataclass(frozen=True)
class ChecklistItemSpec:
    """A pre-condition, post-condition or acceptance criterion backed by a registered check."""

    id: str
    text: str
    check: str
    blocker: bool
    error_message: str
    severity: str
    override: str | None


@dataclass(frozen=True)
class StepSpec:
    """A registered step; `always` steps run even after a failure."""

    id: str
    always: bool
    retry: str | None
    description: str


@dataclass(frozen=True)
class ChoiceSpec:
    """One option of a `choice` checkpoint."""

    label: str
    command: str | None


@dataclass(frozen=True)
class CheckpointSpec:
    """A question asked before or after a step, in the listed modes."""

    id: str
    before_step: str | None
    after_step: str | None
    kind: str
    question: str
    explanation: str
    options: list[ChoiceSpec] = field(metadata=_nested(ChoiceSpec))
    stop_message: str | None = None
    modes: list[str] = field(default_factory=list)

    @property
    def step(self) -> str:
        """The step this checkpoint sits next to."""
        return self.before_step or self.after_step or ""


@dataclass(frozen=True)
class RetryPolicySpec:
    """Exponential backoff for the errors listed in `on`."""

    id: str
    attempts: int
    initial_wait_seconds: float
    multiplier: float
    max_wait_seconds: float
    on: list[str]


@dataclass(frozen=True)
class KnownErrorSpec:
    """A documented error kind."""

    kind: str
    title: str
    cause: str
    resolution: str
    recovery: str


@dataclass(frozen=True)
class ErrorHandlingSpec:
    """The strategy, the retry policies and the documented errors."""

    strategy: str
    retry: list[RetryPolicySpec] = field(metadata=_nested(RetryPolicySpec))
    errors: list[KnownErrorSpec] = field(metadata=_nested(KnownErrorSpec))


@dataclass(frozen=True)
class NextStepSpec:
    """A `*command` suggested after success."""

    command: str
    description: str


@dataclass(frozen=True)
class TaskSpec:
    """One validated task definition (the fields of agent/tasks.py's TaskDefinition)."""

    task: str
    title: str
    purpose: str
    responsible: str
    responsible_type: str
    atomic_layer: str
    elicit: bool
    default_mode: str
    inputs: list[InputFieldSpec] = field(metadata=_nested(InputFieldSpec))
    outputs: list[OutputFieldSpec] = field(metadata=_nested(OutputFieldSpec))
    pre_conditions: list[ChecklistItemSpec] = field(metadata=_nested(ChecklistItemSpec))
    post_conditions: list[ChecklistItemSpec] = field(metadata=_nested(ChecklistItemSpec))
    acceptance_criteria: list[ChecklistItemSpec] = field(metadata=_nested(ChecklistItemSpec))
    steps: list[StepSpec] = field(metadata=_nested(StepSpec))
    checkpoints: list[CheckpointSpec] = field(metadata=_nested(CheckpointSpec))
    error_handling: ErrorHandlingSpec = field(metadata=_nested(ErrorHandlingSpec))
    success_output: str = ""
    next_steps: list[NextStepSpec] = field(default_factory=list,
                                           metadata=_nested(NextStepSpec))

    @property
    def checklist_items(self) -> list[ChecklistItemSpec]:
        """Every checklist item, in run order."""
        return [*self.pre_conditions, *self.post_conditions, *self.acceptance_criteria]


def spec_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """Build `cls` (a spec dataclass) from validated plain data, recursing into nested specs."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        value = data[f.name]
        nested = f.metadata.get(_NESTED)
        if nested is not None:
            value = ([spec_from_dict(nested, v) for v in value] if isinstance(value, list)
                     else spec_from_dict(nested, value))
        kwargs[f.name] = value
    return cls(**kwargs)


def _shipped_dir() -> Path:
    # Not importlib.resources: it costs ~4 ms of imports, and pip installs files unpacked.
    import dbsage.task_definitions as shipped

    return Path(shipped.__file__).resolve().parent


def cache_dir() -> Path:
    """DBSAGE_CACHE_DIR, else $XDG_CACHE_HOME/dbsage, else ~/.cache/dbsage."""
    explicit = os.environ.get("DBSAGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dbsage"


def _schema_code() -> bytes:
    # The validation rules live in these two files: a change to either invalidates the cache.
    here = Path(__file__).resolve().parent
    return b"".join((here / name).read_bytes() for name in ("tasks.py", "definitions.py"))


def cache_key(text: bytes, known_checks: Collection[str], known_steps: Collection[str]) -> str:
    """sha256 over the file, the schema code and both registries."""
    h = hashlib.sha256(CACHE_FORMAT.encode())
    for part in (text, _schema_code(), "\0".join(sorted(known_checks)).encode(),
                 "\0".join(sorted(known_steps)).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def load_spec(name: str, *, known_checks: Collection[str], known_steps: Collection[str]) -> TaskSpec:
    """The shipped task `name`, validated (agent/tasks.py) on a cache miss, else from the cache.

    An unknown name or an invalid file raises TaskDefinitionError, as load_task does.
    """
    source = _shipped_dir() / f"{name}.yaml"
    try:
        text = source.read_bytes()
    except OSError:
        text = b""
    cached = cache_dir() / "tasks" / f"{name}-{cache_key(text, known_checks, known_steps)[:32]}.json"
    try:
        return spec_from_dict(TaskSpec, json.loads(cached.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache entry yet, or a damaged one: validate again
    from dbsage.agent.tasks import load_task

    definition = load_task(name, known_checks=known_checks, known_steps=known_steps)
    data = definition.model_dump(mode="json")
    _write_atomically(cached, json.dumps(data))
    return spec_from_dict(TaskSpec, data)


def _write_atomically(path: Path, text: str) -> None:
    """Best effort: a cache that cannot be written only costs the next run its speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
