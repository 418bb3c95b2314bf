"""The check registry: every checklist item of a task definition runs one of these.

A check is `function(ctx) -> CheckResult`. It never passes by default: a check that cannot
tell (no connection, no migration) fails and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dbsage.tools.catalog import USER_SCHEMA_FILTER as USER_SCHEMA_FILTER  # for runner.py
from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.agent.runner import RunContext

Status = Literal["pass", "warn", "fail"]


@dataclass
class CheckResult:
    """The outcome of one checklist item."""

    status: Status
    detail: str
    duration_ms: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    error: DbsageError | None = None  # the error behind a failure, kept for its exit code


CheckFn = Callable[["RunContext"], CheckResult]
CHECKS: dict[str, CheckFn] = {}


def check(check_id: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check under the id task definitions use."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS[check_id] = fn
        return fn

    return register


def run_check(check_id: str, ctx: RunContext) -> CheckResult:
    """Run one registered check; an error inside it is a failure, never a pass."""
    t0 = time.perf_counter()
    try:
        result = CHECKS[check_id](ctx)
    except DbsageError as exc:
        result = CheckResult("fail", exc.message, error=exc)
    except Exception as exc:  # a broken check must be visible, not silently green
        result = CheckResult("fail", f"the check itself failed: {type(exc).__name__}: {exc}")
    result.duration_ms = round((time.perf_counter() - t0) * 1000, 2)
    return result


def _ok(detail: str) -> CheckResult:
    return CheckResult("pass", detail)


def _fail(detail: str, **data: Any) -> CheckResult:
    return CheckResult("fail", detail, data=data)


def _conn(ctx: RunContext) -> psycopg.Connection:
    from dbsage.agent.runner import ensure_connected

    return ensure_connected(ctx)


# --- pre-conditions -------------------------------------------------------------------------

@check("connection_established")
def connection_established(ctx: RunContext) -> CheckResult:
    """The target answers a query on the run's session."""
    from dbsage.tools.catalog import answers

    if not answers(_conn(ctx)):
        return _fail("the database did not answer SELECT 1")
    return _ok(f"connected to {ctx.report.target} (PostgreSQL {ctx.report.server_version})")


@check("file_parses")
def file_parses(ctx: RunContext) -> CheckResult:
    """The migration file parses with PostgreSQL's parser (errors carry file:line:col)."""
    from dbsage.agent.runner import ensure_parsed

    m = ensure_parsed(ctx)
    kind = "one transaction" if m.transactional else "one by one, outside a transaction"
    return _ok(f"{len(m.statements)} statement(s), to run in {kind}")


@check("not_applied_yet")
def not_applied_yet(ctx: RunContext) -> CheckResult:
    """The version is not in the history (checked again once the lock is held).

    An applied version fails as AlreadyAppliedError, or DriftError when the file changed.
    """
    from dbsage.agent.runner import ensure_parsed
    from dbsage.tools.history import ensure_not_applied

    m = ensure_parsed(ctx)
    if m.version is None:
        return _ok("the file has no version digits; it will be recorded under the run's TS")
    ensure_not_applied(_conn(ctx), m.version, m.checksum, [s.sql for s in m.statements],
                       str(m.path))
    return _ok(f"version {m.version} is not applied yet")


@check("checksum_unchanged")
def checksum_unchanged(ctx: RunContext) -> CheckResult:
    """If the version is applied, the file is byte-for-byte what was applied (no drift)."""
    from dbsage.agent.runner import ensure_parsed
    from dbsage.tools.errors import DriftError
    from dbsage.tools.history import find_applied

    m = ensure_parsed(ctx)
    applied = find_applied(_conn(ctx), m.version) if m.version else None
    if applied is None:
        return _ok("not applied before: nothing to compare")
    if applied.checksum is None:
        same = applied.statements == [s.sql for s in m.statements]
        how = "statements recorded by the Supabase CLI"
    else:
        same = applied.checksum == m.checksum
        how = "sha256 recorded at apply time"
    if same:
        return _ok(f"file unchanged since it was applied ({how})")
    raise DriftError(f"{m.path} changed since version {m.version} was applied ({how} differ).",
                     hint="Never edit an applied migration: put the change in a new one.")


@check("migration_order")
def migration_order(ctx: RunContext) -> CheckResult:
    """The version is newer than every applied version."""
    from dbsage.agent.runner import ensure_parsed
    from dbsage.tools.history import latest_applied_version

    m = ensure_parsed(ctx)
    latest = latest_applied_version(_conn(ctx))
    if m.version is None or latest is None:
        return _ok("no applied versions to compare with" if latest is None else
                   "the file has no version; it gets the run's TS, the newest")
    if m.version > latest:
        return _ok(f"{m.version} is newer than the latest applied {latest}")
    if m.version == latest:
        return _ok(f"{m.version} is the latest applied version (see not_applied_yet)")
    return _fail(f"{m.version} is older than the latest applied version {latest}: out of order",
                 latest=latest)


