"""Schema snapshots with pg_dump, deterministic and restorable on the server they came from."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dbsage.tools.binaries import PgDump, find_pg_dump, find_psql, start_child
from dbsage.tools.catalog import SNAPSHOT_EXCLUDED_SCHEMAS, snapshot_excluded_regex
from dbsage.tools.errors import BinaryNotFoundError, SnapshotError

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

_DUMPS = itertools.count(1)  # numbers the dumps of this process (application_name)

# Snapshots cover what the user owns: pg_dump leaves out the schemas the Supabase CLI's own
# dump leaves out (the platform's and the extensions': tools/catalog.py
# SNAPSHOT_EXCLUDED_SCHEMAS), dbsage's bookkeeping (so a diff shows only the user's change), and
# whatever the role cannot read (`DumpScope`): pg_dump locks every table it dumps (LOCK TABLE
# ... IN ACCESS SHARE MODE needs SELECT), so one platform table the role may not read (e.g.
# vault.secrets, owned by supabase_admin) would otherwise fail every snapshot. Which pg_dump
# and psql run: tools/binaries.py.

# pg_dump 17.6+/18 write `\restrict <random key>`; a fixed key keeps snapshots byte-stable.
RESTRICT_KEY = "dbsage"


@dataclass(frozen=True)
class SnapshotResult:
    """A schema snapshot written to disk."""

    path: Path
    pg_dump: PgDump
    size: int
    duration_s: float


def normalise_dump(text: str, server_major: int) -> str:
    """Make a dump byte-stable and restorable on its own server.

    pg_dump 17+ writes `SET transaction_timeout`, which servers before 17 reject.
    """
    if server_major < 17:
        text = text.replace("SET transaction_timeout = 0;\n", "")
    if "pg_attver=" in text:
        text = _without_attver(text)
    # Any random \restrict key left by a pg_dump without --restrict-key support.
    text = re.sub(r"^\\(un)?restrict \S+$", rf"\\\1restrict {RESTRICT_KEY}", text,
                  flags=re.MULTILINE)
    return text


# PostgreSQL 15.20 (and the other branches' releases of that date) keeps an internal
# `pg_attver=<n>` in every column's attoptions. The server's own pg_dump leaves it out; a newer
# pg_dump writes it as `ALTER TABLE ONLY t ALTER COLUMN c SET (pg_attver=n);`, a number the
# server assigns anew on restore, so it is noise in a snapshot and in its diff. No user can set
# an option of that name (attoptions are checked against the known ones).
_ATTVER_ITEM = re.compile(r"\bpg_attver=\d+")
_ATTVER_LINE = re.compile(
    r"^ALTER TABLE ONLY .+ ALTER COLUMN .+ SET \((?P<opts>[^()\n]*\bpg_attver=\d+[^()\n]*)\);\n",
    re.MULTILINE)


def _without_attver(text: str) -> str:
    """`text` without pg_attver items (a statement setting nothing else goes entirely)."""
    def clean(m: re.Match[str]) -> str:
        rest = [o for o in m.group("opts").split(", ") if not _ATTVER_ITEM.fullmatch(o)]
        if not rest:
            return ""
        return m.group(0).replace(f"({m.group('opts')})", f"({', '.join(rest)})")

    return _ATTVER_LINE.sub(clean, text)


@dataclass(frozen=True)
class DumpScope:
    """What a snapshot leaves out: schema patterns (pg_dump's), and the schemas and tables
    this role cannot read (quoted, so pg_dump matches them literally)."""

    schemas: tuple[str, ...] = SNAPSHOT_EXCLUDED_SCHEMAS
    unreadable_schemas: tuple[str, ...] = ()
    unreadable_tables: tuple[tuple[str, str], ...] = ()

    def arguments(self) -> list[str]:
        """The pg_dump options."""
        args = [f"--exclude-schema={s}" for s in self.schemas]
        args += [f"--exclude-schema={_quoted(s)}" for s in self.unreadable_schemas]
        args += [f"--exclude-table={_quoted(s)}.{_quoted(t)}" for s, t in self.unreadable_tables]
        return args

    @property
    def left_out(self) -> tuple[str, ...]:
        """The unreadable schemas and tables, as `schema` and `schema.table`."""
        return (*self.unreadable_schemas, *(f"{s}.{t}" for s, t in self.unreadable_tables))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# One small catalog query (its result one JSON line, also for psql): the schemas outside the
# excluded ones this role has no USAGE on, and the tables in the others it cannot SELECT
# (pg_dump locks ordinary and partitioned tables only). A superuser may read everything:
# asked first, it spares a has_table_privilege() per table (~5 ms at 1,000 tables, between
# the commit and the after-snapshot's pg_dump).
_EXCLUDED = (f"n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' "
             f"AND n.nspname !~ '{snapshot_excluded_regex()}'")
SCOPE_SQL = f"""(SELECT CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  THEN '[[], []]' ELSE jsonb_build_array(
  (SELECT coalesce(jsonb_agg(n.nspname::text ORDER BY n.nspname), '[]') FROM pg_namespace n
    WHERE {_EXCLUDED} AND NOT has_schema_privilege(n.oid, 'USAGE')),
  (SELECT coalesce(jsonb_agg(jsonb_build_array(n.nspname, c.relname) ORDER BY n.nspname, c.relname),
                   '[]')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND {_EXCLUDED} AND has_schema_privilege(n.oid, 'USAGE')
      AND NOT has_table_privilege(c.oid, 'SELECT')))::text END)"""


def scope_from_json(text: str) -> DumpScope:
    """The DumpScope of SCOPE_SQL's answer."""
    import json

    schemas, tables = json.loads(text)
    return DumpScope(unreadable_schemas=tuple(schemas),
                     unreadable_tables=tuple((s, t) for s, t in tables))


def dump_scope(conn: psycopg.Connection) -> DumpScope:
    """What a snapshot of the connected database leaves out, for this role (one query)."""
    import psycopg

    try:
        row = conn.execute(f"SELECT {SCOPE_SQL}").fetchone()
    except psycopg.Error as exc:
        raise SnapshotError(f"Could not read what this role may dump: {exc}",
                            hint="Check the connection, then run it again.") from exc
    return scope_from_json(row[0]) if row else DumpScope()


def _dump_command(tool: PgDump, url: str, out: Path, snapshot_id: str | None,
                  scope: DumpScope) -> list[str]:
    cmd = [str(tool.path), "--schema-only", "--clean", "--if-exists", "--no-password",
           f"--file={out}"]
    if tool.has_restrict_key:
        cmd.append(f"--restrict-key={RESTRICT_KEY}")
    if snapshot_id:
        cmd.append(f"--snapshot={snapshot_id}")
    cmd += scope.arguments()
    return [*cmd, "--dbname", url]


def _needs_normalising(tool: PgDump, server_major: int) -> bool:
    return not tool.has_restrict_key or (tool.major >= 17 and server_major < 17)


@dataclass
class RunningDump:
    """A `pg_dump --schema-only` running in the background into a temporary file."""

    proc: subprocess.Popen[bytes]
    tool: PgDump
    tmp: Path
    server_major: int
    started: float
    app_name: str = "pg_dump"  # its application_name on the server (pg_stat_activity)

    @property
    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait(self) -> None:
        """Wait for pg_dump to exit; SnapshotError (password redacted) if it failed."""
        err = b""
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            err = self.proc.stderr.read()  # until pg_dump exits; it writes little there
            self.proc.stderr.close()
        self.proc.wait()
        if self.proc.returncode != 0:
            from dbsage.tools.connection import redact

            self.tmp.unlink(missing_ok=True)
            raise SnapshotError(
                f"pg_dump failed (exit {self.proc.returncode}): "
                f"{redact(err.decode(errors='replace').strip())}",
                hint="Check disk space, the pg_dump version and that the role may read the schema.")

    def finish(self, dest: Path) -> SnapshotResult:
        """Wait, normalise, and move the dump to `dest` (never overwriting a snapshot)."""
        self.wait()
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if _needs_normalising(self.tool, self.server_major):
                data = normalise_dump(self.tmp.read_text(), self.server_major).encode()
                with dest.open("xb") as f:
                    f.write(data)
            else:
                os.link(self.tmp, dest)  # atomic, and fails if dest exists
        except FileExistsError:
            raise SnapshotError(f"{dest} exists already; dbsage never overwrites a snapshot.") from None
        finally:
            self.tmp.unlink(missing_ok=True)
        return SnapshotResult(dest, self.tool, dest.stat().st_size,
                              time.perf_counter() - self.started)

    def cancel(self) -> None:
        """Stop pg_dump if it still runs and delete its output (safe to call twice)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.stderr.close()
        self.tmp.unlink(missing_ok=True)


def start_dump(url: str, tmp: Path, server_major: int, *, snapshot_id: str | None = None,
               pg_dump: PgDump | None = None, scope: DumpScope | None = None) -> RunningDump:
    """Start `pg_dump --schema-only --clean --if-exists` into `tmp` and return at once.

    `snapshot_id` dumps the database as a snapshot exported by another session saw it;
    `scope` says what to leave out (by default the excluded schemas only: pass
    `dump_scope(conn)` for a role that may not read everything).
    """
    from dbsage.tools.connection import libpq_argv_env

    tool = pg_dump or find_pg_dump(server_major)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    argv_url, env = libpq_argv_env(url)
    cmd = _dump_command(tool, argv_url, tmp, snapshot_id, scope or DumpScope())
    app_name = f"dbsage-pg_dump-{os.getpid()}-{next(_DUMPS)}"
    env["PGAPPNAME"] = app_name
    proc = start_child(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env)
    return RunningDump(proc, tool, tmp, server_major, time.perf_counter(), app_name)


def dump_schema(url: str, server_major: int, *, pg_dump: PgDump | None = None,
                scope: DumpScope | None = None) -> tuple[str, PgDump]:
    """Run `pg_dump --schema-only --clean --if-exists` and return its normalised text."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dbsage-dump-") as tmp:
        running = start_dump(url, Path(tmp) / "dump.sql", server_major, pg_dump=pg_dump,
                             scope=scope)
        running.wait()
        text = running.tmp.read_text()
    return normalise_dump(text, server_major), running.tool


