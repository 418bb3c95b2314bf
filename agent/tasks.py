"""Task definitions: the strict loader of `task_definitions/*.yaml` into agent/definitions.py.

The schema is the dataclasses of agent/definitions.py; this module turns a YAML file into them:
1. compose the YAML, remembering the line of every key and item;
2. before validation: rename the AIOS aliases (`entrada`, `campo`, ...), move the informational
   keys given at the top level (the AIOS template format) under `about`, fill `yaml_default`s;
3. validate into the dataclasses with `pydantic.TypeAdapter` (strict, unknown keys refused);
   (it also enforces the `pattern`/`ge`/`le`/`min_length` of the fields' metadata);
4. the rules over the validated dataclasses: registry names, the per-object rules, then cross
   references and template placeholders.
Every problem is a `TaskDefinitionError` naming the file, the line of the offending key, what is
wrong and what is allowed. Registry names are checked against the registries the caller passes,
so no checklist item can silently pass.
"""

from __future__ import annotations

import difflib
import functools
import json
import string
import unicodedata
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from dbsage.agent.definitions import (
    ABOUT_KEYS,
    AboutSpec,
    ChecklistItemSpec,
    CheckpointSpec,
    InputFieldSpec,
    OutputFieldSpec,
    RetryPolicySpec,
    TaskSpec,
    nested_spec,
)
from dbsage.tools.errors import DbsageError

Loc = tuple[str | int, ...]
Found = tuple[Loc, str]  # where in the data (a path of keys and indexes) and what is wrong

#: AIOS spellings of keys, folded (lower case, no accents): `Obrigatório` matches `obrigatorio`.
_IO_ALIASES = {"campo": "name", "tipo": "type"}
_ABOUT_ALIASES = {"saida": "outputs", "responsavel": "responsible",
                  "responsavel_type": "responsible_type"}
ALIASES: dict[type, dict[str, str]] = {
    TaskSpec: {"entrada": "inputs", **_ABOUT_ALIASES, "pre-conditions": "pre_conditions",
               "post-conditions": "post_conditions", "acceptance-criteria": "acceptance_criteria"},
    AboutSpec: _ABOUT_ALIASES,
    InputFieldSpec: {**_IO_ALIASES, "origem": "source", "obrigatorio": "required",
                     "validacao": "validation"},
    OutputFieldSpec: {**_IO_ALIASES, "destino": "destination", "persistido": "persisted"},
}
_ALL_ALIASES = {k: v for table in ALIASES.values() for k, v in table.items()}
#: What a registry's names are called in messages.
_NOUNS = {"checks": "check", "steps": "step", "actions": "checkpoint action", "details": "detail",
          "follow_ups": "follow-up", "phases": "phase"}
_TYPE_NAMES = {
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "dataclass_type": "a mapping of keys",
}


def _fold(key: str) -> str:
    """Lower-case `key` and strip accents, so `Obrigatório` and `obrigatorio` match."""
    decomposed = unicodedata.normalize("NFKD", key)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


# --------------------------------------------------------------------------- problems

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


