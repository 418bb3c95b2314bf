"""Read a migration file and split it with PostgreSQL's own parser (pglast), keeping file lines."""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
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
    #: The pglast node, or UNPARSED until `node` is first read (then parsed from `sql`).
    tree: Any = field(default=None, compare=False, repr=False)
    #: The statement's text with its literal constants blanked (`shape_key`), or None: every
    #: statement of a file with the same shape has the same kind and structure, and differs
    #: from the others only in constant values. Analyses that do not depend on those values
    #: compute a shape once (a file of 10,000 INSERTs has one).
    shape: str | None = field(default=None, compare=False, repr=False)

    @property
    def node(self) -> Any:
        """The statement's pglast node (None for a statement made without one). Parsed from
        `sql` the first time it is read when the file's parse left it for later."""
        tree = self.tree
        if tree is UNPARSED:
            tree = parse_one(self.sql)
            object.__setattr__(self, "tree", tree)  # a cache: the statement stays the same
        return tree

    @property
    def summary(self) -> str:
        """The statement's first line, shortened for reports (worked out once: reports of a
        10,000-statement file ask for it several times each; functools.cached_property takes
        a lock for each statement's first time, which cost more than the summary)."""
        shown: str | None = self.__dict__.get("_summary")
        if shown is None:
            first = " ".join(self.sql.split())
            shown = first if len(first) <= 80 else first[:77] + "..."
            object.__setattr__(self, "_summary", shown)  # a cache: the statement stays the same
        return shown


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
    #: The file's own BEGIN/COMMIT statements, kept (and run) as written: only when it was read
    #: with its transaction control allowed and has some in the middle; else empty.
    transaction_control: tuple[Statement, ...] = ()

    @cached_property
    def transactional(self) -> bool:
        """True when every statement may run inside one transaction (of dbsage's own)."""
        return not self.transaction_control and all(s.transactional for s in self.statements)


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


#: Whether read_migration keeps a file's own mid-file BEGIN/COMMIT (to be run as written)
#: instead of refusing it; set for one run by `allowing_transaction_control`.
_TRANSACTION_CONTROL_ALLOWED: ContextVar[bool] = ContextVar("transaction_control_allowed",
                                                            default=False)


@contextmanager
def allowing_transaction_control(allowed: bool = True) -> Iterator[None]:
    """Within it, read_migration (when not told otherwise) keeps a mid-file BEGIN ... COMMIT
    instead of refusing it: the caller has chosen to run the file as psql and the Supabase CLI
    do. For callers that cannot reach read_migration's own argument."""
    token = _TRANSACTION_CONTROL_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _TRANSACTION_CONTROL_ALLOWED.reset(token)


def read_migration(path: str | Path, *,
                   allow_transaction_control: bool | None = None) -> MigrationFile:
    """Read, decode and parse a migration. Raises MigrationFileError; touches no database.

    `allow_transaction_control` (default: `allowing_transaction_control`'s choice, else
    False) keeps BEGIN/COMMIT in the middle of the file as statements to run as written
    (`MigrationFile.transaction_control`) instead of refusing the file.
    """
    p = Path(path)
    raw = _read_bytes(p)
    text = _decode(p, raw)
    allow = (_TRANSACTION_CONTROL_ALLOWED.get() if allow_transaction_control is None
             else allow_transaction_control)
    statements, wrapped = parse_statements(text, str(p), allow_transaction_control=allow)
    version, name = split_version_name(p)
    control = tuple(s for s in statements if _txn_kind(s) in _CONTROL_KINDS)
    return MigrationFile(p, text, hashlib.sha256(raw).hexdigest(), statements, version, name,
                         wrapped, control)


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


