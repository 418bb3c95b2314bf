"""Read a migration file and split it with PostgreSQL's own parser (pglast), keeping file lines."""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbsage.tools.errors import MigrationFileError, TransactionShapeError

MAX_FILE_BYTES = 64 * 1024 * 1024
#: The Supabase CLI's rule for a migration file name: `<digits>_<name>.sql`. A file that does
#: not match (`20250101000000.sql`, `seed.sql`) is not a migration and has no version: the CLI
#: skips it, `status` lists it as ignored, and apply refuses it unless it is given a version.
MIGRATION_FILE_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")
_META_COMMAND = re.compile(r"^[ \t]*\\(?P<cmd>[a-zA-Z!?]+)", re.MULTILINE)

#: Statement kinds that can destroy rows or columns; tools/rollback.py looks closer at these
#: (which DROP, which ALTER TABLE sub-command, UPDATE without WHERE) and at nothing else.
DATA_DESTROYING_KINDS = frozenset({"DropStmt", "AlterTableStmt", "TruncateStmt", "DeleteStmt",
                                   "UpdateStmt"})


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a migration, located in its file."""

    index: int  # 1-based position among the statements that run
    sql: str
    line: int  # 1-based file line of its first character
    column: int  # 1-based
    end_line: int
    kind: str  # pglast node name, e.g. "CreateStmt"
    transactional: bool  # False for CREATE INDEX CONCURRENTLY, VACUUM, ...
    node: Any = field(default=None, compare=False, repr=False)

    @property
    def summary(self) -> str:
        """The statement's first line, shortened for reports."""
        first = " ".join(self.sql.split())
        return first if len(first) <= 80 else first[:77] + "..."


@dataclass(frozen=True)
class MigrationFile:
    """A parsed migration: what runs, in order, and how to record it."""

    path: Path
    text: str
    checksum: str  # sha256 of the file's bytes
    statements: tuple[Statement, ...]
    version: str | None  # the file name's leading digits, if any
    name: str
    wrapped_in_transaction: bool  # the file had an outer BEGIN; ... COMMIT;

    @property
    def transactional(self) -> bool:
        """True when every statement may run inside one transaction."""
        return all(s.transactional for s in self.statements)


def split_version_name(path: Path) -> tuple[str | None, str]:
    """`20250101000000_create_todos.sql` -> ("20250101000000", "create_todos"); a name the
    Supabase CLI would skip -> (None, its stem)."""
    m = MIGRATION_FILE_NAME.match(path.name)
    return (m[1], m[2]) if m else (None, path.stem)


def migration_version(path: Path) -> str | None:
    """The version of a migration file by the Supabase CLI's rule (None if it has none)."""
    return split_version_name(path)[0]


def why_not_a_migration(path: Path) -> str | None:
    """Why the Supabase CLI's rule (MIGRATION_FILE_NAME) does not take `path` as a migration,
    as a clause ("its name has no _<name> part after the version 20250101000000"); None when
    it does. Looks at the name only: no I/O."""
    name = path.name
    if MIGRATION_FILE_NAME.match(name):
        return None
    if not name.endswith(".sql"):
        return "its name does not end in .sql"
    stem = name.removesuffix(".sql")
    digits = re.match(r"[0-9]*", stem)
    lead = digits[0] if digits else ""
    if lead and lead == stem:
        return f"its name has no _<name> part after the version {lead}"
    if lead:
        return f"its leading digits {lead} are not followed by _"
    return "its name does not start with version digits"


def read_migration(path: str | Path) -> MigrationFile:
    """Read, decode and parse a migration. Raises MigrationFileError; touches no database."""
    p = Path(path)
    raw = _read_bytes(p)
    text = _decode(p, raw)
    statements, wrapped = parse_statements(text, str(p))
    version, name = split_version_name(p)
    return MigrationFile(p, text, hashlib.sha256(raw).hexdigest(), statements, version, name,
                         wrapped)


