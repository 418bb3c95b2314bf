"""The task schema (agent/definitions.py): the dataclasses agent/tasks.py validates into, and
the cache they are read from without importing pydantic. No database."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dbsage.agent import definitions as defs
from dbsage.agent import specs, tasks
from dbsage.agent.runner import known_checks, known_names, load_definition
from dbsage.agent.steps import STEPS
from dbsage.agent.tasks import TaskDefinitionError, load_task


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBSAGE_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", tasks.shipped_task_names())
def test_the_cache_json_round_trips_to_an_equal_spec(name: str) -> None:
    spec = load_task(name, known_checks=known_checks(), known_steps=frozenset(STEPS))
    text = json.dumps(dataclasses.asdict(spec))
    again = defs.spec_from_dict(defs.TaskSpec, json.loads(text))
    assert again == spec  # dataclass equality: every nested object is of the same spec class
    assert json.dumps(dataclasses.asdict(again)) == text


@pytest.mark.parametrize("name", tasks.shipped_task_names())
def test_cached_spec_equals_a_fresh_validation(cache: Path, name: str) -> None:
    first = load_definition(name)  # miss: validated, written
    files = list((cache / "tasks").glob(f"{name}-*.json"))
    assert len(files) == 1
    second = load_definition(name)  # hit
    fresh = load_task(name, known_checks=known_checks(), known_steps=frozenset(STEPS),
                      known={k: v for k, v in known_names().items() if k not in ("checks", "steps")})
    assert first == second == fresh
    assert [s.id for s in second.steps] == [s.id for s in fresh.steps]
    assert second.checklist_items == fresh.checklist_items


def test_the_key_changes_with_the_file_and_the_registries() -> None:
    known = known_names()
    base = specs.cache_key(b"task: x", known)
    assert base == specs.cache_key(b"task: x", dict(known))
    assert base != specs.cache_key(b"task: y", known)
    assert base != specs.cache_key(b"task: x", {**known, "checks": known["checks"] - {"lock_available"}})
    assert base != specs.cache_key(b"task: x", {**known, "steps": known["steps"] - {"release_lock"}})
    assert base != specs.cache_key(b"task: x", {**known, "actions": known["actions"] - {"menu"}})


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