def parse_statements(text: str, path: str = "<sql>", *, allow_transaction_control: bool = False
                     ) -> tuple[tuple[Statement, ...], bool]:
    """Split `text` into located statements; strip one outer BEGIN/COMMIT pair.

    Returns (statements, had_outer_transaction). Raises MigrationFileError for empty input,
    psql meta-commands, syntax errors, NUL bytes and characters that read differently from
    how they look (`refuse_hidden_characters`), statements dbsage cannot run safely
    (`refuse_unsafe_statements`: SET ROLE, session advisory locks, COPY FROM STDIN, ...), and
    TransactionShapeError for a BEGIN/COMMIT/ROLLBACK in the middle (unless
    `allow_transaction_control`: then a balanced BEGIN ... COMMIT is kept, unstripped, to run
    as written) or a file mixing transactional and non-transactional statements.
    """
    from pglast.parser import ParseError, split

    lines = _Lines(text)
    refuse_hidden_characters(text, path, lines)
    try:
        # PostgreSQL's parser finds the statements (in C, no Python tree); each distinct
        # shape is then parsed into a tree once, and the rest of its statements only when
        # something reads their `node` (at 10,000 statements, building every tree was most
        # of dbsage's time).
        slices = split(text, only_slices=True)
    except ParseError as exc:
        raise _syntax_error(exc, text, lines, path) from None
    stmts = []
    first_of: dict[str, Statement] = {}
    starts, offsets = lines.starts, bisect.bisect_right
    for i, piece in enumerate(slices, 1):
        start = piece.start or 0
        sql = text[piece].rstrip(";").rstrip()
        row = offsets(starts, start) - 1
        col = start - starts[row] + 1
        end_line = offsets(starts, start + len(sql)) if "\n" in sql else row + 1
        key = shape_key(sql)
        same = first_of.get(key) if key is not None else None
        if same is not None:
            stmts.append(Statement(i, sql, row + 1, col, end_line, same.kind, same.transactional,
                                   UNPARSED, key))
            continue
        node = parse_one(sql)
        stmt = Statement(i, sql, row + 1, col, end_line, type(node).__name__,
                         _is_transactional(node), node, key)
        if key is not None:
            first_of[key] = stmt
        stmts.append(stmt)
    if not stmts:
        raise MigrationFileError(f"{path}: the file contains no SQL statements.", path=path,
                                 hint="Write the migration's SQL, or delete the empty file.")
    refuse_unsafe_statements(stmts, text, path, lines)
    stmts, wrapped = _strip_outer_transaction(stmts, path, lines, allow_transaction_control)
    if not stmts:
        raise MigrationFileError(f"{path}: the file holds only BEGIN/COMMIT, no statements.",
                                 path=path)
    _check_transaction_shape(stmts, path, lines)
    if not wrapped:
        return tuple(stmts), wrapped
    numbered = tuple(  # the outer BEGIN went: one less before each
        Statement(i, s.sql, s.line, s.column, s.end_line, s.kind, s.transactional, s.tree,
                  s.shape)
        for i, s in enumerate(stmts, 1)
    )
    return numbered, wrapped


#: `Statement.tree` of a statement whose tree is built when first read.
UNPARSED: Any = type("Unparsed", (), {"__repr__": lambda self: "UNPARSED"})()


def parse_one(sql: str) -> Any:
    """The pglast node of one statement that PostgreSQL's parser has already split out of a
    file (so it parses)."""
    from pglast import parse_sql

    return parse_sql(sql)[0].stmt


#: What `shape_key` blanks: a standard string constant ('it''s'; not E'', B'', X'', U&'',
#: N'', which keep their quotes) or a decimal number.
_LITERAL = re.compile(r"(?<![\w&])'[^']*(?:''[^']*)*'|(?<![\w$.])\d[\d_]*(?:\.\d*)?"
                      r"(?:[eE][+-]?\d+)?(?![\w$.])")


