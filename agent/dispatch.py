"""One path from a parsed `*command` to the engine, shared by the chat and the LLM tools.

`execute(invocation, session)` maps an `Invocation` (agent/commands.py) to the runner entry
point it names and returns a `DispatchResult`; it never prints and never raises DbsageError.
No LangChain here: this module runs on every `*command`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbsage.agent.commands import Invocation, help_text
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.agent.modes import Asker
    from dbsage.agent.report import RunReport
    from dbsage.agent.runner import RunOptions

__all__ = ["HANDLERS", "MODE_HELP", "ChatSession", "DispatchResult", "execute", "migration_files"]

MIGRATIONS_DIR = Path("supabase") / "migrations"
MODE_HELP = {
    "yolo": "rules decide every checkpoint; each decision is logged",
    "interactive": "I ask you at each checkpoint",
    "preflight": "I analyse first and ask every question in one batch before anything runs",
}


@dataclass
class ChatSession:
    """Session defaults a command falls back to when it gives no option."""

    db: str | None = None
    mode: str = "interactive"
    project_dir: Path = field(default_factory=Path.cwd)
    asker: Asker | None = None  # who answers checkpoints (None: the console)
    lock_timeout: str = "1s"
    exposed_schemas: tuple[str, ...] = ("public",)
    interactive: bool = True  # False in --script mode: there is no human to ask
    agent: Any = field(default=None, repr=False)  # the LLM agent, built on first free text
    show: Callable[[DispatchResult], None] | None = field(default=None, repr=False)  # LLM runs


@dataclass
class DispatchResult:
    """What one command did: a run report and/or text to show, and whether the chat ends."""

    command: str
    ok: bool = True
    text: str = ""
    report: RunReport | None = None
    data: dict[str, Any] = field(default_factory=dict)
    exit: bool = False
    exit_code: int = 0
    as_json: bool = False


Handler = Callable[[Invocation, ChatSession], DispatchResult]


def execute(invocation: Invocation, session: ChatSession) -> DispatchResult:
    """Run one parsed command with the session's defaults; DbsageError becomes a failed result."""
    handler = HANDLERS[invocation.command]
    try:
        return handler(invocation, session)
    except DbsageError as exc:
        from dbsage.tools.connection import redact

        text = f"❌ {redact(exc.message)}" + (f"\nHint: {exc.hint}" if exc.hint else "")
        return DispatchResult(invocation.command, ok=False, text=text, exit_code=exc.exit_code)


# --------------------------------------------------------------------------- helpers


def _str_option(inv: Invocation, key: str) -> str | None:
    value = inv.options.get(key)
    return value if isinstance(value, str) else None


def _options(inv: Invocation, session: ChatSession, *, mode: str | None = None) -> RunOptions:
    """RunOptions from the invocation's options, falling back to the session's defaults."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import RunOptions

    flags = {key: bool(inv.options.get(key)) for key in
             ("allow_destructive", "allow_out_of_order", "allow_data_loss", "force")}
    asker = YesAsker() if inv.options.get("yes") else session.asker
    return RunOptions(
        mode=mode or _str_option(inv, "mode") or session.mode,
        db=_str_option(inv, "db") or session.db,
        lock_timeout=_str_option(inv, "lock_timeout") or session.lock_timeout,
        statement_timeout=_str_option(inv, "statement_timeout"),
        project_dir=session.project_dir, asker=asker, flags=flags,
        exposed_schemas=session.exposed_schemas)


def _path(inv: Invocation, session: ChatSession) -> Path:
    """The PATH argument; a relative path is taken from the project folder."""
    path = Path(inv.args["path"])
    if path.is_absolute() or session.project_dir.resolve() == Path.cwd().resolve():
        return path
    return session.project_dir / path


def _from_report(inv: Invocation, report: RunReport) -> DispatchResult:
    as_json = bool(inv.options.get("json"))
    from dbsage.agent.render import render_json

    return DispatchResult(inv.command, ok=report.exit_code == 0, report=report,
                          exit_code=report.exit_code, as_json=as_json,
                          text=render_json(report) if as_json else "")


def _connect(inv: Invocation, session: ChatSession) -> tuple[psycopg.Connection, str]:
    """A session on the target (starting the embedded server when none is configured)."""
    from dbsage.tools.connection import Target, check_not_transaction_pooler, connect, resolve_target

    target = resolve_target(_str_option(inv, "db") or session.db)
    if target is None:
        from dbsage.tools.embedded import start_embedded

        status = start_embedded(session.project_dir)
        assert status.url is not None
        target = Target(status.url, "embedded")
    check_not_transaction_pooler(target.url)
    return connect(target.url, autocommit=True), target.redacted


def migration_files(project_dir: Path) -> list[Path]:
    """The `.sql` files of supabase/migrations/, sorted by name."""
    return sorted((project_dir / MIGRATIONS_DIR).glob("*.sql"))


# --------------------------------------------------------------------------- task commands


def do_apply(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*apply-migration PATH: the apply-migration task in the chosen mode."""
    from dbsage.agent.runner import run_apply

    return _from_report(inv, run_apply(_path(inv, session), _options(inv, session)))


