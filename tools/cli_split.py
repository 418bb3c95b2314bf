"""Split SQL exactly as the Supabase CLI does before it records ``schema_migrations.statements``.

Source read: github.com/supabase/cli, commit 1d1e7191268e068fe9cb6aba524d1c619a9c727b (tag v2.104.0,
2026-06-01), files ``apps/cli-go/pkg/parser/state.go`` and ``token.go`` (``Split``/``SplitAndTrim``),
``apps/cli-go/pkg/migration/file.go`` and ``history.go``. The splitter has not changed its output
since the CLI began storing statements (v1.67.0) except for one rule, the BEGIN ATOMIC test,
fixed in v2.91.1 (commit 3be2887e, "fix: atomic parser"); ``legacy_begin_atomic=True`` gives the
older rule, so rows written by CLI v1.67.0 .. v2.91.0 can be recognised too.

What the CLI does with a migration file (``db push``, ``migration up``, ``migration repair
--status applied``, ``db pull``, ``migration squash`` all go through ``parser.SplitAndTrim``):

1. The file's text is cut into raw tokens by a character state machine. A token ends *after*
   a ``;`` read in the ready state; whatever is left at end of file is the last token. Nothing
   is removed: comments, blank lines and the ``;`` stay in the raw token.
2. Every raw token is trimmed: first all trailing ``;`` are cut (Go ``strings.TrimRight(t,
   ";")``), then leading and trailing white space (Go ``strings.TrimSpace``, i.e. Unicode
   White_Space plus U+0085). Tokens that are empty after trimming are dropped, so empty
   statements (``;;``), a bare ``;`` and white space after the last ``;`` vanish; a comment after
   the last ``;`` stays as a statement of its own (``-- done``). Comments *before* a statement
   belong to it: ``-- c\\nSELECT 1;`` gives ``["-- c\\nSELECT 1"]``. ``BEGIN;`` and ``COMMIT;``
   are statements like any other (``BEGIN``, ``COMMIT``).

The state machine (ready is the start state; "back to ready" means the character that ended a
state is examined again by the ready state unless said otherwise):

* ready: ``;`` ends the token. ``'`` and ``"`` open a quote. ``$`` opens a tag. ``-`` may open a
  line comment, ``/`` a block comment. ``\\`` makes the next character ordinary (so ``\\;``
  never ends a token and ``\\'`` opens nothing). ``(`` opens a group closed by ``)``. A ``c``/``C``
  that completes ``BEGIN``, at least one white-space character, ``ATOMIC`` (case-insensitive,
  no comment between, no letter, digit, ``_`` or ``$`` right before ``BEGIN``; what follows
  ``ATOMIC`` is not looked at), all within the current token, opens a group closed by ``END``.
* quote (``'...'`` or ``"..."``): only the same quote character matters; a doubled quote stays
  inside. Backslashes mean nothing inside quotes, ``E'...'`` included: ``E'it\\'s'`` closes at
  ``\\'`` and the following ``'`` opens a new quote (the CLI's behaviour, not PostgreSQL's).
* tag: after ``$``, ASCII letters, digits and ``_`` extend the tag; a second ``$`` opens a
  dollar-quoted string whose closing delimiter is the whole tag text (``$$``, ``$fn$``); any
  other character goes back to ready, so ``$1`` and ``$`` in ``"$"`` are harmless. Tags may
  start with a digit, and ``a$b$`` (a ``$`` inside an identifier) also opens a dollar quote.
  A non-ASCII character ends the tag (``$é$`` opens nothing): the Go loop advances one byte
  at a time and sees U+FFFD for each continuation byte of a multi-byte character.
* dollar quote: nothing is special until the token text ends with the delimiter again; the
  delimiter may overlap its own opening (``$a$a$`` is opened and closed). Back to ready without
  re-examining the closing character.
* line comment: ``--`` runs to the next ``\\n`` (CRLF works: the ``\\r`` stays in the text).
  A single ``-`` is ordinary.
* block comment: ``/*`` ... ``*/``, nested ``/*`` counted; matching looks at the last two
  characters only, so ``/*/`` opens and closes at once. A single ``/`` is ordinary.
* groups: inside ``( ... )`` and ``BEGIN ATOMIC ... END`` a ``;`` does not end the token; quotes,
  tags and comments are tracked inside. A group closes when, in the ready state, the token text
  ends with its closer (``END`` case-insensitively and anywhere, so ``append`` or ``weekend``
  closes a BEGIN ATOMIC body). Groups nest, but one ``)`` closes every group whose closer the
  text then ends with, so ``((a) ; b)`` splits after ``(a)``. A ``;`` inside a group leaves the
  inner state as it was: ``-;-`` inside parentheses starts a line comment and ``'a';'`` inside
  parentheses stays one quoted run.
* legacy BEGIN ATOMIC rule (CLI v1.64.2 .. v2.91.0): any ``c``/``C`` that makes the token text end
  with ``atomic`` (case-insensitive), even inside an identifier such as ``fn_atomic``, opens a
  group closed by ``END``.
* psql meta-commands (``\\connect``, ``\\set``) get no special treatment: they stay in the text of
  the next statement. There is no cap on statement count and no special case for ``COPY ...
  FROM stdin``.

Scanner limit: the CLI reads through Go's ``bufio.Scanner``. With a capacity C (default
256 KiB, ``SUPABASE_SCANNER_BUFFER_SIZE``; for a migration file the CLI raises it to the file
size unless that variable is set) and E = max(C, 4096), a ``;``-terminated raw token longer than
E bytes, or a final unterminated rest of at least E bytes, fails the whole split. Pass
``scanner_capacity`` to reproduce that; the default (None) never fails.

Give the text exactly as the file's bytes decode: read with ``newline=""`` (or decode the bytes)
so CRLF line ends are not rewritten, since the CLI keeps ``\\r`` inside statements.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

CLI_REPOSITORY = "supabase/cli"
CLI_COMMIT = "1d1e7191268e068fe9cb6aba524d1c619a9c727b"
CLI_VERSION = "v2.104.0"
#: First CLI release whose BEGIN ATOMIC rule ``split_like_cli`` follows by default.
CLI_ATOMIC_FIX_VERSION = "v2.91.1"
#: Go's ``parser.MaxScannerCapacity`` default (bytes).
MAX_SCANNER_CAPACITY = 256 * 1024
#: Go's ``bufio`` start buffer; the scanner never fails below this size.
_START_BUF_SIZE = 4096

# Go's unicode.IsSpace, which strings.TrimSpace and bytes.TrimRightFunc(unicode.IsSpace) use.
# (Python's str.isspace() differs: it also counts U+001C..U+001F.)
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + \
    "\u2028\u2029\u202f\u205f\u3000"

# Lexical states. A state is (kind, number, text):
#   READY   (READY, 0, "")
#   DASH    (DASH, 0, "")             one "-" seen
#   BLOCK   (BLOCK, depth, "")        depth 0: one "/" seen; >0: inside /* */
#   QUOTE   (QUOTE, closed, quote)    closed=1: the quote char was just seen (maybe doubled)
#   UNTIL   (UNTIL, 0, delimiter)     dollar-quoted body or line comment (delimiter "\n")
#   TAG     (TAG, start, "")          "$" seen at index start, reading the tag
#   ESCAPE  (ESCAPE, 0, "")           "\" seen: the next character is skipped
_READY, _DASH, _BLOCK, _QUOTE, _UNTIL, _TAG, _ESCAPE = range(7)
_State = tuple[int, int, str]
_READY_STATE: _State = (_READY, 0, "")


class ScannerTokenTooLong(ValueError):
    """The CLI would fail with ``bufio.Scanner: token too long``.

    ``statements`` holds what the CLI had split (and trimmed, for ``split_like_cli``) before it.
    """

    def __init__(self, statements: list[str], token_bytes: int, limit: int) -> None:
        super().__init__(f"bufio.Scanner: token too long: {token_bytes} bytes at or over the "
                         f"{limit}-byte scanner buffer after statement {len(statements)}")
        self.statements = statements
        self.token_bytes = token_bytes
        self.limit = limit


def _is_word_char(ch: str) -> bool:
    """Go's unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_'."""
    if ch == "_":
        return True
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd"


def _is_identifier_char(ch: str) -> bool:
    return ch == "$" or _is_word_char(ch)


def _ends_with_fold(text: str, start: int, end: int, word: str) -> bool:
    """Does text[start:end] end with the ASCII word, ignoring case?"""
    begin = end - len(word)
    if begin < start:
        return False
    window = text[begin:end]
    return window.isascii() and window.lower() == word.lower()


def _completes_begin_atomic(text: str, start: int, end: int, legacy: bool) -> bool:
    """Does the token text[start:end] (just read a c/C) end a BEGIN ATOMIC opener?"""
    if not _ends_with_fold(text, start, end, "atomic"):
        return False
    if legacy:
        return True
    atomic_at = end - len("atomic")
    if atomic_at > start and _is_identifier_char(text[atomic_at - 1]):
        return False
    before = atomic_at
    while before > start and text[before - 1] in _GO_SPACE:
        before -= 1
    if not _ends_with_fold(text, start, before, "begin"):
        return False
    begin_at = before - len("begin")
    return begin_at == start or not _is_identifier_char(text[begin_at - 1])


def _from_ready(text: str, start: int, i: int, legacy: bool) -> _State | str | None:
    """The ready state's move on text[i]: a new state, a group closer to open, or None for ``;``."""
    ch = text[i]
    if ch == ";":
        return None
    if ch == "'" or ch == '"':
        return (_QUOTE, 0, ch)
    if ch == "$":
        return (_TAG, i, "")
    if ch == "-":
        return (_DASH, 0, "")
    if ch == "/":
        return (_BLOCK, 0, "")
    if ch == "\\":
        return (_ESCAPE, 0, "")
    if ch == "(":
        return ")"
    if ch in "cC" and _completes_begin_atomic(text, start, i + 1, legacy):
        return "END"
    return _READY_STATE


