"""supabase/migrations/ as the Supabase CLI lists it, and each file read once: its checksum
and whether PostgreSQL's grammar accepts it.

The first thing `dbsage up` does, before anything touches the database (the early
before-snapshot starts right after): kept apart from tools/batch.py, whose applying, dry-run,
baseline, repair and status code (and its dataclasses, ~20 ms to import) is not needed yet.
The file-name rule is tools/sqlfile.py's (MIGRATION_FILE_NAME); tools/batch.py re-exports
these names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from dbsage.tools.errors import MigrationFileError
from dbsage.tools.sqlfile import MIGRATION_FILE_NAME

__all__ = ["MIGRATIONS_DIR", "LocalFile", "LocalMigration", "LocalMigrations",
           "full_read_error", "list_local_migrations", "read_local_file", "syntax_error"]

MIGRATIONS_DIR = Path("supabase") / "migrations"
#: The CLI skips a first file `<ts>_init.sql` older than this (its own deprecated layout).
_LEGACY_INIT = re.compile(r"([0-9]{14})_init\.sql")
_LEGACY_INIT_BEFORE = 20211209000000


# --------------------------------------------------------------------------- the local files


@dataclass(frozen=True)
class LocalMigration:
    """One file of supabase/migrations/ the CLI takes as a migration."""

    path: Path
    version: str
    name: str


@dataclass(frozen=True)
class LocalMigrations:
    """supabase/migrations/ as the Supabase CLI reads it."""

    folder: Path
    files: tuple[LocalMigration, ...]  # sorted by file name, as the CLI's ReadDir gives them
    ignored: tuple[str, ...] = ()  # names the CLI's rule skips
    skipped_init: str | None = None  # a legacy `<ts>_init.sql` first file the CLI skips
    duplicates: tuple[str, ...] = ()  # files whose version an earlier file already has

    @property
    def exists(self) -> bool:
        return self.folder.is_dir()


def list_local_migrations(project_dir: Path) -> LocalMigrations:
    """The migration files of `<project_dir>/supabase/migrations/` by the CLI's rule (no file
    is read)."""
    folder = project_dir / MIGRATIONS_DIR
    if not folder.is_dir():
        return LocalMigrations(folder, ())
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    files: list[LocalMigration] = []
    ignored: list[str] = []
    duplicates: list[str] = []
    skipped: str | None = None
    seen: set[str] = set()
    for i, p in enumerate(entries):
        if p.is_dir():
            continue
        legacy = _LEGACY_INIT.fullmatch(p.name)
        if i == 0 and legacy and int(legacy[1]) < _LEGACY_INIT_BEFORE:
            skipped = p.name
            continue
        m = MIGRATION_FILE_NAME.match(p.name)
        if m is None:
            ignored.append(p.name)
            continue
        if m[1] in seen:
            duplicates.append(p.name)
        seen.add(m[1])
        files.append(LocalMigration(p, m[1], m[2]))
    return LocalMigrations(folder, tuple(files), tuple(ignored), skipped, tuple(duplicates))


@dataclass(frozen=True)
class LocalFile:
    """A migration file's bytes as read once: its sha256 and whether PostgreSQL's grammar
    accepts it (None when it does)."""

    migration: LocalMigration
    checksum: str
    syntax_error: MigrationFileError | None


def read_local_file(local: LocalMigration) -> LocalFile:
    """Read one file and check its syntax with PostgreSQL's own parser (libpg_query, no
    syntax tree built: about 30 µs for a small file). A file that cannot be read or decoded,
    or does not parse, carries the MigrationFileError a full read would raise (file:line:col,
    the line, a suggestion)."""
    try:
        raw = local.path.read_bytes()
    except OSError:
        return LocalFile(local, "", full_read_error(local.path))
    checksum = hashlib.sha256(raw).hexdigest()
    error = syntax_error(local.path, raw)
    return LocalFile(local, checksum, error)


def syntax_error(path: Path, raw: bytes) -> MigrationFileError | None:
    """None when `raw` decodes as UTF-8 and parses; else the located error of read_migration."""
    from pglast import parser

    try:
        parser.parse_sql_json(raw.decode("utf-8").removeprefix("\ufeff"))
        return None
    except (UnicodeDecodeError, parser.ParseError):
        return full_read_error(path)


def full_read_error(path: Path) -> MigrationFileError:
    from dbsage.tools.sqlfile import read_migration

    try:
        read_migration(path)
    except MigrationFileError as exc:
        return exc
    return MigrationFileError(f"{path}: the file could not be read.", path=str(path))
