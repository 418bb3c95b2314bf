"""The files a run leaves for people: TS reservation, plans, decision logs, saved-data folders.

Every byte dbsage writes to the project (besides snapshots, tools/snapshot.py) goes through
here, so the agent never opens a file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
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
    tmp = temp_path(path)
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


# --- what a killed run leaves, and who may remove it (issue 13) --------------------------------
#
# A file a run writes before it is complete has a temporary name that says who writes it:
# `.<name>.<pid>@<host>.tmp` (an early snapshot, a snapshot being dumped, a file being written),
# and every run of a TS keeps a marker `.run-<TS>.<pid>@<host>.json` until it ends. A SIGKILL
# leaves both; a later run removes those whose writer is dead (same host, no such process),
# never a live run's, and `status` reads the markers to say what the killed run left.

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9-]+))?\.tmp$")
_LEGACY_EARLY = re.compile(r"^\.early-(?P<pid>\d+)\.sql$")  # dbsage before the pid@host names
_MARKER = re.compile(r"^\.run-(?P<ts>\d{14})\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.json$")


def host_name() -> str:
    """This machine's name as it goes into a temporary file's name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", os.uname().nodename.split(".")[0])[:63] or "host"


def owner_tag() -> str:
    """`<pid>@<host>`: who writes a temporary file."""
    return f"{os.getpid()}@{host_name()}"


def temp_path(path: Path) -> Path:
    """The temporary name `path` is written under until it is complete."""
    return path.with_name(f".{path.name}.{owner_tag()}.tmp")


def writer_alive(pid: int, host: str | None) -> bool:
    """Whether the process that named a file may still be writing it: always True for another
    host's files (this machine cannot tell), False for a pid that is gone or a zombie."""
    if host is not None and host != host_name():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process not yet waited for by its parent
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


@dataclass(frozen=True)
class RunMarker:
    """A run of TS `ts` that was (or is) in progress: its marker file and what it said."""

    path: Path
    ts: str
    pid: int
    host: str
    task: str
    file: str | None
    started: str
    alive: bool
    outside_transaction: bool = False


def write_run_marker(snapshot_dir: Path, ts: str, task: str, file: str | None, *,
                     outside_transaction: bool = False) -> Path:
    """The marker of run `ts`, removed by `remove_run_marker` when the run ends however it ends
    (but a SIGKILL). `outside_transaction`: the file runs statement by statement (CREATE INDEX
    CONCURRENTLY), so a kill may leave some of them committed without a history row."""
    path = snapshot_dir / f".run-{ts}.{owner_tag()}.json"
    path.write_text(json.dumps({"ts": ts, "task": task, "file": file, "pid": os.getpid(),
                                "outside_transaction": outside_transaction,
                                "host": host_name(),
                                "started": datetime.now(UTC).isoformat(timespec="seconds")}),
                    encoding="utf-8")
    return path


def remove_run_marker(path: Path) -> None:
    path.unlink(missing_ok=True)


def run_markers(snapshot_dir: Path) -> list[RunMarker]:
    """Every run marker in `snapshot_dir`, oldest TS first."""
    out: list[RunMarker] = []
    try:
        names = os.listdir(snapshot_dir)
    except OSError:
        return out
    for name in names:
        m = _MARKER.match(name)
        if not m:
            continue
        path = snapshot_dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        pid = int(m["pid"])
        out.append(RunMarker(path, m["ts"], pid, m["host"], str(data.get("task") or "?"),
                             data.get("file"), str(data.get("started") or ""),
                             writer_alive(pid, m["host"]),
                             bool(data.get("outside_transaction"))))
    return sorted(out, key=lambda r: (r.ts, r.pid))


@dataclass(frozen=True)
class Leftovers:
    """What `sweep_leftovers` removed: the temporary files and the markers of dead runs."""

    files: tuple[Path, ...]
    runs: tuple[RunMarker, ...]


def sweep_leftovers(snapshot_dir: Path) -> Leftovers:
    """Remove the temporary files and run markers in `snapshot_dir` whose writer is dead."""
    files: list[Path] = []
    try:
        names = os.listdir(snapshot_dir)
    except OSError:
        return Leftovers((), ())
    for name in names:
        m = _TEMP.match(name) or _LEGACY_EARLY.match(name)
        if m and not writer_alive(int(m["pid"]), m.groupdict().get("host")):
            path = snapshot_dir / name
            try:
                path.unlink()
            except OSError:
                continue
            files.append(path)
    runs = [r for r in run_markers(snapshot_dir) if not r.alive]
    for r in runs:
        r.path.unlink(missing_ok=True)
    return Leftovers(tuple(sorted(files)), tuple(runs))