def _move(state: _State, text: str, start: int, i: int, legacy: bool) -> _State | str | None:
    """One character of the lexical machine, for the token that began at ``start``."""
    kind, number, delimiter = state
    ch = text[i]
    if kind == _READY:
        return _from_ready(text, start, i, legacy)
    if kind == _QUOTE:
        if number:  # the quote char was just seen: doubled stays inside, anything else leaves
            return (_QUOTE, 0, delimiter) if ch == delimiter else _from_ready(text, start, i, legacy)
        return (_QUOTE, 1, delimiter) if ch == delimiter else state
    if kind == _UNTIL:
        return _READY_STATE if text.startswith(delimiter, i + 1 - len(delimiter)) else state
    if kind == _TAG:
        if ch == "$":
            return (_UNTIL, 0, text[number:i + 1])
        if not ch.isascii():
            # the CLI's scanner loop steps one byte at a time and sees U+FFFD for each
            # continuation byte of a multi-byte character, which ends the tag
            return _READY_STATE
        return state if _is_word_char(ch) else _from_ready(text, start, i, legacy)
    if kind == _DASH:
        return (_UNTIL, 0, "\n") if ch == "-" else _from_ready(text, start, i, legacy)
    if kind == _BLOCK:
        pair = text[i - 1:i + 1]
        if pair == "/*":
            return (_BLOCK, number + 1, "")
        if number == 0:
            return _from_ready(text, start, i, legacy)
        if pair == "*/":
            return _READY_STATE if number == 1 else (_BLOCK, number - 1, "")
        return state
    return _READY_STATE  # _ESCAPE: the escaped character is consumed as it is