def shape_key(sql: str) -> str | None:
    """`sql` with its string and number constants blanked, or None when its text is not plain
    enough to be sure. Two statements with the same key are the same tokens in the same order
    apart from the values of their constants: the same kind of statement, on the same
    objects, with the same structure.

    Read left to right like PostgreSQL's lexer, a plain text's strings and numbers are found
    exactly. What is not plain (a quoted name, a dollar quote or parameter, a backslash, a
    comment, a prefixed string, a `?` operator) starts outside any string found, so once
    they are blanked it is still there, and the text has no key."""
    key = _LITERAL.sub("\x00", sql)  # NUL cannot be in a file's text (refused before)
    if ("'" in key or '"' in key or "$" in key or "\\" in key or "?" in key or "--" in key
            or "/*" in key):
        return None
    return key


def _syntax_error(exc: Exception, text: str, lines: _Lines, path: str) -> MigrationFileError:
    message = str(exc.args[0]) if exc.args else str(exc)
    offset = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else len(text)
    copy = _COPY_STDIN.search(text, 0, min(offset, len(text)))
    if copy:  # pg_dump's `COPY ... FROM stdin;` followed by its data lines and `\.`
        cline, ccol = lines.at(copy.start())
        return _refused(path, cline, ccol, lines, "COPY ... FROM STDIN", _COPY_STDIN_WHY,
                        _COPY_STDIN_HINT, "copy_stdin")
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


_OPEN_KINDS = ("BEGIN", "START")
#: TransactionStmt kinds that begin or end a transaction (savepoints nest inside dbsage's own).
_CONTROL_KINDS = frozenset({"BEGIN", "START", "COMMIT", "ROLLBACK", "PREPARE", "COMMIT_PREPARED",
                            "ROLLBACK_PREPARED"})


def _control_word(stmt: Statement) -> str:
    kind = _txn_kind(stmt) or ""
    word = {"START": "START TRANSACTION", "PREPARE": "PREPARE TRANSACTION",
            "COMMIT_PREPARED": "COMMIT PREPARED", "ROLLBACK_PREPARED": "ROLLBACK PREPARED"}.get(
        kind, kind)
    return f"{word} AND CHAIN" if getattr(stmt.node, "chain", False) else word


def transaction_control_lines(statements: tuple[Statement, ...] | list[Statement]) -> str:
    """`BEGIN at line 3, COMMIT at line 7`: a file's own transaction control, for messages."""
    return ", ".join(f"{_control_word(s)} at line {s.line}" for s in statements
                     if _txn_kind(s) in _CONTROL_KINDS)


def _strip_outer_transaction(stmts: list[Statement], path: str, lines: _Lines,
                             allow: bool = False) -> tuple[list[Statement], bool]:
    control = [s for s in stmts if _txn_kind(s) in _CONTROL_KINDS]
    if not control:
        return stmts, False
    first, last = _txn_kind(stmts[0]), _txn_kind(stmts[-1])
    if first in _OPEN_KINDS and last == "COMMIT" and len(stmts) >= 2 and len(control) == 2:
        return stmts[1:-1], True  # one outer BEGIN; ... COMMIT; around the whole body
    if first in _OPEN_KINDS and len(control) == 1:
        s = stmts[0]
        raise TransactionShapeError(
            f"{path}:{s.line}: the file starts a transaction with {s.summary} but does not end "
            "with COMMIT.", path=path, line=s.line, source_line=lines.line_text(s.line),
            hint="dbsage wraps the migration in one transaction itself: remove BEGIN, or end "
            "the file with COMMIT.")
    problem = _run_as_written_problem(control)
    if allow and problem is None:
        return stmts, False  # kept as written: the file's own BEGIN/COMMIT decide
    outer = first in _OPEN_KINDS and last == "COMMIT"
    s = control[1] if outer else control[0]  # the first one dbsage's transaction cannot hold
    listed = transaction_control_lines(control)
    word = _control_word(s)
    verb = "nest inside" if _txn_kind(s) in _OPEN_KINDS else "end"
    if allow:  # asked to run it as written, but even that would not be safe
        assert problem is not None
        refused = TransactionShapeError(
            f"{path}:{problem[0].line}: {problem[1]}; the file's transaction control: "
            f"{listed}. Nothing was run.",
            path=path, line=problem[0].line, source_line=lines.line_text(problem[0].line),
            hint="Run as written, a file may only BEGIN ... COMMIT (each BEGIN closed by a "
            "COMMIT before the next one and before the end). Remove the rest, or split the "
            "file into migrations at those lines.")
        refused.data["transaction_control"] = _control_data(control)
        raise refused
    err = TransactionShapeError(
        f"{path}:{s.line}: the file controls its own transactions in the middle ({listed}): "
        f"the {word} at line {s.line} would {verb} the one transaction dbsage applies a file "
        "in, so the statements around it could not be applied (or undone) together. Nothing "
        "was run.",
        path=path, line=s.line, source_line=lines.line_text(s.line),
        hint="Remove them (dbsage's transaction already covers the whole file), or split the "
        "file into migrations at those lines." + ("" if problem else
        " Or run it as psql and the Supabase CLI do, by allowing its transaction control: "
        "statement by statement, its own BEGIN ... COMMIT deciding what commits together, "
        "the history recorded only if every part committed; a failure after a COMMIT then "
        "leaves the part before it applied."))
    err.data["transaction_control"] = _control_data(control)
    err.data["run_as_written"] = problem is None  # whether allowing it would run it
    raise err


