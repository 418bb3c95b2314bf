"""Live progress on stderr while a run works: a status line per step and check, the statement
running, the file of a batch, and a lock wait with who holds it up.

The engine and a few steps call the hooks of `current()`; what they do depends on where the
command runs:

- `Progress` (the default: the chat, tests, --quiet): nothing; every hook returns at once.
- `NoticeStream` (the CLI, stderr not a terminal, or --json): no live display, no thread, no
  query; only the notices (e.g. "Using the embedded PostgreSQL ...") are printed when they
  happen instead of at the end.
- `LiveProgress` (the CLI on a terminal): a rich spinner line, redrawn in place and erased
  when the step ends. A step that runs for more than WATCH_AFTER_S on the run's session, or
  whose transaction is retried after a lock timeout, gets a watcher: a second, short-lived
  connection that reads `tools/lock.lock_wait` (pg_blocking_pids) for the run's backend.

Nothing here runs SQL or prints a report: tools/lock.py asks, agent/render.py formats
notices.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

    from dbsage.agent.modes import ConsoleAsker, Question
    from dbsage.agent.state import RunState
    from dbsage.tools.execute import LockRetryPolicy
    from dbsage.tools.lock import LockWait

#: A step that has run this long on the run's session gets a lock watcher.
WATCH_AFTER_S = 0.5
#: How often the watcher reads pg_locks while it runs.
WATCH_EVERY_S = 0.25


class Progress:
    """No display at all: every hook returns at once."""

    live = False

    def __init__(self) -> None:
        self.printed: list[str] = []  # the notices shown as they happened, in order

    def begin(self, state: RunState, label: str) -> None:
        """A step or check starts."""

    def end(self, state: RunState) -> None:
        """The step or check that began last ended (also on failure or interrupt)."""

    def statement_done(self, state: RunState, index: int) -> None:
        """Statement `index` (1-based) of the run's file finished."""

    def file_started(self, index: int, total: int, name: str) -> None:
        """File `index` (1-based) of a batch of `total` starts."""

    def retrying(self, state: RunState, attempt: int, attempts: int) -> None:
        """A lock timeout rolled the transaction back; attempt `attempt` of `attempts` follows."""

    def with_retry_hook(self, state: RunState, policy: LockRetryPolicy) -> LockRetryPolicy:
        """`policy`, told of its retries when a live display wants to know."""
        return policy

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing is drawn meanwhile (a question is asked on the terminal)."""
        yield

    def close(self) -> None:
        """The command is done."""

    def already_printed(self, notices: list[str]) -> int:
        """How many of a report's notices were printed as they happened."""
        n = len(self.printed)
        return n if notices[:n] == self.printed else 0


class NoticeStream(Progress):
    """Not a terminal: the notices as they happen, nothing else (no thread, no query)."""

    def __init__(self) -> None:
        super().__init__()
        self._notices: list[str] | None = None  # the list of the run being shown
        self._console: Console | None = None

    def begin(self, state: RunState, label: str) -> None:
        self._flush(state)

    def end(self, state: RunState) -> None:
        self._flush(state)

    def _err(self) -> Console:
        if self._console is None:
            from dbsage.agent.render import _console

            self._console = _console(stderr=True)
        return self._console

    def _flush(self, state: RunState) -> None:
        if state.notices is not self._notices:  # another run (a command may run several)
            self._notices, self.printed = state.notices, []
        new = state.notices[len(self.printed):]
        if not new:
            return
        from dbsage.agent.render import print_notice

        for text in new:
            print_notice(self._err(), text)
        self.printed.extend(new)