def start_snapshot(url: str, dest: Path, server_major: int, *,
                   pg_dump: PgDump | None = None, scope: DumpScope | None = None) -> RunningDump:
    """Start the snapshot for `dest` into a temporary file beside it; `.finish(dest)` ends it."""
    from dbsage.tools.artifacts import temp_path

    return start_dump(url, temp_path(dest), server_major, pg_dump=pg_dump, scope=scope)


def take_snapshot(url: str, dest: Path, server_major: int, *,
                  pg_dump: PgDump | None = None, scope: DumpScope | None = None
                  ) -> SnapshotResult:
    """Write a normalised schema-only snapshot to `dest` (never overwriting one)."""
    return start_snapshot(url, dest, server_major, pg_dump=pg_dump, scope=scope).finish(dest)


# --- the early before-snapshot ----------------------------------------------------------------
#
# The before-snapshot is most of a run's time, and starting it only once the migration lock is
# held puts Python's start-up (about 0.1 s of imports and connecting) in front of it. So a run
# that asks nobody anything starts it as soon as the file has parsed: a psql session exports
# a snapshot (`pg_export_snapshot`) and pg_dump dumps exactly what that snapshot sees. Once
# the run holds the lock, `adopt` compares dbsage's history as the exported snapshot saw it
# with the history now: every schema change a dbsage run makes commits together with a
# history row, so equal histories mean no migration committed in between and the dump is
# what a dump taken under the lock would be. Otherwise it is discarded and dumped again.

