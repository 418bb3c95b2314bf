"""The Supabase project's own settings: `supabase/config.toml`, read once into frozen dataclasses.

The Supabase CLI keeps a project's local settings in `supabase/config.toml` (`supabase init`
writes it). dbsage reads the parts it acts on:

- `project_id` (top level);
- `[api]`: `enabled`, `port`, `schemas` (the schemas PostgREST exposes: what an RLS check
  must look at), `extra_search_path`, `max_rows`;
- `[db]`: `port`, `shadow_port`, `major_version` (the PostgreSQL major the local stack runs:
  the remote's, by the CLI's own rule);
- `[db.migrations]`: `enabled`, `schema_paths`;
- `[db.seed]`: `enabled`, `sql_paths` (globs relative to `supabase/`, in order).

A key the file leaves out takes the CLI's default (the value `supabase init` writes), except
`major_version`, which is None when unset: the CLI's default changes between its releases, so
only the file can say. Every other key and section is kept, unread, in `ProjectConfig.raw`.

Errors are ConfigError (exit 2) naming `file:line`: tomllib's own position for a syntax error,
the key's line for a value of the wrong type. No file is not an error: `read_project_config`
returns the defaults with `path=None` (a project without `supabase init`, or plain PostgreSQL).

    config = read_project_config(project_dir)
    config.api.schemas          # ("public", "graphql_public")
    config.db.major_version     # 17, or None
    config.seed.sql_paths       # ("./seed.sql",)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dbsage.tools.errors import ConfigError

if TYPE_CHECKING:
    import tomllib

__all__ = ["CONFIG_FILE", "SUPABASE_DIR", "ApiConfig", "DbConfig", "MigrationsConfig",
           "ProjectConfig", "SeedConfig", "parse_project_config", "read_config_file",
           "read_project_config"]

SUPABASE_DIR = Path("supabase")
CONFIG_FILE = SUPABASE_DIR / "config.toml"


@dataclass(frozen=True)
class ApiConfig:
    """`[api]`: the PostgREST API of the project."""

    enabled: bool = True
    port: int = 54321
    schemas: tuple[str, ...] = ("public", "graphql_public")  # exposed through the API
    extra_search_path: tuple[str, ...] = ("public", "extensions")
    max_rows: int = 1000


@dataclass(frozen=True)
class DbConfig:
    """`[db]`: the local database."""

    port: int = 54322
    shadow_port: int = 54320
    major_version: int | None = None  # None: config.toml does not say


@dataclass(frozen=True)
class MigrationsConfig:
    """`[db.migrations]`."""

    enabled: bool = True
    schema_paths: tuple[str, ...] = ()  # declarative schema files (globs relative to supabase/)


@dataclass(frozen=True)
class SeedConfig:
    """`[db.seed]`: the seed data `supabase db reset` (and `dbsage seed`) loads."""

    enabled: bool = True
    sql_paths: tuple[str, ...] = ("./seed.sql",)  # globs relative to supabase/, in order


def _no_raw() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ProjectConfig:
    """What supabase/config.toml says (the CLI's defaults where it is silent or absent)."""

    path: Path | None = None  # the file read; None: there is none
    project_id: str | None = None
    api: ApiConfig = field(default_factory=ApiConfig)
    db: DbConfig = field(default_factory=DbConfig)
    migrations: MigrationsConfig = field(default_factory=MigrationsConfig)
    seed: SeedConfig = field(default_factory=SeedConfig)
    raw: Mapping[str, Any] = field(default_factory=_no_raw, compare=False, repr=False)

    @property
    def supabase_dir(self) -> Path | None:
        """The folder the config lives in (what sql_paths and schema_paths are relative to)."""
        return self.path.parent if self.path is not None else None

    def line_of(self, section: str, key: str) -> int | None:
        """The line of `key = ...` in `[section]` ("" for the top level), if the file has it."""
        if self.path is None:
            return None
        return _line_of(self.path.read_text(encoding="utf-8"), section, key)


def read_project_config(project_dir: Path) -> ProjectConfig:
    """`<project_dir>/supabase/config.toml`, or the defaults (path None) when there is none.

    Raises:
        ConfigError: the file cannot be read, is not valid TOML, or a known key has the
            wrong type; the message names file:line.
    """
    path = project_dir / CONFIG_FILE
    if not path.exists():
        return ProjectConfig()
    return read_config_file(path)


def read_config_file(path: Path) -> ProjectConfig:
    """One config.toml file (see read_project_config)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc}).", path=str(path),
                          hint="Check the file's permissions.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: the file is not valid UTF-8.", path=str(path),
                          line=line, hint="TOML files are UTF-8; save it as UTF-8.") from None
    return parse_project_config(text, path)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def parse_project_config(text: str, path: Path = CONFIG_FILE) -> ProjectConfig:
    """Parse config.toml text; `path` is what messages call it.

    Raises:
        ConfigError: not valid TOML (file:line:column from tomllib), or a known key has the
            wrong type (file:line of the key).
    """
    import tomllib  # not on every start-up: most runs find the project without reading it

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None
    reader = _Reader(data, text, path)
    api = reader.section("api")
    db = reader.section("db")
    migrations = reader.section("db.migrations")
    seed = reader.section("db.seed")
    defaults_api, defaults_db = ApiConfig(), DbConfig()
    return ProjectConfig(
        path=path,
        project_id=reader.string("", data, "project_id"),
        api=ApiConfig(
            enabled=reader.boolean("api", api, "enabled", defaults_api.enabled),
            port=reader.integer("api", api, "port", defaults_api.port),
            schemas=reader.strings("api", api, "schemas", defaults_api.schemas),
            extra_search_path=reader.strings("api", api, "extra_search_path",
                                             defaults_api.extra_search_path),
            max_rows=reader.integer("api", api, "max_rows", defaults_api.max_rows)),
        db=DbConfig(
            port=reader.integer("db", db, "port", defaults_db.port),
            shadow_port=reader.integer("db", db, "shadow_port", defaults_db.shadow_port),
            major_version=reader.optional_integer("db", db, "major_version")),
        migrations=MigrationsConfig(
            enabled=reader.boolean("db.migrations", migrations, "enabled", True),
            schema_paths=reader.strings("db.migrations", migrations, "schema_paths", ())),
        seed=SeedConfig(
            enabled=reader.boolean("db.seed", seed, "enabled", True),
            sql_paths=reader.strings("db.seed", seed, "sql_paths", SeedConfig().sql_paths)),
        raw=MappingProxyType(data))


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: Path) -> ConfigError:
    """file:line:column and tomllib's message (its position moved out of the text)."""
    message = str(exc)
    line: int | None = getattr(exc, "lineno", None)  # Python 3.14 has them as attributes
    column: int | None = getattr(exc, "colno", None)
    at = _TOML_POSITION.search(message)
    end = _TOML_END.search(message)
    if at is not None:
        line, column = line or int(at[1]), column or int(at[2])
        message = message[:at.start()]
    elif end is not None:
        message = message[:end.start()]
        line = line or text.count("\n") + 1
    message = str(getattr(exc, "msg", None) or message).rstrip(".")
    where = (f"{path}:{line}:{column}" if line and column else
             f"{path}:{line}" if line else str(path))
    lines = text.splitlines()
    source = lines[line - 1] if line and 0 < line <= len(lines) else None
    return ConfigError(f"{where}: invalid TOML: {message}.", path=str(path), line=line,
                       column=column, source_line=source,
                       hint="Fix that line; the Supabase CLI reads the same file and refuses "
                            "it too.")


class _Reader:
    """Typed reads of the known keys, with file:line in every error."""

    def __init__(self, data: Mapping[str, Any], text: str, path: Path) -> None:
        self.data, self.text, self.path = data, text, path

    def section(self, dotted: str) -> Mapping[str, Any]:
        node: Any = self.data
        for part in dotted.split("."):
            node = node.get(part, {}) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                raise self._error(dotted.rpartition(".")[0], part,
                                  f"[{dotted}] must be a table")
        return node

    def _error(self, section: str, key: str, what: str) -> ConfigError:
        line = _line_of(self.text, section, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {what}.", path=str(self.path), line=line,
                           key=f"{section}.{key}" if section else key,
                           hint="See https://supabase.com/docs/guides/local-development/cli/"
                                "config for the keys and their types.")

    def _name(self, section: str, key: str) -> str:
        return f"[{section}] {key}" if section else key

    def _get(self, section: str, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
             what: str) -> Any:
        value = table.get(key)
        # bool is an int in Python; TOML keeps them apart, and so does this check.
        if value is not None and (not isinstance(value, kind) or (
                kind is int and isinstance(value, bool))):
            raise self._error(section, key, f"{self._name(section, key)} must be {what}, not "
                                            f"{value!r}")
        return value

    def string(self, section: str, table: Mapping[str, Any], key: str) -> str | None:
        value = self._get(section, table, key, str, "a string")
        return str(value) if value is not None else None

    def boolean(self, section: str, table: Mapping[str, Any], key: str, default: bool) -> bool:
        value = self._get(section, table, key, bool, "true or false")
        return default if value is None else bool(value)

    def integer(self, section: str, table: Mapping[str, Any], key: str, default: int) -> int:
        value = self.optional_integer(section, table, key)
        return default if value is None else value

    def optional_integer(self, section: str, table: Mapping[str, Any], key: str) -> int | None:
        value = self._get(section, table, key, int, "a whole number")
        return int(value) if value is not None else None

    def strings(self, section: str, table: Mapping[str, Any], key: str,
                default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(section, table, key, list, "a list of strings")
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self._error(section, key, f"{self._name(section, key)} must be a list of "
                                            f"strings, not {value!r}")
        return tuple(value)


def _line_of(text: str, section: str, key: str) -> int | None:
    """The 1-based line of `key =` inside `[section]` (a dotted `section.key =` elsewhere too)."""
    header = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    assign = re.compile(r"^\s*(?:\"?" + re.escape(key) + r"\"?)\s*=")
    dotted = re.compile(r"^\s*" + re.escape(f"{section}.{key}" if section else key) + r"\s*=")
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        found = header.match(line)
        if found and not line.lstrip().startswith("[["):
            current = found[1].replace(" ", "")
            continue
        if (current == section and assign.match(line)) or (current == "" and dotted.match(line)):
            return number
    if section:  # the section header itself, for a table of the wrong type
        for number, line in enumerate(text.splitlines(), 1):
            found = header.match(line)
            if found and found[1].replace(" ", "") == f"{section}.{key}":
                return number
    return None


# --- the project root, and the files dbsage keeps in it (issue 12) -----------------------------
#
# Every relative path, the `.dbsage/` local server and the snapshots live in the project root,
# found upward from the current directory: the nearest folder with `supabase/config.toml`
# (`supabase init`), else the nearest with a `supabase/migrations/` folder (a project without
# a config), else the top of the git work tree (`.git`).

GITIGNORE_LINES = (".dbsage/", "supabase/snapshots/*_data/")
_GITIGNORE_HEADER = "# dbsage: the local server, and the rows saved for rollbacks (users' data)"


@dataclass(frozen=True)
class ProjectRoot:
    """Where a command's project lives, and how it was found."""

    path: Path
    found_by: str | None  # "supabase/config.toml", "supabase/migrations", ".git"; None: none


def find_project_root(start: Path | None = None) -> ProjectRoot:
    """The project root for `start` (default: the current directory); `found_by` None (and
    `path` = `start`) when no folder up to the file-system root is a project."""
    here = (start or Path.cwd()).resolve()
    chain = [here, *here.parents]
    for marker in (CONFIG_FILE, SUPABASE_DIR / "migrations", Path(".git")):
        for folder in chain:
            if (folder / marker).exists():
                return ProjectRoot(folder, str(marker))
    return ProjectRoot(here, None)


def is_project(folder: Path) -> bool:
    """`folder` holds a project (a supabase/ folder, a git work tree, or dbsage's own
    local server from an earlier run)."""
    return any((folder / m).exists() for m in (SUPABASE_DIR, Path(".git"), Path(".dbsage")))


@dataclass(frozen=True)
class GitignoreUpdate:
    """What `ensure_gitignore` did."""

    path: Path
    added: tuple[str, ...]  # lines appended now
    missing: tuple[str, ...]  # lines it should hold but could not be given (not a git tree)


def ensure_gitignore(root: Path, lines: tuple[str, ...] = GITIGNORE_LINES) -> GitignoreUpdate:
    """Append the lines `.gitignore` lacks (the local server, saved rows) when `root` is a git
    work tree; elsewhere nothing is written and `missing` says what to add."""
    path = root / ".gitignore"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError):
        return GitignoreUpdate(path, (), lines)
    have = {x.strip() for x in text.splitlines()}
    absent = tuple(x for x in lines if x not in have and "/" + x not in have)
    if not absent:
        return GitignoreUpdate(path, (), ())
    if not (root / ".git").exists():
        return GitignoreUpdate(path, (), absent)
    block = ("" if not text or text.endswith("\n") else "\n") + \
        ("\n" if text.strip() else "") + "\n".join((_GITIGNORE_HEADER, *absent)) + "\n"
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(block)
    except OSError:
        return GitignoreUpdate(path, (), absent)
    return GitignoreUpdate(path, absent, ())


MIGRATION_NAME = re.compile(r"^[a-z0-9_]+$")
MIGRATION_TEMPLATE = """\
-- Migration: {name}
-- Created {created} (UTC) by `dbsage new`. Apply it with `dbsage up`, or this file alone
-- with `dbsage apply {relpath}`.
--
-- dbsage runs this file in one transaction with SET LOCAL lock_timeout (1s by default,
-- --lock-timeout) and statement_timeout (--statement-timeout), and retries the transaction
-- when a lock cannot be had in time. squawk (require-lock-timeout, require-statement-timeout)
-- recommends setting them in the file too, for tools that do not (psql, supabase db push):
-- SET lock_timeout = '1s';
-- SET statement_timeout = '5min';

"""


@dataclass(frozen=True)
class NewMigration:
    """The file `create_migration` wrote."""

    path: Path
    version: str
    name: str


def create_migration(root: Path, name: str, now: datetime | None = None) -> NewMigration:
    """Write `supabase/migrations/{UTC YYYYMMDDHHMMSS}_{name}.sql` with the template; a later
    second when a file of that version exists already. Never overwrites.

    Raises:
        ConfigError: the name is not lowercase letters, digits and underscores, or the file
            exists.
    """
    if not MIGRATION_NAME.match(name):
        raise ConfigError(f"{name!r} is not a migration name: use lowercase letters, digits and "
                          "underscores only (e.g. add_profiles).", name=name,
                          hint="The file is named <timestamp>_<name>.sql; the Supabase CLI "
                               "takes the part after the first _ as the migration's name.")
    folder = root / SUPABASE_DIR / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    taken = {p.name.split("_", 1)[0] for p in folder.glob("*_*.sql")}
    for i in range(3600):
        version = (moment + timedelta(seconds=i)).strftime("%Y%m%d%H%M%S")
        if version not in taken:
            break
    path = folder / f"{version}_{name}.sql"
    relpath = path.relative_to(root)
    text = MIGRATION_TEMPLATE.format(name=name, created=f"{moment:%Y-%m-%d %H:%M:%S}",
                                     relpath=relpath)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{relpath} exists already; dbsage never overwrites a migration.",
                          path=str(path)) from None
    return NewMigration(path, version, name)


