"""The check registry: every checklist item of a task definition runs one of these.

A check is `function(state) -> CheckResult`. It never passes by default: a check that cannot
tell (no connection, no migration) fails and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from dbsage.tools.errors import DbsageError

if TYPE_CHECKING:
    import psycopg

    from dbsage.agent.state import RunState
    from dbsage.tools.analyze import MigrationAnalysis

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one checklist item."""

    status: Status
    detail: str
    duration_ms: float = 0.0
    error: DbsageError | None = None  # the error behind a failure, kept for its exit code


CheckFn = Callable[["RunState"], CheckResult]
CHECKS: dict[str, CheckFn] = {}


def check(check_id: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check under the id task definitions use."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS[check_id] = fn
        return fn

    return register


def run_check(check_id: str, state: RunState) -> CheckResult:
    """Run one registered check; an error inside it is a failure, never a pass."""
    t0 = time.perf_counter()
    try:
        result = CHECKS[check_id](state)
    except DbsageError as exc:
        exc.hint = command_hint(exc)
        result = CheckResult("fail", exc.message, error=exc)
    except Exception as exc:  # a broken check must be visible, not silently green
        result = CheckResult("fail", f"the check itself failed: {type(exc).__name__}: {exc}")
    return replace(result, duration_ms=round((time.perf_counter() - t0) * 1000, 2))


def command_hint(error: DbsageError) -> str | None:
    """The error's hint, plus the command or flag to use next where one helps.

    tools/ never names a *command or a CLI flag (its hints state facts, its errors carry the
    data); this is where that wording is added back. Also for errors raised outside a check.
    """
    hint, data, kind = error.hint, error.data, type(error).__name__
    extra: str | None = None
    if kind == "AlreadyAppliedError" and data.get("applied_ts"):
        command = f"*rollback {data['applied_ts']}"
        return hint if hint and command in hint else f"{(hint or '').rstrip('.')}: {command}"
    if kind in ("LockTimeoutExhaustedError", "RollbackFailedError") and data.get("attempts"):
        extra = "Then run it again, or raise --lock-timeout."
    elif data.get("sqlstate") == "57014":
        extra = "--statement-timeout sets the limit."
    elif kind == "ConnectionFailedError":
        extra = "The URL comes from --db, SUPABASE_DB_URL or DATABASE_URL, in that order."
    elif data.get("meta_command") in ("c", "connect"):
        extra = "Choose the database with --db."
    if hint and extra and extra in hint:  # added already
        return hint
    return f"{hint} {extra}" if hint and extra else extra or hint


def statement_hint(hint: str | None, sqlstate: str | None) -> str | None:
    """A dry-run failure's hint (a StatementFailure's), plus the flag that sets the limit that
    stopped it."""
    flag = {"55P03": "--lock-timeout", "57014": "--statement-timeout"}.get(sqlstate or "")
    return f"{hint} ({flag} sets the limit.)" if hint and flag else hint


def _ok(detail: str) -> CheckResult:
    return CheckResult("pass", detail)


def _fail(detail: str) -> CheckResult:
    return CheckResult("fail", detail)


def _conn(state: RunState) -> psycopg.Connection:
    from dbsage.agent.resources import ensure_connected

    return ensure_connected(state)


# --- pre-conditions -------------------------------------------------------------------------

@check("connection_established")
def connection_established(state: RunState) -> CheckResult:
    """The target answers a query on the run's session."""
    conn = _conn(state)  # first: in yolo this starts the early before-snapshot
    from dbsage.tools.catalog import answers

    if not answers(conn):
        return _fail("the database did not answer SELECT 1")
    return _ok(f"connected to {state.target_label} (PostgreSQL {state.server_version})")


@check("file_parses")
def file_parses(state: RunState) -> CheckResult:
    """The migration file parses with PostgreSQL's parser (errors carry file:line:col)."""
    from dbsage.agent.resources import ensure_parsed

    m = ensure_parsed(state)
    kind = "in one transaction" if m.transactional else "one by one, outside a transaction"
    return _ok(f"{len(m.statements)} statement(s), to run {kind}")


def _missing_privilege(exc: DbsageError) -> CheckResult:
    """A bookkeeping privilege the role lacks, as a warning: the history step, under the lock
    and before anything is applied, stops the run on it with its own message and exit 2 (this
    item's failure wording would misname it as an applied migration)."""
    if not exc.data.get("missing_privileges"):
        raise exc
    return CheckResult("warn", f"{exc.message} An apply stops on this under the lock, before "
                       "its snapshot.")


@check("not_applied_yet")
def not_applied_yet(state: RunState) -> CheckResult:
    """The version is not in the history (checked again once the lock is held).

    An applied version fails as AlreadyAppliedError, DriftError when the file changed, and a
    MigrationFileError when another migration already uses the version. Judged on what was
    recorded: dbsage's checksum for its rows, the Supabase CLI's statements for the CLI's.
    """
    from dbsage.agent.resources import ensure_parsed
    from dbsage.tools.errors import ConfigError
    from dbsage.tools.history import ensure_not_applied

    m = ensure_parsed(state)
    if m.version is None:
        return _ok("the file has no version digits; it will be recorded under the run's TS")
    try:
        ensure_not_applied(_conn(state), m.version, m.checksum, [s.sql for s in m.statements],
                           str(m.path))
    except ConfigError as exc:
        return _missing_privilege(exc)
    return _ok(f"version {m.version} is not applied yet")


@check("checksum_unchanged")
def checksum_unchanged(state: RunState) -> CheckResult:
    """If the version is applied, the file is what was applied (no drift): by the checksum
    dbsage recorded, or by the statements the Supabase CLI recorded for a row it wrote."""
    from dbsage.agent.resources import ensure_parsed
    from dbsage.tools.errors import ConfigError
    from dbsage.tools.history import judge_file

    m = ensure_parsed(state)
    if m.version is None:
        return _ok("the file has no version: nothing to compare")
    try:
        verdict = judge_file(_conn(state), m.version, str(m.path), m.checksum)
    except ConfigError as exc:
        return _missing_privilege(exc)
    if verdict.verdict == "not_applied":
        return _ok("not applied before: nothing to compare")
    if verdict.verdict == "applied":
        return _ok(f"file unchanged since it was applied ({verdict.compared})")
    if verdict.verdict == "unverifiable":
        return CheckResult("warn", "applied, but its history row has no statements (a Supabase "
                           "CLI older than v1.67.0 wrote it): whether the file changed since "
                           "cannot be verified")
    refusal = verdict.refusal()
    assert refusal is not None
    raise refusal


@check("migration_order")
def migration_order(state: RunState) -> CheckResult:
    """The version is newer than every applied version."""
    from dbsage.agent.resources import ensure_parsed
    from dbsage.tools.history import latest_applied_version

    m = ensure_parsed(state)
    latest = latest_applied_version(_conn(state))
    if m.version is None or latest is None:
        return _ok("no applied versions to compare with" if latest is None else
                   "the file has no version; it gets the run's TS, the newest")
    if m.version > latest:
        return _ok(f"{m.version} is newer than the latest applied {latest}")
    if m.version == latest:
        return _ok(f"{m.version} is the latest applied version (see not_applied_yet)")
    return _fail(f"{m.version} is older than the latest applied version {latest}: out of order")


@check("lock_available")
def lock_available(state: RunState) -> CheckResult:
    """No other session holds the migration lock (a peek; the lock step takes it)."""
    from dbsage.tools.lock import ensure_lock_free

    ensure_lock_free(_conn(state))
    return _ok("no other migration is running")


@check("no_destructive_statements")
def no_destructive_statements(state: RunState) -> CheckResult:
    """No DROP TABLE/COLUMN, rewriting type change, TRUNCATE, DELETE/UPDATE without WHERE."""
    ops = _analysis(state).destructive
    if not ops:
        return _ok("no statement destroys data")
    stake = _rows_at_stake(state, ops)
    listed = "; ".join(f"line {o.line}: {o.kind.replace('_', ' ')} {o.table}"
                       + (f" ({', '.join(o.columns)})" if o.columns else "")
                       + (f": {stake[o]}" if o in stake else "") for o in ops)
    return _fail(f"destructive statement(s): {listed}")


def _rows_at_stake(state: RunState, ops: Any) -> dict[Any, str]:
    """What each destructive operation puts at stake ("1,234 row(s) at stake"), counted
    whenever someone may be asked to override, or is refused (not for yolo with
    --allow-destructive: its saved-data step counts them anyway)."""
    from dbsage.tools.analyze import count_rows_at_stake

    if state.policy.name == "yolo" and state.options.flags.get("allow_destructive"):
        return {}
    counted = count_rows_at_stake(_conn(state), ops, timeout_ms=5_000)
    return {o: (f"{r.rows:,} row(s) at stake" if r.rows is not None else r.detail or r.status)
            for o, r in counted.items()}


@check("lint_clean")
def lint_clean(state: RunState) -> CheckResult:
    """squawk finds no error-level problem (warnings are reported, not blocking)."""
    from dbsage.agent.resources import ensure_parsed
    from dbsage.tools.analyze import lint_view, lint_with_squawk

    m = ensure_parsed(state)
    # dbsage runs a transactional file inside one transaction; tell squawk so.
    findings = lint_with_squawk(m.path, pg_version=_pg_version(state),
                                assume_in_transaction=m.transactional, text=lint_view(m))
    state.lint = findings
    errors = [f for f in findings if f.level == "error"]
    text = "; ".join(f"line {f.line}: {f.rule}: {f.message}" for f in (errors or findings)[:5])
    if errors:
        return _fail(f"squawk: {len(errors)} error(s): {text}")
    if findings:
        return CheckResult("warn", f"squawk: {len(findings)} warning(s): {text}")
    return _ok("squawk found nothing")


def _pg_version(state: RunState) -> str | None:
    return f"{state.server_major}.0" if state.server_major else None


def _analysis(state: RunState) -> MigrationAnalysis:
    from dbsage.agent.resources import analysis_of

    return analysis_of(state)


# --- post-conditions and acceptance criteria ------------------------------------------------

@check("transaction_committed")
def transaction_committed(state: RunState) -> CheckResult:
    """A fresh session sees the migration's history row: the transaction really committed."""
    from dbsage.tools.history import recorded_in_new_session

    if state.status != "applied" or state.target is None:
        return _fail("the migration did not commit")
    if recorded_in_new_session(state.target.url, state.version or "") == 1:
        return _ok("committed: visible from a new session")
    return _fail("a new session does not see the migration's history row")


@check("history_row_present")
def history_row_present(state: RunState) -> CheckResult:
    """Both history rows exist, with this file's checksum and this run's TS."""
    from dbsage.tools.history import applied_rows

    m = state.migration
    if m is None or state.status != "applied":
        return _fail("nothing was applied, so nothing was recorded")
    rows = applied_rows(_conn(state), state.version or "", state.ts or "", m.checksum)
    if (rows.schema_migrations, rows.migration_log) == (1, 1):
        return _ok(f"version {state.version} recorded in supabase_migrations and dbsage")
    return _fail(f"history rows found: supabase_migrations={rows.schema_migrations}, "
                 f"dbsage.migration_log={rows.migration_log}")


def _from_smoke(outcome: Any) -> CheckResult:
    """A smoke check's outcome as a checklist result (the same catalog query serves both)."""
    detail = outcome.detail + (f": {', '.join(outcome.items)}" if outcome.items else "")
    return CheckResult(outcome.status, detail)


def _touched_tables(state: RunState) -> list[str] | None:
    """The relations this migration's statements name (what its checks may judge); None for a
    run with no migration file (a rollback): then every table is judged, as before."""
    from dbsage.agent.resources import analysis_of

    if state.path is None:
        return None

    analysis = analysis_of(state)
    return list(dict.fromkeys([*analysis.tables, *analysis.created]))


@check("no_invalid_indexes")
def no_invalid_indexes(state: RunState) -> CheckResult:
    """pg_index.indisvalid is true for every index on the tables the migration touched (an
    invalid index elsewhere is not this migration's doing)."""
    from dbsage.tools.smoke import check_invalid_indexes

    return _from_smoke(check_invalid_indexes(_conn(state), _touched_tables(state)))


@check("no_not_valid_constraints")
def no_not_valid_constraints(state: RunState) -> CheckResult:
    """The migration leaves no constraint NOT VALID, except those it adds NOT VALID on
    purpose (the first half of the safe pattern): a warning naming the VALIDATE CONSTRAINT
    migration to write next. A NOT VALID constraint only ever comes from ADD CONSTRAINT ...
    NOT VALID, so one that an earlier migration left is never this migration's failure."""
    from dbsage.agent.resources import ensure_parsed
    from dbsage.tools.analyze import not_valid_additions
    from dbsage.tools.smoke import check_not_valid_constraints

    if state.path is None:  # a rollback: its reverse script must leave nothing NOT VALID
        return _from_smoke(check_not_valid_constraints(_conn(state)))
    additions = not_valid_additions(ensure_parsed(state))
    if not additions:
        return _ok("the migration adds no NOT VALID constraint")
    now = check_not_valid_constraints(_conn(state), sorted({a.table for a in additions}))
    follow = "; ".join(a.validate_sql for a in additions)
    return CheckResult("warn", f"added NOT VALID (line(s) "
                       f"{', '.join(str(a.line) for a in additions)}): "
                       f"{', '.join(now.items) or 'see the table'}; validate in a later "
                       f"migration once existing rows are fixed: {follow}")


@check("no_orphaned_fk_rows")
def no_orphaned_fk_rows(state: RunState) -> CheckResult:
    """Foreign keys on the tables the migration touched have no orphaned rows."""
    from dbsage.tools.catalog import foreign_key_orphans

    tables = sorted({t for s in _analysis(state).statements for t in s.tables})
    if not tables:
        return _ok("the migration touches no table")
    found = foreign_key_orphans(_conn(state), tables)
    broken = [f"{o.child}.{o.constraint}: {o.rows} orphaned row(s)" for o in found.orphans
              if o.validated]
    pending = [f"{o.child}.{o.constraint}: {o.rows} orphaned row(s)" for o in found.orphans
               if not o.validated]
    if broken:  # under a validated key: rows the database was told to keep consistent
        return _fail("; ".join(broken + pending))
    if pending:  # NOT VALID keys do not check existing rows yet: fix them before VALIDATE
        return CheckResult("warn", "; ".join(pending) + " under NOT VALID foreign key(s): "
                           "fix or delete them before VALIDATE CONSTRAINT, which will fail")
    return _ok(f"{found.checked} foreign key(s) checked, no orphaned rows")


@check("rls_enabled_on_new_tables")
def rls_enabled_on_new_tables(state: RunState) -> CheckResult:
    """Tables the migration created in exposed schemas have row level security enabled."""
    from dbsage.tools.catalog import is_table, rls_enabled

    exposed = state.options.exposed_schemas
    created = [t for t in _analysis(state).created if t.split(".")[0] in exposed]
    if not created:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    conn = _conn(state)
    created = [t for t in created if is_table(conn, t)]  # `created` also names indexes, ...
    if not created:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    missing = [t for t in created if not rls_enabled(conn, t)]
    if missing:
        return CheckResult("warn", f"RLS is off on new table(s) {', '.join(missing)}: anyone "
                           "with the API key can read them (ALTER TABLE ... ENABLE ROW LEVEL "
                           "SECURITY)")
    return _ok(f"RLS enabled on {', '.join(created)}")


@check("database_unchanged")
def database_unchanged(state: RunState) -> CheckResult:
    """After a dry-run: the schema fingerprint equals the one taken before it."""
    from dbsage.tools.catalog import schema_fingerprint

    if state.fingerprint_before is None:
        return _fail("no fingerprint was taken before the dry-run")
    after = schema_fingerprint(_conn(state))
    if after == state.fingerprint_before:
        return _ok("schema fingerprint unchanged: the transaction was rolled back")
    return _fail(f"schema fingerprint changed ({state.fingerprint_before} -> {after})")


@check("smoke_checks_pass")
def smoke_checks_pass(state: RunState) -> CheckResult:
    """Every built-in smoke check and user test passed (warnings allowed)."""
    smoke = state.smoke
    if smoke is None:
        return _fail("the smoke checks did not run")
    bad = [f"{c.id}: {c.detail}" for c in smoke.checks if c.status == "fail"]
    bad += [f"{t.path}: {t.error or '; '.join(t.failures)}" for t in smoke.user_tests
            if not t.passed]
    if bad:
        return _fail("; ".join(bad))
    warns = sum(c.status == "warn" for c in smoke.checks)
    return _ok(f"{len(smoke.checks)} check(s) and {len(smoke.user_tests)} user test(s) passed"
               + (f", {warns} warning(s)" if warns else ""))


@check("rollback_target_valid")
def rollback_target_valid(state: RunState) -> CheckResult:
    """The run to undo is applied and the newest (with --to: every run after the version),
    its plan is known, and everything it did can be undone (else the reasons)."""
    from dbsage.agent.steps import rollback_chain

    parts = []
    for plan, _rows in rollback_chain(state):
        s = plan.script
        sets = len(s.data) or len(plan.saved)
        parts.append(f"run {plan.applied_ts} applied version {plan.version} ({plan.name}); "
                     f"{len(s.all_statements)} reverse statement(s) from {plan.source}, {sets} "
                     "data set(s) to restore"
                     + ("; verified against the state before it" if s.before else ""))
    return _ok("; ".join(parts))


@check("no_data_loss")
def no_data_loss(state: RunState) -> CheckResult:
    """The rollback drops no table or column that holds rows written since the migration."""
    from dbsage.agent.steps import rollback_chain
    from dbsage.tools.rollback import rows_at_stake

    losses = [x for plan, _rows in rollback_chain(state)
              for x in rows_at_stake(_conn(state), plan.script) if x.rows]
    if not losses:
        return _ok("the rollback drops nothing that holds data")
    return _fail("the rollback would lose data: " + "; ".join(x.describe() for x in losses))


@check("rollback_recorded")
def rollback_recorded(state: RunState) -> CheckResult:
    """The version(s) left supabase_migrations and dbsage logged the rollback event(s)."""
    from dbsage.agent.steps import rollback_chain
    from dbsage.tools.history import rollback_rows

    if state.rollback is None or state.status != "rolled_back":
        return _fail("nothing was rolled back")
    chain = [plan for plan, _rows in rollback_chain(state)]
    versions = ", ".join(p.version for p in chain)
    bad = []
    for plan in chain:
        rows = rollback_rows(_conn(state), plan.version, state.ts or "")
        if (rows.schema_migrations, rows.migration_log) != (0, len(chain)):
            bad.append(f"{plan.version}: schema_migrations rows={rows.schema_migrations}, "
                       f"rollback log rows={rows.migration_log}")
    if not bad:
        return _ok(f"version(s) {versions} marked reverted; rollback {state.ts} logged")
    return _fail("history after rollback: " + "; ".join(bad))


# --- files that are not migrations, and seeds -----------------------------------------------

@check("is_a_migration")
def is_a_migration(state: RunState) -> CheckResult:
    """The file is a migration by the Supabase CLI's rule (`<digits>_<name>.sql`), or
    --version names the version to apply it as. Looks at the name only: refused before
    anything is read or connected."""
    from dbsage.tools.errors import ConfigError
    from dbsage.tools.sqlfile import MIGRATION_FILE_NAME, migration_version, why_not_a_migration

    assert state.path is not None
    name, version = state.path.name, state.options.version
    reason = why_not_a_migration(state.path)
    if reason is None and version in (None, migration_version(state.path)):
        return _ok(f"{name} is migration version {migration_version(state.path)}")
    if reason is None:
        raise ConfigError(
            f"{name} is version {migration_version(state.path)} by its name; --version "
            f"{version} would record it under another version than the Supabase CLI does.",
            hint="Leave out --version (it is for files the CLI does not take as migrations), "
                 "or rename the file.", path=str(state.path))
    if version is None:
        raise ConfigError(
            f"{state.path}: the Supabase CLI takes only files named <digits>_<name>.sql "
            f"({MIGRATION_FILE_NAME.pattern}) as migrations, and {reason}. Nothing was run.",
            hint="Rename it <YYYYMMDDHHMMSS>_<name>.sql to make it a migration; run seed data "
                 "with `dbsage seed` (*seed: supabase/seed.sql, or the files [db.seed] sql_paths "
                 "of supabase/config.toml lists); or pass --version V to apply it anyway, "
                 "recorded as version V.",
            path=str(state.path), rule=MIGRATION_FILE_NAME.pattern)
    _apply_as(state, version)
    return CheckResult(
        "warn", f"{name} is not a migration by the Supabase CLI's rule ({reason}); applied as "
        f"version {version} (--version). The CLI will list {version} as applied with no local "
        f"file: keep a copy as supabase/migrations/{version}_{state.path.stem}.sql if it "
        "should stay in step")


def _apply_as(state: RunState, version: str) -> None:
    """Parse the file now and give it `version`, so every later check and step (history,
    order, dry-run record) sees the same version. A file that does not parse is left to
    file_parses, which reports it."""
    from dataclasses import replace as with_fields

    from dbsage.agent.resources import ensure_parsed

    try:
        m = ensure_parsed(state)
    except DbsageError:
        return
    state.migration = with_fields(m, version=version)
    state.version = version


@check("seed_files_parse")
def seed_files_parse(state: RunState) -> CheckResult:
    """The seed files exist ([db.seed] of supabase/config.toml, else supabase/seed.sql) and
    each parses with PostgreSQL's parser (errors carry file:line:col)."""
    from dbsage.agent.steps import ensure_seed_plan

    plan = ensure_seed_plan(state)
    listed = ", ".join(f"{f.path} ({len(f.statements)})" for f in plan.files)
    detail = (f"{len(plan.files)} file(s), {len(plan.statements)} statement(s) to run in one "
              f"transaction: {listed}")
    if plan.sources.unmatched:
        return CheckResult("warn", f"{detail}; no file matched "
                           f"{', '.join(plan.sources.unmatched)}")
    return _ok(detail)


@check("seed_committed")
def seed_committed(state: RunState) -> CheckResult:
    """A new session sees the seed's transaction as committed (pg_xact_status)."""
    from dbsage.agent.steps import seed_result
    from dbsage.tools.seed import transaction_status

    result = seed_result(state)
    if state.status != "applied" or result is None or state.target is None:
        return _fail("the seed did not commit")
    status = transaction_status(state.target.url, result.xid)
    if status == "committed":
        return _ok(f"transaction {result.xid} committed: visible from a new session")
    return _fail(f"a new session sees transaction {result.xid} as {status or 'unknown'}")


# --- rls-audit and analyze-hotpaths ---------------------------------------------------------

@check("no_error_lints")
def no_error_lints(state: RunState) -> CheckResult:
    """No ERROR-level advisor lint about what the API exposes (WARN ones are reported)."""
    from dbsage.agent.steps import lint_findings_of

    findings = lint_findings_of(state)
    if findings is None:
        return _fail("the advisor lints did not run")
    errors = [f for f in findings if f.level == "ERROR"]
    listed = "; ".join(f"{f.name} on {f.object}" for f in errors[:8])
    more = f" and {len(errors) - 8} more" if len(errors) > 8 else ""
    if errors:
        return _fail(f"{len(errors)} found: {listed}{more}")
    warns = sum(f.level == "WARN" for f in findings)
    if warns:
        return CheckResult("warn", f"no ERROR-level lint; {warns} WARN-level (see the lints)")
    return _ok(f"no ERROR- or WARN-level lint ({len(findings)} INFO)")


@check("exposed_tables_covered")
def exposed_tables_covered(state: RunState) -> CheckResult:
    """Every table of the exposed schemas has RLS on and a permissive policy for some command
    (RLS on with no policy: nobody reaches a row); a command no policy covers is a warning."""
    from dbsage.agent.steps import rls_audit_of, uncovered_tables

    audit = rls_audit_of(state)
    if audit is None:
        return _fail("the RLS audit did not run")
    off = [t.qualified for t in audit.tables if "rls_off" in t.flags and t.extension is None]
    none = [t.qualified for t in audit.tables
            if "rls_on_no_policy" in t.flags and t.extension is None]
    if uncovered_tables(audit):
        parts = ([f"RLS off on {', '.join(off)}"] if off else []) + (
            [f"RLS on but no policy on {', '.join(none)}"] if none else [])
        return _fail("; ".join(parts))
    partial = [f"{t.qualified} ({', '.join(t.uncovered)})" for t in audit.tables
               if "incomplete_coverage" in t.flags]
    if partial:
        return CheckResult("warn", "no permissive policy for some commands: "
                           + "; ".join(partial))
    n = len(audit.tables)
    return _ok(f"{n} table(s) in {', '.join(audit.schemas)}: RLS on and policies for every "
               "command" if n else f"no table in {', '.join(audit.schemas)}")


@check("query_stats_available")
def query_stats_available(state: RunState) -> CheckResult:
    """pg_stat_statements recorded the workload (else: how to enable it)."""
    from dbsage.agent.steps import hotpaths_of

    report = hotpaths_of(state)
    if report is None:
        return _fail("the analysis did not run")
    hot = report.hot
    if not hot.available:
        return CheckResult("warn", f"{hot.message} {' '.join(hot.how_to_enable)}")
    if not hot.statements:
        return CheckResult("warn", f"{hot.message} No application statement to analyse yet.")
    return _ok(hot.message)


# --- `up`: the batch of pending migrations (agent/batch.py) --------------------------------

@check("batch_files_parse")
def batch_files_parse(state: RunState) -> CheckResult:
    """Every migration file of supabase/migrations/ (up to --to) is read and parses with
    PostgreSQL's parser, before anything touches the database."""
    from dbsage.agent.batch import ensure_batch

    batch = ensure_batch(state)
    if not batch.local.exists:
        return _fail(f"there is no {state.rel(batch.local.folder)}/ folder")
    skipped = [*batch.local.ignored, *([batch.local.skipped_init] if batch.local.skipped_init
                                       else [])]
    detail = f"{len(batch.files)} migration file(s) read; each parses"
    if skipped:
        return CheckResult("warn", f"{detail}; skipped as the Supabase CLI skips them (name "
                           f"not <digits>_<name>.sql): {', '.join(skipped)}")
    return _ok(detail)


@check("batch_history_matches")
def batch_history_matches(state: RunState) -> CheckResult:
    """Every applied version has its file (the Supabase CLI's rule), no two files share a
    version; an applied file that changed since is reported (drift)."""
    from dbsage.agent.batch import read_history

    batch = read_history(state)
    plan = batch.plan
    assert plan is not None
    if plan.missing:
        listed = " ".join(plan.missing)
        return _fail(f"applied version(s) with no file in supabase/migrations/: {listed} (make "
                     "sure the folder is up to date, e.g. git pull; if the database is right, "
                     f"take them out of the history: dbsage repair --status reverted {listed})")
    dupes = [n for n in batch.local.duplicates]
    if dupes:
        return _fail(f"file(s) whose version another file already has: {', '.join(dupes)} "
                     "(give each its own <YYYYMMDDHHMMSS>_ prefix)")
    detail = (f"{len(plan.applied)} applied, {len(plan.pending)} pending"
              + (f", {len(plan.beyond_to)} after --to" if plan.beyond_to else ""))
    if batch.drifted:
        return CheckResult("warn", f"{detail}; changed since they were applied (drift, not "
                           f"applied again): {', '.join(batch.drifted)}")
    return _ok(detail)


@check("batch_in_order")
def batch_in_order(state: RunState) -> CheckResult:
    """No pending file is older than the latest applied version, unless --include-all asks
    to apply them anyway (the Supabase CLI's rule)."""
    from dbsage.agent.batch import names, read_history

    batch = state.batch if state.batch and state.batch.plan else read_history(state)
    plan = batch.plan
    assert plan is not None
    if not plan.out_of_order:
        return _ok("every pending file is newer than the latest applied version"
                   + (f" {plan.latest_applied}" if plan.latest_applied else ""))
    listed = names(list(plan.out_of_order), limit=50)
    if state.options.flags.get("include_all"):
        return CheckResult("warn", f"older than the latest applied version "
                           f"{plan.latest_applied}, applied in version order (--include-all): "
                           f"{listed}")
    return _fail(f"older than the latest applied version {plan.latest_applied}: {listed}")


@check("pending_files_parse")
def pending_files_parse(state: RunState) -> CheckResult:
    """Each pending file reads as apply reads it (no psql meta-command, no statement dbsage
    cannot run safely, no COMMIT in the middle), before anything is locked or changed."""
    from dbsage.agent.batch import ensure_pending

    pending = ensure_pending(state)
    if not pending:
        return _ok("nothing pending")
    n = sum(len(f.migration.statements) for f in pending if f.migration)
    outside = [f.name for f in pending if f.migration and not f.migration.transactional]
    text = f"{len(pending)} pending file(s), {n} statement(s)"
    if outside:
        text += f"; run one by one, outside a transaction: {', '.join(outside)}"
    return _ok(text)


@check("batch_atomic_possible")
def batch_atomic_possible(state: RunState) -> CheckResult:
    """With --atomic, every pending file can run inside the batch's one transaction."""
    from dbsage.agent.batch import ensure_pending

    pending = ensure_pending(state)
    if not state.options.flags.get("atomic"):
        return _ok("each file runs in its own transaction")
    blocked = [f.name for f in pending if f.migration and not f.migration.transactional]
    if blocked:
        return _fail(f"cannot run inside one transaction (CREATE INDEX CONCURRENTLY, VACUUM, "
                     f"...): {', '.join(blocked)}")
    return _ok(f"{len(pending)} file(s) in one transaction: all of them commit, or none")


@check("batch_no_destructive")
def batch_no_destructive(state: RunState) -> CheckResult:
    """No pending file destroys data (DROP TABLE/COLUMN, rewriting type change, TRUNCATE,
    DELETE/UPDATE without WHERE)."""
    from dbsage.agent.batch import analysis, ensure_pending

    found = [f"{f.name}:{o.line}: {o.kind.replace('_', ' ')} {o.table}"
             + (f" ({', '.join(o.columns)})" if o.columns else "")
             for f in ensure_pending(state) for o in analysis(f).destructive]
    if not found:
        return _ok("no statement destroys data")
    return _fail(f"destructive statement(s): {'; '.join(found[:20])}"
                 + (f"; and {len(found) - 20} more" if len(found) > 20 else ""))


@check("batch_lint_clean")
def batch_lint_clean(state: RunState) -> CheckResult:
    """squawk (one process over every pending file) finds no error (warnings are reported)."""
    from dbsage.agent.batch import lint_batch

    findings = lint_batch(state)
    errors = [(f, x) for f, x in findings if x.level == "error"]
    shown = "; ".join(f"{f.name}:{x.line}: {x.rule}: {x.message}"
                      for f, x in (errors or findings)[:5])
    if errors:
        return _fail(f"squawk: {len(errors)} error(s): {shown}")
    if findings:
        return CheckResult("warn", f"squawk: {len(findings)} warning(s): {shown}")
    return _ok("squawk found nothing" if state.batch and state.batch.pending else
               "nothing pending")


@check("batch_committed")
def batch_committed(state: RunState) -> CheckResult:
    """A fresh session sees the history row of every file the batch applied: committed."""
    from dbsage.agent.batch import applied_files, nothing_to_apply
    from dbsage.tools.history import recorded_in_new_session_many

    if nothing_to_apply(state):
        return _ok("nothing to apply")
    done = applied_files(state)
    if state.status != "applied" or state.target is None or not done:
        return _fail("the batch did not commit")
    seen = recorded_in_new_session_many(state.target.url, [f.version for f in done])
    if seen == len(done):
        return _ok(f"{seen} file(s) committed: visible from a new session")
    return _fail(f"a new session sees {seen} of the {len(done)} history rows")


@check("batch_history_rows_present")
def batch_history_rows_present(state: RunState) -> CheckResult:
    """Both history rows of every applied file exist, with this run's TS."""
    from dbsage.agent.batch import applied_files, nothing_to_apply
    from dbsage.tools.history import batch_rows

    if nothing_to_apply(state):
        return _ok("nothing to apply")
    done = applied_files(state)
    if not done:
        return _fail("nothing was applied, so nothing was recorded")
    rows = batch_rows(_conn(state), state.ts or "", [f.version for f in done])
    if (rows.schema_migrations, rows.migration_log) == (len(done), len(done)):
        return _ok(f"{len(done)} version(s) recorded in supabase_migrations and dbsage")
    return _fail(f"history rows for {len(done)} file(s): supabase_migrations="
                 f"{rows.schema_migrations}, dbsage.migration_log={rows.migration_log}")


@check("batch_no_invalid_indexes")
def batch_no_invalid_indexes(state: RunState) -> CheckResult:
    """No index on the tables the batch touched is left invalid."""
    from dbsage.agent.batch import applied_files, touched_tables
    from dbsage.tools.smoke import check_invalid_indexes

    tables = touched_tables(applied_files(state))
    if not tables:
        return _ok("the batch touched no table")
    return _from_smoke(check_invalid_indexes(_conn(state), tables))


@check("batch_no_not_valid_constraints")
def batch_no_not_valid_constraints(state: RunState) -> CheckResult:
    """Constraints the batch added NOT VALID and did not validate: a warning naming the
    VALIDATE CONSTRAINT to write in a later migration."""
    from dbsage.agent.batch import applied_files
    from dbsage.tools.analyze import not_valid_additions
    from dbsage.tools.smoke import check_not_valid_constraints

    additions = [(f, a) for f in applied_files(state) if f.migration
                 for a in not_valid_additions(f.migration)]
    if not additions:
        return _ok("the batch adds no NOT VALID constraint")
    now = check_not_valid_constraints(_conn(state), sorted({a.table for _, a in additions}))
    if now.status == "pass":
        return _ok("the NOT VALID constraints the batch added are validated by a later file")
    follow = "; ".join(a.validate_sql for _, a in additions)
    return CheckResult("warn", f"left NOT VALID: {', '.join(now.items) or 'see the tables'}; "
                       f"validate in a later migration once existing rows are fixed: {follow}")


@check("batch_no_orphaned_fk_rows")
def batch_no_orphaned_fk_rows(state: RunState) -> CheckResult:
    """Foreign keys on the tables the batch touched have no orphaned rows."""
    from dbsage.agent.batch import analysis, applied_files
    from dbsage.tools.catalog import foreign_key_orphans

    tables = sorted({t for f in applied_files(state) for s in analysis(f).statements
                     for t in s.tables})
    if not tables:
        return _ok("the batch touches no table")
    found = foreign_key_orphans(_conn(state), tables)
    broken = [f"{o.child}.{o.constraint}: {o.rows} orphaned row(s)" for o in found.orphans
              if o.validated]
    pending = [f"{o.child}.{o.constraint}: {o.rows} orphaned row(s)" for o in found.orphans
               if not o.validated]
    if broken:
        return _fail("; ".join(broken + pending))
    if pending:
        return CheckResult("warn", "; ".join(pending) + " under NOT VALID foreign key(s): "
                           "fix or delete them before VALIDATE CONSTRAINT, which will fail")
    return _ok(f"{found.checked} foreign key(s) checked, no orphaned rows")


@check("batch_rls_enabled_on_new_tables")
def batch_rls_enabled_on_new_tables(state: RunState) -> CheckResult:
    """Tables the batch created in exposed schemas have row level security enabled."""
    from dbsage.agent.batch import analysis, applied_files
    from dbsage.tools.batch import tables_without_rls

    exposed = state.options.exposed_schemas
    created = list(dict.fromkeys(t for f in applied_files(state) for t in analysis(f).created
                                 if t.split(".")[0] in exposed))
    if not created:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    tables, missing = tables_without_rls(_conn(state), created)
    if not tables:
        return _ok(f"no new table in exposed schema(s) {', '.join(exposed)}")
    if missing:
        return CheckResult("warn", f"RLS is off on new table(s) {', '.join(missing)}: anyone "
                           "with the API key can read them (ALTER TABLE ... ENABLE ROW LEVEL "
                           "SECURITY)")
    return _ok(f"RLS enabled on {len(tables)} new table(s)")