# Also: is the migration lock held? Then another migration is running: its statements must not
# queue behind this pg_dump's ACCESS SHARE locks, and this run will stop at the lock anyway.
# And what the role cannot read (SCOPE_SQL), in the same round trip.
_EXPORT_SQL = ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
               "SELECT pg_export_snapshot(), current_setting('server_version_num'), {holders}, "
               "{scope};\n")


@dataclass
class EarlySnapshot:
    """A before-snapshot started ahead of the lock from a snapshot a psql session exported."""

    exporter: subprocess.Popen[str]
    snapshot_id: str
    server_major: int
    dump: RunningDump

    def wait_for_dump(self) -> None:
        """Let pg_dump finish (its table locks are released then); errors surface in adopt."""
        self.dump.proc.wait()

    def adopt(self, conn: psycopg.Connection, dest: Path) -> SnapshotResult | None:
        """Under the migration lock: the snapshot at `dest`, or None when it cannot be used."""
        try:
            self.dump.wait()
            if not self._history_unchanged(conn):
                return None
            return self.dump.finish(dest)
        except SnapshotError:
            return None
        finally:
            self.discard()

    def still_valid(self, conn: psycopg.Connection) -> bool:
        """Under the migration lock, without waiting for pg_dump: True when no migration
        committed since the snapshot was exported (so the dump, whenever it ends, is what a
        dump under the lock would be). False discards it."""
        if self.dump.done and self.dump.proc.returncode != 0:
            self.discard()
            return False
        if not self._history_unchanged(conn):
            self.discard()
            return False
        return True

    def finish_while(self, conn: psycopg.Connection, dest: Path, *,
                     poll_s: float = 0.05) -> SnapshotResult:
        """The dump of a snapshot `still_valid` kept, moved to `dest` once pg_dump ends; the
        migration's transaction is open on `conn` meanwhile. pg_dump holds ACCESS SHARE on
        every table it dumps: should it wait for a lock this transaction holds (a statement
        analysis could not see through took one), it would wait for ever, so that is checked
        while waiting and ends in a SnapshotError (the transaction then rolls back)."""
        from psycopg import sql

        try:
            while not _exited_within(self.dump.proc, poll_s):
                row = conn.execute(sql.SQL(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = "
                    "{} AND pg_backend_pid() = ANY (pg_blocking_pids(pid)))").format(
                        sql.Literal(self.dump.app_name))).fetchone()
                if row and row[0]:
                    raise SnapshotError(
                        "The before-snapshot's pg_dump waits for a lock the migration "
                        "took (through a function or trigger analysis cannot see): the "
                        "migration was rolled back before its commit.",
                        hint="Run it again with --mode interactive: the snapshot is then "
                        "taken under the lock, before the migration starts.") from None
            return self.dump.finish(dest)
        finally:
            self.discard()

    def _history_unchanged(self, conn: psycopg.Connection) -> bool:
        import psycopg
        from psycopg import sql

        from dbsage.tools.history import history_state

        if self.exporter.poll() is not None:  # the exported snapshot is gone with its session
            return False
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                    sql.Literal(self.snapshot_id)))
                then = history_state(conn)
        except psycopg.Error:
            return False
        return then == history_state(conn)

    def discard(self) -> None:
        """End the exporting session, stop pg_dump if it runs, delete what it wrote."""
        if self.exporter.poll() is None:
            try:
                assert self.exporter.stdin is not None
                self.exporter.stdin.close()  # psql ends its session (and the transaction)
                self.exporter.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.exporter.kill()
                self.exporter.wait()
        self.dump.cancel()


