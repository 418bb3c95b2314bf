"""Unified diff of two schema snapshots: the schema change, without pg_dump's DROP preamble.

The snapshots are `pg_dump --clean --if-exists` dumps (restorable on their own, which a
rollback needs), so each begins with a DROP for every object it then creates. Diffed as they
are, a migration that creates a table shows `+DROP TABLE IF EXISTS` before its CREATE TABLE.
The patch compares the dumps with that section left out; the snapshot files stay whole.
"""

from __future__ import annotations

import difflib
import re
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


@dataclass(frozen=True)
class Side:
    """A snapshot read and stripped for the diff ahead of time (the before-snapshot, while
    the after-snapshot's pg_dump still runs)."""

    path: Path
    text: str  # without the DROP preamble
    file: Path | None = None  # `text` written out for GNU diff already (read_side's `dest`)

    def discard(self) -> None:
        """Delete the file written ahead (a diff that will not run; safe to call twice)."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def read_side(path: Path, dest: Path | None = None) -> Side:
    """`path`'s schema as the diff compares it (without_clean_section). With `dest` (the
    patch to come) and a diff binary, the text is also written beside it now, so that the
    diff itself, once the other side exists, writes nothing more: a 5,000-table dump is
    10 MB to write. diff_snapshots deletes that file; Side.discard when it never runs."""
    side = Side(path, without_clean_section(path.read_text()))
    if dest is None:
        return side
    from dbsage.tools.binaries import find_diff

    if not find_diff():
        return side
    tmp = _side_file(dest)
    try:
        tmp.write_text(side.text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Side(path, side.text, tmp)


def _side_file(dest: Path) -> Path:
    # beside the patch, under a name a later run removes if this one is killed meanwhile
    from dbsage.tools.artifacts import temp_path

    return temp_path(dest.with_name(f"{dest.name}.a"))


def diff_snapshots(before: Path | Side, after: Path, dest: Path) -> DiffResult:
    """Write the unified diff of the two snapshots' schemas (their DROP preambles left out)
    to `dest`; an unchanged schema gives an empty patch. `before` may be read already
    (read_side)."""
    text = _unified_diff(before if isinstance(before, Side) else read_side(before), after, dest)
    dest.write_text(text)
    lines = text.splitlines()
    added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    return DiffResult(dest, added, removed)


# The header pg_dump writes before the DROP run: comments, \restrict, SET and set_config lines.
_HEADER = re.compile(r"(?:(?:--|\\restrict|SET |SELECT pg_catalog\.set_config\()[^\n]*(?:\n|\Z)"
                     r"|[^\S\n]*(?:\n|\Z))*")
_PAST_HEADER = re.compile(r"^SET default_(?:tablespace|table_access_method)", re.MULTILINE)
# One run of single-line DROP commands: `DROP ...;` and `ALTER ... DROP ...;` (a line that ends
# with `;` and white space).
_DROP_RUN = re.compile(r"(?:(?:DROP |ALTER(?=[^\n]* DROP ) )[^\n]*;[^\S\n]*(?:\n|\Z))*")


def without_clean_section(text: str) -> str:
    """A `pg_dump --clean` dump without the DROP commands it starts with.

    pg_dump writes them as one run of single-line statements right after the header's SET
    lines, before the first object: `DROP <kind> IF EXISTS ...;` and `ALTER ... DROP ...;`
    (constraints, column defaults, publication members). The run ends at the first other
    line (`SET default_tablespace`, a `--` comment, a CREATE).
    """
    # Two regular expressions anchored at the top: only the header and the DROP run are
    # looked at (a 5,000-table dump is 200,000 lines, its DROP run a tenth of them), in C.
    header = _HEADER.match(text)
    assert header is not None  # the pattern matches the empty string
    start = header.end()
    if _PAST_HEADER.search(text, 0, start):
        return text  # past the header already: no DROP section
    run = _DROP_RUN.match(text, start)
    assert run is not None
    if run.end() == start:
        return text
    return text[:start] + text[run.end():]


def _unified_diff(side: Side, after: Path, dest: Path) -> str:
    before, a = side.path, side.text
    pa = side.file or _side_file(dest)  # the before side as GNU diff reads it; always deleted
    try:
        b = without_clean_section(after.read_text())
        if a == b:
            return ""
        # GNU diff is linear on large, nearly equal dumps; difflib can take seconds on
        # 100k-line snapshots, so it is only the fallback where no diff binary exists.
        from dbsage.tools.binaries import find_diff, run_child

        exe = find_diff()
        if exe:
            if side.file is None:
                pa.write_text(a)
            # the after side on standard input: it is read once and never written out
            proc = run_child([str(exe), "-u", "--label", before.name, "--label",
                              after.name, str(pa), "-"], input=b)
            if proc.returncode in (0, 1):
                return str(proc.stdout)
    finally:
        pa.unlink(missing_ok=True)
    return "".join(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                        fromfile=before.name, tofile=after.name))