#: The characters the ready state does anything with (the rest leave it as it is): what opens
#: a state or a group, and what can complete a group's closer (``)``, the ``d`` of ``END``).
_READY_SPECIAL = re.compile(r"[;'\"$\-/\\(cC)dD]")


def _raw_spans(text: str, legacy: bool) -> list[tuple[int, int, bool]]:
    """(start, end, ended_by_separator) of each raw token: the CLI's ``Split`` without transforms.

    The machine moves one character at a time, except where a run of characters cannot
    change anything: ordinary characters in the ready state, the inside of a quote, of a
    dollar quote and of a line comment are skipped to the next character that can (the same
    result, in C; a character at a time, a 1 MB file took half a second)."""
    spans: list[tuple[int, int, bool]] = []
    state = _READY_STATE
    closers: list[str] = []  # open groups, innermost last
    start = 0
    size = len(text)
    special = _READY_SPECIAL.search
    i = 0
    while i < size:
        kind = state[0]
        if kind == _QUOTE and state[1] and text[i] != state[2]:
            state = _READY_STATE  # a quote closed: this character is the ready state's
            kind = _READY
        if kind == _READY:
            found = special(text, i)
            if found is None:
                break
            i = found.start()
            # the ready state's commonest moves, as _from_ready and the closer test below
            # make them
            ch = text[i]
            if ch == ";":
                i += 1
                if not closers:
                    spans.append((start, i, True))
                    start = i
                continue
            if ch == "'" or ch == '"':
                state = (_QUOTE, 0, ch)
                i += 1
                continue
            if ch == "(":
                closers.append(")")
                i += 1
                continue
            if ch == ")":  # closes every group whose closer is ")" on top (`((a)` + `)`)
                while closers and closers[-1] == ")":
                    closers.pop()
                i += 1
                continue
            if ch in "cC" and (i - 5 < start or text[i - 5] not in "aA"
                               or not _completes_begin_atomic(text, start, i + 1, legacy)):
                i += 1  # not the c of ...atomic
                continue
        elif kind == _QUOTE and not state[1]:
            i = text.find(state[2], i)  # only the quote character matters inside
            if i < 0:
                break
        elif kind == _UNTIL:  # ends with the character that completes the delimiter
            delimiter = state[2]
            at = text.find(delimiter, i + 1 - len(delimiter))
            if at < 0:
                break
            i = at + len(delimiter) - 1
        moved = _move(state, text, start, i, legacy)
        i += 1
        if moved is None:
            if not closers:
                spans.append((start, i, True))
                start = i
                state = _READY_STATE
            # inside a group a ";" changes nothing, not even the inner state
            continue
        if isinstance(moved, str):
            closers.append(moved)
            state = _READY_STATE
            continue
        state = moved
        if state[0] == _READY:
            while closers and _ends_with_fold(text, start, i, closers[-1]):
                closers.pop()
    if start < size:
        spans.append((start, size, False))
    return spans


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _split(text: str, legacy: bool, capacity: int | None, trim: bool) -> list[str]:
    limit = None if capacity is None else max(capacity, _START_BUF_SIZE)
    out: list[str] = []
    for start, end, terminated in _raw_spans(text, legacy):
        token = text[start:end]
        if limit is not None:
            # bufio.Scanner needs the whole token in its buffer, and one more read to see EOF
            size = _utf8_len(token)
            if size > limit or (not terminated and size == limit):
                raise ScannerTokenTooLong(out, size, limit)
        value = trim_like_cli(token) if trim else token
        if value:
            out.append(value)
    return out