_SNAPSHOT_FILE = re.compile(r"^([0-9]{14})_(before\.sql|after\.sql|diff\.patch|decisions\.json|"
                            r"data)$")


@dataclass(frozen=True)
class PruneResult:
    """What `prune_snapshots` removed (or, with `dry_run`, would remove) and kept."""

    removed: tuple[str, ...]  # run TSs
    kept: tuple[str, ...]
    files: tuple[Path, ...]  # what was (or would be) deleted
    bytes_freed: int


def prune_snapshots(root: Path, keep: int, *, dry_run: bool = False) -> PruneResult:
    """Keep the newest `keep` runs of `supabase/snapshots/` (every file of a run's TS: the two
    snapshots, the diff, the decision log, the saved data) and delete the older ones. Files
    dbsage did not name are never touched."""
    import shutil

    folder = root / SUPABASE_DIR / "snapshots"
    groups: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT_FILE.match(p.name)
            if m:
                groups.setdefault(m[1], []).append(p)
    order = sorted(groups, reverse=True)
    kept, removed = order[:keep], order[keep:]
    files = sorted(p for ts in removed for p in groups[ts])
    freed = 0
    for p in files:
        freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
            else p.stat().st_size
        if not dry_run:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    return PruneResult(tuple(sorted(removed)), tuple(sorted(kept)), tuple(files), freed)