def _exited_within(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once `proc` has exited, waiting at most `timeout_s` for it. A pidfd wakes the
    moment the child ends: Popen.wait(timeout) sleeps in steps growing to 50 ms, and the
    migration's COMMIT waited that long after pg_dump had finished."""
    import select

    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux 5.3+: sleep-polling it is
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    return proc.poll() is not None


def start_early_snapshot(url: str, tmp: Path, *, timeout_s: float = 5.0,
                         meanwhile: Callable[[], None] | None = None) -> EarlySnapshot | None:
    """Export a snapshot from a psql session and start pg_dump on it; None if that cannot be
    done (no psql, no answer within `timeout_s`, no pg_dump for the server) or should not be
    (another migration holds the lock): the run then goes on as without it.

    `meanwhile` is called once psql has its query, before its answer is awaited: work it
    starts in another thread then takes no GIL from the steps up to psql's start (and psql's
    round trip leaves this thread idle). It is called before this returns in any case."""
    pending = [meanwhile] if meanwhile is not None else []

    def once() -> None:
        while pending:
            pending.pop()()

    try:
        return _start_early(url, tmp, timeout_s, once)
    finally:
        once()


def _start_early(url: str, tmp: Path, timeout_s: float,
                 meanwhile: Callable[[], None]) -> EarlySnapshot | None:
    import selectors

    from dbsage.tools.connection import libpq_argv_env
    from dbsage.tools.lock import holder_count_sql

    try:
        psql = find_psql()  # the server's version is not known yet
    except BinaryNotFoundError:
        return None
    argv_url, env = libpq_argv_env(url)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    try:
        exporter = start_child(
            [str(psql), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-d", argv_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=env)
    except OSError:  # e.g. a DBSAGE_PSQL that does not exist
        return None
    assert exporter.stdin is not None and exporter.stdout is not None
    try:
        exporter.stdin.write(_EXPORT_SQL.format(holders=holder_count_sql(), scope=SCOPE_SQL))
        exporter.stdin.flush()
        meanwhile()
        with selectors.DefaultSelector() as sel:
            sel.register(exporter.stdout, selectors.EVENT_READ)
            answer = exporter.stdout.readline() if sel.select(timeout_s) else ""
        snapshot_id, version, lock_holders, scope = answer.strip().split("|", 3)
        if int(lock_holders):
            raise ValueError("another migration holds the lock")
        server_major = int(version) // 10000
        tool = find_pg_dump(server_major)
        dump = start_dump(url, tmp, server_major, snapshot_id=snapshot_id, pg_dump=tool,
                          scope=scope_from_json(scope))
    except (OSError, ValueError, SnapshotError, subprocess.SubprocessError):
        exporter.kill()
        exporter.wait()
        return None
    return EarlySnapshot(exporter, snapshot_id, server_major, dump)