def _where(loc: Loc) -> str:
    """`pre_conditions[0].check` for a loc."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class _File:
    """Where things are in one file: the line of each key, and which `about` keys it gave at
    the top level (their problems are reported where they were written)."""

    source: str
    lines: Mapping[Loc, int]
    moved: frozenset[str]
    about_given: bool

    def written(self, loc: Loc) -> Loc:
        """The path as the file spells it (`outputs[0]` for an AIOS file's `about.outputs[0]`)."""
        if loc[:1] == ("about",) and (not self.about_given or loc[1:2] in {(k,) for k in self.moved}):
            return loc[1:]
        return loc

    def line(self, loc: Loc) -> int:
        """The line of `loc`, or of its nearest ancestor that is in the file."""
        loc = self.written(loc)
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def where(self, loc: Loc) -> str:
        return _where(self.written(loc))

    def problem(self, loc: Loc, what: str) -> Problem:
        return Problem(self.source, self.line(loc), self.where(loc), what)


# --------------------------------------------------------------------------- YAML to data

def _to_python(node: yaml.Node, path: Loc, lines: dict[Loc, int], source: str) -> Any:
    """Build JSON-shaped data from a composed YAML node, recording each key's and item's line."""
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
            canonical = _ALL_ALIASES.get(_fold(key)) or key  # validation reports this name
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
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError as exc:
        raise _fail(source, node.start_mark.line + 1, f"YAML error: {exc}", _where(path)) from None
    # A date or binary scalar stays its text: validation runs on JSON-shaped data.
    return value if value is None or isinstance(value, str | int | float) else node.value


def _renamed(cls: type, data: dict[str, Any], loc: Loc, found: list[Found]) -> dict[str, Any]:
    """`data` with the AIOS aliases of `cls` replaced by the English names."""
    table = ALIASES.get(cls)
    if not table:
        return data
    out: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in data.items():
        name = table.get(_fold(key), key)
        if name in out:
            found.append(((*loc, key), f"'{key}' and '{written[name]}' are the same key "
                          f"('{name}'); keep one"))
            continue
        written[name] = key
        out[name] = value
    return out


def _gather_about(data: dict[str, Any], found: list[Found]) -> tuple[dict[str, Any], list[str]]:
    """Move the informational keys given at the top level under `about`; which ones moved."""
    given = [k for k in ABOUT_KEYS if k in data]
    out = {k: v for k, v in data.items() if k not in given}
    about = data.get("about", {})
    if not isinstance(about, dict):
        return out, []  # validation says what is wrong with `about`
    for key in given:
        if key in about:
            found.append(((key,), f"'{key}' is given both at the top level and under about; "
                          "keep one"))
    moved = [k for k in given if k not in about]
    out["about"] = {**about, **{k: data[k] for k in moved}}
    return out, moved


def _prepare(cls: type, data: Any, loc: Loc, found: list[Found]) -> Any:
    """Aliases renamed and `yaml_default`s filled in, in `data` and every spec below it."""
    if not isinstance(data, dict):
        return data  # validation says what is wrong
    data = _renamed(cls, data, loc, found)
    for f in fields(cls):
        value, nested = data.get(f.name), nested_spec(f.type)
        if nested is not None and isinstance(value, dict):
            data[f.name] = _prepare(nested, value, (*loc, f.name), found)
        elif nested is not None and isinstance(value, list):
            data[f.name] = [_prepare(nested, v, (*loc, f.name, i), found)
                            for i, v in enumerate(value)]
        elif f.name not in data and "yaml_default" in f.metadata:
            data[f.name] = f.metadata["yaml_default"]
    return data


# --------------------------------------------------------------------------- validation

@functools.cache
def _adapter() -> TypeAdapter[TaskSpec]:
    return TypeAdapter(TaskSpec)


def _class_at(loc: Loc) -> type | None:
    """The spec class of the object at `loc` (a path in the data)."""
    current: type | None = TaskSpec
    for part in loc:
        if isinstance(part, int):
            continue
        spec = {f.name: f for f in fields(current)}.get(part) if current else None
        current = nested_spec(spec.type) if spec else None
    return current


def _allowed_keys(cls: type | None) -> str:
    if cls is None:
        return "?"
    allowed = ", ".join(f.name for f in fields(cls))
    if cls is TaskSpec:
        allowed += f"; at the top level or under about: {', '.join(ABOUT_KEYS)}"
    aliases = ALIASES.get(cls)
    return allowed + (f" (AIOS aliases: {', '.join(aliases)})" if aliases else "")


def _from_pydantic(file: _File, error: Mapping[str, Any]) -> Problem:
    """One pydantic error as a Problem with a line and the allowed values."""
    loc: Loc = tuple(p for p in error["loc"] if p != "[key]")
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        what = f"unknown key '{loc[-1]}'; allowed keys: {_allowed_keys(_class_at(loc[:-1]))}"
        return Problem(file.source, file.line(loc), file.where(loc[:-1]), what)
    if kind == "missing":
        return Problem(file.source, file.line(loc), file.where(loc[:-1]),
                       f"missing required key '{loc[-1]}'")
    if kind in _TYPE_NAMES:
        return file.problem(loc, f"expected {_TYPE_NAMES[kind]}, got {_shown(error['input'])}")
    return file.problem(loc, f"{error['msg']}; got {_shown(error['input'])}")


# --------------------------------------------------------------------------- rules

def _walk(obj: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every spec object in `obj`, with its path, parents first."""
    yield loc, obj
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from _walk(value, (*loc, f.name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if is_dataclass(item):
                    yield from _walk(item, (*loc, f.name, i))


def _unknown_name(value: str, known: Collection[str], noun: str) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    allowed = ", ".join(sorted(known)) or "(none)"
    return f"unknown {noun} '{value}'{hint}; registered {noun}s: {allowed}"


def _registry_rules(obj: Any, loc: Loc, known: Mapping[str, Collection[str]]) -> Iterator[Found]:
    """Each field whose metadata says `names: <registry>` must name a registered entry."""
    for f in fields(obj):
        registry: str = f.metadata.get("names", "")
        registered = known.get(registry)
        if registered is None:
            continue  # not a registry field, or the caller passed no such registry
        value = getattr(obj, f.name)
        named = list(value.items()) if isinstance(value, dict) else [(None, value)]
        for key, name in named:
            if name is not None and name not in registered:
                yield ((*loc, f.name) if key is None else (*loc, f.name, key)), _unknown_name(
                    name, registered, _NOUNS[registry])


def _checklist_item(item: ChecklistItemSpec, loc: Loc) -> Iterator[Found]:
    if item.blocker and item.severity == "warn":
        yield (*loc, "severity"), ("a blocker cannot have severity 'warn'; "
                                   "set blocker: false or severity: fail")


def _checkpoint(point: CheckpointSpec, loc: Loc) -> Iterator[Found]:
    if (point.before_step is None) == (point.after_step is None):
        at = "id" if point.before_step is None else "after_step"
        yield (*loc, at), "give exactly one of before_step or after_step"
    if (point.kind == "choice") != bool(point.options):
        yield (*loc, "kind"), "options are required for kind 'choice' and only for it"


def _retry_policy(policy: RetryPolicySpec, loc: Loc) -> Iterator[Found]:
    if policy.max_wait_seconds < policy.initial_wait_seconds:
        yield (*loc, "max_wait_seconds"), "max_wait_seconds must be >= initial_wait_seconds"


def _no_rules(obj: Any, loc: Loc) -> Iterator[Found]:
    return iter(())


_OBJECT_RULES: dict[type, Callable[[Any, Loc], Iterator[Found]]] = {
    ChecklistItemSpec: _checklist_item, CheckpointSpec: _checkpoint, RetryPolicySpec: _retry_policy,
}


def _duplicates(spec: TaskSpec, where: Callable[[Loc], str]) -> Iterator[Found]:
    """Duplicate ids and names, each with where it sits and where it was first used."""
    groups: list[tuple[list[Loc], str]] = [
        ([("pre_conditions",), ("post_conditions",), ("acceptance_criteria",)], "id"),
        ([("inputs",), ("about", "outputs")], "name"),
        ([("steps",)], "id"),
        ([("checkpoints",)], "id"),
        ([("error_handling", "retry")], "id"),
    ]
    for paths, key in groups:
        seen: dict[str, Loc] = {}
        for path in paths:
            items: Any = spec
            for part in path:
                items = getattr(items, str(part))
            for i, item in enumerate(items):
                value, at = getattr(item, key), (*path, i)
                if value in seen:
                    noun = "retry policy" if path == ("error_handling", "retry") else key
                    yield (*at, key), f"duplicate {noun} '{value}' (already used by {where(seen[value])})"
                seen.setdefault(value, at)


def _references(spec: TaskSpec) -> Iterator[Found]:
    """Retry policies and checkpoint positions that name nothing in this task."""
    policies = [p.id for p in spec.error_handling.retry]
    for i, step in enumerate(spec.steps):
        if step.retry is not None and step.retry not in policies:
            allowed = ", ".join(policies) or "(none defined)"
            yield ("steps", i, "retry"), (f"unknown retry policy '{step.retry}'; "
                                          f"error_handling.retry defines: {allowed}")
    steps = [s.id for s in spec.steps]
    for i, point in enumerate(spec.checkpoints):
        if point.step not in steps:
            at = "before_step" if point.before_step else "after_step"
            yield ("checkpoints", i, at), (f"no step '{point.step}' in this task; "
                                           f"steps: {', '.join(steps)}")


def _placeholders(spec: TaskSpec, variables: Collection[str] | None) -> Iterator[Found]:
    """Every {placeholder} must be one the engine fills (without that registry: an input or
    output); on_checks_failed knows only {failures} and {ts}."""
    names = sorted(variables) if variables is not None else (
        [f.name for f in spec.inputs] + [f.name for f in spec.about.outputs])
    what = "inputs and outputs" if variables is None else "the engine fills"
    listed = f"{what}: {', '.join(names) or '(no inputs or outputs)'}"
    templates: list[tuple[str, Loc, Collection[str], str]] = [
        (spec.success_output, ("success_output",), names, listed)]
    for i, nxt in enumerate(spec.next_steps):
        templates += [(getattr(nxt, a), ("next_steps", i, a), names, listed)
                      for a in ("command", "description")]
    for i, point in enumerate(spec.checkpoints):
        templates += [(getattr(point, a) or "", ("checkpoints", i, a), names, listed)
                      for a in ("question", "explanation", "stop_message")]
    on = spec.on_checks_failed
    templates += [(text or "", ("on_checks_failed", a), ("failures", "ts"), "allowed: failures, ts")
                  for text, a in ((on.message, "message"), (on.hint, "hint"))]
    for text, at, allowed, said in templates:
        try:
            used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            yield at, f"bad template ({exc}); write literal braces as {{{{ }}}}"
            continue
        for field_name in used:
            if field_name.split(".")[0].split("[")[0] not in allowed:
                yield at, f"unknown placeholder '{{{field_name}}}'; {said}"


def _rule_problems(spec: TaskSpec, known: Mapping[str, Collection[str]],
                   where: Callable[[Loc], str]) -> list[Found]:
    """Registry and object rules first; cross references only over objects that pass them."""
    found = [problem for loc, obj in _walk(spec) for problem in (
        *_registry_rules(obj, loc, known), *_OBJECT_RULES.get(type(obj), _no_rules)(obj, loc))]
    if found:
        return found
    return [*_duplicates(spec, where), *_references(spec),
            *_placeholders(spec, known.get("template_variables"))]


# --------------------------------------------------------------------------- loading

def _known(known_checks: Collection[str], known_steps: Collection[str],
           known: Mapping[str, Collection[str]] | None) -> dict[str, frozenset[str]]:
    """Every registry the definition may name, by registry name."""
    out = {"checks": frozenset(known_checks), "steps": frozenset(known_steps)}
    out.update((key, frozenset(names)) for key, names in (known or {}).items())
    return out


def parse_task(
    text: str, *, source: str, known_checks: Collection[str], known_steps: Collection[str],
    known: Mapping[str, Collection[str]] | None = None,
) -> TaskSpec:
    """Validate the YAML `text` of the file `source`; its `task` must equal the file's stem.

    `known`: further registries (actions, details, follow_ups, phases, template_variables).
    """
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
    found: list[Found] = []
    about_given = "about" in data
    data, moved = _gather_about(_renamed(TaskSpec, data, (), found), found)
    file = _File(source, lines, frozenset(moved), about_given)
    data = _prepare(TaskSpec, data, (), found)  # renames the top level again: a no-op
    problems = [file.problem(loc, what) for loc, what in found]
    try:
        # JSON mode: strict Python mode takes only instances of a stdlib dataclass, not dicts;
        # strict JSON mode takes objects and still coerces nothing ("yes" is not a boolean).
        definition = _adapter().validate_json(json.dumps(data))
    except ValidationError as exc:
        problems += [_from_pydantic(file, e) for e in exc.errors()]
        raise TaskDefinitionError(problems) from None
    found = _rule_problems(definition, _known(known_checks, known_steps, known), file.where)
    problems += [file.problem(loc, what) for loc, what in found]
    if problems:
        raise TaskDefinitionError(problems)
    stem = Path(source).stem
    if definition.task != stem:
        what = f"task '{definition.task}' does not match the file name; expected '{stem}'"
        raise _fail(source, lines[("task",)], what, "task")
    return definition


def _read(source: Traversable) -> str:
    from dbsage.tools.artifacts import read_text

    return read_text(source, strict=True)


def _list_yaml(directory: Path) -> list[Path]:
    from dbsage.tools.artifacts import list_files

    return list_files(directory, "*.yaml")


def _shipped() -> Traversable:
    return files("dbsage.task_definitions")


def shipped_task_names() -> list[str]:
    """Names of the task definitions shipped with dbsage."""
    return sorted(p.name.removesuffix(".yaml") for p in _shipped().iterdir()
                  if p.name.endswith(".yaml"))


def load_task(
    name_or_path: str | Path, *, known_checks: Collection[str], known_steps: Collection[str],
    known: Mapping[str, Collection[str]] | None = None,
) -> TaskSpec:
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
        text = _read(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(str(source), None, f"cannot read the file: {exc}") from None
    return parse_task(text, source=str(source), known_checks=known_checks,
                      known_steps=known_steps, known=known)


def load_all_tasks(
    directory: Path | None = None,
    *,
    known_checks: Collection[str],
    known_steps: Collection[str],
    known: Mapping[str, Collection[str]] | None = None,
) -> dict[str, TaskSpec]:
    """Load every `*.yaml` in `directory` (default: the shipped ones), keyed by task name.

    The problems of all files are gathered into one TaskDefinitionError.
    """
    refs: list[str | Path] = (
        list(shipped_task_names()) if directory is None
        else list(_list_yaml(directory))
    )
    tasks: dict[str, TaskSpec] = {}
    problems: list[Problem] = []
    for ref in refs:
        try:
            definition = load_task(ref, known_checks=known_checks, known_steps=known_steps,
                                   known=known)
        except TaskDefinitionError as exc:
            problems += exc.problems
            continue
        tasks[definition.task] = definition
    if problems:
        raise TaskDefinitionError(problems)
    return tasks
