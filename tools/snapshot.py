"""Schema snapshots with pg_dump, deterministic and restorable on the server they came from."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dbsage.tools.errors import SnapshotError

# Bookkeeping schemas are not the user's schema: keep them out of snapshots and diffs.
BOOKKEEPING_SCHEMAS = ("dbsage", "supabase_migrations")
# pg_dump 17.6+/18 write `\restrict <random key>`; a fixed key keeps snapshots byte-stable.
RESTRICT_KEY = "dbsage"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgDump:
    """A pg_dump binary and its version."""

    path: Path
    major: int
    minor: int

    @property
    def has_restrict_key(self) -> bool:
        # --restrict-key arrived in 13.22, 14.19, 15.14, 16.10, 17.6 and 18.
        fixed = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
        return self.major >= 18 or self.minor >= fixed.get(self.major, 10**6)


@dataclass(frozen=True)
class SnapshotResult:
    """A schema snapshot written to disk."""

    path: Path
    pg_dump: PgDump
    size: int
    duration_s: float


def _version_of(path: Path) -> tuple[int, int]:
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
    m = _VERSION.search(out.stdout)
    if not m:
        raise SnapshotError(f"Cannot read the version of {path}: {out.stdout.strip()!r}")
    return int(m[1]), int(m[2] or 0)


def find_pg_dump(server_major: int) -> PgDump:
    """The server's own major version when installed, else the bundled pg_dump 18.

    DBSAGE_PG_DUMP overrides the choice. A pg_dump older than the server cannot dump it.
    """
    override = os.environ.get("DBSAGE_PG_DUMP")
    if override:
        return PgDump(Path(override), *_version_of(Path(override)))
    same = Path(f"/usr/lib/postgresql/{server_major}/bin/pg_dump")
    if same.exists():
        return PgDump(same, *_version_of(same))
    from dbsage.tools.embedded import bin_dir

    bundled = bin_dir() / "pg_dump"
    if server_major > 18:
        raise SnapshotError(
            f"No pg_dump can dump this PostgreSQL {server_major} server (the bundled one is 18).",
            hint=f"Install PostgreSQL {server_major} client tools or set DBSAGE_PG_DUMP.")
    # The bundled binary is 18.x; its minor only matters for --restrict-key, which 18 has.
    return PgDump(bundled, 18, 0)


def normalise_dump(text: str, server_major: int) -> str:
    """Make a dump byte-stable and restorable on its own server.

    pg_dump 17+ writes `SET transaction_timeout`, which servers before 17 reject.
    """
    if server_major < 17:
        text = text.replace("SET transaction_timeout = 0;\n", "")
    # Any random \restrict key left by a pg_dump without --restrict-key support.
    text = re.sub(r"^\\(un)?restrict \S+$", rf"\\\1restrict {RESTRICT_KEY}", text,
                  flags=re.MULTILINE)
    return text


def dump_schema(url: str, server_major: int, *, pg_dump: PgDump | None = None,
                exclude_schemas: tuple[str, ...] = BOOKKEEPING_SCHEMAS) -> tuple[str, PgDump]:
    """Run `pg_dump --schema-only --clean --if-exists` and return its normalised text."""
    tool = pg_dump or find_pg_dump(server_major)
    cmd = [str(tool.path), "--schema-only", "--clean", "--if-exists", "--no-password"]
    if tool.has_restrict_key:
        cmd.append(f"--restrict-key={RESTRICT_KEY}")
    cmd += [f"--exclude-schema={s}" for s in exclude_schemas]
    cmd += ["--dbname", url]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        from dbsage.tools.connection import redact

        raise SnapshotError(
            f"pg_dump failed (exit {proc.returncode}): {redact(proc.stderr.strip())}",
            hint="Check disk space, the pg_dump version and that the role may read the schema.")
    return normalise_dump(proc.stdout, server_major), tool


def take_snapshot(url: str, dest: Path, server_major: int, *,
                  pg_dump: PgDump | None = None) -> SnapshotResult:
    """Write a normalised schema-only snapshot to `dest` (never overwriting one)."""
    started = time.perf_counter()
    text, tool = dump_schema(url, server_major, pg_dump=pg_dump)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    try:
        with dest.open("xb") as f:
            f.write(data)
    except FileExistsError:
        raise SnapshotError(f"{dest} exists already; dbsage never overwrites a snapshot.") from None
    return SnapshotResult(dest, tool, len(data), time.perf_counter() - started)