def _control_data(control: list[Statement]) -> list[dict[str, Any]]:
    return [{"statement": _control_word(s), "line": s.line} for s in control]


def _run_as_written_problem(control: list[Statement]) -> tuple[Statement, str] | None:
    """Why the file's transaction control cannot be run as written (statement by statement,
    recording the history only if every part committed), or None when it can."""
    open_at: Statement | None = None
    for s in control:
        kind = _txn_kind(s)
        if getattr(s.node, "chain", False) or kind not in (*_OPEN_KINDS, "COMMIT"):
            return s, (f"{_control_word(s)} at line {s.line} would leave part of the file "
                       "uncommitted (or prepared for later) on purpose, so dbsage could not "
                       "record the migration as applied")
        if kind in _OPEN_KINDS:
            if open_at is not None:
                return s, (f"BEGIN at line {s.line} is inside the transaction begun at line "
                           f"{open_at.line} (PostgreSQL ignores it; its COMMIT would end both)")
            open_at = s
        else:
            open_at = None  # a COMMIT with no transaction open only draws a warning
    if open_at is not None:
        return open_at, (f"the transaction begun at line {open_at.line} is never committed "
                         "(it would be rolled back at the end of the session)")
    return None


def _check_transaction_shape(stmts: list[Statement], path: str, lines: _Lines) -> None:
    if any(_txn_kind(s) in _CONTROL_KINDS for s in stmts):
        return  # kept to run as written (read with its transaction control allowed)
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


# --------------------------------------------------------------------------- what cannot run safely

#: Characters that make an editor (or a code review) show the text in another order than the
#: one PostgreSQL reads ("Trojan Source"): refused anywhere, strings and comments included.
_BIDI_CHARS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_BIDI_CONTROLS = re.compile(f"[{_BIDI_CHARS}]")
#: Characters that show as nothing (or as a line break) but that PostgreSQL reads as part of
#: the name around them: refused outside string literals and comments.
_INVISIBLE_CHARS = "\u200b\u2060\ufeff\u00ad\u2028\u2029\u0085"
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]")
_TEXT_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "SQL_COMMENT", "C_COMMENT"})


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def _shown(line: str) -> str:
    """A source line with the characters that cannot be shown as one replacement mark each
    (so a caret under the column still points at it)."""
    return re.sub("[\x00\u202a-\u202e\u2066-\u2069\u200b\u2060\ufeff\u00ad\u2028\u2029\u0085]",
                  "\ufffd", line)