@check("lock_available")
def lock_available(ctx: RunContext) -> CheckResult:
    """No other session holds the migration lock (a peek; the lock step takes it)."""
    from dbsage.tools.lock import ensure_lock_free

    ensure_lock_free(_conn(ctx))
    return _ok("no other migration is running")


@check("no_destructive_statements")
def no_destructive_statements(ctx: RunContext) -> CheckResult:
    """No DROP TABLE/COLUMN, rewriting type change, TRUNCATE, DELETE/UPDATE without WHERE."""
    ops = _analysis(ctx).destructive
    if not ops:
        return _ok("no statement destroys data")
    listed = "; ".join(f"line {o.line}: {o.kind.replace('_', ' ')} {o.table}"
                       + (f" ({', '.join(o.columns)})" if o.columns else "") for o in ops)
    return _fail(f"destructive statement(s): {listed}", count=len(ops))


@check("lint_clean")
def lint_clean(ctx: RunContext) -> CheckResult:
    """squawk finds no error-level problem (warnings are reported, not blocking)."""
    from dbsage.agent.runner import ensure_parsed
    from dbsage.tools.analyze import lint_with_squawk

    m = ensure_parsed(ctx)
    # dbsage runs a transactional file inside one transaction; tell squawk so.
    findings = lint_with_squawk(m.path, pg_version=_pg_version(ctx),
                                assume_in_transaction=m.transactional)
    ctx.lint = findings
    errors = [f for f in findings if f.level == "error"]
    text = "; ".join(f"line {f.line}: {f.rule}: {f.message}" for f in (errors or findings)[:5])
    if errors:
        return _fail(f"squawk: {len(errors)} error(s): {text}", count=len(errors))
    if findings:
        return CheckResult("warn", f"squawk: {len(findings)} warning(s): {text}")
    return _ok("squawk found nothing")


def _pg_version(ctx: RunContext) -> str | None:
    return f"{ctx.server_major}.0" if ctx.server_major else None


def _analysis(ctx: RunContext) -> Any:
    from dbsage.agent.runner import ensure_parsed
    from dbsage.tools.analyze import analyze_migration

    if ctx.analysis is None:
        ctx.analysis = analyze_migration(ensure_parsed(ctx))
    return ctx.analysis


# --- post-conditions and acceptance criteria ------------------------------------------------

@check("transaction_committed")
def transaction_committed(ctx: RunContext) -> CheckResult:
    """A fresh session sees the migration's history row: the transaction really committed."""
    from dbsage.tools.history import recorded_in_new_session

    if ctx.report.status != "applied" or ctx.target is None:
        return _fail("the migration did not commit")
    if recorded_in_new_session(ctx.target.url, ctx.report.version or "") == 1:
        return _ok("committed: visible from a new session")
    return _fail("a new session does not see the migration's history row")


@check("history_row_present")
def history_row_present(ctx: RunContext) -> CheckResult:
    """Both history rows exist, with this file's checksum and this run's TS."""
    from dbsage.tools.history import applied_rows

    m = ctx.migration
    if m is None or ctx.report.status != "applied":
        return _fail("nothing was applied, so nothing was recorded")
    rows = applied_rows(_conn(ctx), ctx.report.version or "", ctx.ts or "", m.checksum)
    if (rows.schema_migrations, rows.migration_log) == (1, 1):
        return _ok(f"version {ctx.report.version} recorded in supabase_migrations and dbsage")
    return _fail(f"history rows found: supabase_migrations={rows.schema_migrations}, "
                 f"dbsage.migration_log={rows.migration_log}")


def _from_smoke(outcome: Any) -> CheckResult:
    """A smoke check's outcome as a checklist result (the same catalog query serves both)."""
    detail = outcome.detail + (f": {', '.join(outcome.items)}" if outcome.items else "")
    return CheckResult(outcome.status, detail, data={"items": list(outcome.items)})


@check("no_invalid_indexes")
def no_invalid_indexes(ctx: RunContext) -> CheckResult:
    """pg_index.indisvalid is true for every index in user schemas."""
    from dbsage.tools.smoke import check_invalid_indexes

    return _from_smoke(check_invalid_indexes(_conn(ctx)))


@check("no_not_valid_constraints")
def no_not_valid_constraints(ctx: RunContext) -> CheckResult:
    """No constraint is left NOT VALID."""
    from dbsage.tools.smoke import check_not_valid_constraints

    return _from_smoke(check_not_valid_constraints(_conn(ctx)))