class LiveProgress(NoticeStream):
    """A terminal: one spinner line for the step running, with what it is doing."""

    live = True

    def __init__(self) -> None:
        super().__init__()
        self._live: Live | None = None
        self._label = ""
        self._detail = ""
        self._since = self._detail_since = time.monotonic()
        self.attempt: tuple[int, int] | None = None
        self.wait: LockWait | None = None  # what the watcher saw last
        self._watcher: _Watcher | None = None
        self._state: RunState | None = None

    # --- hooks
    def begin(self, state: RunState, label: str) -> None:
        self.end(state)
        self._state = state
        self._label, self._detail, self.attempt, self.wait = label, "", None, None
        self._since = self._detail_since = time.monotonic()
        self._start_live()
        self._watch(state, WATCH_AFTER_S)

    def end(self, state: RunState) -> None:
        self._stop_watcher()
        self._stop_live()
        self._state = None
        self._flush(state)

    def statement_done(self, state: RunState, index: int) -> None:
        total = len(state.statements)
        if index == 0 and total == 0:
            return
        if index > 0:
            self.wait = None  # it got its locks: what it waited for before is over
        if index < total:
            nxt = state.statements[index]
            self._set_detail(f"statement {index + 1} of {total}, line {nxt.line}: {nxt.sql}")
        else:
            self._set_detail(f"{total} statement(s) done; committing")

    def file_started(self, index: int, total: int, name: str) -> None:
        self._set_detail(f"file {index} of {total}: {name}")

    def retrying(self, state: RunState, attempt: int, attempts: int) -> None:
        self.attempt = (attempt, attempts)
        self.statement_done(state, 0)  # the transaction starts again at statement 1
        self._watch(state, 0)  # a lock wait is certain now: watch at once

    def with_retry_hook(self, state: RunState, policy: LockRetryPolicy) -> LockRetryPolicy:
        from dataclasses import replace

        return replace(policy, on_retry=lambda a, n: self.retrying(state, a, n))

    @contextmanager
    def paused(self) -> Iterator[None]:
        was = self._live is not None
        self._stop_live()
        try:
            yield
        finally:
            if was:
                self._start_live()

    def close(self) -> None:
        self._stop_watcher()
        self._stop_live()

    # --- what is drawn
    def line(self) -> str:
        """The status line as it reads now."""
        now = time.monotonic()
        wait = self.wait
        attempt = f" (attempt {self.attempt[0]}/{self.attempt[1]})" if self.attempt else ""
        if wait is not None:
            return describe_wait(wait, attempt) + f"  [{_age(now - self._since)}]"
        if self._detail:
            return (f"{self._label}{attempt}: {self._detail}  "
                    f"[{_age(now - self._detail_since)}]")
        return f"{self._label}{attempt}  [{_age(now - self._since)}]"

    def _set_detail(self, text: str) -> None:
        self._detail, self._detail_since = text, time.monotonic()

    def _start_live(self) -> None:
        if self._live is not None:
            return
        from rich.live import Live

        self._live = Live(_Line(self), console=self._err(), transient=True,
                          refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def _watch(self, state: RunState, delay: float) -> None:
        conn, target = state.conn, state.target
        if conn is None or target is None or conn.closed or conn.broken:
            return
        if self._watcher is not None:
            self._watcher.soon()
            return
        self._watcher = _Watcher(self, target.url, conn.info.backend_pid, delay)
        self._watcher.start()

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()


class _Line:
    """The spinner and LiveProgress's line, computed at each refresh."""

    def __init__(self, progress: LiveProgress) -> None:
        from rich.spinner import Spinner

        self.progress = progress
        self.spinner = Spinner("dots", style="cyan")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        self.spinner.update(text=Text(self.progress.line(), style="dim", no_wrap=True,
                                      overflow="ellipsis"))
        yield self.spinner


class _Watcher(threading.Thread):
    """Reads what the run's backend waits for, from its own connection, until stopped."""

    def __init__(self, progress: LiveProgress, url: str, pid: int, delay: float) -> None:
        super().__init__(name="dbsage-lock-watch", daemon=True)
        self.progress, self.url, self.pid, self.delay = progress, url, pid, delay
        self._halt = threading.Event()
        self._wake = threading.Event()

    def soon(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        self.join(timeout=2)

    def run(self) -> None:
        if self.delay:
            self._wake.wait(self.delay)  # a quick step ends first: no connection at all
        if self._halt.is_set():
            return
        from dbsage.tools.connection import connect
        from dbsage.tools.lock import lock_wait

        try:
            conn = connect(self.url, autocommit=True, attempts=1)
        except Exception:  # only ever a display: the run goes on without it
            return
        try:
            while not self._halt.is_set():
                wait = lock_wait(conn, self.pid)
                if wait is not None or self.progress.attempt is None:
                    self.progress.wait = wait  # between attempts: keep what it waited for
                self._halt.wait(WATCH_EVERY_S)
        except Exception:
            return
        finally:
            conn.close()


def describe_wait(wait: LockWait, attempt: str = "") -> str:
    """`waiting for ACCESS EXCLUSIVE on public.orders (attempt 3/10), blocked by pid 4242
    (idle in transaction 3 min, app api): <query>`."""
    what = wait.relation or wait.locktype
    text = f"waiting for {wait.mode} on {what}{attempt}"
    if not wait.blockers:
        return text
    b = wait.blockers[0]
    facts = []
    if b.state:
        facts.append(b.state + (f" {_age(b.state_seconds)}" if b.state_seconds is not None else ""))
    if b.application_name:
        facts.append(f"app {b.application_name}")
    text += f", blocked by pid {b.pid}" + (f" ({', '.join(facts)})" if facts else "")
    if len(wait.blockers) > 1:
        text += f" and {len(wait.blockers) - 1} more"
    if b.query:
        text += ": " + " ".join(b.query.split())
    return text


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


class PausingAsker:
    """A terminal asker that stops the live display while it asks."""

    def __init__(self, inner: ConsoleAsker) -> None:
        self.inner = inner
        self.shows_reports = inner.shows_reports  # the post-run menu waits for the report

    def ask(self, question: Question) -> str:
        with current().paused():
            return self.inner.ask(question)

    def ask_form(self, questions: list[Question], intro: str = "") -> list[str]:
        """Pre-flight's one form of every question, the display stopped meanwhile."""
        with current().paused():
            return self.inner.ask_form(questions, intro)


_CURRENT: list[Progress] = [Progress()]


def current() -> Progress:
    """The display of the command running (the silent one by default)."""
    return _CURRENT[0]


@contextmanager
def for_command(values: Mapping[str, Any]) -> Iterator[Progress]:
    """The display of one CLI command: live on a terminal, notices only otherwise, nothing
    with --quiet; the silent one again afterwards."""
    import os
    import sys

    from dbsage.agent.grammar import set_front

    set_front("cli")  # notices shown as they happen name commands as the shell does
    if values.get("quiet"):
        shown: Progress = Progress()
    elif not values.get("as_json") and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        shown = LiveProgress()
    else:
        shown = NoticeStream()
    previous, _CURRENT[0] = _CURRENT[0], shown
    try:
        yield shown
    finally:
        shown.close()
        _CURRENT[0] = previous