def refuse_hidden_characters(text: str, path: str = "<sql>", lines: _Lines | None = None
                             ) -> None:
    """Refuse text that PostgreSQL would not read the way it looks, with file:line:col.

    A NUL byte ends the text for PostgreSQL's parser (everything after it would be silently
    left out); a bidirectional control character makes editors show the text in another
    order than the one the server reads; an invisible character (zero-width space, word
    joiner, a byte-order mark, a soft hyphen, a Unicode line separator) outside a string or
    comment becomes part of a name. Raises MigrationFileError; touches no database.
    """
    lines = lines or _Lines(text)
    nul = text.find("\x00")
    if nul >= 0:
        line, col = lines.at(nul)
        raise MigrationFileError(
            f"{path}:{line}:{col}: the file holds a NUL byte: PostgreSQL's parser stops "
            "reading at it, so everything after it would be silently left out. Nothing was run.",
            path=path, line=line, column=col, source_line=_shown(lines.line_text(line)),
            hint="Remove it: a NUL byte has no place in SQL text (files saved as UTF-16, or "
            "mangled by a tool, hold them).")
    # `in` first: a character-class regex over a 1 MB file costs ~15 ms, nine `in`s ~1 ms
    bidi = _BIDI_CONTROLS.search(text) if any(c in text for c in _BIDI_CHARS) else None
    if bidi:
        line, col = lines.at(bidi.start())
        raise MigrationFileError(
            f"{path}:{line}:{col}: {_char_name(bidi[0])} is a bidirectional control character: "
            "it makes editors and code review show the text around it in another order than "
            "the one PostgreSQL reads. Nothing was run.",
            path=path, line=line, column=col, source_line=_shown(lines.line_text(line)),
            hint=f"Remove it. In a string value, write it as an escape: U&'\\{ord(bidi[0]):04X}'.")
    if not any(c in text for c in _INVISIBLE_CHARS):
        return
    tokens = _text_token_spans(text)
    for m in _INVISIBLE.finditer(text):
        if tokens is not None and _inside(tokens, m.start()):
            continue  # data in a string, or a comment: kept as written
        line, col = lines.at(m.start())
        around = re.search(r"\S*\Z", text[max(0, m.start() - 40):m.start()])
        after = re.match(r"\S*", text[m.end():m.end() + 40])
        word = (around[0] if around else "") + "\u2038" + (after[0] if after else "")
        raise MigrationFileError(
            f"{path}:{line}:{col}: {_char_name(m[0])} shows as nothing, but PostgreSQL reads it "
            f"as part of the name around it ({_shown(word)}, at the mark), so the statement "
            "would not do what it looks like. Nothing was run.",
            path=path, line=line, column=col, source_line=_shown(lines.line_text(line)),
            hint="Remove it (an editor or a copy from a web page put it there). Inside a "
            "string value or a comment it is kept as written.")


def _text_token_spans(text: str) -> list[tuple[int, int]] | None:
    """(start, end) of every string literal and comment, in order; None if unscannable."""
    from pglast.parser import scan

    try:
        return [(t.start, t.end) for t in scan(text) if t.name in _TEXT_TOKENS]
    except Exception:  # pglast's scanner failing is not the user's problem: refuse anyway
        return None


def _inside(spans: list[tuple[int, int]], offset: int) -> bool:
    i = bisect.bisect_right(spans, (offset, 1 << 62)) - 1
    return i >= 0 and spans[i][0] <= offset <= spans[i][1]


_NODE_TYPE: list[type] = []  # pglast.ast.Node, once pglast is imported
_CHILD_SLOTS: dict[type, tuple[str, ...]] = {}  # per node class: the fields that hold nodes


def _child_slots(cls: type) -> tuple[str, ...]:
    """The fields of a pglast node class that can hold nodes or lists of them (by pglast's own
    slot type information; a field without it is looked at anyway)."""
    node_type = _NODE_TYPE[0]
    names = []
    for name, info in cls.__slots__.items():  # type: ignore[attr-defined]
        kinds = getattr(info, "py_type", None)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if any(k is None or k in (list, tuple) or (isinstance(k, type)
                                                   and issubclass(k, node_type))
               for k in kinds):
            names.append(name)
    _CHILD_SLOTS[cls] = slots = tuple(names)
    return slots


