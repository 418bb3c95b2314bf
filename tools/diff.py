"""Unified diff of two schema snapshots."""

from __future__ import annotations

import difflib
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiffResult:
    """The diff written to disk and its size."""

    path: Path
    added: int
    removed: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def diff_snapshots(before: Path, after: Path, dest: Path) -> DiffResult:
    """Write `diff -u before after` to `dest`; an unchanged schema gives an empty patch."""
    text = _unified_diff(before, after)
    dest.write_text(text)
    lines = text.splitlines()
    added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    return DiffResult(dest, added, removed)


def _unified_diff(before: Path, after: Path) -> str:
    # GNU diff is linear on large, nearly equal dumps; difflib can take seconds on
    # 100k-line snapshots, so it is only the fallback where no diff binary exists.
    from dbsage.tools.binaries import find_diff

    exe = find_diff()
    if exe:
        proc = subprocess.run([str(exe), "-u", "--label", before.name, "--label", after.name,
                               str(before), str(after)], capture_output=True, text=True)
        if proc.returncode in (0, 1):
            return proc.stdout
    a = before.read_text().splitlines(keepends=True)
    b = after.read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=before.name, tofile=after.name))