@check("no_orphaned_fk_rows")
def no_orphaned_fk_rows(ctx: RunContext) -> CheckResult:
    """Foreign keys on the tables the migration touched have no orphaned rows."""
    from dbsage.tools.catalog import foreign_key_orphans

    tables = sorted({t for s in _analysis(ctx).statements for t in s.tables})
    if not tables:
        return _ok("the migration touches no table")
    found = foreign_key_orphans(_conn(ctx), tables)
    orphans = [f"{o.child}.{o.constraint}: {o.rows} orphaned row(s)" for o in found.orphans]
    if orphans:
        return _fail("; ".join(orphans), items=orphans)
    return _ok(f"{found.checked} foreign key(s) checked, no orphaned rows")


@check("rls_enabled_on_new_tables")
def rls_enabled_on_new_tables(ctx: RunContext) -> CheckResult:
    """Tables the migration created in exposed schemas have row level security enabled."""
    from dbsage.tools.catalog import is_table, rls_enabled

    exposed = ctx.options.exposed_schemas
    created = [t for t in _analysis(ctx).created if t.split(".")[0] in exposed]
    if not created:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    conn = _conn(ctx)
    created = [t for t in created if is_table(conn, t)]  # `created` also names indexes, ...
    if not created:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    missing = [t for t in created if not rls_enabled(conn, t)]
    if missing:
        return CheckResult("warn", f"RLS is off on new table(s) {', '.join(missing)}: anyone "
                           "with the API key can read them (ALTER TABLE ... ENABLE ROW LEVEL "
                           "SECURITY)", data={"items": missing})
    return _ok(f"RLS enabled on {', '.join(created)}")


@check("database_unchanged")
def database_unchanged(ctx: RunContext) -> CheckResult:
    """After a dry-run: the schema fingerprint equals the one taken before it."""
    from dbsage.tools.catalog import schema_fingerprint

    if ctx.fingerprint_before is None:
        return _fail("no fingerprint was taken before the dry-run")
    after = schema_fingerprint(_conn(ctx))
    if after == ctx.fingerprint_before:
        return _ok("schema fingerprint unchanged: the transaction was rolled back")
    return _fail(f"schema fingerprint changed ({ctx.fingerprint_before} -> {after})")


@check("smoke_checks_pass")
def smoke_checks_pass(ctx: RunContext) -> CheckResult:
    """Every built-in smoke check and user test passed (warnings allowed)."""
    smoke = ctx.smoke
    if smoke is None:
        return _fail("the smoke checks did not run")
    bad = [f"{c.id}: {c.detail}" for c in smoke.checks if c.status == "fail"]
    bad += [f"{t.path}: {t.error or '; '.join(t.failures)}" for t in smoke.user_tests
            if not t.passed]
    if bad:
        return _fail("; ".join(bad), items=bad)
    warns = sum(c.status == "warn" for c in smoke.checks)
    return _ok(f"{len(smoke.checks)} check(s) and {len(smoke.user_tests)} user test(s) passed"
               + (f", {warns} warning(s)" if warns else ""))


@check("rollback_target_valid")
def rollback_target_valid(ctx: RunContext) -> CheckResult:
    """The TS names an applied, not yet rolled back run, and its reverse script is known."""
    from dbsage.agent.runner import resolve_rollback

    plan = resolve_rollback(ctx)
    n = len(plan["script"].all_statements)
    return _ok(f"run {plan['applied_ts']} applied version {plan['version']} ({plan['name']}); "
               f"{n} reverse statement(s) from {plan['source']}, {len(plan['saved'])} saved "
               "data set(s) to restore")


@check("no_data_loss")
def no_data_loss(ctx: RunContext) -> CheckResult:
    """The rollback drops no table or column that holds rows."""
    from dbsage.agent.runner import resolve_rollback
    from dbsage.tools.rollback import rows_at_stake

    losses = [x for x in rows_at_stake(_conn(ctx), resolve_rollback(ctx)["script"]) if x.rows]
    if not losses:
        return _ok("the rollback drops nothing that holds data")
    return _fail("the rollback would lose data: " + "; ".join(x.describe() for x in losses),
                 items=[x.describe() for x in losses])


@check("rollback_recorded")
def rollback_recorded(ctx: RunContext) -> CheckResult:
    """The version left supabase_migrations and dbsage logged the rollback event."""
    from dbsage.tools.history import rollback_rows

    plan = ctx.rollback
    if plan is None or ctx.report.status != "rolled_back":
        return _fail("nothing was rolled back")
    rows = rollback_rows(_conn(ctx), plan["version"], ctx.ts or "")
    if (rows.schema_migrations, rows.migration_log) == (0, 1):
        return _ok(f"version {plan['version']} marked reverted; rollback {ctx.ts} logged")
    return _fail(f"history after rollback: schema_migrations rows={rows.schema_migrations}, "
                 f"rollback log rows={rows.migration_log}")
