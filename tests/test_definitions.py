"""The engine's task definitions: plain dataclasses, validated by agent/tasks.py once per
content and then read from a cache without importing pydantic. No database."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dbsage.agent import definitions as defs
from dbsage.agent import tasks
from dbsage.agent.runner import STEPS, known_checks, load_definition
from dbsage.agent.tasks import TaskDefinitionError, load_task

PAIRS = [
    (tasks.TaskDefinition, defs.TaskSpec), (tasks.InputField, defs.InputFieldSpec),
    (tasks.OutputField, defs.OutputFieldSpec), (tasks.ChecklistItem, defs.ChecklistItemSpec),
    (tasks.Step, defs.StepSpec), (tasks.Choice, defs.ChoiceSpec),
    (tasks.Checkpoint, defs.CheckpointSpec), (tasks.RetryPolicy, defs.RetryPolicySpec),
    (tasks.KnownError, defs.KnownErrorSpec), (tasks.ErrorHandling, defs.ErrorHandlingSpec),
    (tasks.NextStep, defs.NextStepSpec),
]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBSAGE_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("model", "spec"), PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_every_spec_has_exactly_the_fields_of_its_pydantic_model(model: type, spec: type) -> None:
    assert [f.name for f in dataclasses.fields(spec)] == list(model.model_fields)


@pytest.mark.parametrize("name", tasks.shipped_task_names())
def test_cached_spec_equals_a_fresh_validation(cache: Path, name: str) -> None:
    first = load_definition(name)  # miss: validated, written
    files = list((cache / "tasks").glob(f"{name}-*.json"))
    assert len(files) == 1
    second = load_definition(name)  # hit
    fresh = load_task(name, known_checks=known_checks(), known_steps=frozenset(STEPS))
    assert first == second
    assert second == defs.spec_from_dict(defs.TaskSpec, fresh.model_dump(mode="json"))
    assert [s.id for s in second.steps] == [s.id for s in fresh.steps]
    assert second.checklist_items == [defs.spec_from_dict(defs.ChecklistItemSpec, i.model_dump())
                                      for i in fresh.checklist_items]


def test_the_key_changes_with_the_file_and_the_registries() -> None:
    checks, steps = known_checks(), frozenset(STEPS)
    base = defs.cache_key(b"task: x", checks, steps)
    assert base == defs.cache_key(b"task: x", checks, steps)
    assert base != defs.cache_key(b"task: y", checks, steps)
    assert base != defs.cache_key(b"task: x", checks - {"lock_available"}, steps)
    assert base != defs.cache_key(b"task: x", checks, steps - {"release_lock"})


def test_a_damaged_cache_entry_is_validated_again(cache: Path) -> None:
    load_definition("dry-run")
    (entry,) = (cache / "tasks").glob("dry-run-*.json")
    entry.write_text('{"task": "dry-run"')  # truncated JSON
    spec = load_definition("dry-run")
    assert spec.task == "dry-run"
    assert json.loads(entry.read_text())["task"] == "dry-run"  # rewritten whole


def test_an_unwritable_cache_only_costs_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DBSAGE_CACHE_DIR", str(blocker))
    assert load_definition("smoke-test").task == "smoke-test"


def test_an_unknown_task_is_still_a_definition_error(cache: Path) -> None:
    with pytest.raises(TaskDefinitionError, match="unknown task 'nope'"):
        load_definition("nope")
    assert not list(cache.glob("tasks/nope-*"))


def test_a_cache_hit_imports_neither_pydantic_nor_yaml(cache: Path) -> None:
    load_definition("apply-migration")  # warm
    code = ("import sys; from dbsage.agent.runner import load_definition; "
            "d = load_definition('apply-migration'); "
            "print(d.task, 'pydantic' in sys.modules, 'yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["apply-migration", "False", "False"]
