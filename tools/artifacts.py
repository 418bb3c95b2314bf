"""The files a run leaves for people: TS reservation, plans, decision logs, saved-data folders.

Every byte dbsage writes to the project (besides snapshots, tools/snapshot.py) goes through
here, so the agent never opens a file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from dbsage.tools.errors import DbsageError


def reserve_ts(snapshot_dir: Path) -> str:
    """A YYYYMMDDHHMMSS (UTC) no earlier run used: its before-snapshot file is created empty."""
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(3600):
        ts = (now + timedelta(seconds=i)).strftime("%Y%m%d%H%M%S")
        try:
            (snapshot_dir / f"{ts}_before.sql").open("x").close()
            return ts
        except FileExistsError:
            continue
    raise DbsageError(f"No free timestamp in {snapshot_dir} within an hour of {now:%Y%m%d%H%M%S}.")


def release_reservation(before: Path) -> None:
    """Remove the empty file reserve_ts made (a snapshot is about to take its place)."""
    before.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    """`data` as indented JSON (anything else as its str)."""
    return write_text(path, json.dumps(data, indent=2, default=str))


def remove_tree(path: Path) -> None:
    """Delete a folder the run made (saved data of a rolled-back attempt); missing is fine."""
    shutil.rmtree(path, ignore_errors=True)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def list_files(folder: Path, pattern: str) -> list[Path]:
    """The files of `folder` matching `pattern`, sorted by name (none if it does not exist)."""
    return sorted(folder.glob(pattern))


def read_text(path: Path | Traversable, *, strict: bool = False) -> str:
    """A text file's contents (undecodable bytes replaced, or UnicodeDecodeError if strict)."""
    return path.read_bytes().decode("utf-8", errors="strict" if strict else "replace")


def read_bytes(path: Path) -> bytes:
    """A file's bytes."""
    return path.read_bytes()


def ensure_dir(path: Path) -> Path:
    """Make `path` (and its parents) a folder if it is not one yet."""
    path.mkdir(parents=True, exist_ok=True)
    return path