def trim_like_cli(token: str) -> str:
    """The CLI's per-token trim: ``strings.TrimSpace(strings.TrimRight(token, ";"))``."""
    return token.rstrip(";").strip(_GO_SPACE)


def split_raw_like_cli(text: str, *, legacy_begin_atomic: bool = False,
                       scanner_capacity: int | None = None) -> list[str]:
    """The CLI's ``parser.Split`` with no transform: raw tokens, ``;`` and white space kept.

    Joining the result gives ``text`` back.
    """
    return _split(text, legacy_begin_atomic, scanner_capacity, trim=False)


def split_like_cli(text: str, *, legacy_begin_atomic: bool = False,
                   scanner_capacity: int | None = None) -> list[str]:
    """The CLI's ``parser.SplitAndTrim``: the statements ``db push`` runs and records.

    ``legacy_begin_atomic`` applies the BEGIN ATOMIC rule of CLI v1.64.2 .. v2.91.0;
    ``scanner_capacity`` (bytes) makes an over-long token raise ``ScannerTokenTooLong``.
    """
    return _split(text, legacy_begin_atomic, scanner_capacity, trim=True)


def statements_for_history(text: str) -> list[str] | None:
    """What the current CLI stores in ``statements`` for a file: None (NULL) when it has none.

    Since v1.149.0 the CLI binds a nil Go slice for a file with no statements, which pgx sends as
    NULL; v1.67.0 .. v1.148.x sent the text literal ``{}`` (an empty array) instead.
    """
    return split_like_cli(text) or None


def matches_cli_history(text: str, recorded: Sequence[str] | None) -> bool:
    """Could a CLI from v1.67.0 on have recorded ``recorded`` for a file with this ``text``?

    True when ``recorded`` equals the current or the legacy (pre-v2.91.1) split; a file with no
    statements matches NULL or an empty array. A NULL row for a file *with* statements is not a
    match: it is either a row from a CLI older than v1.67.0 or one not written by the CLI.
    """
    candidates = [split_like_cli(text), split_like_cli(text, legacy_begin_atomic=True)]
    if recorded is None:
        return not candidates[0]
    return any(list(recorded) == c for c in candidates)