def _read_bytes(p: Path) -> bytes:
    if not p.exists():
        raise MigrationFileError(f"{p}: no such file.", path=str(p),
                                 hint="Check the path; migrations live in supabase/migrations/.")
    if not p.is_file():
        raise MigrationFileError(f"{p}: not a regular file.", path=str(p),
                                 hint="Give the path of one .sql migration file.")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MigrationFileError(
            f"{p}: {size} bytes is larger than the {MAX_FILE_BYTES} bytes dbsage accepts.",
            path=str(p), hint="Split the migration, or load bulk data with COPY from a file.")
    return p.read_bytes()


def _decode(p: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise MigrationFileError(
            f"{p}:{line}:{col}: the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}).",
            path=str(p), line=line, column=col,
            hint="Save the file as UTF-8 (for example: iconv -f latin1 -t utf-8).",
        ) from None
    return text.removeprefix("\ufeff")


class _Lines:
    """Offsets to 1-based (line, column)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1

    def line_text(self, line: int) -> str:
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return self.text[start:end]


def parse_statements(text: str, path: str = "<sql>") -> tuple[tuple[Statement, ...], bool]:
    """Split `text` into located statements; strip one outer BEGIN/COMMIT pair.

    Returns (statements, had_outer_transaction). Raises MigrationFileError for empty input,
    psql meta-commands, syntax errors, and TransactionShapeError for a COMMIT/ROLLBACK in the
    middle or a file mixing transactional and non-transactional statements.
    """
    from pglast import parse_sql
    from pglast.parser import ParseError

    lines = _Lines(text)
    try:
        raw_stmts = parse_sql(text)
    except ParseError as exc:
        raise _syntax_error(exc, text, lines, path) from None
    stmts = []
    for raw in raw_stmts:
        start = raw.stmt_location or 0
        sql = text[start: start + raw.stmt_len] if raw.stmt_len else text[start:]
        sql = sql.strip().rstrip(";").rstrip()
        line, col = lines.at(start)
        end_line, _ = lines.at(start + len(sql))
        stmts.append(Statement(0, sql, line, col, end_line, type(raw.stmt).__name__,
                               _is_transactional(raw.stmt), raw.stmt))
    if not stmts:
        raise MigrationFileError(f"{path}: the file contains no SQL statements.", path=path,
                                 hint="Write the migration's SQL, or delete the empty file.")
    stmts, wrapped = _strip_outer_transaction(stmts, path, lines)
    if not stmts:
        raise MigrationFileError(f"{path}: the file holds only BEGIN/COMMIT, no statements.",
                                 path=path)
    _check_transaction_shape(stmts, path, lines)
    numbered = tuple(
        Statement(i, s.sql, s.line, s.column, s.end_line, s.kind, s.transactional, s.node)
        for i, s in enumerate(stmts, 1)
    )
    return numbered, wrapped


def _syntax_error(exc: Exception, text: str, lines: _Lines, path: str) -> MigrationFileError:
    message = str(exc.args[0]) if exc.args else str(exc)
    offset = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else len(text)
    meta = _META_COMMAND.search(text)
    if meta:
        mline, _ = lines.at(meta.start())
        if mline <= lines.at(min(offset, len(text)))[0]:
            err = MigrationFileError(
                f"{path}:{mline}:1: psql meta-command \\{meta['cmd']} is not SQL; dbsage runs "
                "SQL only.",
                path=path, line=mline, column=1, source_line=lines.line_text(mline),
                hint="Inline the included file or variable; the database is chosen outside the "
                "file, not with \\connect.",
            )
            err.data["meta_command"] = meta["cmd"]
            return err
    line, col = lines.at(min(offset, max(len(text) - 1, 0)))
    return MigrationFileError(
        f"{path}:{line}:{col}: {message}", path=path, line=line, column=col,
        source_line=lines.line_text(line), hint=_suggest(text, offset),
    )


def _keywords() -> list[str]:
    from pglast import keywords

    words: set[str] = set()
    for name in ("RESERVED_KEYWORDS", "UNRESERVED_KEYWORDS", "COL_NAME_KEYWORDS",
                 "TYPE_FUNC_NAME_KEYWORDS"):
        words |= set(getattr(keywords, name, ()))
    return sorted(w.lower() for w in words)


def _suggest(text: str, offset: int) -> str | None:
    """Did-you-mean for a misspelt keyword at the error position (`tabel` -> `table`)."""
    m = re.match(r"[A-Za-z_]+", text[offset:]) if offset < len(text) else None
    if not m:
        return None
    word = m.group(0)
    close = difflib.get_close_matches(word.lower(), _keywords(), n=1, cutoff=0.75)
    if close and close[0] != word.lower():
        return f"Did you mean `{close[0]}` instead of `{word}`?"
    return None


def _txn_kind(stmt: Statement) -> str | None:
    if stmt.kind != "TransactionStmt":
        return None
    return str(stmt.node.kind.name).removeprefix("TRANS_STMT_")


def _strip_outer_transaction(stmts: list[Statement], path: str,
                             lines: _Lines) -> tuple[list[Statement], bool]:
    first, last = _txn_kind(stmts[0]), _txn_kind(stmts[-1])
    if first not in ("BEGIN", "START"):
        return stmts, False
    if last != "COMMIT" or len(stmts) < 2:
        s = stmts[0]
        raise TransactionShapeError(
            f"{path}:{s.line}: the file starts a transaction with {s.summary} but does not end "
            "with COMMIT.", path=path, line=s.line, source_line=lines.line_text(s.line),
            hint="dbsage wraps the migration in one transaction itself: remove BEGIN, or end "
            "the file with COMMIT.")
    return stmts[1:-1], True


def _check_transaction_shape(stmts: list[Statement], path: str, lines: _Lines) -> None:
    for s in stmts:
        kind = _txn_kind(s)
        if kind in ("BEGIN", "START", "COMMIT", "ROLLBACK", "PREPARE", "COMMIT_PREPARED",
                    "ROLLBACK_PREPARED"):
            raise TransactionShapeError(
                f"{path}:{s.line}: {s.summary.upper()} in the middle of the migration would end "
                "or nest dbsage's transaction, so the statements around it could not be "
                "applied (or undone) together. Nothing was run.",
                path=path, line=s.line, source_line=lines.line_text(s.line),
                hint="Remove it, or split the file into two migrations at that line.")
    non_tx = [s for s in stmts if not s.transactional]
    if non_tx and len(non_tx) != len(stmts):
        listed = "; ".join(f"line {s.line}: {s.summary}" for s in non_tx[:5])
        raise TransactionShapeError(
            f"{path}: mixes statements that cannot run inside a transaction ({listed}) with "
            "transactional ones. Nothing was run.",
            path=path, line=non_tx[0].line, source_line=lines.line_text(non_tx[0].line),
            hint="Move the non-transactional statements (CREATE INDEX CONCURRENTLY, VACUUM, "
            "...) into a migration file of their own with a later timestamp; dbsage runs such "
            "a file statement by statement outside a transaction.")


def _has_option(options: Any, name: str) -> bool:
    return any(getattr(o, "defname", None) == name for o in (options or ()))


def _is_transactional(node: Any) -> bool:
    """False for statements PostgreSQL refuses inside a transaction block."""
    kind = type(node).__name__
    if kind in ("CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt",
                "DropTableSpaceStmt", "CreateSubscriptionStmt", "DropSubscriptionStmt"):
        return False
    if kind == "VacuumStmt":
        return not node.is_vacuumcmd  # plain ANALYZE may run in a transaction
    if kind in ("IndexStmt", "DropStmt"):
        return not getattr(node, "concurrent", False)
    if kind == "ReindexStmt":
        system_wide = str(node.kind.name) in ("REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE")
        return not (system_wide or _has_option(node.params, "concurrently"))
    if kind == "AlterTableStmt":
        for cmd in node.cmds or ():
            part = getattr(cmd, "def_", None)
            if type(part).__name__ == "PartitionCmd" and getattr(part, "concurrent", False):
                return False
    return True