def walk(node: Any) -> Iterator[Any]:
    """Every pglast node below (and including) `node`, depth first, parents before children
    and children in field order: the one walker the analyses share.

    A loop over an explicit stack, visiting only the fields pglast says can hold nodes, rather
    than recursion or pglast.visitors (which tracks each node's path and ancestors): analysis
    walks every statement several times, and at 10,000 statements the walk was most of
    dbsage's time."""
    if not _NODE_TYPE:
        from pglast import ast

        _NODE_TYPE.append(ast.Node)
    node_type = _NODE_TYPE[0]
    child_slots = _CHILD_SLOTS
    stack = [node]
    pop, extend = stack.pop, stack.extend
    while stack:
        n = pop()
        if isinstance(n, node_type):
            yield n
            cls = type(n)
            slots = child_slots.get(cls)
            if slots is None:
                slots = _child_slots(cls)
            if slots:
                children = [c for c in (getattr(n, a, None) for a in slots) if c is not None]
                children.reverse()
                extend(children)
        elif isinstance(n, list | tuple):
            extend(reversed(n))


#: Statements whose expressions are stored to run later (a view, a function, a policy, a
#: default), not run now: a call in them is not a call the migration makes.
_DEFINING_KINDS = frozenset({"ViewStmt", "CreateFunctionStmt", "RuleStmt", "CreateTrigStmt",
                             "CreatePolicyStmt", "AlterPolicyStmt", "CreateStmt",
                             "CreateDomainStmt", "IndexStmt", "CommentStmt", "CreateStatsStmt",
                             "CreateEventTrigStmt", "DefineStmt", "CreateCastStmt"})


def called_functions(stmt: Statement) -> Iterator[tuple[str, Any]]:
    """The functions `stmt` calls when it runs: (lower-case name, pglast FuncCall) for each
    call in its expressions; none for a statement that stores expressions to run later
    (CREATE VIEW, FUNCTION, POLICY, TABLE defaults, ...)."""
    if stmt.tree is None or stmt.kind in _DEFINING_KINDS:
        return
    for n in walk(stmt.node):
        if type(n).__name__ == "FuncCall":
            last = n.funcname[-1]
            yield str(getattr(last, "sval", last)).lower(), n


def constant_text(node: Any) -> str | None:
    """The text of a string (or other) constant argument, None for an expression."""
    if type(node).__name__ == "TypeCast":
        node = node.arg
    if type(node).__name__ != "A_Const" or node.isnull:
        return None
    val = node.val
    for attr in ("sval", "ival", "fval", "boolval"):
        if hasattr(val, attr):
            return str(getattr(val, attr))
    return None


def do_block_body(stmt: Statement) -> tuple[str, int] | None:
    """A DO block's code and its offset within `stmt.sql` (None for other statements)."""
    if stmt.kind != "DoStmt" or stmt.tree is None:
        return None
    for arg in stmt.node.args or ():
        if getattr(arg, "defname", None) == "as":
            body = str(getattr(arg.arg, "sval", ""))
            return body, max(stmt.sql.find(body), 0)
    return None


def line_in(stmt: Statement, offset: int) -> int:
    """The file line of a character offset within `stmt.sql`."""
    return stmt.line + stmt.sql.count("\n", 0, max(offset, 0))