def do_dry_run(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*dry-run PATH: run the file in a transaction that is always rolled back."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import run_dry_run_task

    opts = _options(inv, session, mode="yolo")
    opts.asker = YesAsker()
    return _from_report(inv, run_dry_run_task(_path(inv, session), opts))


def do_smoke(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*smoke-test: the built-in checks and supabase/tests."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import run_smoke_task

    opts = _options(inv, session, mode="yolo")
    opts.asker = YesAsker()
    return _from_report(inv, run_smoke_task(opts))


def do_plan(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*plan PATH: the pre-flight analysis alone; writes the plan, changes nothing."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import run_plan

    opts = _options(inv, session, mode="preflight")
    opts.asker = YesAsker()
    return _from_report(inv, run_plan(_path(inv, session), opts))


def do_rollback(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*rollback TS|latest: the runner's rollback task, when this build has one."""
    from dbsage.agent import runner

    run_rollback = getattr(runner, "run_rollback_task", None)
    if run_rollback is None:
        return DispatchResult(
            inv.command, ok=False, exit_code=1,
            text="❌ Rollback is not available yet in this version of dbsage; nothing was done.\n"
                 "Hint: the before-snapshot of each apply is in supabase/snapshots/{TS}_before.sql.")
    return _from_report(inv, run_rollback(inv.args["ts"], _options(inv, session)))


# --------------------------------------------------------------------------- status, RLS


def _status_data(session: ChatSession, inv: Invocation) -> dict[str, Any]:
    from dbsage.tools.smoke import migration_version, read_history_state

    conn, target = _connect(inv, session)
    with conn:
        state = read_history_state(conn, session.project_dir)
    not_applied = {*state.pending, *state.ignored, *state.duplicates}
    applied = [p.name for p in migration_files(session.project_dir)
               if p.name not in not_applied and migration_version(p) is not None]
    return {"target": target, "applied": applied, "pending": state.pending,
            "drifted": state.drifted, "missing": state.missing,
            "unverified": state.unverified, "ignored": state.ignored,
            "duplicates": state.duplicates}


def _status_text(data: dict[str, Any]) -> str:
    lines = [f"Database: {data['target']}"]
    labels = (("applied", "Applied"), ("pending", "Pending"),
              ("drifted", "Drifted (changed since applied)"),
              ("missing", "Applied, but no file (missing)"),
              ("unverified", "Applied by another tool (no checksum)"),
              ("ignored", "Ignored (no leading version)"), ("duplicates", "Duplicate version"))
    for key, label in labels:
        items = data[key]
        if items or key in ("applied", "pending", "drifted"):
            lines.append(f"{label}: {len(items)}")
            lines += [f"  - {item}" for item in items]
    if data["pending"]:
        lines.append(f"Next: *dry-run supabase/migrations/{data['pending'][0]}")
    return "\n".join(lines)


def do_status(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*status: applied, pending and drifted migrations (files vs. the history table)."""
    data = _status_data(session, inv)
    as_json = bool(inv.options.get("json"))
    ok = not (data["drifted"] or data["missing"] or data["duplicates"])
    text = json.dumps(data, indent=2) if as_json else _status_text(data)
    return DispatchResult(inv.command, ok=ok, text=text, data=data, as_json=as_json,
                          exit_code=0 if ok else 1)


def do_rls_audit(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*rls-audit: the smoke test's row-level-security check on the exposed schemas."""
    from dbsage.tools.smoke import check_rls_enabled

    conn, target = _connect(inv, session)
    with conn:
        outcome = check_rls_enabled(conn, session.exposed_schemas)
    data = {"target": target, "status": outcome.status, "detail": outcome.detail,
            "tables": list(outcome.items)}
    if inv.options.get("json"):
        return DispatchResult(inv.command, text=json.dumps(data, indent=2), data=data,
                              as_json=True)
    mark = "✅" if outcome.status == "pass" else "⚠"
    lines = [f"{mark} {outcome.title}", f"  {outcome.detail}"]
    lines += [f"  - {t}" for t in outcome.items]
    return DispatchResult(inv.command, text="\n".join(lines), data=data)


# --------------------------------------------------------------------------- chat commands


def do_mode(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*mode M: switch the session's default mode."""
    session.mode = inv.args["mode"]
    return DispatchResult(inv.command, text=f"Mode is now {session.mode}: "
                          f"{MODE_HELP[session.mode]}.", data={"mode": session.mode})


def do_help(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*help [COMMAND]: the command list, or one command in detail."""
    return DispatchResult(inv.command, text=help_text(inv.args.get("command")))


def do_exit(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*exit: leave the chat."""
    return DispatchResult(inv.command, text="Goodbye — may your migrations be boring.", exit=True)


def do_hotpaths(inv: Invocation, session: ChatSession) -> DispatchResult:
    """*analyze-hotpaths: not built yet; say so instead of pretending."""
    return DispatchResult(
        inv.command, ok=False, exit_code=1,
        text="❌ *analyze-hotpaths is not available yet in this version of dbsage.\n"
             "Hint: until then, look at pg_stat_statements for the slowest queries.")


HANDLERS: dict[str, Handler] = {
    "apply-migration": do_apply,
    "dry-run": do_dry_run,
    "rollback": do_rollback,
    "smoke-test": do_smoke,
    "plan": do_plan,
    "status": do_status,
    "mode": do_mode,
    "help": do_help,
    "exit": do_exit,
    "rls-audit": do_rls_audit,
    "analyze-hotpaths": do_hotpaths,
}
