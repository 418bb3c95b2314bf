"""Checklist items are real checks: they fail when the database says so, and never pass by
default."""

from __future__ import annotations

from pathlib import Path

from conftest import Db
from helpers import apply, migration

from dbsage.agent.checklists import CHECKS, CheckResult, check, run_check


def _checks(report: object) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["id"]: c for c in report.checks}  # type: ignore[attr-defined]


def test_a_clean_migration_passes_every_item_with_a_reason(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_ok.sql",
                     "create table public.p (id bigint primary key, n text);\n"
                     "create index p_n_idx on public.p (n);\n"
                     "alter table public.p enable row level security;\n")
    report = apply(db, path, project)
    assert report.status == "applied" and report.exit_code == 0, report.error
    checks = _checks(report)
    assert {c["phase"] for c in checks.values()} == {"pre_conditions", "post_conditions",
                                                     "acceptance_criteria"}
    assert all(c["status"] == "pass" and c["detail"] for c in checks.values()), checks


def test_a_not_valid_key_the_file_adds_is_a_warning_with_the_validate_follow_up(
        db: Db, project: Path) -> None:
    """The first half of the safe pattern (add NOT VALID, fix the rows, VALIDATE later) is
    not a failure: the report names the VALIDATE CONSTRAINT to write next and the rows that
    would make it fail; a later migration is never failed for it."""
    db.execute("create table public.parent (id int primary key); insert into public.parent "
               "values (1); create table public.child (id int, parent_id int); insert into "
               "public.child values (1, 1), (2, 99), (3, 98)")
    path = migration(project, "20250101000000_fk.sql",
                     "alter table public.child add constraint child_parent_fk foreign key "
                     "(parent_id) references public.parent (id) not valid;\n")
    report = apply(db, path, project)
    assert report.status == "applied" and report.exit_code == 0, report.error
    checks = _checks(report)
    not_valid = checks["no_not_valid_constraints"]
    assert not_valid["status"] == "warn" and "child_parent_fk" in not_valid["detail"]
    assert "ALTER TABLE public.child VALIDATE CONSTRAINT child_parent_fk" in not_valid["detail"]
    orphans = checks["no_orphaned_fk_rows"]
    assert orphans["status"] == "warn" and "2 orphaned row(s)" in orphans["detail"]
    # A later migration on the same table passes: the NOT VALID key is not its doing.
    later = migration(project, "20250102000000_col.sql",
                      "alter table public.child add column note text;\n")
    after = apply(db, later, project)
    assert after.exit_code == 0 and _checks(after)["no_not_valid_constraints"]["status"] == "pass"


def test_orphans_under_a_validated_key_fail_after_commit(db: Db, project: Path) -> None:
    """Rows that break a VALIDATED key (triggers were disabled) are a real failure: exit 7,
    committed, with the rollback hint."""
    db.execute("create table public.parent (id int primary key); insert into public.parent "
               "values (1); create table public.child (id int, parent_id int references "
               "public.parent (id)); alter table public.child disable trigger all; insert "
               "into public.child values (1, 99); alter table public.child enable trigger all")
    path = migration(project, "20250101000000_note.sql",
                     "alter table public.child add column note text;\n")
    report = apply(db, path, project)
    assert report.status == "applied" and report.exit_code == 7
    assert _checks(report)["no_orphaned_fk_rows"]["status"] == "fail"
    assert report.error and report.error["message"].startswith("The migration is committed, but")
    assert f"*rollback {report.ts}" in report.error["hint"]


def test_new_table_without_rls_in_public_is_a_warning_not_a_stop(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_open.sql",
                     "create table public.open (id int);\ncreate index open_id on public.open (id);\n")
    report = apply(db18, path, project)
    assert report.status == "applied" and report.exit_code == 0
    rls = _checks(report)["rls_enabled_on_new_tables"]
    assert rls["status"] == "warn" and "public.open" in rls["detail"]
    assert "open_id" not in rls["detail"]  # an index is not a table
    assert any("public.open" in w for w in report.warnings)


def test_a_check_that_crashes_fails_instead_of_passing() -> None:
    @check("test_only_crashing_check")
    def crashing(ctx: object) -> CheckResult:
        raise RuntimeError("boom")

    try:
        result = run_check("test_only_crashing_check", None)  # type: ignore[arg-type]
        assert result.status == "fail"
        assert "RuntimeError: boom" in result.detail
    finally:
        del CHECKS["test_only_crashing_check"]


def test_the_agent_adds_the_command_wording_to_the_tools_facts() -> None:
    """tools/ hints name no *command or flag; command_hint adds them from the error's data,
    once, however often it is applied."""
    from dbsage.agent.checklists import command_hint, statement_hint
    from dbsage.tools.errors import (
        AlreadyAppliedError,
        ConnectionFailedError,
        LockTimeoutExhaustedError,
        MigrationFileError,
        StatementFailure,
    )

    applied = AlreadyAppliedError("applied", hint="Nothing to do. To apply it again, roll it "
                                  "back first.", applied_ts="20260101000000")
    applied.hint = command_hint(applied)
    assert applied.hint == ("Nothing to do. To apply it again, roll it back first: "
                            "*rollback 20260101000000") == command_hint(applied)
    down = ConnectionFailedError("down", hint="Check that the server is running.")
    assert "--db, SUPABASE_DB_URL or DATABASE_URL" in (command_hint(down) or "")
    stuck = LockTimeoutExhaustedError("stuck", failure=StatementFailure(1, "55P03", "lock"),
                                      path="m.sql", hint="A long transaction holds the table.")
    stuck.data.update(attempts=10, lock_timeout="1s")
    assert (command_hint(stuck) or "").endswith("raise --lock-timeout.")
    meta = MigrationFileError("meta", path="m.sql", hint="Inline it.")
    meta.data["meta_command"] = "connect"
    assert command_hint(meta) == "Inline it. Choose the database with --db."
    assert statement_hint("statement_timeout cancelled it.", "57014") == (
        "statement_timeout cancelled it. (--statement-timeout sets the limit.)")
    assert statement_hint("no limit involved", "42P01") == "no limit involved"