_SESSION_LOCK_FUNCTIONS = frozenset({
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all"})
_IDENTITY_SETTINGS = {"role": "the role the session acts as",
                      "session_authorization": "the user (and role) the session acts as"}
#: The same, in a DO block's PL/pgSQL (which pglast does not parse): a text match.
_REFUSED_IN_CODE = re.compile(
    r"(?i)\b(?P<lock>pg_advisory_(?:unlock(?:_shared|_all)?|lock(?:_shared)?)|"
    r"pg_try_advisory_lock(?:_shared)?)\s*\(|"
    r"(?P<role>\bset\s+(?:local\s+|session\s+)?role\b|\bsession\s+authorization\b|"
    r"\breset\s+role\b)|(?P<reset>\breset\s+all\b)|(?P<discard>\bdiscard\s+(?:all|plans|"
    r"sequences|temp|temporary)\b)")
_COPY_STDIN = re.compile(r"(?im)^[ \t]*copy\b[^;]*?\bfrom\s+stdin\b")
_COPY_STDIN_WHY = ("reads its rows from the client (psql sends the lines that follow it); "
                   "dbsage sends statements only, so it would fail mid-migration")
_COPY_STDIN_HINT = ("Load data from a client with psql's \\copy (it reads a file on your "
                    "machine), or as INSERT statements in a seed (supabase/seed.sql); keep the "
                    "migration to the schema.")
_ROLE_WHY = ("changes {what}: the statements after it, and the history "
             "row dbsage writes with them, would run as another role (the history as one that "
             "may not write it)")
_ROLE_HINT = ("Remove it: a migration runs as the role you connect as. To give an object to "
              "another role, ALTER ... OWNER TO it after creating it; to act as one inside a "
              "function, make the function SECURITY DEFINER.")
_LOCK_WHY = ("takes or releases a session-level advisory lock: an unlock can release the lock "
             "dbsage holds so that no second migration runs at the same time, and a lock would "
             "stay held by dbsage's session after the migration")
_LOCK_HINT = ("Remove it. To serialise with other work inside the migration, use "
              "pg_advisory_xact_lock(), which ends with the transaction.")
_RESET_WHY = ("undoes every setting of the session, dbsage's lock_timeout and "
              "statement_timeout among them, for the statements after it")
_RESET_HINT = "Reset what the file changed by name (RESET search_path), or remove it."
_DISCARD_WHY = "resets the session dbsage runs the migration and its history on"
_DISCARD_HINT = "Remove it: nothing a migration does needs it."
_SCS_WHY = ("makes the server read backslashes in every later string as escapes, differently "
            "from how PostgreSQL's own parser (with the default, on) split and located the "
            "statements dbsage sends")
_SCS_HINT = "Remove it, and write escapes in E'...' strings."


def _refused(path: str, line: int, column: int | None, lines: _Lines, what: str, why: str,
             hint: str, key: str) -> MigrationFileError:
    err = MigrationFileError(f"{path}:{line}: {what} {why}. Nothing was run.", path=path,
                             line=line, column=column, source_line=lines.line_text(line),
                             hint=hint)
    err.data["refused"] = key
    return err


_REFUSE_LOOKS_AT = frozenset({"VariableSetStmt", "DiscardStmt", "CopyStmt"})


def refuse_unsafe_statements(stmts: list[Statement], text: str, path: str,
                             lines: _Lines) -> None:
    """Refuse, before anything runs, the statements dbsage cannot run safely in a migration.

    SET/RESET ROLE and SESSION AUTHORIZATION (and set_config of them): the history would be
    written as another role; RESET ALL and DISCARD: they undo dbsage's session settings;
    session-level advisory lock functions: an unlock releases dbsage's own migration lock;
    COPY FROM STDIN / TO STDOUT: the client side of COPY is not there; standard_conforming_
    strings off: later strings would be read differently from how the file was split. Calls
    are looked for in what a statement runs now (not in a view or function it defines) and
    in DO blocks. Raises MigrationFileError (exit 2) naming the line.
    """
    low = text.lower()
    calls = "advisory" in low or "set_config" in low
    for s in stmts:
        kind = s.kind
        node = s.node if kind in _REFUSE_LOOKS_AT else None  # others' trees wait (unparsed)
        if kind == "VariableSetStmt" and node is not None:
            _refuse_setting(s, node, path, lines)
        elif kind == "DiscardStmt" and node is not None:
            target = str(node.target.name).removeprefix("DISCARD_")
            raise _refused(path, s.line, s.column, lines, f"DISCARD {target}", _DISCARD_WHY,
                           _DISCARD_HINT, "discard")
        elif kind == "CopyStmt" and node is not None and node.filename is None \
                and not node.is_program:
            what, why = (("COPY ... FROM STDIN", _COPY_STDIN_WHY) if node.is_from else
                         ("COPY ... TO STDOUT", "sends its rows to the client, which dbsage "
                          "does not read, so it would fail mid-migration"))
            raise _refused(path, s.line, s.column, lines, what, why, _COPY_STDIN_HINT,
                           "copy_stdin" if node.is_from else "copy_stdout")
        if calls and ("advisory" in (sql := s.sql.lower()) or "set_config" in sql):
            for name, call in called_functions(s):
                _refuse_call(s, name, call, path, lines)
        body = do_block_body(s)
        if body is not None:
            _refuse_in_code(s, *body, path, lines)


def _refuse_setting(s: Statement, node: Any, path: str, lines: _Lines) -> None:
    kind = str(node.kind.name)
    name = str(node.name or "").lower()
    # RESET ALL is allowed (supabase db dump writes it): the analysis marks it as changing
    # every setting, the executor then sets dbsage's lock_timeout and statement_timeout again,
    # and the history is written after RESET ROLE.
    if name in _IDENTITY_SETTINGS:
        verb = "RESET" if kind == "VAR_RESET" else "SET"
        what = f"{verb} {'ROLE' if name == 'role' else 'SESSION AUTHORIZATION'}"
        raise _refused(path, s.line, s.column, lines, what,
                       _ROLE_WHY.format(what=_IDENTITY_SETTINGS[name]), _ROLE_HINT, "role")
    if name == "standard_conforming_strings" and kind == "VAR_SET_VALUE":
        value = " ".join(constant_text(a) or "" for a in node.args or ()).strip().lower()
        if value in ("off", "false", "0", "no"):
            raise _refused(path, s.line, s.column, lines,
                           "SET standard_conforming_strings = off", _SCS_WHY, _SCS_HINT,
                           "standard_conforming_strings")


def _refuse_call(s: Statement, name: str, call: Any, path: str, lines: _Lines) -> None:
    if name in _SESSION_LOCK_FUNCTIONS:
        raise _refused(path, line_in(s, s.sql.lower().find(name)), None, lines, f"{name}()",
                       _LOCK_WHY, _LOCK_HINT, "advisory_lock")
    if name == "set_config" and call.args:
        setting = (constant_text(call.args[0]) or "").lower()
        line = line_in(s, s.sql.lower().find("set_config"))
        if setting in _IDENTITY_SETTINGS:
            raise _refused(path, line, None, lines, f"set_config('{setting}', ...)",
                           _ROLE_WHY.format(what=_IDENTITY_SETTINGS[setting]), _ROLE_HINT,
                           "role")
        value = (constant_text(call.args[1]) or "").lower() if len(call.args) > 1 else ""
        if setting == "standard_conforming_strings" and value in ("off", "false", "0", "no"):
            raise _refused(path, line, None, lines,
                           "set_config('standard_conforming_strings', 'off', ...)", _SCS_WHY,
                           _SCS_HINT, "standard_conforming_strings")


def _refuse_in_code(s: Statement, body: str, offset: int, path: str, lines: _Lines) -> None:
    m = _REFUSED_IN_CODE.search(body)
    if m is None:
        return
    line = line_in(s, offset + m.start())
    found = " ".join(m[0].split()).rstrip("( ")
    if m["lock"]:
        why, hint, key = _LOCK_WHY, _LOCK_HINT, "advisory_lock"
        found += "()"
    elif m["role"]:
        setting = "session_authorization" if "authorization" in found.lower() else "role"
        why, hint, key = _ROLE_WHY.format(what=_IDENTITY_SETTINGS[setting]), _ROLE_HINT, "role"
    elif m["reset"]:
        why, hint, key = _RESET_WHY, _RESET_HINT, "reset_all"
    else:
        why, hint, key = _DISCARD_WHY, _DISCARD_HINT, "discard"
    raise _refused(path, line, None, lines, f"{found} (in the DO block at line {s.line})", why,
                   hint, key)
