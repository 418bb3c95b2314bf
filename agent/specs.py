"""Loading a shipped task definition fast: validated once per content, then read from a cache.

Validation (agent/tasks.py: pydantic and yaml) costs about 90 ms, a third of the whole shell
procedure dbsage is measured against, and the shipped definitions are the same on every
run. So the first load of a given file (same bytes, same schema code, same registries)
writes the validated TaskSpec as JSON to the cache; later loads read that JSON and never
import pydantic or yaml. Kept apart from agent/definitions.py (the schema, which
agent/tasks.py imports) so that no module imports the other back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict
from pathlib import Path

from dbsage.agent.definitions import CACHE_FORMAT, TaskSpec, spec_from_dict

__all__ = ["cache_dir", "cache_key", "load_spec"]


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
    # The schema and its rules live in these two files: a change to either invalidates the cache.
    here = Path(__file__).resolve().parent
    from dbsage.tools.artifacts import read_bytes

    return b"".join(read_bytes(here / name) for name in ("tasks.py", "definitions.py"))


def cache_key(text: bytes, known: Mapping[str, Collection[str]]) -> str:
    """sha256 over the file, the schema code and every registry."""
    h = hashlib.sha256(CACHE_FORMAT.encode())
    parts = [text, _schema_code()]
    parts += [f"{key}=".encode() + "\0".join(sorted(known[key])).encode() for key in sorted(known)]
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def load_spec(name: str, known: Mapping[str, Collection[str]]) -> TaskSpec:
    """The shipped task `name`, validated (agent/tasks.py) on a cache miss, else from the cache.

    `known`: registry name (checks, steps, actions, ...) -> the names registered there.
    An unknown name or an invalid file raises TaskDefinitionError, as load_task does.
    """
    from dbsage.tools.artifacts import read_bytes, read_text

    source = _shipped_dir() / f"{name}.yaml"
    try:
        text = read_bytes(source)
    except OSError:
        text = b""
    cached = cache_dir() / "tasks" / f"{name}-{cache_key(text, known)[:32]}.json"
    try:
        spec: TaskSpec = spec_from_dict(TaskSpec, json.loads(read_text(cached, strict=True)))
        return spec
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache entry yet, or a damaged one: validate again
    from dbsage.agent.tasks import load_task

    rest = {k: v for k, v in known.items() if k not in ("checks", "steps")}
    definition = load_task(name, known_checks=known["checks"], known_steps=known["steps"],
                           known=rest)
    _write_atomically(cached, json.dumps(asdict(definition)))
    return definition


def _write_atomically(path: Path, text: str) -> None:
    """Best effort: a cache that cannot be written only costs the next run its speed."""
    from dbsage.tools.artifacts import write_text

    with contextlib.suppress(OSError):
        write_text(path, text)
